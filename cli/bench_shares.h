// `switchyard bench shares`: per-step balance with per-step shares against the epoch's shares,
// on the same replicas (placement/step_shares.h, issue "per-step shares").
//
// For each DeepSeek-V3 trace profile: 32 ranks x 9 slots, an EPLB placement planned on the
// profile's load (8 layers). Every step draws 8,192 tokens x top-8 from each layer's load (256
// tokens per rank); steps 40-79 of 120 are a collapse burst (3 cold experts per layer take 35%
// of the pairs). Per (step, layer): balancedness = mean / max of the pairs each rank computes,
// with the epoch's shares (each pair drawn by RoutingTable, as `--shares epoch` routes) and
// with the per-step solver (`--shares step`). Reports p50 and p99 (the value 99% of steps
// reach) for both, over all steps and over the burst, and the solver's time per layer.
#pragma once

#include "absl/status/status.h"

namespace switchyard::cli {

absl::Status RunSharesBenchmark();

}  // namespace switchyard::cli
