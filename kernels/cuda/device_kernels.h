// Launchers of the CUDA kernels (device_kernels.cu). Plain C++ on both sides of nvcc: no
// CUDA or abseil types. Each returns the cudaError_t of the launch as an int (0 = success).
#pragma once

#include <cstddef>
#include <cstdint>

namespace switchyard::kernels::cuda::device {

struct GateParams {
  int num_experts;
  int top_k;
  bool sigmoid;
  bool renormalize;
  int num_groups;
  int top_groups;
  float routed_scaling_factor;
  const float* expert_bias;  // device, or null
  bool group_max;            // a group scores its best expert (else the sum of its best two)
};

int LaunchGate(const GateParams& p, const float* logits, int64_t tokens, int32_t* ids,
               float* weights, void* stream);
int LaunchGatherRows(const void* src, void* dst, const int32_t* index, int64_t rows,
                     size_t row_bytes, int32_t divisor, void* stream);
int LaunchScatterRows(const void* src, void* dst, const int32_t* index, int64_t rows,
                      size_t row_bytes, void* stream);
int LaunchCombine(const float* rows, const int32_t* position, const float* weights,
                  int64_t tokens, int top_k, int64_t hidden, float* out, void* stream);
// act[m, f] = bf16(silu(gu[m, f]) * gu[m, ffn + f]) (swiglu) or bf16(max(gu[m, f], 0)^2),
// gu fp32 [rows, 2 * ffn] (swiglu) or [rows, ffn].
int LaunchActivation(const float* gu, int64_t rows, int64_t ffn, bool swiglu, uint16_t* act,
                     void* stream);

// *first = min(*first, i) over the i < n with x[i] not finite (*first set by the caller).
int LaunchFirstNonFinite(const float* x, int64_t n, unsigned long long* first, void* stream);
// out[i] = bf16(x[i]) (nearest even).
int LaunchToBf16(const float* x, int64_t n, uint16_t* out, void* stream);
// x[i] = x[i] + y[i].
int LaunchAdd(float* x, const float* y, int64_t n, void* stream);
// rows[t, :] *= sigmoid(hidden[t, :] . gate), t < tokens.
int LaunchSharedGate(const float* hidden, const float* gate, int64_t tokens, int64_t hidden_size, float* rows,
                     void* stream);

}  // namespace switchyard::kernels::cuda::device
