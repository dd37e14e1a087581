// Placement: which expert sits in which slot of which rank, per MoE layer, with shares.
//
// A replica is one copy of a logical expert's weights in one slot. An expert's tokens are
// split among its replicas by their shares (>= 0, summing to 1 per expert per layer); the
// worker's routing table turns shares into a deterministic token -> replica choice.
// Placements are plain values: planners return them, the coordinator versions them as epochs.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "placement/topology.h"

namespace switchyard::placement {

struct Replica {
  int expert = 0;
  double share = 1.0;
  friend bool operator==(const Replica&, const Replica&) = default;
};

struct LayerPlacement {
  int layer_id = 0;
  // ranks[r]: the replicas rank r holds, in slot order (slot i of rank r = ranks[r][i]);
  // at most slots_per_rank entries. Fewer means free slots.
  std::vector<std::vector<Replica>> ranks;
  friend bool operator==(const LayerPlacement&, const LayerPlacement&) = default;
};

// Most logical experts per layer a placement may hold.
inline constexpr int kMaxExperts = 1 << 16;

struct Placement {
  Topology topology;
  int num_experts = 0;
  std::vector<LayerPlacement> layers;  // ascending layer_id

  const LayerPlacement* FindLayer(int layer_id) const;
  int TotalReplicas() const;
  friend bool operator==(const Placement&, const Placement&) = default;
};

inline constexpr int kAllLayers = -1;

// Pin: `expert` must keep a replica on `rank` (in one layer, or in every layer with
// kAllLayers). Other replicas of the expert may exist elsewhere.
struct Pin {
  int layer_id = kAllLayers;
  int expert = 0;
  int rank = 0;
  friend bool operator==(const Pin&, const Pin&) = default;
};

// Hard constraints every planner honours on top of slot capacity and >= 1 replica per expert.
struct Constraints {
  std::vector<Pin> pins;
  std::vector<int> drained_ranks;  // hold nothing

  bool IsDrained(int rank) const;
  // Ranks pinned for `expert` in `layer_id` (pins for kAllLayers included).
  bool IsPinned(int layer_id, int expert, int rank) const;
};

// Checks constraints against a cluster shape: ranks and experts in range, no pin on a drained
// rank, no more pins on a rank than it has slots, enough undrained slots for every expert.
// `layer_ids` are the layers a plan covers (a pin naming another layer is an error).
absl::Status ValidateConstraints(const Constraints& constraints, const Topology& topology,
                                 int num_experts, const std::vector<int>& layer_ids);

// Checks every placement invariant (DESIGN.md section 6) and the constraints: rank count,
// slot capacity, expert ids in range, >= 1 replica per expert, shares finite, >= 0, summing
// to 1 (within 1e-6) per expert, pins held, drained ranks empty. The error names the layer,
// rank or expert.
absl::Status ValidatePlacement(const Placement& placement, const Constraints& constraints = {});

// Experts split into R contiguous blocks (expert e on rank floor(e * R / E)), one replica
// each: the static placement of a plain expert-parallel launch. Fails if a block does not fit
// in slots_per_rank.
absl::StatusOr<Placement> ContiguousPlacement(const Topology& topology, int num_experts,
                                              const std::vector<int>& layer_ids);

}  // namespace switchyard::placement
