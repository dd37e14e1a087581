// Planner: computes a placement from expert load, optionally starting from the current one.
//
// Planners are pure (STYLE.md "Pure policies"): plain values in, a Placement or a Status out;
// no I/O, clock, threads or globals; deterministic (same request -> same placement). They are
// safe to call from any thread; a planner object holds no mutable state.
//
// Every planner honours: slot capacity, >= 1 replica per expert, shares >= 0 summing to 1,
// pins and drained ranks (Constraints). Bad requests return InvalidArgument /
// FailedPrecondition naming the problem.
#pragma once

#include <memory>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "placement/load.h"
#include "placement/placement.h"
#include "placement/topology.h"

namespace switchyard::placement {

struct PlanOptions {
  // Budget of moved replicas over all layers (see metrics.h); < 0 means none. Counted against
  // `current`; ignored without one.
  int max_moves = -1;
  // incremental: a move must lower its layer's max rank load by at least this fraction of the
  // layer's mean rank load, per moved replica ...
  double min_gain_per_move = 0.001;
  // ... and by at least noise_z standard deviations of the Poisson noise of the bottleneck
  // rank's load (sqrt(load), loads in token counts), so sampling noise causes no churn.
  double noise_z = 2.0;
  // eplb: expert groups (DeepSeek-V3's n_group). The hierarchical policy is used when
  // groups % nodes == 0 and no rank is drained, else the global one.
  int eplb_groups = 1;
};

struct PlanRequest {
  Topology topology;
  LoadMatrix load;
  // The placement now in force, or null to plan from scratch. Must have the request's
  // topology, expert count and layers.
  const Placement* current = nullptr;
  Constraints constraints;
  PlanOptions options;
};

class Planner {
 public:
  virtual ~Planner() = default;
  virtual absl::string_view name() const = 0;
  virtual absl::StatusOr<Placement> Plan(const PlanRequest& request) const = 0;
};

// "incremental" (the default) or "eplb". Unknown names: InvalidArgument listing the choices.
absl::StatusOr<std::unique_ptr<Planner>> CreatePlanner(absl::string_view policy);
std::vector<absl::string_view> PlannerNames();
inline constexpr absl::string_view kDefaultPolicy = "incremental";

// Checks a request: load valid, current placement (if any) matching topology, experts and
// layers, constraints valid. Planners call it first; exposed for callers that want the error
// before planning.
absl::Status ValidateRequest(const PlanRequest& request);

}  // namespace switchyard::placement
