// Expert FFN over many slots at once (grouped), CPU.
//
// SwiGLU: y = down(silu(x Wg^T) * (x Wu^T));  ReLU^2: y = down(relu(x Wu^T)^2); gpt-oss:
// y = down((clamp(x Wu^T + bu) + 1) * g * sigmoid(1.702 g)) + bd, g = min(x Wg^T + bg, 7). Weights in
// Hugging Face layout (out_features x in_features): gate, up [ffn x hidden]; down
// [hidden x ffn]. Shared experts are the same FFN run over all local tokens.
//
// Weights are packed once, at load time, into the layout the kernels stream ("packed expert":
// a 64-byte header naming the shape, then panels). Those bytes are what the weight store
// holds and what migration moves, opaque; they are never regenerated.
//
// Determinism: every output element is one fused multiply-add chain over the reduction
// index in a fixed order, and the activation is one shared per-lane implementation
// (kernels/cpu/math-inl.h), so a row's result does not depend on how many rows share its
// call, where it sits, the thread count, or the ISA path: every path gives the same bits
// (DESIGN.md section 4). Only exception: the AVX-512 BF16 dot instruction flushes values,
// products and partial sums below 2^-126 to zero, a range real weights and activations do
// not reach.
//
// Thread-safety: functions are reentrant; an FfnWorkspace belongs to one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/cpu_isa.h"
#include "kernels/types.h"

namespace switchyard::kernels {

struct FfnShape {
  int64_t hidden = 0;
  int64_t ffn = 0;
  Activation activation = Activation::kSwiGlu;
  WeightType weights = WeightType::kF32;

  absl::Status Validate() const;
  // FLOPs per row (multiply-add = 2): 2 * hidden * ffn * (3 for the SwiGLU kinds, 2 for ReLU^2).
  double FlopsPerRow() const;
  friend bool operator==(const FfnShape&, const FfnShape&) = default;
};

// The kernel that runs `weights` on `isa`, e.g. "avx2", "avx512_bf16dot" (reports name it).
std::string FfnKernelName(CpuIsa isa, WeightType weights);

// Bytes of one packed expert, header included (a multiple of 64).
size_t PackedExpertBytes(const FfnShape& shape);

// An expert's biases (gpt-oss): gate and up [ffn], down [hidden]; fp32 in every weight type.
struct ExpertBiases {
  const float* gate = nullptr;
  const float* up = nullptr;
  const float* down = nullptr;
};

// Packs one expert. fp32 sources; for bf16 shapes the values are rounded to bf16 (nearest
// even). `gate` is ignored (may be null) for ReLU^2. `biases` is required for kGptOssSwiGlu
// and refused otherwise. `packed` must hold PackedExpertBytes.
absl::Status PackExpert(const FfnShape& shape, const float* gate, const float* up,
                        const float* down, void* packed, const ExpertBiases* biases = nullptr);
// The same from bf16 sources (checkpoints stored in bf16).
absl::Status PackExpertBf16(const FfnShape& shape, const bf16* gate, const bf16* up,
                            const bf16* down, void* packed);

// The inverse of packing, in the Hugging Face layout as bf16 (GPU kernels read it):
// gate_up [2 * ffn, hidden] = [gate; up] for the gated kinds, [ffn, hidden] (up) for ReLU^2;
// down [hidden, ffn]. fp32 experts are rounded to bf16 (nearest even); bf16 experts come back
// bit for bit. InvalidArgument for a `packed` that is not of `shape`, or for gpt-oss experts.
absl::Status UnpackExpertBf16(const FfnShape& shape, const void* packed, bf16* gate_up, bf16* down);

// OK if `packed` (of `bytes` bytes) is a packed expert of exactly `shape`.
absl::Status CheckPackedExpert(const FfnShape& shape, const void* packed, size_t bytes);

// The path and thread count of GroupedFfnCpu, and its scratch buffers (grown on demand,
// reused). `threads` >= 1 OpenMP threads share each call as (slot, panel range) tasks; each
// output element is computed whole by one task, so the bits do not depend on `threads`.
// The bf16 kernel of `isa` (FfnKernelName) is chosen at construction
// ($SWITCHYARD_BF16_DOT, cpu_isa.h).
class FfnWorkspace {
 public:
  explicit FfnWorkspace(CpuIsa isa = BestCpuIsa(), int threads = 1);
  CpuIsa isa() const { return isa_; }
  int threads() const { return threads_; }

 private:
  friend class FfnRunner;
  CpuIsa isa_;
  int threads_;
  bool bf16_dot_;  // bf16 weights through vdpbf16ps (internal::UseBf16Dot)
  // Intermediate activations [rows, ffn] (bf16 weights: ffn padded to even), fp32, or bf16
  // values as fp32 for the widening bf16 kernels.
  std::vector<float> act_;
  std::vector<float> in_;        // bf16 weights, widening kernels: input rows rounded to bf16 [rows, hidden padded to even]
  std::vector<bf16> in16_;       // bf16 weights, vdpbf16ps: input rows as bf16 [rows, hidden padded to even]
  std::vector<bf16> act16_;      // bf16 weights, vdpbf16ps: intermediate activations [rows, ffn padded]
  std::vector<int64_t> packed_;  // each slot's first row in the buffers above
  struct Task {
    int slot;
    int64_t first_panel, panels;
  };
  std::vector<Task> tasks_;
};

// output rows [row_offsets[s], row_offsets[s] + row_counts[s]) = FFN of slot s (weights
// slot_weights[s], packed for `shape`) on the same input rows; input and output are
// [rows, hidden] fp32. Slots with no rows cost nothing and may have null weights.
absl::Status GroupedFfnCpu(const FfnShape& shape, const void* const* slot_weights,
                           const int64_t* row_offsets, const int64_t* row_counts, int num_slots,
                           const float* input, float* output, FfnWorkspace& workspace);

}  // namespace switchyard::kernels
