// CUDA kernels of the MoE layer. See device_kernels.h for the launchers and
// kernels/cuda_kernels.h for the semantics (they mirror the CPU kernels).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>

#include "kernels/cuda/device_kernels.h"

namespace switchyard::kernels::cuda::device {
namespace {

constexpr int kWarp = 32;
constexpr int kGateWarpsPerBlock = 4;

// (value, id) of the better of two candidates: higher value, then lower id. id < 0 = none.
__device__ inline void Better(float& v, int& id, float v2, int id2) {
  if (id2 < 0) return;
  if (id < 0 || v2 > v || (v2 == v && id2 < id)) {
    v = v2;
    id = id2;
  }
}

__device__ inline void WarpArgMax(float& v, int& id) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float v2 = __shfl_down_sync(0xffffffffu, v, offset);
    const int id2 = __shfl_down_sync(0xffffffffu, id, offset);
    Better(v, id, v2, id2);
  }
  v = __shfl_sync(0xffffffffu, v, 0);
  id = __shfl_sync(0xffffffffu, id, 0);
}

// One warp per token. Shared memory per warp: score[E], choice[E], flags[E] (allowed /
// taken) and group_score[num_groups].
__global__ void GateKernel(GateParams p, const float* __restrict__ logits, int64_t tokens,
                           int32_t* __restrict__ ids, float* __restrict__ weights) {
  extern __shared__ float shared[];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kGateWarpsPerBlock + warp;
  if (t >= tokens) return;
  const int E = p.num_experts;
  float* score = shared + warp * (3 * E + p.num_groups);
  float* choice = score + E;
  float* flag = choice + E;  // 1 = may still be chosen
  float* group_score = flag + E;
  const float* x = logits + t * E;

  if (p.sigmoid) {
    for (int e = lane; e < E; e += kWarp) score[e] = 1.0f / (1.0f + expf(-x[e]));
  } else {
    float max = -FLT_MAX;
    for (int e = lane; e < E; e += kWarp) max = fmaxf(max, x[e]);
    for (int o = kWarp / 2; o > 0; o /= 2) max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, o));
    float sum = 0;
    for (int e = lane; e < E; e += kWarp) sum += score[e] = expf(x[e] - max);
    for (int o = kWarp / 2; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    for (int e = lane; e < E; e += kWarp) score[e] /= sum;
  }
  for (int e = lane; e < E; e += kWarp) {
    choice[e] = p.expert_bias ? score[e] + p.expert_bias[e] : score[e];
    flag[e] = 1.0f;
  }
  __syncwarp();
  if (p.num_groups > 1 && p.top_groups < p.num_groups) {
    const int size = E / p.num_groups;
    for (int g = lane; g < p.num_groups; g += kWarp) {
      float best = -FLT_MAX, second = -FLT_MAX;
      for (int e = g * size; e < (g + 1) * size; ++e) {
        if (choice[e] > best) {
          second = best;
          best = choice[e];
        } else if (choice[e] > second) {
          second = choice[e];
        }
      }
      group_score[g] = p.group_max || size < 2 ? best : best + second;
    }
    __syncwarp();
    // Keep the top_groups best groups: flag their experts 2, then clear the others.
    for (int i = 0; i < p.top_groups; ++i) {
      float v = -FLT_MAX;
      int id = -1;
      for (int g = lane; g < p.num_groups; g += kWarp) {
        if (flag[g * size] == 1.0f) Better(v, id, group_score[g], g);
      }
      WarpArgMax(v, id);
      for (int e = id * size + lane; e < (id + 1) * size; e += kWarp) flag[e] = 2.0f;
      __syncwarp();
    }
    for (int e = lane; e < E; e += kWarp) flag[e] = flag[e] == 2.0f ? 1.0f : 0.0f;
    __syncwarp();
  }
  int32_t* out_ids = ids + t * p.top_k;
  float* out_w = weights + t * p.top_k;
  for (int j = 0; j < p.top_k; ++j) {
    float v = -FLT_MAX;
    int id = -1;
    for (int e = lane; e < E; e += kWarp) {
      if (flag[e] == 1.0f) Better(v, id, choice[e], e);
    }
    WarpArgMax(v, id);
    if (lane == 0) {
      out_ids[j] = id;
      flag[id] = 0.0f;
    }
    __syncwarp();
  }
  if (lane == 0) {  // in k order, as the CPU does
    float sum = 0;
    for (int j = 0; j < p.top_k; ++j) sum += out_w[j] = score[out_ids[j]];
    const float scale = p.renormalize ? p.routed_scaling_factor / (sum + 1e-20f) : p.routed_scaling_factor;
    for (int j = 0; j < p.top_k; ++j) out_w[j] *= scale;
  }
}

// One block per row; 16-byte words when the row allows, bytes otherwise.
__global__ void MoveRowsKernel(const char* __restrict__ src, char* __restrict__ dst,
                               const int32_t* __restrict__ index, size_t row_bytes,
                               int32_t divisor, bool scatter) {
  const int64_t i = blockIdx.x;
  const int64_t from = scatter ? i : index[i] / divisor;
  const int64_t to = scatter ? index[i] : i;
  const char* s = src + from * row_bytes;
  char* d = dst + to * row_bytes;
  if (row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(s) % 16 == 0 && reinterpret_cast<uintptr_t>(d) % 16 == 0) {
    for (size_t w = threadIdx.x; w < row_bytes / 16; w += blockDim.x) {
      reinterpret_cast<int4*>(d)[w] = reinterpret_cast<const int4*>(s)[w];
    }
  } else {
    for (size_t b = threadIdx.x; b < row_bytes; b += blockDim.x) d[b] = s[b];
  }
}

// out[t, h] = sum_j w[t, j] * rows[pos[t, j], h] in j order, with explicitly rounded
// multiply and add (no contraction): the same bits as the CPU Combine.
__global__ void CombineKernel(const float* __restrict__ rows, const int32_t* __restrict__ pos,
                              const float* __restrict__ w, int top_k, int64_t hidden,
                              float* __restrict__ out) {
  const int64_t t = blockIdx.x;  // tokens on x: y and z stop at 65,535 blocks
  const int64_t h = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (h >= hidden) return;
  const int32_t* p = pos + t * top_k;
  const float* wt = w + t * top_k;
  float acc = __fmul_rn(wt[0], rows[static_cast<int64_t>(p[0]) * hidden + h]);
  for (int j = 1; j < top_k; ++j) {
    acc = __fadd_rn(acc, __fmul_rn(wt[j], rows[static_cast<int64_t>(p[j]) * hidden + h]));
  }
  out[t * hidden + h] = acc;
}

__global__ void ActivationKernel(const float* __restrict__ gu, int64_t rows, int64_t ffn, bool swiglu,
                                 __nv_bfloat16* __restrict__ act) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * ffn) return;
  const int64_t m = i / ffn, f = i % ffn;
  float v;
  if (swiglu) {
    const float g = gu[m * 2 * ffn + f], u = gu[m * 2 * ffn + ffn + f];
    v = g / (1.0f + expf(-g)) * u;
  } else {
    const float r = fmaxf(gu[m * ffn + f], 0.0f);
    v = r * r;
  }
  act[i] = __float2bfloat16_rn(v);
}

__global__ void FirstNonFiniteKernel(const float* __restrict__ x, int64_t n, unsigned long long* first) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!isfinite(x[i])) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

__global__ void ToBf16Kernel(const float* __restrict__ x, int64_t n, __nv_bfloat16* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(x[i]);
  }
}

__global__ void AddKernel(float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = __fadd_rn(x[i], y[i]);
  }
}

// One block per token: the dot product reduced over the block, then the row scaled.
__global__ void SharedGateKernel(const float* __restrict__ hidden, const float* __restrict__ gate, int64_t H,
                                 float* __restrict__ rows) {
  __shared__ float partial[kWarp];
  const int64_t t = blockIdx.x;
  const float* x = hidden + t * H;
  float sum = 0;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) sum = fmaf(x[i], gate[i], sum);
  for (int o = kWarp / 2; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = sum;
  __syncthreads();
  if (threadIdx.x < kWarp) {
    sum = threadIdx.x < blockDim.x / kWarp ? partial[threadIdx.x] : 0.0f;
    for (int o = kWarp / 2; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (threadIdx.x == 0) partial[0] = 1.0f / (1.0f + expf(-sum));
  }
  __syncthreads();
  const float scale = partial[0];
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) rows[t * H + i] *= scale;
}

cudaStream_t Stream(void* s) { return static_cast<cudaStream_t>(s); }

// Blocks of 256 threads for a grid-stride loop over n elements.
unsigned GridFor(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

}  // namespace

int LaunchFirstNonFinite(const float* x, int64_t n, unsigned long long* first, void* stream) {
  if (n == 0) return 0;
  FirstNonFiniteKernel<<<GridFor(n), 256, 0, Stream(stream)>>>(x, n, first);
  return static_cast<int>(cudaGetLastError());
}

int LaunchToBf16(const float* x, int64_t n, uint16_t* out, void* stream) {
  if (n == 0) return 0;
  ToBf16Kernel<<<GridFor(n), 256, 0, Stream(stream)>>>(x, n, reinterpret_cast<__nv_bfloat16*>(out));
  return static_cast<int>(cudaGetLastError());
}

int LaunchAdd(float* x, const float* y, int64_t n, void* stream) {
  if (n == 0) return 0;
  AddKernel<<<GridFor(n), 256, 0, Stream(stream)>>>(x, y, n);
  return static_cast<int>(cudaGetLastError());
}

int LaunchSharedGate(const float* hidden, const float* gate, int64_t tokens, int64_t hidden_size, float* rows,
                     void* stream) {
  if (tokens == 0) return 0;
  SharedGateKernel<<<static_cast<unsigned>(tokens), 256, 0, Stream(stream)>>>(hidden, gate, hidden_size, rows);
  return static_cast<int>(cudaGetLastError());
}

int LaunchGate(const GateParams& p, const float* logits, int64_t tokens, int32_t* ids,
               float* weights, void* stream) {
  if (tokens == 0) return 0;
  const size_t shared = kGateWarpsPerBlock * (3 * p.num_experts + p.num_groups) * sizeof(float);
  const unsigned blocks = static_cast<unsigned>((tokens + kGateWarpsPerBlock - 1) / kGateWarpsPerBlock);
  if (shared > 48 * 1024) {
    cudaFuncSetAttribute(GateKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
  }
  GateKernel<<<blocks, kGateWarpsPerBlock * kWarp, shared, Stream(stream)>>>(p, logits, tokens, ids, weights);
  return static_cast<int>(cudaGetLastError());
}

int LaunchGatherRows(const void* src, void* dst, const int32_t* index, int64_t rows,
                     size_t row_bytes, int32_t divisor, void* stream) {
  if (rows == 0) return 0;
  MoveRowsKernel<<<static_cast<unsigned>(rows), 256, 0, Stream(stream)>>>(
      static_cast<const char*>(src), static_cast<char*>(dst), index, row_bytes, divisor, false);
  return static_cast<int>(cudaGetLastError());
}

int LaunchScatterRows(const void* src, void* dst, const int32_t* index, int64_t rows,
                      size_t row_bytes, void* stream) {
  if (rows == 0) return 0;
  MoveRowsKernel<<<static_cast<unsigned>(rows), 256, 0, Stream(stream)>>>(
      static_cast<const char*>(src), static_cast<char*>(dst), index, row_bytes, 1, true);
  return static_cast<int>(cudaGetLastError());
}

int LaunchCombine(const float* rows, const int32_t* position, const float* weights,
                  int64_t tokens, int top_k, int64_t hidden, float* out, void* stream) {
  if (tokens == 0) return 0;
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>((hidden + 255) / 256));
  CombineKernel<<<grid, 256, 0, Stream(stream)>>>(rows, position, weights, top_k, hidden, out);
  return static_cast<int>(cudaGetLastError());
}

int LaunchActivation(const float* gu, int64_t rows, int64_t ffn, bool swiglu, uint16_t* act,
                     void* stream) {
  if (rows == 0) return 0;
  const int64_t n = rows * ffn;
  ActivationKernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, Stream(stream)>>>(
      gu, rows, ffn, swiglu, reinterpret_cast<__nv_bfloat16*>(act));
  return static_cast<int>(cudaGetLastError());
}

}  // namespace switchyard::kernels::cuda::device
