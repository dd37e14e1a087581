// AVX-512 GEMM for the FFN. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mavx512bf16 -mfma; called only when the CPU has them (BestCpuIsa, CpuSupportsBf16Dot).
//
// Register blocking: 8 rows x 32 columns (16 zmm accumulators); row tails of 1-3 rows take
// two panels at once. Per reduction step the
// panel's 32 columns are two zmm loads and each row's A element is a broadcast, so every
// accumulator lane is one FMA chain over k ascending — a row's bits depend only on its own
// inputs, never on the rows around it. Panels (K x 32) stay in L2 while all rows pass.
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/ffn_internal.h"

namespace switchyard::kernels::internal {

bool Avx512Compiled() { return true; }

namespace {

constexpr int kRows = 8;

// exp(x) for x in fp32 range: x = n ln2 + r, |r| <= ln2 / 2; e^r by Cephes' expf polynomial;
// 2^n by scalef. About 1 ulp.
inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

inline __m512 Silu(__m512 g) {
  return _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), Exp(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}

inline __mmask16 ColumnMask(int64_t first_col, int64_t out_cols) {
  const int64_t n = std::clamp<int64_t>(out_cols - first_col, 0, 16);
  return static_cast<__mmask16>((uint32_t{1} << n) - 1);
}

inline void Store16(const GemmArgs& g, int64_t row, int64_t col, __m512 v) {
  const __mmask16 mask = ColumnMask(col, g.out_cols);
  if (mask == 0) return;
  if (g.out_bf16) {
    bf16* out = static_cast<bf16*>(g.out) + row * g.ldo + col;
    _mm256_mask_storeu_epi16(out, mask, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
  } else {
    _mm512_mask_storeu_ps(static_cast<float*>(g.out) + row * g.ldo + col, mask, v);
  }
}

template <int R>
inline void Epilogue(const GemmArgs& g, int64_t row0, int64_t p, const __m512* acc0,
                     const __m512* acc1) {
  for (int i = 0; i < R; ++i) {
    switch (g.epilogue) {
      case Epilogue::kStore:
        Store16(g, row0 + i, p * kPanelCols, acc0[i]);
        Store16(g, row0 + i, p * kPanelCols + 16, acc1[i]);
        break;
      case Epilogue::kSwiGlu:
        Store16(g, row0 + i, p * 16, _mm512_mul_ps(Silu(acc0[i]), acc1[i]));
        break;
      case Epilogue::kReluSquared: {
        const __m512 r0 = _mm512_max_ps(acc0[i], _mm512_setzero_ps());
        const __m512 r1 = _mm512_max_ps(acc1[i], _mm512_setzero_ps());
        Store16(g, row0 + i, p * kPanelCols, _mm512_mul_ps(r0, r0));
        Store16(g, row0 + i, p * kPanelCols + 16, _mm512_mul_ps(r1, r1));
        break;
      }
    }
  }
}

// R rows x P panels (P * 32 columns): 2 * R * P accumulators. P = 2 keeps small row tails
// (R <= 3) from waiting on FMA latency.
template <int R, int P>
void BlockF32(const GemmArgs& g, int64_t row0, int64_t p) {
  const float* b[P];
  for (int j = 0; j < P; ++j) {
    b[j] = reinterpret_cast<const float*>(static_cast<const char*>(g.panels) + (p + j) * g.panel_bytes);
  }
  const float* a = static_cast<const float*>(g.a) + row0 * g.lda;
  __m512 acc[P][2][R];
  for (int j = 0; j < P; ++j) {
    for (int i = 0; i < R; ++i) acc[j][0][i] = acc[j][1][i] = _mm512_setzero_ps();
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < g.k; ++k) {
    __m512 b0[P], b1[P];
    for (int j = 0; j < P; ++j) {
      b0[j] = _mm512_loadu_ps(b[j] + k * kPanelCols);
      b1[j] = _mm512_loadu_ps(b[j] + k * kPanelCols + 16);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * g.lda + k]);
      for (int j = 0; j < P; ++j) {
        acc[j][0][i] = _mm512_fmadd_ps(ai, b0[j], acc[j][0][i]);
        acc[j][1][i] = _mm512_fmadd_ps(ai, b1[j], acc[j][1][i]);
      }
    }
  }
  for (int j = 0; j < P; ++j) Epilogue<R>(g, row0, p + j, acc[j][0], acc[j][1]);
}

template <int R, int P>
void BlockBf16(const GemmArgs& g, int64_t row0, int64_t p) {
  const bf16* b[P];
  for (int j = 0; j < P; ++j) {
    b[j] = reinterpret_cast<const bf16*>(static_cast<const char*>(g.panels) + (p + j) * g.panel_bytes);
  }
  const bf16* a = static_cast<const bf16*>(g.a) + row0 * g.lda;
  __m512 acc[P][2][R];
  for (int j = 0; j < P; ++j) {
    for (int i = 0; i < R; ++i) acc[j][0][i] = acc[j][1][i] = _mm512_setzero_ps();
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < g.k; k += 2) {
    __m512bh b0[P], b1[P];
    for (int j = 0; j < P; ++j) {
      const bf16* pair = b[j] + (k / 2) * kPanelCols * 2;
      b0[j] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(pair));
      b1[j] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(pair + 32));
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      int32_t both;
      __builtin_memcpy(&both, a + i * g.lda + k, 4);
      const __m512bh ai = reinterpret_cast<__m512bh>(_mm512_set1_epi32(both));
      for (int j = 0; j < P; ++j) {
        acc[j][0][i] = _mm512_dpbf16_ps(acc[j][0][i], ai, b0[j]);
        acc[j][1][i] = _mm512_dpbf16_ps(acc[j][1][i], ai, b1[j]);
      }
    }
  }
  for (int j = 0; j < P; ++j) Epilogue<R>(g, row0, p + j, acc[j][0], acc[j][1]);
}

template <int R, int P>
void Block(const GemmArgs& g, int64_t row0, int64_t p) {
  if (g.bf16) {
    BlockBf16<R, P>(g, row0, p);
  } else {
    BlockF32<R, P>(g, row0, p);
  }
}

// The last rows < kRows of panels [p, p + panels): two panels at a time for R <= 3.
void Tail(const GemmArgs& g, int64_t row0, int64_t p, int64_t panels, int rows) {
  for (int64_t q = p; q < p + panels;) {
    const bool pair = q + 1 < p + panels && rows <= 3;
    switch (rows * 2 + pair) {
      case 2: Block<1, 1>(g, row0, q); break;
      case 3: Block<1, 2>(g, row0, q); break;
      case 4: Block<2, 1>(g, row0, q); break;
      case 5: Block<2, 2>(g, row0, q); break;
      case 6: Block<3, 1>(g, row0, q); break;
      case 7: Block<3, 2>(g, row0, q); break;
      case 8: Block<4, 1>(g, row0, q); break;
      case 10: Block<5, 1>(g, row0, q); break;
      case 12: Block<6, 1>(g, row0, q); break;
      case 14: Block<7, 1>(g, row0, q); break;
      default: break;
    }
    q += pair ? 2 : 1;
  }
}

}  // namespace

void GemmAvx512(const GemmArgs& g) {
  // Panel-major: a panel stays cache-resident while every row block passes over it. The row
  // tail runs after each pair of panels.
  const int64_t full = g.rows / kRows * kRows;
  const int64_t blocks = std::max<int64_t>(1, full / kRows);
  const int64_t lines = static_cast<int64_t>(g.panel_bytes / 64);
  for (int64_t p = 0; p < g.panels_n; p += 2) {
    const int64_t panels = std::min<int64_t>(2, g.panels_n - p);
    for (int64_t q = p; q < p + panels; ++q) {
      // While this panel is in use, bring the next one toward L2, a share per row block.
      const char* next = q + 1 < g.panels_n
                             ? static_cast<const char*>(g.panels) + (q + 1) * g.panel_bytes
                             : nullptr;
      const int64_t share = (lines + blocks - 1) / blocks;
      for (int64_t i = 0, b = 0; i < full; i += kRows, ++b) {
        if (next != nullptr) {
          for (int64_t l = b * share; l < std::min(lines, (b + 1) * share); ++l) {
            _mm_prefetch(next + l * 64, _MM_HINT_T1);
          }
        }
        Block<kRows, 1>(g, i, q);
      }
    }
    if (full < g.rows) Tail(g, full, p, panels, static_cast<int>(g.rows - full));
  }
}

}  // namespace switchyard::kernels::internal
