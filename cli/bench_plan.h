// `switchyard bench plan`: the placement engine's targets, measured on the shared traces
// (DeepSeek-V3 aggregates, Qwen1.5-MoE per-step windows): static balance against EPLB and the
// no-redundancy bound, drift (balance kept vs replicas moved), churn on noisy windows, and
// planning time.
#pragma once

#include "absl/status/status.h"

namespace switchyard::cli {

absl::Status RunPlanBenchmark();

}  // namespace switchyard::cli
