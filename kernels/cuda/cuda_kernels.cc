// Host side of the CUDA kernels: Status conversion, device memory, cuBLAS.
#include "kernels/cuda_kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/device_kernels.h"

// Wrap foreign error codes at the boundary into a Status naming the call, file and line.
#define SY_CUDA_CHECK(expr)                                                                    \
  do {                                                                                         \
    const cudaError_t sy_err_ = static_cast<cudaError_t>(expr);                                \
    if (sy_err_ != cudaSuccess) {                                                              \
      return ::absl::InternalError(::absl::StrCat(#expr, " failed at ", __FILE__, ":",         \
                                                  __LINE__, ": ", cudaGetErrorString(sy_err_))); \
    }                                                                                          \
  } while (false)

#define SY_CUBLAS_CHECK(expr)                                                                   \
  do {                                                                                          \
    const cublasStatus_t sy_err_ = (expr);                                                      \
    if (sy_err_ != CUBLAS_STATUS_SUCCESS) {                                                     \
      return ::absl::InternalError(::absl::StrCat(#expr, " failed at ", __FILE__, ":", __LINE__, \
                                                  ": cuBLAS status ", static_cast<int>(sy_err_))); \
    }                                                                                           \
  } while (false)

namespace switchyard::kernels::cuda {
namespace {

absl::Status RequireGpu() {
  if (DeviceCount() == 0) return absl::FailedPreconditionError(NoGpuReason());
  return absl::OkStatus();
}

}  // namespace

int DeviceCount() {
  int n = 0;  // cudaGetDeviceCount leaves it unwritten without a driver
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

std::string NoGpuReason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    // Without any NVIDIA driver the runtime says "driver version is insufficient": name the
    // situation first, the runtime's words after.
    return absl::StrCat("no usable GPU on this machine (no NVIDIA driver, or one too old for this build; "
                        "cudaGetDeviceCount: ", cudaGetErrorString(err), ")");
  }
  return n == 0 ? "no usable GPU on this machine (no CUDA device found)" : "";
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  SY_RETURN_IF_ERROR(RequireGpu());
  DeviceBuffer buffer;
  if (bytes > 0) SY_CUDA_CHECK(cudaMalloc(&buffer.data_, bytes));
  buffer.bytes_ = bytes;
  return buffer;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_) cudaFree(data_);
}

absl::StatusOr<DeviceProperties> GetDeviceProperties() {
  SY_RETURN_IF_ERROR(RequireGpu());
  int device = 0, clock_khz = 0, bus_bits = 0;
  SY_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop;
  SY_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  SY_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device));
  SY_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  return DeviceProperties{prop.name, 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9};
}

absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) {
  SY_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  // From pageable memory cudaMemcpy may return before the DMA has landed; other streams (a
  // non-blocking one) do not wait for the default stream.
  SY_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  return absl::OkStatus();
}

absl::Status CopyToHost(void* dst, const void* src, size_t bytes) {
  SY_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return absl::OkStatus();
}

absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return absl::OkStatus();
  SY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
  return absl::OkStatus();
}

absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return absl::OkStatus();
  SY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)));
  return absl::OkStatus();
}

absl::Status Synchronize(void* stream) {
  SY_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
  return absl::OkStatus();
}

absl::Status GateCuda(const GatingConfig& config, const float* logits, int64_t tokens,
                      int32_t* expert_ids, float* weights, void* stream) {
  SY_RETURN_IF_ERROR(config.Validate());
  SY_RETURN_IF_ERROR(RequireGpu());
  const device::GateParams p{config.num_experts, config.top_k,
                             config.score == ScoreFunction::kSigmoid, config.renormalize,
                             config.num_groups, config.top_groups,
                             config.routed_scaling_factor, config.expert_bias,
                             config.group_score == GroupScore::kMax};
  SY_CUDA_CHECK(device::LaunchGate(p, logits, tokens, expert_ids, weights, stream));
  return absl::OkStatus();
}

absl::Status GatherRowsCuda(const void* src, void* dst, const int32_t* index, int64_t rows,
                            size_t row_bytes, int32_t divisor, void* stream) {
  SY_RETURN_IF_ERROR(RequireGpu());
  SY_CUDA_CHECK(device::LaunchGatherRows(src, dst, index, rows, row_bytes, divisor, stream));
  return absl::OkStatus();
}

absl::Status ScatterRowsCuda(const void* src, void* dst, const int32_t* index, int64_t rows,
                             size_t row_bytes, void* stream) {
  SY_RETURN_IF_ERROR(RequireGpu());
  SY_CUDA_CHECK(device::LaunchScatterRows(src, dst, index, rows, row_bytes, stream));
  return absl::OkStatus();
}

absl::Status CombineCuda(const float* rows, const int32_t* position, const float* weights,
                         int64_t tokens, int top_k, int64_t hidden, float* out, void* stream) {
  SY_RETURN_IF_ERROR(RequireGpu());
  SY_CUDA_CHECK(device::LaunchCombine(rows, position, weights, tokens, top_k, hidden, out, stream));
  return absl::OkStatus();
}

absl::Status FirstNonFiniteCuda(const float* x, int64_t n, uint64_t* first, void* stream) {
  SY_RETURN_IF_ERROR(RequireGpu());
  static_assert(sizeof(uint64_t) == sizeof(unsigned long long));
  SY_CUDA_CHECK(device::LaunchFirstNonFinite(x, n, reinterpret_cast<unsigned long long*>(first), stream));
  return absl::OkStatus();
}

absl::Status ToBf16Cuda(const float* x, int64_t n, bf16* out, void* stream) {
  SY_RETURN_IF_ERROR(RequireGpu());
  SY_CUDA_CHECK(device::LaunchToBf16(x, n, out, stream));
  return absl::OkStatus();
}

absl::Status AddCuda(float* x, const float* y, int64_t n, void* stream) {
  SY_RETURN_IF_ERROR(RequireGpu());
  SY_CUDA_CHECK(device::LaunchAdd(x, y, n, stream));
  return absl::OkStatus();
}

absl::Status SharedGateCuda(const float* hidden, const float* gate, int64_t tokens, int64_t hidden_size,
                            float* rows, void* stream) {
  SY_RETURN_IF_ERROR(RequireGpu());
  SY_CUDA_CHECK(device::LaunchSharedGate(hidden, gate, tokens, hidden_size, rows, stream));
  return absl::OkStatus();
}

namespace {

class CublasFfn final : public CudaFfn {
 public:
  CublasFfn(const FfnShape& shape, cudaStream_t stream, cublasHandle_t handle)
      : shape_(shape), stream_(stream), handle_(handle) {}
  ~CublasFfn() override { cublasDestroy(handle_); }

  absl::Status Run(const CudaExpert* slots, const int64_t* row_offsets, const int64_t* row_counts,
                   int num_slots, const bf16* input, float* output) override {
    const int64_t H = shape_.hidden, F = shape_.ffn;
    const bool swiglu = shape_.activation == Activation::kSwiGlu;
    const int64_t n1 = swiglu ? 2 * F : F;
    const float one = 1.0f, zero = 0.0f;
    for (int s = 0; s < num_slots; ++s) {
      const int64_t M = row_counts[s];
      if (M == 0) continue;
      if (slots[s].gate_up == nullptr || slots[s].down == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("slot ", s, ": rows but no weights"));
      }
      SY_RETURN_IF_ERROR(Reserve(M, n1, F));
      // Column-major view: gu^T [n1 x M] = W [n1 x H] . x^T, W row-major = (H x n1)^T.
      SY_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, n1, M, H, &one,
                                   slots[s].gate_up, CUDA_R_16BF, H, input + row_offsets[s] * H,
                                   CUDA_R_16BF, H, &zero, gu_.data(), CUDA_R_32F, n1,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      SY_CUDA_CHECK(device::LaunchActivation(gu_.as<float>(), M, F, swiglu, act_.as<uint16_t>(), stream_));
      SY_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, H, M, F, &one, slots[s].down,
                                   CUDA_R_16BF, F, act_.data(), CUDA_R_16BF, F, &zero,
                                   output + row_offsets[s] * H, CUDA_R_32F, H, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Reserve(int64_t rows, int64_t n1, int64_t ffn) {
    if (rows <= capacity_) return absl::OkStatus();
    SY_CUDA_CHECK(cudaStreamSynchronize(stream_));  // buffers may be in use by queued work
    SY_ASSIGN_OR_RETURN(gu_, DeviceBuffer::Allocate(rows * n1 * sizeof(float)));
    SY_ASSIGN_OR_RETURN(act_, DeviceBuffer::Allocate(rows * ffn * sizeof(bf16)));
    capacity_ = rows;
    return absl::OkStatus();
  }

  FfnShape shape_;
  cudaStream_t stream_;
  cublasHandle_t handle_;
  DeviceBuffer gu_, act_;
  int64_t capacity_ = 0;
};

// A cuBLAS handle bound to a stream; destroyed with its owner.
absl::StatusOr<cublasHandle_t> HandleFor(void* stream) {
  SY_RETURN_IF_ERROR(RequireGpu());
  cublasHandle_t handle;
  SY_CUBLAS_CHECK(cublasCreate(&handle));
  const cublasStatus_t set = cublasSetStream(handle, static_cast<cudaStream_t>(stream));
  if (set != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(handle);
    return absl::InternalError(absl::StrCat("cublasSetStream failed: status ", static_cast<int>(set)));
  }
  return handle;
}

class CublasDenseGemm final : public CudaDenseGemm {
 public:
  explicit CublasDenseGemm(cublasHandle_t handle) : handle_(handle) {}
  ~CublasDenseGemm() override { cublasDestroy(handle_); }
  absl::Status Run(int64_t m, int64_t n, int64_t k, const bf16* a, const bf16* b, float* c) override {
    const float one = 1.0f, zero = 0.0f;
    SY_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, b, CUDA_R_16BF, k,
                                 a, CUDA_R_16BF, k, &zero, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
    return absl::OkStatus();
  }

 private:
  cublasHandle_t handle_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CudaDenseGemm>> CudaDenseGemm::Create(void* stream) {
  SY_ASSIGN_OR_RETURN(cublasHandle_t handle, HandleFor(stream));
  return std::make_unique<CublasDenseGemm>(handle);
}

absl::StatusOr<std::unique_ptr<CudaFfn>> CudaFfn::Create(const FfnShape& shape, void* stream) {
  SY_RETURN_IF_ERROR(shape.Validate());
  if (shape.weights != WeightType::kBF16) {
    return absl::InvalidArgumentError("CudaFfn runs bf16 weights (cuBLAS bf16 GEMMs)");
  }
  if (shape.activation == Activation::kGptOssSwiGlu) {
    return absl::UnimplementedError("CudaFfn: gpt-oss experts (clamped SwiGLU with biases) run on the CPU path only");
  }
  SY_ASSIGN_OR_RETURN(cublasHandle_t handle, HandleFor(stream));
  return std::make_unique<CublasFfn>(shape, static_cast<cudaStream_t>(stream), handle);
}

}  // namespace switchyard::kernels::cuda
