// The placement file format, `switchyard.placement/v1` (JSON), written by `switchyard plan`
// and read by `plan --current`, the worker (`--placement`) and the coordinator:
//
//   {"format": "switchyard.placement/v1", "policy": "incremental",
//    "ranks": 4, "nodes": 1, "slots_per_rank": 3, "experts": 8,
//    "layers": [{"layer": 3, "ranks": [[{"expert": 0, "share": 1.0}, ...], ...]}, ...],
//    "summary": {"balancedness_mean": .., "balancedness_min": .., "moved_replicas": ..,
//                "plan_ms": ..}}
//
// `ranks` lists ranks 0..R-1, each the replicas it holds in slot order. `summary` and
// `policy` are informational; a reader ignores them.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "placement/placement.h"

namespace switchyard::placement {

inline constexpr absl::string_view kPlacementFormat = "switchyard.placement/v1";

struct PlacementSummary {
  double balancedness_mean = 0;
  double balancedness_min = 0;
  int moved_replicas = 0;
  double plan_ms = 0;
};

std::string PlacementToJson(const Placement& placement, absl::string_view policy,
                            const std::optional<PlacementSummary>& summary);

// Parses and validates (ValidatePlacement) a placement; errors name the file and the field.
absl::StatusOr<Placement> ParsePlacementJson(absl::string_view text, absl::string_view file_name);
absl::StatusOr<Placement> ReadPlacementJson(const std::string& path);

}  // namespace switchyard::placement
