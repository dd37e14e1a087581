#include "placement/regroup.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace switchyard::placement {

absl::StatusOr<RegroupResult> RegroupPlacement(const Placement& before, const std::vector<int>& previous_rank,
                                               const Topology& topology, const LoadMatrix* load) {
  const int R = topology.ranks(), S = topology.slots_per_rank(), E = before.num_experts;
  if (static_cast<int>(previous_rank.size()) != R) {
    return absl::InvalidArgumentError(absl::StrCat("regroup: ", previous_rank.size(), " previous ranks for ", R, " ranks"));
  }
  if (S < before.topology.slots_per_rank()) {
    return absl::InvalidArgumentError(absl::StrCat("regroup: ", S, " slots per rank, fewer than the placement's ",
                                                   before.topology.slots_per_rank()));
  }
  std::vector<bool> taken(before.topology.ranks(), false);
  for (int p : previous_rank) {
    if (p < -1 || p >= before.topology.ranks() || (p >= 0 && taken[p])) {
      return absl::InvalidArgumentError(absl::StrCat("regroup: previous rank ", p, " is out of range or repeated"));
    }
    if (p >= 0) taken[p] = true;
  }
  if (static_cast<int64_t>(R) * S < E) {
    return absl::FailedPreconditionError(
        absl::StrCat("regroup: ", R, " ranks x ", S, " slots cannot hold the ", E, " experts once; start more workers"));
  }
  if (load != nullptr && (load->num_layers() != static_cast<int>(before.layers.size()) || load->num_experts() != E)) {
    return absl::InvalidArgumentError("regroup: the load does not have the placement's layers and experts");
  }
  RegroupResult out;
  out.placement.topology = topology;
  out.placement.num_experts = E;
  for (size_t li = 0; li < before.layers.size(); ++li) {
    const LayerPlacement& old = before.layers[li];
    auto weight = [&](int e) { return load != nullptr ? load->values[li][e] : 1.0; };
    LayerPlacement next;
    next.layer_id = old.layer_id;
    next.ranks.resize(R);
    std::vector<int> replicas(E, 0);
    for (int q = 0; q < R; ++q) {
      if (previous_rank[q] < 0) continue;
      next.ranks[q] = old.ranks[previous_rank[q]];
      for (const Replica& x : next.ranks[q]) ++replicas[x.expert];
    }
    // Shares renormalised over the surviving replicas (equal when they all had share 0).
    std::vector<double> share_sum(E, 0.0);
    for (const auto& rank : next.ranks) {
      for (const Replica& x : rank) share_sum[x.expert] += x.share;
    }
    for (auto& rank : next.ranks) {
      for (Replica& x : rank) x.share = share_sum[x.expert] > 0 ? x.share / share_sum[x.expert] : 1.0 / replicas[x.expert];
    }
    std::vector<int> orphans;
    for (int e = 0; e < E; ++e) {
      if (replicas[e] == 0) orphans.push_back(e);
    }
    std::stable_sort(orphans.begin(), orphans.end(), [&](int a, int b) { return weight(a) > weight(b); });
    std::vector<double> rank_load(R, 0.0);
    for (int q = 0; q < R; ++q) {
      for (const Replica& x : next.ranks[q]) rank_load[q] += weight(x.expert) * x.share;
    }
    for (int e : orphans) {
      int best = -1;
      for (int q = 0; q < R; ++q) {
        if (static_cast<int>(next.ranks[q].size()) < S && (best < 0 || rank_load[q] < rank_load[best])) best = q;
      }
      if (best >= 0) {
        next.ranks[best].push_back({e, 1.0});
      } else {
        // Over an extra replica: of the expert with the most, then the least load per replica.
        int victim = -1;
        for (int x = 0; x < E; ++x) {
          if (replicas[x] < 2) continue;
          if (victim < 0 || replicas[x] > replicas[victim] ||
              (replicas[x] == replicas[victim] && weight(x) / replicas[x] < weight(victim) / replicas[victim])) {
            victim = x;
          }
        }
        if (victim < 0) return absl::InternalError("regroup: no extra replica to give up although the slots suffice");
        int q_best = -1, slot_best = -1;
        for (int q = 0; q < R; ++q) {
          for (int i = 0; i < static_cast<int>(next.ranks[q].size()); ++i) {
            if (next.ranks[q][i].expert == victim && (q_best < 0 || rank_load[q] > rank_load[q_best])) {
              q_best = q;
              slot_best = i;
            }
          }
        }
        const double freed = next.ranks[q_best][slot_best].share;
        rank_load[q_best] -= weight(victim) * freed;
        next.ranks[q_best][slot_best] = {e, 1.0};
        --replicas[victim];
        for (int q = 0; q < R; ++q) {  // the victim's other replicas take its share
          for (Replica& x : next.ranks[q]) {
            if (x.expert != victim) continue;
            const double grown = freed < 1 ? x.share / (1 - freed) : 1.0 / replicas[victim];
            rank_load[q] += weight(victim) * (grown - x.share);
            x.share = grown;
          }
        }
        best = q_best;
        ++out.evicted;
      }
      replicas[e] = 1;
      rank_load[best] += weight(e);
      ++out.replaced;
    }
    out.placement.layers.push_back(std::move(next));
  }
  if (absl::Status valid = ValidatePlacement(out.placement); !valid.ok()) {
    return absl::InternalError(absl::StrCat("regroup produced an invalid placement: ", valid.message()));
  }
  return out;
}

}  // namespace switchyard::placement
