#include "placement/routing.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "common/status.h"

namespace switchyard::placement {

double PairDraw(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  const uint64_t h = SplitMix64(SplitMix64(SplitMix64(SplitMix64(a) ^ b) ^ c) ^ d);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

absl::StatusOr<RoutingTable> RoutingTable::Build(const Placement& placement, int64_t epoch) {
  SY_RETURN_IF_ERROR(ValidatePlacement(placement));
  RoutingTable t;
  t.placement_ = placement;
  t.epoch_ = epoch;
  t.ranks_ = placement.topology.ranks();
  t.experts_ = placement.num_experts;
  const Topology& topo = placement.topology;
  const int R = t.ranks_, E = t.experts_;
  t.index_.resize(static_cast<size_t>(placement.layers.size()) * E * R);
  struct Replica {
    ReplicaLocation where;
    double capacity;  // in source units (share * R)
  };
  for (size_t l = 0; l < placement.layers.size(); ++l) {
    std::vector<std::vector<Replica>> replicas(E);
    for (int r = 0; r < R; ++r) {
      const auto& slots = placement.layers[l].ranks[r];
      for (int s = 0; s < static_cast<int>(slots.size()); ++s) {
        replicas[slots[s].expert].push_back({{r, s}, slots[s].share * R});
      }
    }
    for (int e = 0; e < E; ++e) {
      std::vector<Replica>& reps = replicas[e];
      std::vector<double> source_left(R, 1.0);
      // flows[source] = list of (replica index, amount)
      std::vector<std::vector<std::pair<int, double>>> flows(R);
      auto pour = [&](auto eligible) {
        for (int src = 0; src < R; ++src) {
          for (size_t j = 0; j < reps.size() && source_left[src] > 1e-12; ++j) {
            if (reps[j].capacity <= 1e-12 || !eligible(src, reps[j].where.rank)) continue;
            const double amount = std::min(source_left[src], reps[j].capacity);
            flows[src].push_back({static_cast<int>(j), amount});
            source_left[src] -= amount;
            reps[j].capacity -= amount;
          }
        }
      };
      pour([](int src, int rank) { return src == rank; });
      pour([&](int src, int rank) { return topo.NodeOf(src) == topo.NodeOf(rank); });
      pour([](int, int) { return true; });
      for (int src = 0; src < R; ++src) {
        auto& f = flows[src];
        if (f.empty()) {  // only when every replica has share 0 somewhere: take the first
          f.push_back({0, 1.0});
        }
        const size_t key = (l * E + e) * R + src;
        t.index_[key].first = static_cast<int32_t>(t.choice_list_.size());
        double total = 0;
        for (const auto& [j, amount] : f) total += amount;
        double upto = 0;
        for (const auto& [j, amount] : f) {
          upto += amount / total;
          t.choice_list_.push_back({upto, reps[j].where});
        }
        t.choice_list_.back().upto = 1.0;
        t.index_[key].second = static_cast<int32_t>(t.choice_list_.size());
      }
    }
  }
  return t;
}

int RoutingTable::LayerIndex(int layer_id) const {
  for (size_t i = 0; i < placement_.layers.size(); ++i) {
    if (placement_.layers[i].layer_id == layer_id) return static_cast<int>(i);
  }
  return -1;
}

ReplicaLocation RoutingTable::Route(int layer_index, int expert, int source_rank, double u) const {
  const auto [begin, end] = index_[(static_cast<size_t>(layer_index) * experts_ + expert) * ranks_ + source_rank];
  for (int32_t i = begin; i < end - 1; ++i) {
    if (u < choice_list_[i].upto) return choice_list_[i].where;
  }
  return choice_list_[end - 1].where;
}

double RoutingTable::Fraction(int layer_index, int expert, int source_rank, const ReplicaLocation& replica) const {
  const auto [begin, end] = index_[(static_cast<size_t>(layer_index) * experts_ + expert) * ranks_ + source_rank];
  double below = 0, total = 0;
  for (int32_t i = begin; i < end; ++i) {
    if (choice_list_[i].where == replica) total += choice_list_[i].upto - below;
    below = choice_list_[i].upto;
  }
  return total;
}

}  // namespace switchyard::placement
