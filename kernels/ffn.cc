#include "kernels/ffn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/ffn_internal.h"
#include "kernels/cpu/parallel.h"

namespace switchyard::kernels {

using internal::GemmArgs;
using internal::kHeaderBytes;
using internal::kPanelCols;
using internal::PackedHeader;
using internal::PackedLayout;

absl::string_view WeightTypeName(WeightType type) {
  return type == WeightType::kF32 ? "fp32" : "bf16";
}

absl::string_view ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kSwiGlu: return "swiglu";
    case Activation::kReluSquared: return "relu2";
    case Activation::kGptOssSwiGlu: return "gpt_oss_swiglu";
  }
  return "?";
}

absl::Status FfnShape::Validate() const {
  if (hidden < 1 || ffn < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("FFN shape hidden=", hidden, " ffn=", ffn, ": both must be >= 1"));
  }
  if (hidden > (int64_t{1} << 24) || ffn > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FFN shape hidden=", hidden, " ffn=", ffn, ": too large"));
  }
  return absl::OkStatus();
}

double FfnShape::FlopsPerRow() const {
  return 2.0 * hidden * ffn * (IsGated(activation) ? 3 : 2);
}

std::string FfnKernelName(CpuIsa isa, WeightType weights) {
  return internal::GemmFor(isa, weights == WeightType::kBF16, internal::UseBf16Dot(isa)).name;
}

FfnWorkspace::FfnWorkspace(CpuIsa isa, int threads)
    : isa_(isa), threads_(threads < 1 ? 1 : threads), bf16_dot_(internal::UseBf16Dot(isa)) {}

namespace internal {

PackedLayout LayoutOf(const FfnShape& shape) {
  PackedLayout l;
  const bool is_bf16 = shape.weights == WeightType::kBF16;
  const size_t elem = is_bf16 ? 2 : 4;
  l.k1 = is_bf16 ? shape.hidden + (shape.hidden & 1) : shape.hidden;
  l.k2 = is_bf16 ? shape.ffn + (shape.ffn & 1) : shape.ffn;
  l.outputs_per_panel1 = IsGated(shape.activation) ? kPanelCols / 2 : kPanelCols;
  l.panels1 = (shape.ffn + l.outputs_per_panel1 - 1) / l.outputs_per_panel1;
  l.panels2 = (shape.hidden + kPanelCols - 1) / kPanelCols;
  l.panel1_bytes = static_cast<size_t>(l.k1) * kPanelCols * elem;
  l.panel2_bytes = static_cast<size_t>(l.k2) * kPanelCols * elem;
  l.first_offset = kHeaderBytes;
  l.down_offset = l.first_offset + l.panels1 * l.panel1_bytes;
  l.total_bytes = l.down_offset + l.panels2 * l.panel2_bytes;
  l.total_bytes = (l.total_bytes + 63) / 64 * 64;
  if (shape.activation == Activation::kGptOssSwiGlu) {
    l.bias1_offset = l.total_bytes;
    l.bias2_offset = (l.bias1_offset + l.panels1 * kPanelCols * sizeof(float) + 63) / 64 * 64;
    l.total_bytes = (l.bias2_offset + l.panels2 * kPanelCols * sizeof(float) + 63) / 64 * 64;
  }
  return l;
}

}  // namespace internal

size_t PackedExpertBytes(const FfnShape& shape) { return internal::LayoutOf(shape).total_bytes; }

namespace {

// Element (k, c) of a panel with reduction length K: fp32 [K][32]; bf16 [K/2][32][2].
inline size_t PanelIndex(bool is_bf16, int64_t k, int c) {
  return is_bf16 ? (static_cast<size_t>(k / 2) * kPanelCols + c) * 2 + (k & 1)
              : static_cast<size_t>(k) * kPanelCols + c;
}

// Where each weight row sits in a packed expert: fn(offset, c, matrix, row, K) for every
// panel column c holding one, the panel at byte `offset`; `row` of `matrix` in the Hugging
// Face layout, K long (hidden for gate and up, ffn for down). SwiGLU panels: columns 0..15
// gate, 16..31 up of ffn rows p*16 + c%16; ReLU^2: up p*32 + c. Pack and UnpackExpertBf16
// walk this one map in opposite directions.
enum class Matrix { kGate, kUp, kDown };
template <typename Fn>
void ForEachPackedRow(const FfnShape& shape, const PackedLayout& l, Fn&& fn) {
  const bool swiglu = IsGated(shape.activation);
  const int64_t H = shape.hidden, F = shape.ffn;
  for (int64_t p = 0; p < l.panels1; ++p) {
    for (int c = 0; c < kPanelCols; ++c) {
      const int64_t f = p * l.outputs_per_panel1 + (swiglu ? c % 16 : c);
      if (f < F) fn(l.first_offset + p * l.panel1_bytes, c, swiglu && c < 16 ? Matrix::kGate : Matrix::kUp, f, H);
    }
  }
  for (int64_t p = 0; p < l.panels2; ++p) {
    for (int c = 0; c < kPanelCols; ++c) {
      const int64_t h = p * kPanelCols + c;
      if (h < H) fn(l.down_offset + p * l.panel2_bytes, c, Matrix::kDown, h, F);
    }
  }
}

inline float ToFloat(float x) { return x; }
inline float ToFloat(bf16 x) { return Bf16ToFloat(x); }

template <typename Src>
absl::Status Pack(const FfnShape& shape, const Src* gate, const Src* up, const Src* down,
                  void* packed, const ExpertBiases* biases) {
  if (absl::Status valid = shape.Validate(); !valid.ok()) return valid;
  const bool swiglu = IsGated(shape.activation);
  if (up == nullptr || down == nullptr || (swiglu && gate == nullptr)) {
    return absl::InvalidArgumentError("PackExpert: a weight matrix is missing");
  }
  const bool biased = shape.activation == Activation::kGptOssSwiGlu;
  if (biased != (biases != nullptr) ||
      (biased && (biases->gate == nullptr || biases->up == nullptr || biases->down == nullptr))) {
    return absl::InvalidArgumentError(biased ? "PackExpert: gpt-oss experts need their gate, up and down biases"
                                             : "PackExpert: biases belong to gpt-oss experts only");
  }
  const PackedLayout l = internal::LayoutOf(shape);
  const bool is_bf16 = shape.weights == WeightType::kBF16;
  auto* base = static_cast<char*>(packed);
  std::memset(base, 0, l.total_bytes);
  PackedHeader header{internal::kPackedMagic, 1, shape.hidden, shape.ffn,
                      static_cast<int32_t>(shape.activation), static_cast<int32_t>(shape.weights)};
  std::memcpy(base, &header, sizeof header);
  auto put = [&](char* panel, int64_t k, int c, float value) {
    if (is_bf16) {
      reinterpret_cast<bf16*>(panel)[PanelIndex(true, k, c)] = FloatToBf16(value);
    } else {
      reinterpret_cast<float*>(panel)[PanelIndex(false, k, c)] = value;
    }
  };
  const int64_t H = shape.hidden, F = shape.ffn;
  ForEachPackedRow(shape, l, [&](size_t offset, int c, Matrix m, int64_t row, int64_t K) {
    const Src* src = (m == Matrix::kGate ? gate : m == Matrix::kUp ? up : down) + row * K;
    for (int64_t k = 0; k < K; ++k) put(base + offset, k, c, ToFloat(src[k]));
  });
  if (biased) {  // in the panels' column order
    auto* b1 = reinterpret_cast<float*>(base + l.bias1_offset);
    for (int64_t p = 0; p < l.panels1; ++p) {
      for (int c = 0; c < kPanelCols; ++c) {
        const int64_t f = p * l.outputs_per_panel1 + c % (kPanelCols / 2);
        if (f < F) b1[p * kPanelCols + c] = (c < kPanelCols / 2 ? biases->gate : biases->up)[f];
      }
    }
    auto* b2 = reinterpret_cast<float*>(base + l.bias2_offset);
    for (int64_t h = 0; h < H; ++h) b2[h] = biases->down[h];
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PackExpert(const FfnShape& shape, const float* gate, const float* up,
                        const float* down, void* packed, const ExpertBiases* biases) {
  return Pack(shape, gate, up, down, packed, biases);
}

absl::Status PackExpertBf16(const FfnShape& shape, const bf16* gate, const bf16* up,
                            const bf16* down, void* packed) {
  return Pack(shape, gate, up, down, packed, static_cast<const ExpertBiases*>(nullptr));
}

absl::Status UnpackExpertBf16(const FfnShape& shape, const void* packed, bf16* gate_up, bf16* down) {
  if (absl::Status valid = CheckPackedExpert(shape, packed, PackedExpertBytes(shape)); !valid.ok()) return valid;
  if (shape.activation == Activation::kGptOssSwiGlu) {
    return absl::InvalidArgumentError("UnpackExpertBf16: gpt-oss experts carry biases that this layout has no place for");
  }
  const PackedLayout l = internal::LayoutOf(shape);
  const bool is_bf16 = shape.weights == WeightType::kBF16;
  const bool swiglu = IsGated(shape.activation);
  const auto* base = static_cast<const char*>(packed);
  auto get = [&](const char* panel, int64_t k, int c) {
    return is_bf16 ? reinterpret_cast<const bf16*>(panel)[PanelIndex(true, k, c)]
                   : FloatToBf16(reinterpret_cast<const float*>(panel)[PanelIndex(false, k, c)]);
  };
  const int64_t F = shape.ffn;
  ForEachPackedRow(shape, l, [&](size_t offset, int c, Matrix m, int64_t row, int64_t K) {
    // gate_up = [gate; up] (SwiGLU) or up (ReLU^2).
    bf16* dst = m == Matrix::kDown ? down + row * K : gate_up + (m == Matrix::kUp && swiglu ? F + row : row) * K;
    for (int64_t k = 0; k < K; ++k) dst[k] = get(base + offset, k, c);
  });
  return absl::OkStatus();
}

absl::Status CheckPackedExpert(const FfnShape& shape, const void* packed, size_t bytes) {
  const size_t want = PackedExpertBytes(shape);
  if (bytes != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("packed expert has ", bytes, " bytes, the shape needs ", want));
  }
  PackedHeader h;
  std::memcpy(&h, packed, sizeof h);
  if (h.magic != internal::kPackedMagic || h.version != 1) {
    return absl::InvalidArgumentError("packed expert: bad magic or version");
  }
  if (h.hidden != shape.hidden || h.ffn != shape.ffn ||
      h.activation != static_cast<int32_t>(shape.activation) ||
      h.weights != static_cast<int32_t>(shape.weights)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packed expert is for hidden=", h.hidden, " ffn=", h.ffn, ", expected hidden=",
        shape.hidden, " ffn=", shape.ffn, " (or activation / weight type differ)"));
  }
  return absl::OkStatus();
}

// Drives the two GEMMs of each slot through the workspace (friend of FfnWorkspace).
//
// Work split: phase 1 (gate/up GEMM + activation) and phase 2 (down GEMM) are each a list
// of (slot, panel range) tasks over all the slot's rows, run by `threads` OpenMP threads;
// phase 2 starts when every activation is written. A task computes whole output elements, so
// the split changes no bits. With one thread each slot is one task (no OpenMP region).
class FfnRunner {
 public:
  static absl::Status Run(const FfnShape& shape, const void* const* slot_weights,
                          const int64_t* row_offsets, const int64_t* row_counts, int num_slots,
                          const float* input, float* output, FfnWorkspace& ws) {
    if (absl::Status valid = shape.Validate(); !valid.ok()) return valid;
    if (!CpuSupports(ws.isa())) {
      return absl::FailedPreconditionError(absl::StrCat("FFN: the ", CpuIsaName(ws.isa()),
                                                        " path is not available on this CPU"));
    }
    const bool is_bf16 = shape.weights == WeightType::kBF16;
    const internal::GemmKernel kernel = internal::GemmFor(ws.isa(), is_bf16, ws.bf16_dot_);
    // With bf16 weights both GEMMs' inputs (x, then the activations) are rounded to bf16,
    // and held as bf16 for the vdpbf16ps kernel, as fp32 for the widening ones.
    const bool a_bf16 = kernel.a_bf16;
    const internal::PackedLayout l = internal::LayoutOf(shape);
    const int64_t H = shape.hidden, F = shape.ffn;
    const auto epilogue = shape.activation == Activation::kSwiGlu        ? internal::Epilogue::kSwiGlu
                          : shape.activation == Activation::kGptOssSwiGlu ? internal::Epilogue::kGptOssSwiGlu
                                                                           : internal::Epilogue::kReluSquared;
    auto bias_of = [&](int s, size_t offset, int64_t first_panel) -> const float* {
      if (offset == 0) return nullptr;
      return reinterpret_cast<const float*>(static_cast<const char*>(slot_weights[s]) + offset) + first_panel * kPanelCols;
    };
    // The first panel of task t + 1 (of the GEMM at `offset`), which task t prefetches
    // while it finishes: on one thread the task that runs next, on more a task that runs soon.
    auto next_panels = [&](int64_t t, size_t offset, size_t panel_bytes) -> const void* {
      if (t + 1 >= static_cast<int64_t>(ws.tasks_.size())) return nullptr;
      const FfnWorkspace::Task next = ws.tasks_[t + 1];
      return static_cast<const char*>(slot_weights[next.slot]) + offset + next.first_panel * panel_bytes;
    };
    // Validate every slot and place its rows in the scratch buffers.
    ws.packed_.assign(static_cast<size_t>(std::max(num_slots, 0)), 0);
    int64_t total = 0;
    for (int s = 0; s < num_slots; ++s) {
      const int64_t M = row_counts[s];
      ws.packed_[s] = total;
      if (M == 0) continue;
      if (M < 0 || slot_weights[s] == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("slot ", s, ": ", M < 0 ? "negative row count" : "rows but no weights"));
      }
      PackedHeader h;
      std::memcpy(&h, slot_weights[s], sizeof h);
      if (h.magic != internal::kPackedMagic || h.hidden != H || h.ffn != F ||
          h.weights != static_cast<int32_t>(shape.weights) ||
          h.activation != static_cast<int32_t>(shape.activation)) {
        return absl::InvalidArgumentError(
            absl::StrCat("slot ", s, ": weights are not a packed expert of this shape"));
      }
      total += M;
    }
    if (total == 0) return absl::OkStatus();
    const int threads = ws.threads();
    const int64_t act_ld = is_bf16 ? l.k2 : F;
    const size_t act_elem = a_bf16 ? sizeof(bf16) : sizeof(float);
    if (a_bf16) {
      ws.in16_.resize(static_cast<size_t>(total * l.k1));
      ws.act16_.resize(static_cast<size_t>(total * l.k2));
    } else {
      if (is_bf16) ws.in_.resize(static_cast<size_t>(total * l.k1));
      ws.act_.resize(static_cast<size_t>(total * act_ld));
    }
    void* act = a_bf16 ? static_cast<void*>(ws.act16_.data()) : static_cast<void*>(ws.act_.data());
    if (is_bf16) {
      // x rounded to bf16; the pad columns (reduction lengths padded to even) are zero.
      auto round_rows = [&](auto* in, auto* acts, auto convert) {
        internal::ParallelFor(threads, num_slots, 1, [&](int64_t s) {
          for (int64_t i = 0; i < row_counts[s]; ++i) {
            const float* x = input + (row_offsets[s] + i) * H;
            const int64_t row = ws.packed_[s] + i;
            for (int64_t k = 0; k < H; ++k) in[row * l.k1 + k] = convert(x[k]);
            if (l.k1 > H) in[row * l.k1 + H] = 0;
            if (l.k2 > F) acts[row * l.k2 + F] = 0;
          }
        });
      };
      if (a_bf16) {
        round_rows(ws.in16_.data(), ws.act16_.data(), [](float x) { return FloatToBf16(x); });
      } else {
        round_rows(ws.in_.data(), ws.act_.data(), [](float x) { return Bf16ToFloat(FloatToBf16(x)); });
      }
    }
    const void* in = !is_bf16 ? static_cast<const void*>(input)
                     : a_bf16 ? static_cast<const void*>(ws.in16_.data())
                              : static_cast<const void*>(ws.in_.data());
    const int64_t in_ld = is_bf16 ? l.k1 : H;
    const size_t in_elem = a_bf16 ? sizeof(bf16) : sizeof(float);
    const internal::Output act_output = !is_bf16 ? internal::Output::kF32
                                        : a_bf16 ? internal::Output::kBf16
                                                 : internal::Output::kBf16InF32;

    // Phase 1: x [M, H] -> activations [M, F].
    Split(ws, num_slots, row_counts, l.panels1, total);
    internal::ParallelFor(threads, static_cast<int64_t>(ws.tasks_.size()), 1, [&](int64_t t) {
      const FfnWorkspace::Task task = ws.tasks_[t];
      const int s = task.slot;
      const int64_t col0 = task.first_panel * l.outputs_per_panel1;
      internal::GemmArgs g{};
      const int64_t first_row = is_bf16 ? ws.packed_[s] : row_offsets[s];
      g.a = static_cast<const char*>(in) + first_row * in_ld * in_elem;
      g.lda = in_ld;
      g.panels = static_cast<const char*>(slot_weights[s]) + l.first_offset + task.first_panel * l.panel1_bytes;
      g.panel_bytes = l.panel1_bytes;
      g.panels_n = task.panels;
      g.k = l.k1;
      g.rows = row_counts[s];
      g.out = static_cast<char*>(act) + (ws.packed_[s] * act_ld + col0) * act_elem;
      g.ldo = act_ld;
      g.out_cols = F - col0;
      g.epilogue = epilogue;
      g.bias = bias_of(s, l.bias1_offset, task.first_panel);
      g.next_panels = next_panels(t, l.first_offset, l.panel1_bytes);
      g.bf16 = is_bf16;
      g.output = act_output;
      kernel.fn(g);
    });
    // Phase 2: activations [M, F] -> y [M, H].
    Split(ws, num_slots, row_counts, l.panels2, total);
    internal::ParallelFor(threads, static_cast<int64_t>(ws.tasks_.size()), 1, [&](int64_t t) {
      const FfnWorkspace::Task task = ws.tasks_[t];
      const int s = task.slot;
      const int64_t col0 = task.first_panel * internal::kPanelCols;
      internal::GemmArgs g{};
      g.a = static_cast<const char*>(act) + ws.packed_[s] * act_ld * act_elem;
      g.lda = act_ld;
      g.panels = static_cast<const char*>(slot_weights[s]) + l.down_offset + task.first_panel * l.panel2_bytes;
      g.panel_bytes = l.panel2_bytes;
      g.panels_n = task.panels;
      g.k = l.k2;
      g.rows = row_counts[s];
      g.out = output + row_offsets[s] * H + col0;
      g.ldo = H;
      g.out_cols = H - col0;
      g.epilogue = internal::Epilogue::kStore;
      g.bias = bias_of(s, l.bias2_offset, task.first_panel);
      g.next_panels = next_panels(t, l.down_offset, l.panel2_bytes);
      g.bf16 = is_bf16;
      g.output = internal::Output::kF32;
      kernel.fn(g);
    });
    return absl::OkStatus();
  }

 private:
  // Tasks of one phase: with one thread, one per slot; else each slot's panels cut into
  // ranges of about 1/(4 * threads) of the phase's work (rows x panels; k is the same for
  // every task), at least one panel, so a hot slot spreads over every thread and cold ones
  // stay whole.
  static void Split(FfnWorkspace& ws, int num_slots, const int64_t* row_counts, int64_t panels,
                    int64_t total_rows) {
    ws.tasks_.clear();
    const double target = static_cast<double>(total_rows) * panels / (4.0 * ws.threads());
    for (int s = 0; s < num_slots; ++s) {
      const int64_t M = row_counts[s];
      if (M == 0) continue;
      int64_t step = panels;
      if (ws.threads() > 1) {
        step = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(target / M)), 1, panels);
      }
      // Ranges start at even panels so that the GEMM's panel pairs stay intact.
      if (step < panels && step % 2 == 1 && step > 1) --step;
      for (int64_t p = 0; p < panels; p += step) ws.tasks_.push_back({s, p, std::min(step, panels - p)});
    }
  }
};

absl::Status GroupedFfnCpu(const FfnShape& shape, const void* const* slot_weights,
                           const int64_t* row_offsets, const int64_t* row_counts, int num_slots,
                           const float* input, float* output, FfnWorkspace& workspace) {
  return FfnRunner::Run(shape, slot_weights, row_offsets, row_counts, num_slots, input, output,
                        workspace);
}

}  // namespace switchyard::kernels
