// Regroup: the placement of a job whose ranks changed — a rank lost or removed, a newcomer —
// computed the same way on every member (it is deterministic), so the members agree on it
// without a coordinator (DESIGN.md section 8).
//
// Survivors keep their slots exactly as they were (no weights move). Experts left without a
// replica (all of them sat on ranks that left) are re-placed, heaviest first by `load`: into a
// free slot of the least loaded rank that has one (a newcomer's empty slots count), else over
// the replica of an expert that has several (the one with the most replicas, then the least
// load per replica; its replica on the most loaded rank), never over an expert's last replica.
// Shares: an expert's surviving replicas keep their ratios, renormalised to sum to 1; a
// re-placed expert's one replica has share 1. The caller loads the re-placed experts' weights
// from the weight source (no surviving rank holds them).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "placement/load.h"
#include "placement/placement.h"
#include "placement/topology.h"

namespace switchyard::placement {

struct RegroupResult {
  Placement placement;
  int replaced = 0;  // experts (over all layers) that had no replica left
  int evicted = 0;   // extra replicas given up for them
};

// `previous_rank[q]`: new rank q's rank in `before` (-1: a newcomer, which starts empty); each
// rank of `before` appears at most once. `topology`: the new cluster, with at least before's
// slots per rank (more: room for the orphans when there were no spare slots). `load` (null: uniform) has before's layers and experts. InvalidArgument for a mapping
// or topology that does not fit; FailedPrecondition when the survivors' slots cannot hold
// every expert once.
absl::StatusOr<RegroupResult> RegroupPlacement(const Placement& before, const std::vector<int>& previous_rank,
                                               const Topology& topology, const LoadMatrix* load = nullptr);

}  // namespace switchyard::placement
