#include "placement/planner.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "placement/eplb.h"
#include "placement/incremental.h"

namespace switchyard::placement {

std::vector<absl::string_view> PlannerNames() { return {"incremental", "eplb"}; }

absl::StatusOr<std::unique_ptr<Planner>> CreatePlanner(absl::string_view policy) {
  if (policy == "incremental") return std::make_unique<IncrementalPlanner>();
  if (policy == "eplb") return std::make_unique<EplbPlanner>();
  return absl::InvalidArgumentError(absl::StrCat("unknown policy '", policy, "' (choose one of: ",
                                                 absl::StrJoin(PlannerNames(), ", "), ")"));
}

absl::Status ValidateRequest(const PlanRequest& request) {
  SY_RETURN_IF_ERROR(request.load.Validate());
  const Topology& topo = request.topology;
  const int E = request.load.num_experts();
  if (topo.total_slots() < E) {
    return absl::InvalidArgumentError(absl::StrCat(
        topo.ranks(), " ranks x ", topo.slots_per_rank(), " slots = ", topo.total_slots(),
        " slots cannot hold ", E, " experts (need ranks x slots >= experts)"));
  }
  SY_RETURN_IF_ERROR(
      ValidateConstraints(request.constraints, topo, E, request.load.layer_ids));
  if (const Placement* current = request.current; current != nullptr) {
    if (!(current->topology == topo)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "current placement is for ", current->topology.ranks(), " ranks / ",
          current->topology.nodes(), " nodes / ", current->topology.slots_per_rank(),
          " slots per rank, the plan is for ", topo.ranks(), " / ", topo.nodes(), " / ",
          topo.slots_per_rank()));
    }
    if (current->num_experts != E) {
      return absl::InvalidArgumentError(absl::StrCat("current placement has ",
                                                     current->num_experts,
                                                     " experts, the load has ", E));
    }
    if (current->layers.size() != request.load.layer_ids.size()) {
      return absl::InvalidArgumentError(absl::StrCat("current placement has ",
                                                     current->layers.size(),
                                                     " layers, the load has ",
                                                     request.load.layer_ids.size()));
    }
    for (int layer_id : request.load.layer_ids) {
      if (current->FindLayer(layer_id) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("current placement has no layer ", layer_id, " (the load has it)"));
      }
    }
    // The current placement must itself be valid; constraints may be new, so only the
    // structural invariants are checked here.
    SY_RETURN_IF_ERROR(ValidatePlacement(*current));
  }
  if (!(request.options.min_gain_per_move >= 0 && request.options.min_gain_per_move <= 1e6) ||
      !(request.options.noise_z >= 0 && request.options.noise_z <= 1e6)) {
    return absl::InvalidArgumentError("min_gain_per_move and noise_z must be numbers in [0, 1e6]");
  }
  return absl::OkStatus();
}

}  // namespace switchyard::placement
