// Portable GEMM for the FFN: the same arithmetic as the AVX-512 path, one element at a time.
// fp32: acc = fma(a[k], b[k], acc) for k ascending, as _mm512_fmadd_ps does per lane.
// bf16: per pair, the odd element first, then the even one, as vdpbf16ps does.
#include <cmath>

#include "kernels/cpu/ffn_internal.h"

namespace switchyard::kernels::internal {
namespace {

float Silu(float g) { return g / (1.0f + std::exp(-g)); }

void Write(const GemmArgs& g, int64_t row, int64_t col, float value) {
  if (col >= g.out_cols) return;
  if (g.out_bf16) {
    static_cast<bf16*>(g.out)[row * g.ldo + col] = FloatToBf16(value);
  } else {
    static_cast<float*>(g.out)[row * g.ldo + col] = value;
  }
}

}  // namespace

void GemmPortable(const GemmArgs& g) {
  const int half = kPanelCols / 2;
  for (int64_t p = 0; p < g.panels_n; ++p) {
    const char* panel = static_cast<const char*>(g.panels) + p * g.panel_bytes;
    for (int64_t i = 0; i < g.rows; ++i) {
      float acc[kPanelCols];
      for (int c = 0; c < kPanelCols; ++c) {
        float sum = 0.0f;
        if (g.bf16) {
          const bf16* a = static_cast<const bf16*>(g.a) + i * g.lda;
          const bf16* b = reinterpret_cast<const bf16*>(panel);
          for (int64_t k = 0; k < g.k; k += 2) {
            const size_t at = (static_cast<size_t>(k / 2) * kPanelCols + c) * 2;
            sum = std::fma(Bf16ToFloat(a[k + 1]), Bf16ToFloat(b[at + 1]), sum);
            sum = std::fma(Bf16ToFloat(a[k]), Bf16ToFloat(b[at]), sum);
          }
        } else {
          const float* a = static_cast<const float*>(g.a) + i * g.lda;
          const float* b = reinterpret_cast<const float*>(panel);
          for (int64_t k = 0; k < g.k; ++k) sum = std::fma(a[k], b[k * kPanelCols + c], sum);
        }
        acc[c] = sum;
      }
      switch (g.epilogue) {
        case Epilogue::kStore:
          for (int c = 0; c < kPanelCols; ++c) Write(g, i, p * kPanelCols + c, acc[c]);
          break;
        case Epilogue::kSwiGlu:
          for (int c = 0; c < half; ++c) Write(g, i, p * half + c, Silu(acc[c]) * acc[half + c]);
          break;
        case Epilogue::kReluSquared:
          for (int c = 0; c < kPanelCols; ++c) {
            const float r = std::max(acc[c], 0.0f);
            Write(g, i, p * kPanelCols + c, r * r);
          }
          break;
      }
    }
  }
}

}  // namespace switchyard::kernels::internal
