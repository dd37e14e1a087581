// CUDA implementations of the kernels, behind a host-side API with no CUDA types: device
// pointers are plain pointers, the stream is an opaque `void*` (a cudaStream_t; null = the
// default stream). Semantics match the CPU kernels (gating.h, permute.h, ffn.h); the tests
// (label gpu) compare them. Calls are asynchronous on the stream; errors are Status values
// naming the failing CUDA or cuBLAS call.
//
// Built when SWITCHYARD_HAVE_CUDA; on a machine without a GPU every call returns
// FailedPrecondition (CudaDeviceCount() is 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ffn.h"
#include "kernels/gating.h"

namespace switchyard::kernels::cuda {

// GPUs visible to this process (0 without a driver or device; never fails).
int DeviceCount();
// Why there is no usable GPU ("" when there is one).
std::string NoGpuReason();

// Device memory owned by the caller's code (RAII over cudaMalloc/cudaFree).
class DeviceBuffer {
 public:
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  ~DeviceBuffer();
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

struct DeviceProperties {
  std::string name;
  double memory_bandwidth_gbs = 0;  // peak: 2 x memory clock x bus width
};
absl::StatusOr<DeviceProperties> GetDeviceProperties();

// Complete on return (visible to every stream).
absl::Status CopyToDevice(void* dst, const void* src, size_t bytes);
absl::Status CopyToHost(void* dst, const void* src, size_t bytes);
// Queued on `stream`; with pageable host memory they may also run synchronously. Keep the
// host side unchanged until Synchronize(stream).
absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes, void* stream);
absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes, void* stream);
absl::Status Synchronize(void* stream);

// gating.h on the device: logits [tokens, E] -> ids, weights [tokens, k]. config.expert_bias
// must point to device memory.
absl::Status GateCuda(const GatingConfig& config, const float* logits, int64_t tokens,
                      int32_t* expert_ids, float* weights, void* stream);

// permute.h on the device.
absl::Status GatherRowsCuda(const void* src, void* dst, const int32_t* index, int64_t rows,
                            size_t row_bytes, int32_t divisor, void* stream);
absl::Status ScatterRowsCuda(const void* src, void* dst, const int32_t* index, int64_t rows,
                             size_t row_bytes, void* stream);
absl::Status CombineCuda(const float* rows, const int32_t* position, const float* weights,
                         int64_t tokens, int top_k, int64_t hidden, float* out, void* stream);

// The layer step's small kernels (worker/cuda_device.cc), all on `stream`:
// *first = min(*first, i) over the non-finite x[i], i < n (the caller sets *first, e.g. to n).
absl::Status FirstNonFiniteCuda(const float* x, int64_t n, uint64_t* first, void* stream);
// out[i] = bf16(x[i]), nearest even (the CPU's FloatToBf16).
absl::Status ToBf16Cuda(const float* x, int64_t n, bf16* out, void* stream);
// x[i] = x[i] + y[i].
absl::Status AddCuda(float* x, const float* y, int64_t n, void* stream);
// rows[t, :] *= sigmoid(hidden[t, :] . gate) (Qwen's shared-expert gate), gate [hidden_size].
absl::Status SharedGateCuda(const float* hidden, const float* gate, int64_t tokens, int64_t hidden_size,
                            float* rows, void* stream);

// One expert's bf16 weights on the device, Hugging Face layout: gate_up = [gate; up] as
// [2 * ffn, hidden] (SwiGLU) or up [ffn, hidden] (ReLU^2); down [hidden, ffn].
struct CudaExpert {
  const bf16* gate_up = nullptr;
  const bf16* down = nullptr;
};

// Grouped bf16 FFN with cuBLAS (bf16 inputs, fp32 accumulation): rows
// [row_offsets[s], +row_counts[s]) of `input` (bf16 [rows, hidden]) through expert slots[s]
// into `output` (fp32 [rows, hidden]). Offsets and counts are host arrays. Holds a cuBLAS
// handle and an activation workspace; one instance per stream.
class CudaFfn {
 public:
  static absl::StatusOr<std::unique_ptr<CudaFfn>> Create(const FfnShape& shape, void* stream);
  virtual ~CudaFfn() = default;
  virtual absl::Status Run(const CudaExpert* slots, const int64_t* row_offsets,
                           const int64_t* row_counts, int num_slots, const bf16* input,
                           float* output) = 0;
};

// One dense bf16 GEMM (fp32 accumulation and output), row-major: c [m, n] = a [m, k] .
// b^T with b [n, k] (the layout of a weight matrix). The peer the grouped FFN is measured
// against.
class CudaDenseGemm {
 public:
  static absl::StatusOr<std::unique_ptr<CudaDenseGemm>> Create(void* stream);
  virtual ~CudaDenseGemm() = default;
  virtual absl::Status Run(int64_t m, int64_t n, int64_t k, const bf16* a, const bf16* b, float* c) = 0;
};

}  // namespace switchyard::kernels::cuda
