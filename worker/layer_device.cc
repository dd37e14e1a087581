#include "worker/layer_device.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/ffn.h"
#include "kernels/gating.h"
#include "kernels/permute.h"
#include "switchyard/config.h"
#if SWITCHYARD_HAVE_CUDA
#include "kernels/cuda_kernels.h"
#include "worker/cuda_device.h"
#endif

namespace switchyard::worker {
namespace {

class CpuDevice final : public LayerDevice {
 public:
  CpuDevice(const model::ModelConfig& model, int threads)
      : model_(model), hidden_(model.hidden), ffn_ws_(kernels::BestCpuIsa(), threads) {}

  Device device() const override { return Device::kCpu; }
  std::string KernelName() const override { return kernels::FfnKernelName(ffn_ws_.isa(), model_.weights); }

  absl::StatusOr<float*> RowBuffer(Rows role, int64_t rows) override {
    std::vector<float>& b = rows_[role];
    b.resize(static_cast<size_t>(rows * hidden_));
    return b.data();
  }
  absl::StatusOr<const int32_t*> IndexBuffer(Index, absl::Span<const int32_t> host) override { return host.data(); }

  absl::Status Gate(const kernels::GatingConfig& config, const float* logits, int64_t tokens, int32_t* ids) override {
    // A NaN or infinite logit would pick experts by garbage scores, silently.
    const int E = config.num_experts;
    for (int64_t i = 0; i < tokens * E; ++i) {
      if (!std::isfinite(logits[i])) {
        return absl::InvalidArgumentError(absl::StrCat("MoeLayer: router_logits[", i / E, ", ", i % E, "] is ", logits[i],
                                                       " (logits must be finite)"));
      }
    }
    weights_.resize(static_cast<size_t>(tokens * config.top_k));
    return kernels::GateCpu(config, logits, tokens, ids, weights_.data(), ffn_ws_.isa(), ffn_ws_.threads());
  }

  absl::Status GatherRows(const float* src, float* dst, const int32_t* index, int64_t rows) override {
    kernels::GatherRows(src, dst, index, rows, RowBytes(), 1, ffn_ws_.threads());
    return absl::OkStatus();
  }

  absl::Status GroupedFfn(const WeightStore& weights, int li, const int64_t* slot_offsets, const int64_t* slot_counts,
                          const float* input, float* output) override {
    const int slots = weights.num_slots(li);
    slot_weights_.resize(slots);
    for (int s = 0; s < slots; ++s) slot_weights_[s] = weights.slot_weights(li, s);
    return kernels::GroupedFfnCpu(model_.ExpertShape(), slot_weights_.data(), slot_offsets, slot_counts, slots, input,
                                  output, ffn_ws_);
  }

  absl::Status SharedExpert(const WeightStore& weights, int li, const float* hidden, int64_t tokens,
                            float* out) override {
    const void* w = weights.shared_weights(li);
    const int64_t zero = 0;
    SY_RETURN_IF_ERROR(kernels::GroupedFfnCpu(model_.SharedShape(), &w, &zero, &tokens, 1, hidden, out, ffn_ws_));
    if (const float* gate = weights.shared_gate(li); gate != nullptr) {  // Qwen: x sigmoid(hidden . gate) per token
      scale_.resize(tokens);
      SY_RETURN_IF_ERROR(kernels::SharedExpertGateCpu(hidden, gate, tokens, hidden_, scale_.data()));
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t i = 0; i < hidden_; ++i) out[t * hidden_ + i] *= scale_[t];
      }
    }
    return absl::OkStatus();
  }

  absl::Status Combine(const float* rows, const int32_t* position, int64_t tokens, const float* shared,
                       float* out) override {
    kernels::Combine(rows, position, weights_.data(), tokens, model_.top_k, hidden_, out, ffn_ws_.threads(), ffn_ws_.isa());
    if (shared != nullptr) SY_RETURN_IF_ERROR(Add(out, shared, tokens * hidden_));
    return absl::OkStatus();
  }

  absl::Status Upload(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status Download(void* dst, const void* src, size_t bytes) override { return Upload(dst, src, bytes); }
  absl::Status Add(float* x, const float* y, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] + y[i];
    return absl::OkStatus();
  }
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    allocations_.emplace_back(bytes);
    return allocations_.back().data();
  }

 private:
  size_t RowBytes() const { return static_cast<size_t>(hidden_) * sizeof(float); }

  model::ModelConfig model_;
  int64_t hidden_;
  kernels::FfnWorkspace ffn_ws_;
  std::vector<float> rows_[kNumRows];
  std::vector<float> weights_, scale_;  // routing weights of the last Gate; shared-gate scales
  std::vector<const void*> slot_weights_;
  std::vector<std::vector<char>> allocations_;
};

}  // namespace

const char* DeviceName(Device device) { return device == Device::kCuda ? "cuda" : "cpu"; }

absl::StatusOr<Device> ParseDevice(absl::string_view name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda") return Device::kCuda;
  return absl::InvalidArgumentError(absl::StrCat("unknown device '", name, "' (cpu or cuda)"));
}

std::unique_ptr<LayerDevice> CreateCpuDevice(const model::ModelConfig& model, int threads) {
  return std::make_unique<CpuDevice>(model, threads);
}

absl::Status CudaDeviceUsable() {
#if SWITCHYARD_HAVE_CUDA
  if (kernels::cuda::DeviceCount() == 0) return absl::FailedPreconditionError(kernels::cuda::NoGpuReason());
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(
      "this build has no CUDA (configured without the CUDA toolkit; rebuild with -DSWITCHYARD_WITH_CUDA=ON where nvcc is installed)");
#endif
}

absl::StatusOr<std::unique_ptr<LayerDevice>> CreateLayerDevice(Device device, const model::ModelConfig& model,
                                                               int cpu_threads, void* cuda_stream) {
  if (device == Device::kCpu) return CreateCpuDevice(model, cpu_threads);
  SY_RETURN_IF_ERROR(CudaDeviceUsable());
#if SWITCHYARD_HAVE_CUDA
  return CreateCudaDevice(model, cuda_stream);
#else
  (void)cuda_stream;
  return absl::InternalError("unreachable");
#endif
}

}  // namespace switchyard::worker
