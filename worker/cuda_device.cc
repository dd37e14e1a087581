// The CUDA LayerDevice: rows, routing weights and expert weights in device memory, every
// kernel and copy queued on one stream. Host waits: Gate (ids and the finiteness check come
// back), Download, and growing a buffer (the old one may still be read by queued work).
#include "worker/cuda_device.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda_kernels.h"

namespace switchyard::worker {
namespace {

namespace cu = kernels::cuda;
using kernels::bf16;

// One expert's weights on the device, Hugging Face layout (kernels::UnpackExpertBf16).
struct DeviceExpert {
  std::shared_ptr<ExpertBuffer> host;  // keeps the key's address from being reused while cached
  cu::DeviceBuffer gate_up, down;
  cu::CudaExpert view() const { return {gate_up.as<const bf16>(), down.as<const bf16>()}; }
};

// Copies queued on `stream` and waited for: the host vectors go away on return, and the
// kernels that read the copies run on the same stream.
absl::StatusOr<DeviceExpert> UploadExpert(const kernels::FfnShape& shape, const void* packed, void* stream) {
  const int64_t H = shape.hidden, F = shape.ffn;
  const int64_t n1 = shape.activation == kernels::Activation::kReluSquared ? F : 2 * F;
  std::vector<bf16> gate_up(static_cast<size_t>(n1 * H)), down(static_cast<size_t>(H * F));
  SY_RETURN_IF_ERROR(kernels::UnpackExpertBf16(shape, packed, gate_up.data(), down.data()));
  DeviceExpert e;
  SY_ASSIGN_OR_RETURN(e.gate_up, cu::DeviceBuffer::Allocate(gate_up.size() * sizeof(bf16)));
  SY_ASSIGN_OR_RETURN(e.down, cu::DeviceBuffer::Allocate(down.size() * sizeof(bf16)));
  SY_RETURN_IF_ERROR(cu::CopyToDeviceAsync(e.gate_up.data(), gate_up.data(), gate_up.size() * sizeof(bf16), stream));
  SY_RETURN_IF_ERROR(cu::CopyToDeviceAsync(e.down.data(), down.data(), down.size() * sizeof(bf16), stream));
  SY_RETURN_IF_ERROR(cu::Synchronize(stream));
  return e;
}

class CudaDevice final : public LayerDevice {
 public:
  CudaDevice(const model::ModelConfig& model, void* stream, std::string gpu, std::unique_ptr<cu::CudaFfn> ffn,
             std::unique_ptr<cu::CudaFfn> shared_ffn)
      : model_(model),
        hidden_(model.hidden),
        stream_(stream),
        gpu_(std::move(gpu)),
        ffn_(std::move(ffn)),
        shared_ffn_(std::move(shared_ffn)) {}

  Device device() const override { return Device::kCuda; }
  std::string KernelName() const override { return absl::StrCat("cuda:", gpu_, " (cuBLAS bf16)"); }

  absl::StatusOr<float*> RowBuffer(Rows role, int64_t rows) override {
    SY_ASSIGN_OR_RETURN(void* p, Reserve(rows_[role], static_cast<size_t>(rows * hidden_) * sizeof(float)));
    return static_cast<float*>(p);
  }

  absl::StatusOr<const int32_t*> IndexBuffer(Index role, absl::Span<const int32_t> host) override {
    const size_t bytes = host.size() * sizeof(int32_t);
    SY_ASSIGN_OR_RETURN(void* p, Reserve(index_[role], bytes));
    SY_RETURN_IF_ERROR(cu::CopyToDeviceAsync(p, host.data(), bytes, stream_));
    return static_cast<const int32_t*>(p);
  }

  absl::Status Gate(const kernels::GatingConfig& config, const float* logits, int64_t tokens, int32_t* ids) override {
    const int64_t n = tokens * config.num_experts, pairs = tokens * config.top_k;
    kernels::GatingConfig on_device = config;
    if (config.expert_bias != nullptr) {  // a WeightStore's host array, the same for the store's life
      SY_ASSIGN_OR_RETURN(on_device.expert_bias, Constant(config.expert_bias, config.num_experts));
    }
    SY_ASSIGN_OR_RETURN(void* w, Reserve(gate_weights_, static_cast<size_t>(pairs) * sizeof(float)));
    SY_ASSIGN_OR_RETURN(void* d_ids, Reserve(ids_, static_cast<size_t>(pairs) * sizeof(int32_t)));
    SY_ASSIGN_OR_RETURN(void* d_first, Reserve(first_, sizeof(uint64_t)));
    uint64_t first = static_cast<uint64_t>(n);
    SY_RETURN_IF_ERROR(cu::CopyToDeviceAsync(d_first, &first, sizeof first, stream_));
    SY_RETURN_IF_ERROR(cu::FirstNonFiniteCuda(logits, n, static_cast<uint64_t*>(d_first), stream_));
    SY_RETURN_IF_ERROR(cu::CopyToHostAsync(&first, d_first, sizeof first, stream_));
    SY_RETURN_IF_ERROR(cu::Synchronize(stream_));  // `first` was a copy source above: wait before reading it
    if (first < static_cast<uint64_t>(n)) {
      float value = 0;
      SY_RETURN_IF_ERROR(cu::CopyToHostAsync(&value, logits + first, sizeof value, stream_));
      SY_RETURN_IF_ERROR(cu::Synchronize(stream_));
      const int64_t i = static_cast<int64_t>(first), E = config.num_experts;
      return absl::InvalidArgumentError(
          absl::StrCat("MoeLayer: router_logits[", i / E, ", ", i % E, "] is ", value, " (logits must be finite)"));
    }
    SY_RETURN_IF_ERROR(cu::GateCuda(on_device, logits, tokens, static_cast<int32_t*>(d_ids), static_cast<float*>(w), stream_));
    SY_RETURN_IF_ERROR(cu::CopyToHostAsync(ids, d_ids, static_cast<size_t>(pairs) * sizeof(int32_t), stream_));
    return cu::Synchronize(stream_);
  }

  absl::Status GatherRows(const float* src, float* dst, const int32_t* index, int64_t rows) override {
    return cu::GatherRowsCuda(src, dst, index, rows, RowBytes(), 1, stream_);
  }

  absl::Status GroupedFfn(const WeightStore& weights, int li, const int64_t* slot_offsets, const int64_t* slot_counts,
                          const float* input, float* output) override {
    const int slots = weights.num_slots(li);
    int64_t rows = 0;
    for (int s = 0; s < slots; ++s) rows = std::max(rows, slot_offsets[s] + slot_counts[s]);
    SY_RETURN_IF_ERROR(DropUnheldExperts());
    views_.assign(slots, cu::CudaExpert{});
    for (int s = 0; s < slots; ++s) {
      if (slot_counts[s] == 0) continue;
      std::shared_ptr<ExpertBuffer> buffer = weights.slot_buffer(li, s);
      auto it = experts_.find(buffer.get());
      if (it == experts_.end()) {
        SY_ASSIGN_OR_RETURN(DeviceExpert e, UploadExpert(model_.ExpertShape(), buffer->data(), stream_));
        e.host = buffer;
        it = experts_.emplace(buffer.get(), std::move(e)).first;
      }
      views_[s] = it->second.view();
    }
    SY_ASSIGN_OR_RETURN(const bf16* in16, ToBf16(input, rows));
    return ffn_->Run(views_.data(), slot_offsets, slot_counts, slots, in16, output);
  }

  absl::Status SharedExpert(const WeightStore& weights, int li, const float* hidden, int64_t tokens,
                            float* out) override {
    const void* packed = weights.shared_weights(li);  // held by the store for its life
    auto it = shared_.find(packed);
    if (it == shared_.end()) {
      SY_ASSIGN_OR_RETURN(DeviceExpert e, UploadExpert(model_.SharedShape(), packed, stream_));
      it = shared_.emplace(packed, std::move(e)).first;
    }
    const cu::CudaExpert view = it->second.view();
    const int64_t zero = 0;
    SY_ASSIGN_OR_RETURN(const bf16* in16, ToBf16(hidden, tokens));
    SY_RETURN_IF_ERROR(shared_ffn_->Run(&view, &zero, &tokens, 1, in16, out));
    if (const float* gate = weights.shared_gate(li); gate != nullptr) {
      SY_ASSIGN_OR_RETURN(const float* d_gate, Constant(gate, hidden_));
      SY_RETURN_IF_ERROR(cu::SharedGateCuda(hidden, d_gate, tokens, hidden_, out, stream_));
    }
    return absl::OkStatus();
  }

  absl::Status Combine(const float* rows, const int32_t* position, int64_t tokens, const float* shared,
                       float* out) override {
    SY_RETURN_IF_ERROR(
        cu::CombineCuda(rows, position, gate_weights_.as<const float>(), tokens, model_.top_k, hidden_, out, stream_));
    if (shared != nullptr) SY_RETURN_IF_ERROR(cu::AddCuda(out, shared, tokens * hidden_, stream_));
    return absl::OkStatus();
  }

  absl::Status Upload(void* dst, const void* src, size_t bytes) override {
    return cu::CopyToDeviceAsync(dst, src, bytes, stream_);
  }
  absl::Status Download(void* dst, const void* src, size_t bytes) override {
    SY_RETURN_IF_ERROR(cu::CopyToHostAsync(dst, src, bytes, stream_));
    return cu::Synchronize(stream_);
  }
  absl::Status Add(float* x, const float* y, int64_t n) override { return cu::AddCuda(x, y, n, stream_); }
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    SY_ASSIGN_OR_RETURN(cu::DeviceBuffer b, cu::DeviceBuffer::Allocate(bytes));
    allocations_.push_back(std::move(b));
    return allocations_.back().data();
  }

 private:
  size_t RowBytes() const { return static_cast<size_t>(hidden_) * sizeof(float); }

  // `buffer` with at least `bytes` (grown by half again, so that a slowly growing step does
  // not reallocate every time). Queued work may still read the old buffer: wait first.
  absl::StatusOr<void*> Reserve(cu::DeviceBuffer& buffer, size_t bytes) {
    if (bytes <= buffer.bytes() && buffer.data() != nullptr) return buffer.data();
    SY_RETURN_IF_ERROR(cu::Synchronize(stream_));
    buffer = cu::DeviceBuffer{};
    SY_ASSIGN_OR_RETURN(buffer, cu::DeviceBuffer::Allocate(std::max<size_t>(bytes + bytes / 2, 256)));
    return buffer.data();
  }

  absl::StatusOr<const bf16*> ToBf16(const float* x, int64_t rows) {
    const int64_t n = rows * hidden_;
    SY_ASSIGN_OR_RETURN(void* p, Reserve(bf16_rows_, static_cast<size_t>(n) * sizeof(bf16)));
    SY_RETURN_IF_ERROR(cu::ToBf16Cuda(x, n, static_cast<bf16*>(p), stream_));
    return static_cast<const bf16*>(p);
  }

  // A device copy of a host array that does not change while its owner lives (router bias,
  // shared-expert gate), made once.
  absl::StatusOr<const float*> Constant(const float* host, int64_t n) {
    auto it = constants_.find(host);
    if (it == constants_.end()) {
      SY_ASSIGN_OR_RETURN(cu::DeviceBuffer b, cu::DeviceBuffer::Allocate(static_cast<size_t>(n) * sizeof(float)));
      SY_RETURN_IF_ERROR(cu::CopyToDeviceAsync(b.data(), host, static_cast<size_t>(n) * sizeof(float), stream_));
      SY_RETURN_IF_ERROR(cu::Synchronize(stream_));
      it = constants_.emplace(host, std::move(b)).first;
    }
    return it->second.as<const float>();
  }

  // Experts no slot holds any more (replaced at an epoch switch): only this cache refers to
  // their host buffer. Queued FFNs may still read them: wait before freeing.
  absl::Status DropUnheldExperts() {
    bool waited = false;
    for (auto it = experts_.begin(); it != experts_.end();) {
      if (it->second.host.use_count() > 1) {
        ++it;
        continue;
      }
      if (!waited) SY_RETURN_IF_ERROR(cu::Synchronize(stream_));
      waited = true;
      it = experts_.erase(it);
    }
    return absl::OkStatus();
  }

  model::ModelConfig model_;
  int64_t hidden_;
  void* stream_;
  std::string gpu_;
  std::unique_ptr<cu::CudaFfn> ffn_, shared_ffn_;
  cu::DeviceBuffer rows_[kNumRows], index_[kNumIndex];
  cu::DeviceBuffer gate_weights_, ids_, first_, bf16_rows_;
  std::unordered_map<const ExpertBuffer*, DeviceExpert> experts_;
  std::unordered_map<const void*, DeviceExpert> shared_;
  std::unordered_map<const float*, cu::DeviceBuffer> constants_;
  std::vector<cu::CudaExpert> views_;
  std::vector<cu::DeviceBuffer> allocations_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LayerDevice>> CreateCudaDevice(const model::ModelConfig& model, void* stream) {
  if (stream == nullptr) {
    return absl::InvalidArgumentError(
        "the cuda device queues on its communicator's stream (Communicator::cuda_stream(), the nccl backend): none given");
  }
  const kernels::FfnShape shape = model.ExpertShape();
  if (shape.weights != kernels::WeightType::kBF16) {
    return absl::InvalidArgumentError(
        "the cuda device runs bf16 expert weights (cuBLAS bf16 GEMMs, fp32 accumulation): use --weight-type bf16");
  }
  if (shape.activation == kernels::Activation::kGptOssSwiGlu) {
    return absl::InvalidArgumentError("the cuda device does not run gpt-oss experts (clamped SwiGLU with biases): use --device cpu");
  }
  SY_ASSIGN_OR_RETURN(const cu::DeviceProperties props, cu::GetDeviceProperties());
  SY_ASSIGN_OR_RETURN(std::unique_ptr<cu::CudaFfn> ffn, cu::CudaFfn::Create(shape, stream));
  std::unique_ptr<cu::CudaFfn> shared_ffn;
  if (model.shared_ffn > 0) {
    SY_ASSIGN_OR_RETURN(shared_ffn, cu::CudaFfn::Create(model.SharedShape(), stream));
  }
  return std::make_unique<CudaDevice>(model, stream, props.name, std::move(ffn), std::move(shared_ffn));
}

}  // namespace switchyard::worker
