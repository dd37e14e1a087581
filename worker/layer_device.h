// LayerDevice: where a MoeLayer's rows live and its kernels run (DESIGN.md section 4).
// MoeLayer keeps the host-side bookkeeping (routing, DispatchPlan, counters) and the
// exchanges; a LayerDevice does the work on rows:
//
//   cpu:  host memory; the kernels of kernels/ (BestCpuIsa, `threads` OpenMP threads).
//   cuda: device memory of this process's GPU; kernels/cuda_kernels.h on one CUDA stream (the
//         communicator's, so the all-to-alls queue behind the gathers with no host wait);
//         expert weights are bf16 copies of the WeightStore's, in Hugging Face layout, made
//         when a slot first runs and dropped when no slot holds that buffer any more
//         (migrated weights arrive in host memory and reach the GPU at their first use).
//
// Host synchronisation points of a layer step (the only ones on cuda): Gate (the pair ids
// come to the host: routing and the counts need them) and the exchanges (the communicator's
// contract: a collective returns once its buffers are reusable). Everything else is queued.
//
// Pointers passed to and returned by a device are in its memory (memory()), except where a
// parameter says "host". Calls belong to the step thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "comm/communicator.h"
#include "model/model.h"
#include "worker/weights.h"

namespace switchyard::worker {

enum class Device { kCpu, kCuda };
const char* DeviceName(Device device);  // "cpu", "cuda"
// "cpu" or "cuda"; InvalidArgument naming the value otherwise.
absl::StatusOr<Device> ParseDevice(absl::string_view name);

class LayerDevice {
 public:
  virtual ~LayerDevice() = default;

  virtual Device device() const = 0;
  comm::MemoryKind memory() const { return device() == Device::kCuda ? comm::MemoryKind::kCuda : comm::MemoryKind::kHost; }
  // What runs the FFN, for reports: e.g. "avx512_bf16dot" or "cuda:NVIDIA H200 (cuBLAS bf16)".
  virtual std::string KernelName() const = 0;

  // Row buffers by role, fp32 [rows, hidden], grown on demand (contents not kept when a
  // buffer grows); valid until the next call for the same role.
  enum Rows { kSendRows, kRecvRows, kGrouped, kGroupedOut, kBackRows, kReturned, kShared, kNumRows };
  virtual absl::StatusOr<float*> RowBuffer(Rows role, int64_t rows) = 0;
  // An index array with the contents of `host` (cpu: `host` itself; cuda: a copy queued on
  // the stream), valid until the next call for the same role.
  enum Index { kUniqToken, kGroupedRow, kOrder, kPosition, kNumIndex };
  virtual absl::StatusOr<const int32_t*> IndexBuffer(Index role, absl::Span<const int32_t> host) = 0;

  // logits [tokens, E] -> ids (host, [tokens, k]; the call waits for them); the routing
  // weights stay on the device for Combine. InvalidArgument naming the first non-finite
  // logit (the ids are not written then).
  virtual absl::Status Gate(const kernels::GatingConfig& config, const float* logits, int64_t tokens, int32_t* ids) = 0;
  // dst row i = src row index[i], rows of `hidden` floats.
  virtual absl::Status GatherRows(const float* src, float* dst, const int32_t* index, int64_t rows) = 0;
  // The routed experts of layer `layer_index` of `weights`: rows [slot_offsets[s], +slot_counts[s])
  // of `input` through slot s (offsets and counts: host arrays).
  virtual absl::Status GroupedFfn(const WeightStore& weights, int layer_index, const int64_t* slot_offsets,
                                  const int64_t* slot_counts, const float* input, float* output) = 0;
  // The layer's shared experts on `hidden` [tokens, hidden] into `out`, scaled per token by
  // sigmoid(hidden . gate) when the model has a shared-expert gate.
  virtual absl::Status SharedExpert(const WeightStore& weights, int layer_index, const float* hidden, int64_t tokens,
                                    float* out) = 0;
  // out[t] = sum_j w[t, j] * rows[position[t * k + j]] in k order (w: the last Gate's), then
  // + shared[t] when `shared` is not null.
  virtual absl::Status Combine(const float* rows, const int32_t* position, int64_t tokens, const float* shared,
                               float* out) = 0;

  // For callers that keep their activations on the device (the driver): copies (Download
  // waits for the queued work), and x[i] += y[i] for i < n.
  virtual absl::Status Upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual absl::Status Download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual absl::Status Add(float* x, const float* y, int64_t n) = 0;
  // Device memory for such callers, released with the device; `bytes` > 0.
  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
};

// The CPU device: the FFN path kernels::BestCpuIsa() on `threads` (>= 1) threads.
std::unique_ptr<LayerDevice> CreateCpuDevice(const model::ModelConfig& model, int threads);

// A device of this build for `model`: kCuda needs a CUDA build (FailedPrecondition naming
// the missing piece: the toolkit at build time, a GPU at run time) and bf16 expert weights
// of a kind cuBLAS runs (InvalidArgument otherwise). `cuda_stream`: the cudaStream_t to queue
// on, the communicator's (Communicator::cuda_stream(); required for kCuda: the all-to-alls
// must queue behind the gathers). A device serves one WeightStore (it caches device copies
// of the store's arrays by address).
absl::StatusOr<std::unique_ptr<LayerDevice>> CreateLayerDevice(Device device, const model::ModelConfig& model,
                                                               int cpu_threads, void* cuda_stream = nullptr);

// Whether kCuda can run here: OK, or FailedPrecondition with the one line a user needs
// ("this build has no CUDA (...)" or "no usable GPU: ...").
absl::Status CudaDeviceUsable();

}  // namespace switchyard::worker
