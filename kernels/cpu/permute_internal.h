// Internal to the CPU combine: the per-ISA entry point (kernels/cpu/combine_kernel.cc).
#pragma once

#include <cstdint>

#include "kernels/cpu_isa.h"

namespace switchyard::kernels::internal {

// One token of Combine (permute.h): out [hidden] = sum over j < top_k, in j order, of
// weights[j] * rows[position[j]] (rows of `hidden` floats). The same bits on every path.
using CombineTokenFn = void (*)(const float* rows, const int32_t* position, const float* weights, int top_k,
                                int64_t hidden, float* out);
CombineTokenFn CombineTokenFor(CpuIsa isa);

}  // namespace switchyard::kernels::internal
