#include "kernels/ffn.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/ffn_internal.h"

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
  return activation == Activation::kSwiGlu ? "swiglu" : "relu2";
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
  return 2.0 * hidden * ffn * (activation == Activation::kSwiGlu ? 3 : 2);
}

CpuIsa BestCpuIsa() {
  if (internal::Avx512Compiled() && __builtin_cpu_supports("avx512f")) return CpuIsa::kAvx512;
  return CpuIsa::kPortable;
}

bool CpuSupportsBf16Dot() {
  return internal::Avx512Compiled() && __builtin_cpu_supports("avx512bf16");
}

namespace internal {

PackedLayout LayoutOf(const FfnShape& shape) {
  PackedLayout l;
  const bool is_bf16 = shape.weights == WeightType::kBF16;
  const size_t elem = is_bf16 ? 2 : 4;
  l.k1 = is_bf16 ? shape.hidden + (shape.hidden & 1) : shape.hidden;
  l.k2 = is_bf16 ? shape.ffn + (shape.ffn & 1) : shape.ffn;
  l.outputs_per_panel1 = shape.activation == Activation::kSwiGlu ? kPanelCols / 2 : kPanelCols;
  l.panels1 = (shape.ffn + l.outputs_per_panel1 - 1) / l.outputs_per_panel1;
  l.panels2 = (shape.hidden + kPanelCols - 1) / kPanelCols;
  l.panel1_bytes = static_cast<size_t>(l.k1) * kPanelCols * elem;
  l.panel2_bytes = static_cast<size_t>(l.k2) * kPanelCols * elem;
  l.first_offset = kHeaderBytes;
  l.down_offset = l.first_offset + l.panels1 * l.panel1_bytes;
  l.total_bytes = l.down_offset + l.panels2 * l.panel2_bytes;
  l.total_bytes = (l.total_bytes + 63) / 64 * 64;
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

inline float ToFloat(float x) { return x; }
inline float ToFloat(bf16 x) { return Bf16ToFloat(x); }

template <typename Src>
absl::Status Pack(const FfnShape& shape, const Src* gate, const Src* up, const Src* down,
                  void* packed) {
  if (absl::Status valid = shape.Validate(); !valid.ok()) return valid;
  const bool swiglu = shape.activation == Activation::kSwiGlu;
  if (up == nullptr || down == nullptr || (swiglu && gate == nullptr)) {
    return absl::InvalidArgumentError("PackExpert: a weight matrix is missing");
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
  for (int64_t p = 0; p < l.panels1; ++p) {
    char* panel = base + l.first_offset + p * l.panel1_bytes;
    for (int c = 0; c < kPanelCols; ++c) {
      // SwiGLU: columns 0..15 gate, 16..31 up of ffn rows p*16 + c%16; ReLU^2: up p*32 + c.
      const int64_t f = p * l.outputs_per_panel1 + (swiglu ? c % 16 : c);
      if (f >= F) continue;
      const Src* src = swiglu && c < 16 ? gate : up;
      for (int64_t k = 0; k < H; ++k) put(panel, k, c, ToFloat(src[f * H + k]));
    }
  }
  for (int64_t p = 0; p < l.panels2; ++p) {
    char* panel = base + l.down_offset + p * l.panel2_bytes;
    for (int c = 0; c < kPanelCols; ++c) {
      const int64_t h = p * kPanelCols + c;
      if (h >= H) continue;
      for (int64_t k = 0; k < F; ++k) put(panel, k, c, ToFloat(down[h * F + k]));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PackExpert(const FfnShape& shape, const float* gate, const float* up,
                        const float* down, void* packed) {
  return Pack(shape, gate, up, down, packed);
}

absl::Status PackExpertBf16(const FfnShape& shape, const bf16* gate, const bf16* up,
                            const bf16* down, void* packed) {
  return Pack(shape, gate, up, down, packed);
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
class FfnRunner {
 public:
  static absl::Status Run(const FfnShape& shape, const void* const* slot_weights,
                          const int64_t* row_offsets, const int64_t* row_counts, int num_slots,
                          const float* input, float* output, FfnWorkspace& ws) {
    if (absl::Status valid = shape.Validate(); !valid.ok()) return valid;
    const bool is_bf16 = shape.weights == WeightType::kBF16;
    if (is_bf16 && ws.isa() == CpuIsa::kAvx512 && !CpuSupportsBf16Dot()) {
      return absl::FailedPreconditionError(
          "bf16 FFN on the AVX-512 path needs AVX-512 BF16; use the portable path");
    }
    const internal::PackedLayout l = internal::LayoutOf(shape);
    const int64_t H = shape.hidden, F = shape.ffn;
    auto gemm = ws.isa() == CpuIsa::kAvx512 ? internal::GemmAvx512 : internal::GemmPortable;
    const auto epilogue = shape.activation == Activation::kSwiGlu ? internal::Epilogue::kSwiGlu
                                                                  : internal::Epilogue::kReluSquared;
    for (int s = 0; s < num_slots; ++s) {
      const int64_t M = row_counts[s];
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
      const auto* w = static_cast<const char*>(slot_weights[s]);
      const float* x = input + row_offsets[s] * H;
      float* y = output + row_offsets[s] * H;
      GemmArgs first{x, H, w + l.first_offset, l.panel1_bytes, l.panels1, l.k1, M,
                     nullptr, l.k2, F, epilogue, is_bf16, is_bf16};
      GemmArgs down{nullptr, l.k2, w + l.down_offset, l.panel2_bytes, l.panels2, l.k2, M,
                    y, H, H, internal::Epilogue::kStore, is_bf16, false};
      if (is_bf16) {
        ws.in16_.resize(static_cast<size_t>(M * l.k1));
        ws.act16_.assign(static_cast<size_t>(M * l.k2), 0);  // zero pad column when ffn is odd
        for (int64_t i = 0; i < M; ++i) {
          for (int64_t k = 0; k < H; ++k) ws.in16_[i * l.k1 + k] = FloatToBf16(x[i * H + k]);
          if (l.k1 > H) ws.in16_[i * l.k1 + H] = 0;
        }
        first.a = ws.in16_.data();
        first.lda = l.k1;
        first.out = ws.act16_.data();
        down.a = ws.act16_.data();
      } else {
        ws.act_.resize(static_cast<size_t>(M * F));
        first.out = ws.act_.data();
        down.a = ws.act_.data();
      }
      gemm(first);
      gemm(down);
    }
    return absl::OkStatus();
  }
};

absl::Status GroupedFfnCpu(const FfnShape& shape, const void* const* slot_weights,
                           const int64_t* row_offsets, const int64_t* row_counts, int num_slots,
                           const float* input, float* output, FfnWorkspace& workspace) {
  return FfnRunner::Run(shape, slot_weights, row_offsets, row_counts, num_slots, input, output,
                        workspace);
}

}  // namespace switchyard::kernels
