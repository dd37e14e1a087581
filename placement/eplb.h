// DeepSeek's EPLB (github.com/deepseek-ai/EPLB, eplb.py), reimplemented faithfully: the
// baseline Switchyard's own planner is measured against.
//
// Per layer: replicate (give each extra slot to the expert with the highest load per replica),
// then balanced packing (heaviest item first onto the lightest pack that still has room).
// Hierarchical policy when groups % nodes == 0: pack expert groups onto nodes, replicate
// within each node, pack onto the node's ranks. Otherwise the global policy (one group, one
// node). Ties break to the lowest index. Every slot is filled; each replica of an expert gets
// share 1/replicas. EPLB ignores the current placement: it always re-plans from scratch.
//
// Constraints, which EPLB does not know: drained ranks are left out (global policy over the
// others); an unmet pin is then satisfied by exchanging a replica of the pinned expert with a
// replica on the pinned rank (replica counts, hence validity, are unchanged).
#pragma once

#include <vector>

#include "placement/planner.h"

namespace switchyard::placement {

class EplbPlanner : public Planner {
 public:
  absl::string_view name() const override { return "eplb"; }
  absl::StatusOr<Placement> Plan(const PlanRequest& request) const override;
};

// The core of eplb.py's rebalance_experts for one layer: returns phy2log, the logical expert
// of each of `num_physical` slots (slot i of gpu g is index g * num_physical / num_gpus + i).
// Requires num_physical % num_gpus == 0, num_gpus % num_nodes == 0, num_physical >= experts.
std::vector<int> EplbPhysicalToLogical(const std::vector<double>& weight, int num_physical,
                                       int num_groups, int num_nodes, int num_gpus);

}  // namespace switchyard::placement
