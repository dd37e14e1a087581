// The FFN's GEMM for every CPU, written once over Highway and compiled for each target
// (AVX2+FMA, AVX-512, Arm NEON, and a scalar fallback), plus the AVX-512 BF16 (vdpbf16ps)
// kernel for bf16 weights on CPUs that have it and run it fast (UseBf16Dot). kernels/ffn.cc
// picks one through GemmFor.
//
// Register blocking: R rows x P panels of 32 columns, held as R * P * (32 / lanes)
// accumulators; per reduction step each row's A element is broadcast and multiplied into the
// panel's 32 columns. Every accumulator lane is one fused multiply-add chain over k
// ascending (bf16: per k pair, the odd element first, then the even one, as vdpbf16ps does;
// a bf16 x bf16 product is exact in fp32, so widening and the dot instruction agree), so a
// row's bits never depend on the rows around it, the vector width, or the path. The
// epilogue (store / SwiGLU / ReLU^2, bf16 rounding) is the same per-lane code everywhere
// (math-inl.h). Panels (K x 32) stay in cache while all row blocks pass over them.
//
// Known exception: vdpbf16ps flushes to zero every value, product and partial sum below
// 2^-126 (bf16 denormal inputs, and tiny products of normal ones); the widening kernels keep
// them. Real weights and activations are nowhere near that range; SWITCHYARD_BF16_DOT=0
// avoids the dot kernel.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ffn_gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <chrono>
#include <cstring>

#include "hwy/highway.h"
#include "kernels/cpu/ffn_internal.h"
#include "kernels/cpu/math-inl.h"

#if SY_HWY_AVX512
#include <immintrin.h>
#endif

HWY_BEFORE_NAMESPACE();
namespace switchyard::kernels::internal::HWY_NAMESPACE {
namespace {

using DU = hn::RebindToUnsigned<DF>;

constexpr int kVecs = kPanelCols / kLanes;  // vectors per panel row
static_assert(kPanelCols % kLanes == 0, "a panel is a whole number of vectors");

// Rows per register block. Accumulators R * kVecs (* P) fit the target's register file
// (16 vectors on AVX2, 32 on AVX-512 and NEON) with room for the broadcasts and loads.
// kWidenPairsFirst: the widening bf16 kernel keeps a step's widened weights in registers
// (BlockBf16).
#if SY_HWY_AVX512
constexpr int kRowsF32 = 8, kRowsBf16 = 8, kAccBudget = 24;
constexpr bool kWidenPairsFirst = true;
#elif HWY_TARGET == HWY_AVX2
constexpr int kRowsF32 = 3, kRowsBf16 = 2, kAccBudget = 12;
constexpr bool kWidenPairsFirst = false;
#elif HWY_TARGET == HWY_NEON
constexpr int kRowsF32 = 3, kRowsBf16 = 2, kAccBudget = 24;
constexpr bool kWidenPairsFirst = false;
#else
constexpr int kRowsF32 = 1, kRowsBf16 = 1, kAccBudget = 32;
constexpr bool kWidenPairsFirst = false;
#endif

// Writes the epilogue of row `row`, panel `p`, from its 32 accumulators (fp32, in order).
HWY_INLINE void EpilogueRow(const GemmArgs& g, int64_t row, int64_t p, const float* raw) {
  const DF d;
  HWY_ALIGN float res[kPanelCols];
  HWY_ALIGN float biased[kPanelCols];
  const float* acc = raw;
  if (g.bias != nullptr) {  // one add per lane, before the epilogue
    const float* b = g.bias + p * kPanelCols;
    for (int c = 0; c < kPanelCols; c += kLanes) hn::Store(hn::Add(hn::LoadU(d, raw + c), hn::LoadU(d, b + c)), d, biased + c);
    acc = biased;
  }
  int64_t col0 = p * kPanelCols;
  int n = kPanelCols;
  switch (g.epilogue) {
    case Epilogue::kStore:
      std::memcpy(res, acc, sizeof res);
      break;
    case Epilogue::kGptOssSwiGlu: {
      col0 = p * (kPanelCols / 2);
      n = kPanelCols / 2;
      const VF limit = hn::Set(d, kGptOssSwiGluLimit), alpha = hn::Set(d, kGptOssSwiGluAlpha), one = hn::Set(d, 1.0f);
      for (int c = 0; c < n; c += kLanes) {
        const VF gate = hn::Min(hn::LoadU(d, acc + c), limit);
        const VF up = hn::Min(hn::Max(hn::LoadU(d, acc + n + c), hn::Neg(limit)), limit);
        const VF glu = hn::Mul(gate, Sigmoid(d, hn::Mul(gate, alpha)));
        hn::Store(hn::Mul(hn::Add(up, one), glu), d, res + c);
      }
      break;
    }
    case Epilogue::kSwiGlu:
      col0 = p * (kPanelCols / 2);
      n = kPanelCols / 2;
      for (int c = 0; c < n; c += kLanes) {
        const VF gate = hn::LoadU(d, acc + c), up = hn::LoadU(d, acc + n + c);
        hn::Store(hn::Mul(Silu(d, gate), up), d, res + c);
      }
      break;
    case Epilogue::kReluSquared:
      for (int c = 0; c < n; c += kLanes) {
        const VF r = hn::Max(hn::LoadU(d, acc + c), hn::Zero(d));
        hn::Store(hn::Mul(r, r), d, res + c);
      }
      break;
  }
  const int valid = static_cast<int>(std::clamp<int64_t>(g.out_cols - col0, 0, n));
  switch (g.output) {
    case Output::kF32:
      std::memcpy(static_cast<float*>(g.out) + row * g.ldo + col0, res, valid * sizeof(float));
      break;
    case Output::kBf16: {
      bf16* out = static_cast<bf16*>(g.out) + row * g.ldo + col0;
      for (int c = 0; c < valid; ++c) out[c] = FloatToBf16(res[c]);
      break;
    }
    case Output::kBf16InF32: {
      float* out = static_cast<float*>(g.out) + row * g.ldo + col0;
      for (int c = 0; c < valid; ++c) out[c] = Bf16ToFloat(FloatToBf16(res[c]));
      break;
    }
  }
}

template <int R, int P>
HWY_INLINE void FinishBlock(const GemmArgs& g, int64_t row0, int64_t p, VF (&acc)[P][kVecs][R]) {
  const DF d;
  HWY_ALIGN float buf[kPanelCols];
  for (int j = 0; j < P; ++j) {
    for (int i = 0; i < R; ++i) {
      for (int v = 0; v < kVecs; ++v) hn::Store(acc[j][v][i], d, buf + v * kLanes);
      EpilogueRow(g, row0 + i, p + j, buf);
    }
  }
}

const char* PanelAt(const GemmArgs& g, int64_t p) {
  return static_cast<const char*>(g.panels) + p * g.panel_bytes;
}

// Weights a block pulls toward L2 while it computes: reduction step `it` (k for fp32, k / 2
// for bf16 pairs) prefetches the `step` bytes at `at + it * step`. Expert weights are read
// from memory once per call (a step's experts do not fit in any cache), so each panel is
// fetched while the panel before it is in use, instead of stalling the first row block that
// reaches it. step 0: nothing new (the line at `at`, already cached, every step).
struct Prefetch {
  const char* at;
  int64_t step;
};
HWY_INLINE void PrefetchStep(const Prefetch& pf, int64_t it) {
  const char* from = pf.at + it * pf.step;
  __builtin_prefetch(from, 0, 2);
  if (HWY_UNLIKELY(pf.step > 64)) {  // few rows per panel: more than a line per step
    for (int64_t line = 64; line < pf.step; line += 64) __builtin_prefetch(from + line, 0, 2);
  }
}

// R rows x P panels, fp32 weights.
template <int R, int P>
HWY_NOINLINE void BlockF32(const GemmArgs& g, int64_t row0, int64_t p, Prefetch pf) {
  const DF d;
  const float* b[P];
  for (int j = 0; j < P; ++j) b[j] = reinterpret_cast<const float*>(PanelAt(g, p + j));
  const float* a = static_cast<const float*>(g.a) + row0 * g.lda;
  VF acc[P][kVecs][R];
  for (int j = 0; j < P; ++j) {
    for (int v = 0; v < kVecs; ++v) {
      for (int i = 0; i < R; ++i) acc[j][v][i] = hn::Zero(d);
    }
  }
  for (int64_t k = 0; k < g.k; ++k) {
    PrefetchStep(pf, k);
    VF ak[R];
    for (int i = 0; i < R; ++i) ak[i] = hn::Set(d, a[i * g.lda + k]);
    for (int j = 0; j < P; ++j) {
      for (int v = 0; v < kVecs; ++v) {
        const VF bk = hn::LoadU(d, b[j] + k * kPanelCols + v * kLanes);
        for (int i = 0; i < R; ++i) acc[j][v][i] = Fma(ak[i], bk, acc[j][v][i]);
      }
    }
  }
  FinishBlock<R, P>(g, row0, p, acc);
}

// R rows x P panels, bf16 weights widened to fp32 in registers: a panel's k pair of column c
// is one 32-bit lane (even element in the low half). A holds bf16 values as fp32, so each
// broadcast is a plain load. Per lane and k pair the odd product goes first, as vdpbf16ps
// does. With 32 registers every row's odd products come before its even ones (the widened
// pairs stay in registers); with 16 each pair is widened once and used by every row.
template <int R, int P>
HWY_NOINLINE void BlockBf16(const GemmArgs& g, int64_t row0, int64_t p, Prefetch pf) {
  const DF d;
  const DU du;
  const uint32_t* b[P];
  for (int j = 0; j < P; ++j) b[j] = reinterpret_cast<const uint32_t*>(PanelAt(g, p + j));
  const float* a = static_cast<const float*>(g.a) + row0 * g.lda;
  const auto high = hn::Set(du, 0xFFFF0000u);
  VF acc[P][kVecs][R];
  for (int j = 0; j < P; ++j) {
    for (int v = 0; v < kVecs; ++v) {
      for (int i = 0; i < R; ++i) acc[j][v][i] = hn::Zero(d);
    }
  }
  for (int64_t k = 0; k < g.k; k += 2) {
    PrefetchStep(pf, k / 2);
    if constexpr (kWidenPairsFirst) {
      VF even[P][kVecs], odd[P][kVecs];
      for (int j = 0; j < P; ++j) {
        for (int v = 0; v < kVecs; ++v) {
          const auto pairs = hn::LoadU(du, b[j] + (k / 2) * kPanelCols + v * kLanes);
          even[j][v] = hn::BitCast(d, hn::ShiftLeft<16>(pairs));
          odd[j][v] = hn::BitCast(d, hn::And(pairs, high));
        }
      }
      for (int i = 0; i < R; ++i) {
        const VF a_odd = hn::Set(d, a[i * g.lda + k + 1]);
        for (int j = 0; j < P; ++j) {
          for (int v = 0; v < kVecs; ++v) acc[j][v][i] = Fma(a_odd, odd[j][v], acc[j][v][i]);
        }
      }
      for (int i = 0; i < R; ++i) {
        const VF a_even = hn::Set(d, a[i * g.lda + k]);
        for (int j = 0; j < P; ++j) {
          for (int v = 0; v < kVecs; ++v) acc[j][v][i] = Fma(a_even, even[j][v], acc[j][v][i]);
        }
      }
    } else {
      VF a_even[R], a_odd[R];
      for (int i = 0; i < R; ++i) {
        a_even[i] = hn::Set(d, a[i * g.lda + k]);
        a_odd[i] = hn::Set(d, a[i * g.lda + k + 1]);
      }
      for (int j = 0; j < P; ++j) {
        for (int v = 0; v < kVecs; ++v) {
          const auto pairs = hn::LoadU(du, b[j] + (k / 2) * kPanelCols + v * kLanes);
          const VF even = hn::BitCast(d, hn::ShiftLeft<16>(pairs));
          const VF odd = hn::BitCast(d, hn::And(pairs, high));
          for (int i = 0; i < R; ++i) {
            acc[j][v][i] = Fma(a_odd[i], odd, acc[j][v][i]);
            acc[j][v][i] = Fma(a_even[i], even, acc[j][v][i]);
          }
        }
      }
    }
  }
  FinishBlock<R, P>(g, row0, p, acc);
}

// Where the weights after panel `p` start (the next task's, past the last panel; null if none).
const char* AfterPanel(const GemmArgs& g, int64_t p) {
  return p + 1 < g.panels_n ? PanelAt(g, p + 1) : static_cast<const char*>(g.next_panels);
}

// Block b's share when `blocks` blocks spread the prefetch of the `panels` panels after
// panel `p` over their reduction steps (0 panels: none).
Prefetch ShareOf(const GemmArgs& g, int64_t p, int64_t panels, int64_t blocks, int64_t b) {
  const char* at = AfterPanel(g, p);
  if (at == nullptr || panels == 0) return {PanelAt(g, p), 0};
  const int64_t steps = g.bf16 ? g.k / 2 : g.k;
  const int64_t share = (panels * static_cast<int64_t>(g.panel_bytes) + blocks - 1) / blocks;
  return {at + b * share, (share + steps - 1) / steps};
}

// The block kernels GemmImpl drives: kRows rows per full block, and two panels per block for
// row tails of at most kPairRows rows (where twice the accumulators still fit).
struct F32Blocks {
  static constexpr int kRows = kRowsF32, kPairRows = kAccBudget / (2 * kVecs);
  template <int R, int P>
  static void Run(const GemmArgs& g, int64_t row0, int64_t p, Prefetch pf) { BlockF32<R, P>(g, row0, p, pf); }
};
struct Bf16Blocks {
  // With the widened pairs held, two panels' accumulators share the budget with them.
  static constexpr int kRows = kRowsBf16,
                       kPairRows = (kAccBudget - (kWidenPairsFirst ? 4 * kVecs : 0)) / (2 * kVecs);
  template <int R, int P>
  static void Run(const GemmArgs& g, int64_t row0, int64_t p, Prefetch pf) { BlockBf16<R, P>(g, row0, p, pf); }
};

// The last `rows` (< the block height) rows of panels [p, p + panels): two panels per block
// where the accumulators fit, so that short row tails still have enough independent chains.
// `fetch`: whether these blocks prefetch the panels after theirs (when no full block did).
template <class Blocks, int R>
HWY_INLINE void Tail(const GemmArgs& g, int64_t row0, int64_t p, int64_t panels, int rows, bool fetch) {
  if constexpr (R > 0) {
    if (rows != R) return Tail<Blocks, R - 1>(g, row0, p, panels, rows, fetch);
    int64_t q = p;
    if constexpr (R <= Blocks::kPairRows) {
      for (; q + 1 < p + panels; q += 2) {
        Blocks::template Run<R, 2>(g, row0, q, ShareOf(g, q + 1, fetch ? 2 : 0, 1, 0));
      }
    }
    for (; q < p + panels; ++q) Blocks::template Run<R, 1>(g, row0, q, ShareOf(g, q, fetch ? 1 : 0, 1, 0));
  }
}

template <class Blocks>
void GemmImpl(const GemmArgs& g) {
  constexpr int R = Blocks::kRows;
  const int64_t full = g.rows / R * R;
  // Panel-major, two panels at a time: a panel stays cache-resident while every row block
  // passes over it; the row tail follows each pair. The full blocks of a panel prefetch the
  // next one; with no full block, the tail prefetches the next pair.
  for (int64_t p = 0; p < g.panels_n; p += 2) {
    const int64_t panels = std::min<int64_t>(2, g.panels_n - p);
    for (int64_t q = p; q < p + panels; ++q) {
      for (int64_t i = 0; i < full; i += R) {
        Blocks::template Run<R, 1>(g, i, q, ShareOf(g, q, 1, full / R, i / R));
      }
    }
    if (full < g.rows) {
      Tail<Blocks, R - 1>(g, full, p, panels, static_cast<int>(g.rows - full), full == 0);
    }
  }
}

#if SY_HWY_AVX512
// vdpbf16ps: two fused steps per lane (odd element, then even) in one instruction.
#define SY_DPBF16_ATTR __attribute__((target(HWY_TARGET_STR ",avx512bf16")))

template <int R, int P>
SY_DPBF16_ATTR HWY_NOINLINE void BlockDot(const GemmArgs& g, int64_t row0, int64_t p, Prefetch pf) {
  const bf16* b[P];
  for (int j = 0; j < P; ++j) b[j] = reinterpret_cast<const bf16*>(PanelAt(g, p + j));
  const bf16* a = static_cast<const bf16*>(g.a) + row0 * g.lda;
  __m512 acc[P][2][R];
  for (int j = 0; j < P; ++j) {
    for (int i = 0; i < R; ++i) acc[j][0][i] = acc[j][1][i] = _mm512_setzero_ps();
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < g.k; k += 2) {
    PrefetchStep(pf, k / 2);
    __m512bh b0[P], b1[P];
    for (int j = 0; j < P; ++j) {
      const bf16* pair = b[j] + (k / 2) * kPanelCols * 2;
      b0[j] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(pair));
      b1[j] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(pair + 32));
    }
    // Every row's pair broadcast first, then rows innermost (as BlockF32): with the rows
    // outer, GCC stored every accumulator to the stack on each step (half speed on Zen 5).
    __m512bh ai[R];
    for (int i = 0; i < R; ++i) {
      int32_t both;
      __builtin_memcpy(&both, a + i * g.lda + k, 4);
      ai[i] = reinterpret_cast<__m512bh>(_mm512_set1_epi32(both));
    }
    for (int j = 0; j < P; ++j) {
      for (int i = 0; i < R; ++i) acc[j][0][i] = _mm512_dpbf16_ps(acc[j][0][i], ai[i], b0[j]);
      for (int i = 0; i < R; ++i) acc[j][1][i] = _mm512_dpbf16_ps(acc[j][1][i], ai[i], b1[j]);
    }
  }
  alignas(64) float buf[kPanelCols];
  for (int j = 0; j < P; ++j) {
    for (int i = 0; i < R; ++i) {
      _mm512_store_ps(buf, acc[j][0][i]);
      _mm512_store_ps(buf + 16, acc[j][1][i]);
      EpilogueRow(g, row0 + i, p + j, buf);
    }
  }
}

// Bf16DotProbe's timings: `reps` steps of 16 independent vdpbf16ps (or FMA) chains in
// registers, seconds.
template <bool kDot>
SY_DPBF16_ATTR HWY_NOINLINE double ChainSeconds(int64_t reps) {
  __m512 acc[16];
  for (__m512& x : acc) x = _mm512_setzero_ps();
  __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(0.5f);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < reps; ++r) {
    asm volatile("" : "+v"(a));  // keeps the loop from being folded
#pragma GCC unroll 16
    for (__m512& x : acc) {
      if constexpr (kDot) {
        x = _mm512_dpbf16_ps(x, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
      } else {
        x = _mm512_fmadd_ps(a, b, x);
      }
    }
  }
  for (__m512& x : acc) asm volatile("" : : "v"(x));
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct DotBlocks {
  static constexpr int kRows = 8, kPairRows = 3;
  template <int R, int P>
  static void Run(const GemmArgs& g, int64_t row0, int64_t p, Prefetch pf) { BlockDot<R, P>(g, row0, p, pf); }
};
#endif  // SY_HWY_AVX512

}  // namespace

void GemmF32(const GemmArgs& g) { GemmImpl<F32Blocks>(g); }
void GemmBf16(const GemmArgs& g) { GemmImpl<Bf16Blocks>(g); }
#if SY_HWY_AVX512
void GemmBf16Dot(const GemmArgs& g) { GemmImpl<DotBlocks>(g); }

// Seconds per vdpbf16ps over seconds per 512-bit FMA, each issued back to back: the best of
// three interleaved runs of 4,096 x 16 of each, after 8,192 x 16 FMAs (about 0.2 ms in all).
double Bf16DotProbe() {
  constexpr int64_t kReps = 4096;
  double dot = 1e9, fma = 1e9;
  ChainSeconds<false>(2 * kReps);  // wakes the 512-bit units (and settles the clock) first
  for (int i = 0; i < 3; ++i) {
    dot = std::min(dot, ChainSeconds<true>(kReps));
    fma = std::min(fma, ChainSeconds<false>(kReps));
  }
  return dot / fma;
}
#endif

}  // namespace switchyard::kernels::internal::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "hwy/targets.h"
#include "kernels/cpu/hwy_dispatch.h"

namespace switchyard::kernels::internal {

uint32_t SupportedIsaMask() {
  static const uint32_t mask = [] {
    const int64_t cpu = hwy::SupportedTargets();
    const int64_t target_of[] = {HWY_TARGETS & (HWY_SCALAR | HWY_EMU128), HWY_TARGETS & HWY_AVX2,
                                 HWY_TARGETS & HWY_AVX3, HWY_TARGETS & HWY_NEON};
    uint32_t m = 0;
    for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kNeon}) {
      const int64_t target = target_of[static_cast<int>(isa)];
      // The portable path runs anywhere; the others where the CPU has their target.
      if (target != 0 && (isa == CpuIsa::kPortable || (cpu & target) != 0)) {
        m |= uint32_t{1} << static_cast<int>(isa);
      }
    }
    return m;
  }();
  return mask;
}

bool UseBf16Dot(CpuIsa isa) {
  if (isa != CpuIsa::kAvx512 || !CpuSupportsBf16Dot()) return false;
  const absl::StatusOr<std::optional<bool>> forced = Bf16DotFromEnvironment();
  if (forced.ok() && forced->has_value()) return **forced;
  // A vdpbf16ps does two FMAs per lane. Measured on Intel family 6 model 207, where it costs
  // 4.1 FMAs: the vdpbf16ps kernel runs at 90% of its instruction's peak, the widening one
  // at 70% of the FMA peak; so vdpbf16ps wins below about 2.6 FMAs, and 2 leaves a margin.
  const double cost = Bf16DotCostInFmas();
  return cost > 0 && cost < 2.0;
}

GemmKernel GemmFor(CpuIsa isa, bool bf16, bool bf16_dot) {
#if HWY_TARGETS & HWY_AVX3
  if (isa == CpuIsa::kAvx512 && bf16 && bf16_dot) {
    return {&N_AVX3::GemmBf16Dot, true, "avx512_bf16dot"};
  }
#endif
  // In CpuIsa order.
  static constexpr const char* kWidenNames[] = {"portable_bf16widen", "avx2_bf16widen", "avx512_bf16widen",
                                                "neon_bf16widen"};
  if (bf16) return {SY_CPU_ISA_FUNCTION(isa, GemmBf16), false, kWidenNames[static_cast<int>(isa)]};
  return {SY_CPU_ISA_FUNCTION(isa, GemmF32), false, CpuIsaName(isa).data()};
}

}  // namespace switchyard::kernels::internal

namespace switchyard::kernels {

double Bf16DotCostInFmas() {
#if HWY_TARGETS & HWY_AVX3
  static const double cost = CpuSupportsBf16Dot() ? internal::N_AVX3::Bf16DotProbe() : 0;
  return cost;
#else
  return 0;
#endif
}

}  // namespace switchyard::kernels
#endif  // HWY_ONCE
