// `switchyard bench kernels`: the CPU kernels of one MoE layer against their peers, measured
// in the same run and interleaved (this machine's speed drifts): the grouped FFN against one
// OpenBLAS sgemm of the same FLOPs; permute and combine against memcpy of the same bytes;
// gating in tokens/s.
#pragma once

#include "absl/status/status.h"

namespace switchyard::cli {

absl::Status RunKernelsBenchmark();

}  // namespace switchyard::cli
