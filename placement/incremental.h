// Switchyard's own planner: improves the placement in force with few moves.
//
// Starting from the current placement it first re-solves shares among the existing replicas
// (free: no bytes move), then makes forced moves (drained ranks emptied, pins honoured), then
// greedily relieves the most loaded rank group with the move that lowers its load most per
// moved replica:
//   - add a replica of one of its experts on a lightly loaded rank (into a free slot, or in
//     place of a redundant replica there)                                    cost 1
//   - move one of its replicas into a free slot elsewhere                    cost 1
//   - exchange one of its replicas with a lighter one on another rank        cost 2
// Each candidate is tried for real (shares re-solved) before it is taken. It stops when the
// best gain per moved replica is below max(min_gain_per_move x mean rank load,
// noise_z x sqrt(bottleneck load)), or when the move budget is spent. With a budget, moves go
// to the layers where they gain most.
//
// Without a current placement it builds one from scratch (replica counts by highest load per
// replica, heaviest-first packing onto the lightest rank, share solve), then runs the same
// improvement with no gain threshold.
#pragma once

#include "placement/planner.h"

namespace switchyard::placement {

class IncrementalPlanner : public Planner {
 public:
  absl::string_view name() const override { return "incremental"; }
  absl::StatusOr<Placement> Plan(const PlanRequest& request) const override;
};

}  // namespace switchyard::placement
