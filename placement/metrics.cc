#include "placement/metrics.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"

namespace switchyard::placement {

std::vector<double> RankLoads(const LayerPlacement& layer, std::span<const double> expert_load) {
  std::vector<double> loads(layer.ranks.size(), 0.0);
  for (size_t r = 0; r < layer.ranks.size(); ++r) {
    for (const Replica& rep : layer.ranks[r]) loads[r] += expert_load[rep.expert] * rep.share;
  }
  return loads;
}

double Balancedness(std::span<const double> rank_loads, const Constraints& constraints) {
  double max = 0;
  int active = 0;
  for (size_t r = 0; r < rank_loads.size(); ++r) {
    if (constraints.IsDrained(static_cast<int>(r))) continue;
    max = std::max(max, rank_loads[r]);
    ++active;
  }
  if (!(max > 0) || active == 0) return 1.0;
  double sum = 0;  // of loads relative to the largest: no overflow near DBL_MAX
  for (size_t r = 0; r < rank_loads.size(); ++r) {
    if (!constraints.IsDrained(static_cast<int>(r))) sum += rank_loads[r] / max;
  }
  return sum / active;
}

double NoRedundancyBound(std::span<const double> expert_load, int active_ranks) {
  double total = 0, hottest = 0;
  for (double x : expert_load) {
    total += x;
    hottest = std::max(hottest, x);
  }
  const double mean = total / active_ranks;
  if (mean <= 0) return 1.0;
  return mean / std::max(mean, hottest);
}

double SlotCountBound(std::span<const double> expert_load, int active_ranks, int slots_per_rank) {
  std::vector<double> sorted(expert_load.begin(), expert_load.end());
  std::sort(sorted.begin(), sorted.end());
  const int E = static_cast<int>(sorted.size());
  const int with_hottest = std::max(1, E - (active_ranks - 1) * slots_per_rank);
  double total = 0;
  for (double x : sorted) total += x;
  const double mean = total / active_ranks;
  if (mean <= 0 || E == 0) return 1.0;
  double heaviest_rank = sorted.back();
  for (int i = 0; i < with_hottest - 1 && i < E - 1; ++i) heaviest_rank += sorted[i];
  return mean / std::max(mean, heaviest_rank);
}

int MovedReplicas(const LayerPlacement& from, const LayerPlacement& to) {
  int moved = 0;
  for (size_t r = 0; r < to.ranks.size(); ++r) {
    std::map<int, int> had;
    if (r < from.ranks.size()) {
      for (const Replica& rep : from.ranks[r]) ++had[rep.expert];
    }
    for (const Replica& rep : to.ranks[r]) {
      auto it = had.find(rep.expert);
      if (it != had.end() && it->second > 0) {
        --it->second;
      } else {
        ++moved;
      }
    }
  }
  return moved;
}

int MovedReplicas(const Placement& from, const Placement& to) {
  int moved = 0;
  for (const LayerPlacement& layer : to.layers) {
    const LayerPlacement* before = from.FindLayer(layer.layer_id);
    moved += MovedReplicas(before ? *before : LayerPlacement{layer.layer_id, {}}, layer);
  }
  return moved;
}

std::vector<Transfer> PlanTransfers(const Placement& from, const Placement& to) {
  std::vector<Transfer> out;
  const Topology& topo = from.topology;
  std::vector<int> sending(topo.ranks(), 0);
  std::vector<std::vector<int>> holders(from.num_experts);  // per expert, ascending ranks
  for (const LayerPlacement& layer : to.layers) {
    const LayerPlacement* now = from.FindLayer(layer.layer_id);
    if (now == nullptr) continue;
    for (auto& h : holders) h.clear();
    for (int r = 0; r < static_cast<int>(now->ranks.size()); ++r) {
      for (const Replica& rep : now->ranks[r]) {
        if (rep.expert >= 0 && rep.expert < from.num_experts && (holders[rep.expert].empty() || holders[rep.expert].back() != r)) {
          holders[rep.expert].push_back(r);
        }
      }
    }
    auto holds = [&](int rank, int expert) {
      return std::any_of(now->ranks[rank].begin(), now->ranks[rank].end(), [&](const Replica& r) { return r.expert == expert; });
    };
    for (int dst = 0; dst < static_cast<int>(layer.ranks.size()); ++dst) {
      std::set<int> added;
      for (const Replica& rep : layer.ranks[dst]) {
        if (rep.expert < 0 || rep.expert >= from.num_experts) continue;
        if (holds(dst, rep.expert) || !added.insert(rep.expert).second) continue;
        int best = -1;
        for (int src : holders[rep.expert]) {
          const bool near = topo.NodeOf(src) == topo.NodeOf(dst);
          const bool best_near = best >= 0 && topo.NodeOf(best) == topo.NodeOf(dst);
          if (best < 0 || (near && !best_near) || (near == best_near && sending[src] < sending[best])) best = src;
        }
        if (best < 0) continue;  // not held anywhere: not a valid `from`
        ++sending[best];
        out.push_back({layer.layer_id, rep.expert, best, dst});
      }
    }
  }
  return out;
}

absl::StatusOr<PlacementScore> ScorePlacement(const Placement& placement, const LoadMatrix& load,
                                              const Constraints& constraints) {
  if (load.num_experts() != placement.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("load has ", load.num_experts(),
                                                   " experts, placement has ",
                                                   placement.num_experts));
  }
  PlacementScore score;
  double sum = 0;
  for (int i = 0; i < load.num_layers(); ++i) {
    const LayerPlacement* layer = placement.FindLayer(load.layer_ids[i]);
    if (layer == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement has no layer ", load.layer_ids[i]));
    }
    const double b = Balancedness(RankLoads(*layer, load.values[i]), constraints);
    score.per_layer.push_back(b);
    sum += b;
    score.balancedness_min = std::min(score.balancedness_min, b);
  }
  score.balancedness_mean = load.num_layers() ? sum / load.num_layers() : 1.0;
  return score;
}

}  // namespace switchyard::placement
