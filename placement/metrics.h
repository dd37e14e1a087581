// Metrics over placements and loads. Pure functions.
//
// balancedness = mean rank load / max rank load over the ranks that can hold experts
//                (1.0 = perfect; drained ranks are left out of the mean).
// moved replicas = replicas a rank must newly receive to go from placement A to B: for each
//                  layer and rank, the experts B puts there beyond the copies A already had.
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/load.h"
#include "placement/placement.h"

namespace switchyard::placement {

// Load each rank receives: sum over its replicas of expert load x share.
std::vector<double> RankLoads(const LayerPlacement& layer, std::span<const double> expert_load);

// mean / max over the ranks not in `drained`; 1.0 when every rank is idle.
double Balancedness(std::span<const double> rank_loads, const Constraints& constraints = {});

// Upper bounds on the balancedness of a placement without replication (one replica per
// expert), mean = total / active ranks:
//   NoRedundancyBound:  mean / max(mean, hottest expert);
//   SlotCountBound:     also counts slots: when the other ranks cannot hold all the other
//                       experts, the hottest expert's rank holds k = E - (R - 1) * S of
//                       them too, at best the k - 1 coldest. With E = R * S (every slot
//                       full) that is mean / max(mean, hottest + (S - 1) coldest).
double NoRedundancyBound(std::span<const double> expert_load, int active_ranks);
double SlotCountBound(std::span<const double> expert_load, int active_ranks, int slots_per_rank);

int MovedReplicas(const LayerPlacement& from, const LayerPlacement& to);

// Sum over layers (matched by id). Layers of `to` missing from `from` count all replicas.
int MovedReplicas(const Placement& from, const Placement& to);

// One replica a migration copies: expert `expert` of layer `layer_id`, from a rank holding
// it now to a rank that will hold it.
struct Transfer {
  int layer_id = 0, expert = 0, from = 0, to = 0;
  bool operator==(const Transfer&) const = default;
};

// What going from `from` to `to` copies: one transfer per expert a rank holds in `to` and
// not in `from` (layers matched by id; layers missing from `from` are skipped). The source is
// a holder on the destination's node when there is one, else any holder; among candidates
// the one with the fewest transfers so far, so that sending spreads. In layer, rank, slot
// order of `to`.
std::vector<Transfer> PlanTransfers(const Placement& from, const Placement& to);

struct PlacementScore {
  double balancedness_mean = 1.0;
  double balancedness_min = 1.0;
  std::vector<double> per_layer;  // in load row order
};

// Balancedness of `placement` under `load` (rows matched by layer id). Fails if a load layer
// has no placement layer or the expert counts differ.
absl::StatusOr<PlacementScore> ScorePlacement(const Placement& placement, const LoadMatrix& load,
                                              const Constraints& constraints = {});

}  // namespace switchyard::placement
