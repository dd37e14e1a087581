// CPU gating, written once over Highway and compiled for each target (see gating.h for the
// routers and gating_internal.h for the bit-identity contract).
//
// Tokens go in blocks of kBlock, stage by stage: every token's scores (softmax or sigmoid)
// and selection scores (+ bias) as vectors, then each selection stage for every token of the
// block before the next stage. One token's selection is a long serial chain (and its branches
// depend on its data); staged, the tokens' independent chains interleave in the core.
//
// Where the vectors are wide enough (groups <= lanes, groups and the expert count whole
// vectors, k <= lanes: DeepSeek-V2/V3 and Qwen3 on AVX2 and AVX-512, Mixtral on AVX2)
// FastSelection keeps most of the selection in registers: group top-2 by lane-wise merges and
// a lane-halving tree, group ranks by comparing a vector with its rotations, a threshold that
// every one of the k best reaches, the few survivors ranked the same way. Elsewhere (and for
// a token whose threshold leaves more than kMaxSurvivors, e.g. many ties, or fewer than k:
// NaN scores) GeneralSelection runs. Both pick the same ids for finite logits, so every path
// gives the same bits (tests/kernels/gating_test.cc compares them). Logits must be finite
// (gating.h); a NaN or infinity still gives in-range, distinct ids.
//
// Sigmoid routers on FastSelection first select on cheap approximate scores (the filter,
// below), then score only the survivors exactly: the exact sigmoid (a division) of all E
// experts was most of the time. The filter only decides where its error bound cannot change
// the result, so the ids and bits are still the exact selection's.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/gating_kernel.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"
#include "kernels/cpu/gating_internal.h"
#include "kernels/cpu/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace switchyard::kernels::internal::HWY_NAMESPACE {
namespace {

using DI = hn::RebindToSigned<DF>;
using D1 = hn::CappedTag<float, 1>;  // one lane: the tails, with the same per-lane code

constexpr int kSumLanes = 16;  // the softmax sum's fixed partial lanes
static_assert(kSumLanes % kLanes == 0, "vector width divides the partial lanes");
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

float MaxOf(VF v) { return hn::GetLane(hn::MaxOfLanes(DF(), v)); }

// scores[e] = softmax or sigmoid of x; choice[e] = scores[e] (+ bias[e]).
void Scores(const GatingConfig& c, const float* x, float* scores, float* choice) {
  const DF d;
  const D1 d1;
  const int E = c.num_experts;
  const int vec_end = E / kLanes * kLanes;
  if (c.score == ScoreFunction::kSoftmax) {
    VF m = hn::Set(d, kMinusInf);
    for (int e = 0; e < vec_end; e += kLanes) m = hn::Max(m, hn::LoadU(d, x + e));
    float max = vec_end > 0 ? MaxOf(m) : kMinusInf;
    for (int e = vec_end; e < E; ++e) max = std::max(max, x[e]);
    VF acc[kSumLanes / kLanes];
    for (VF& a : acc) a = hn::Zero(d);
    const VF vmax = hn::Set(d, max);
    for (int e = 0; e < vec_end; e += kLanes) {
      const VF ex = Exp(d, hn::Sub(hn::LoadU(d, x + e), vmax));
      hn::StoreU(ex, d, scores + e);
      VF& a = acc[(e / kLanes) % (kSumLanes / kLanes)];
      a = hn::Add(a, ex);
    }
    HWY_ALIGN float partial[kSumLanes];
    for (int j = 0; j < kSumLanes / kLanes; ++j) hn::Store(acc[j], d, partial + j * kLanes);
    for (int e = vec_end; e < E; ++e) {
      scores[e] = hn::GetLane(Exp(d1, hn::Set(d1, x[e] - max)));
      partial[e % kSumLanes] += scores[e];
    }
    float sum = 0;
    for (float p : partial) sum += p;
    const VF vsum = hn::Set(d, sum);
    for (int e = 0; e < vec_end; e += kLanes) hn::StoreU(hn::Div(hn::LoadU(d, scores + e), vsum), d, scores + e);
    for (int e = vec_end; e < E; ++e) scores[e] /= sum;
  } else {
    for (int e = 0; e < vec_end; e += kLanes) hn::StoreU(Sigmoid(d, hn::LoadU(d, x + e)), d, scores + e);
    for (int e = vec_end; e < E; ++e) scores[e] = hn::GetLane(Sigmoid(d1, hn::Set(d1, x[e])));
  }
  if (c.expert_bias == nullptr) {
    std::copy(scores, scores + E, choice);
    return;
  }
  for (int e = 0; e < vec_end; e += kLanes) {
    hn::StoreU(hn::Add(hn::LoadU(d, scores + e), hn::LoadU(d, c.expert_bias + e)), d, choice + e);
  }
  for (int e = vec_end; e < E; ++e) choice[e] = scores[e] + c.expert_bias[e];
}

// ---- The filter: approximate selection scores, exact where they decide -----------------
//
// For sigmoid routers on the in-register selection, the selection runs first on cheap
// approximate scores a_e = FilterSigmoid(x_e, bias_e), each within eps of the exact c_e =
// Sigmoid(x_e) + bias_e (FilterEpsilon). That suffices for the exact result when
//   - the kept groups are separated from the rest by more than 4 eps in approximate group
//     score (a group score moves by at most 2 eps), and
//   - the survivors are taken at the approximate threshold minus 2 eps (every candidate
//     whose exact score reaches the exact threshold is then among them):
// the survivors alone are then scored exactly (RescoreStage) and ranked on the exact scores,
// so the ids and weight bits are the exact selection's on every path. A token that fails
// either test (or whose exact survivors hold a NaN) takes the exact scores and the general
// selection. Only the filter's approximation differs between targets, never the results.

// sigmoid(x) within kFilterSigmoidError of Sigmoid(x) for every input but NaN (test:
// FilterSigmoidError): e^-x = 2^y as 2^n times a cubic for 2^f (relative error 7.5e-5);
// 1 / (1 + e^-x) from the target's reciprocal estimate and Newton steps (one on x86, two
// from NEON's coarser estimate). AVX-512 splits y as floor and fraction in one instruction
// (vreduceps) and scales in one (vscalefps), which take y = -inf and underflow to a zero
// 2^y, so y is only clamped above; elsewhere x is clamped to [-16, 16] (beyond, sigmoid is
// within 1.2e-7 of 0 or 1) and n = round(y) by the 1.5 x 2^23 shifter, added to the
// exponent. Not the same bits on every target (the estimates differ): only the bound is
// shared.
//
// `plus` is added in the last Newton step's FMA (r (2 - den r) + plus): the bias, or zero.
HWY_INLINE VF FilterSigmoid(VF x, VF plus) {
  const DF d;
  constexpr float kMinusLog2e = -exp_detail::kLog2e;
#if SY_HWY_AVX512
  // One clamp, y <= 64 (1 + 2^y stays finite; a NaN x takes the bound): vreduceps takes y =
  // -inf to 0 and vscalefps to a zero u.
  const VF y = hn::Min(hn::Mul(x, hn::Set(d, kMinusLog2e)), hn::Set(d, 64.0f));
  const VF f{_mm512_reduce_ps(y.raw, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)};  // y - floor(y), in [0, 1)
  VF p = Fma(hn::Set(d, 0.0780245066f), f, hn::Set(d, 0.226067215f));
  p = Fma(p, f, hn::Set(d, 0.695833504f));
  p = Fma(p, f, hn::Set(d, 0.999925196f));
  const VF u{_mm512_scalef_ps(p.raw, y.raw)};  // p * 2^floor(y)
#else
  x = hn::Min(hn::Max(x, hn::Set(d, -16.0f)), hn::Set(d, 16.0f));
  const DI di;
  const VF shifter = hn::Set(d, exp_detail::kShifter);
  const VF t = Fma(x, hn::Set(d, kMinusLog2e), shifter);
  const VF f = Fma(x, hn::Set(d, kMinusLog2e), hn::Sub(shifter, t));  // y - n, in [-1/2, 1/2]
  VF p = Fma(hn::Set(d, 0.0551716648f), f, hn::Set(d, 0.242611170f));
  p = Fma(p, f, hn::Set(d, 0.693260968f));
  p = Fma(p, f, hn::Set(d, 0.999928057f));
  // t's low mantissa bits hold n; shifted up by 23 they are n's exponent increment (mod 2^32).
  const VF u = hn::BitCast(d, hn::Add(hn::BitCast(di, p), hn::ShiftLeft<23>(hn::BitCast(di, t))));
#endif
  const VF one = hn::Set(d, 1.0f), den = hn::Add(one, u);
  VF r = hn::ApproximateReciprocal(den);  // x86: within 1.5 x 2^-12 (relative); NEON: 2^-8
#if HWY_ARCH_ARM
  r = Fma(r, FmaNeg(den, r, one), r);
#endif
  return Fma(r, FmaNeg(den, r, hn::Set(d, 2.0f)), plus);
}

// The bound on |a_e - c_e| for config c, or -1 where the filter does not apply (softmax, or a
// non-finite bias): the sigmoid's bound, plus a margin for the roundings of the bias sums and
// of the group scores (a few ulps of 2 (1 + max |bias|), far below 2^-17 of it).
float FilterEpsilon(const GatingConfig& c) {
  if (c.score != ScoreFunction::kSigmoid) return -1;
  float max_bias = 0;
  for (int e = 0; c.expert_bias != nullptr && e < c.num_experts; ++e) {
    if (!std::isfinite(c.expert_bias[e])) return -1;
    max_bias = std::max(max_bias, std::abs(c.expert_bias[e]));
  }
  return kFilterSigmoidError + 0x1p-17f * (1 + max_bias);
}

// choice[e] = FilterSigmoid(x[e]) (+ bias[e]), for E a whole number of vectors.
void FilterScores(const GatingConfig& c, const float* x, float* choice) {
  const DF d;
  const int E = c.num_experts;  // locals: the stores to choice could alias c
  if (const float* bias = c.expert_bias; bias != nullptr) {
    for (int e = 0; e < E; e += kLanes) {
      hn::StoreU(FilterSigmoid(hn::LoadU(d, x + e), hn::LoadU(d, bias + e)), d, choice + e);
    }
  } else {
    for (int e = 0; e < E; e += kLanes) hn::StoreU(FilterSigmoid(hn::LoadU(d, x + e), hn::Zero(d)), d, choice + e);
  }
}

// A group's score: its best selection score, plus its second best (a tie counts twice) for
// kTopTwoSum groups of two or more experts.
float GroupScoreOf(const GatingConfig& c, const float* v, int n) {
  const bool two = c.group_score == GroupScore::kTopTwoSum && n >= 2;
  if (n % kLanes != 0) {  // scalar, same comparisons
    float best = kMinusInf, second = kMinusInf;
    for (int e = 0; e < n; ++e) {
      if (v[e] > best) {
        second = best;
        best = v[e];
      } else if (v[e] > second) {
        second = v[e];
      }
    }
    return two ? best + second : best;
  }
  const DF d;
  VF m = hn::Set(d, kMinusInf);
  for (int e = 0; e < n; e += kLanes) m = hn::Max(m, hn::LoadU(d, v + e));
  const float best = MaxOf(m);
  if (!two) return best;
  const VF vbest = hn::Set(d, best), none = hn::Set(d, kMinusInf);
  size_t ties = 0;
  VF rest = none;
  for (int e = 0; e < n; e += kLanes) {
    const VF x = hn::LoadU(d, v + e);
    const auto is_best = hn::Eq(x, vbest);
    ties += hn::CountTrue(d, is_best);
    rest = hn::Max(rest, hn::IfThenElse(is_best, none, x));
  }
  return best + (ties >= 2 ? best : MaxOf(rest));
}

// ---- Selection pieces shared by both selections ---------------------------------------

constexpr int kMaxSurvivors = 64;
// GatherStage permutes at most this many pairs of vectors of candidates per survivor vector
// (5 uops each); beyond, scalar loads (6 per survivor) are cheaper.
constexpr int kMaxGatherPairs = 16;
// With the filter, the survivors' logits and biases go along with them as they are picked
// (AppendSurvivors' carry), rather than loaded by id afterwards (GatherStage): where picking is
// a permutation of one instruction (AVX2: 10% fewer instructions per token). AVX-512's
// compress is two uops, on AMD and Intel alike; carrying measured 4% slower there.
constexpr bool kCarryLogits = !SY_HWY_AVX512;
constexpr float kPlusInf = std::numeric_limits<float>::infinity();

// The mask's lanes as bits (lane i: bit i). Byte by byte: a wider load of the bytes just
// stored would wait for the stores to retire (no store-to-load forwarding).
template <class D, class M>
HWY_INLINE uint64_t MaskBits(D d, M mask) {
  uint8_t bytes[8];
  const size_t written = hn::StoreMaskBits(d, mask, bytes);
  uint64_t bits = 0;
  for (size_t i = 0; i < written; ++i) bits |= uint64_t{bytes[i]} << (8 * i);
  return bits;
}

// For 2..8 lanes without AVX-512's compress: per mask, the kept lanes' indices first (the
// rest: anything). 256 x 8 bytes.
struct CompressIndices {
  uint8_t lanes[1 << 8][8] = {};
  constexpr CompressIndices() {
    for (int mask = 0; mask < (1 << 8); ++mask) {
      int j = 0;
      for (int lane = 0; lane < 8; ++lane) {
        if (mask >> lane & 1) lanes[mask][j++] = static_cast<uint8_t>(lane);
      }
    }
  }
};
constexpr CompressIndices kCompressIndices;

// Candidates >= t, appended in id order to (sv, sid): per vector, the kept lanes moved to its
// front in registers and stored whole at the end of the list, which then grows by their
// count (the lists need kLanes of slack). Without a branch per lane: a survivor count that
// varies per vector mispredicts. AVX-512: its compress (CompressStore's memory form is
// microcoded and slow on AMD Zen 4/5); 2..8 lanes: a permutation from kCompressIndices
// (Highway's own Compress is slower here); one lane: the loop. With `carry` (the filter where
// kCarryLogits: the permutation branch only), the same lanes of carry.x (the logits) and
// carry.bias (if any) go along into carry.xs and carry.bs. Without kValues only the ids (and
// the carry) are appended: the filter's RescoreStage writes the values.
struct Carry {
  const float* x = nullptr;     // the logits of the row's vector
  const float* bias = nullptr;  // the biases of the row's vector, or null
  float* xs = nullptr;          // null: nothing carried
  float* bs = nullptr;
};

template <bool kValues = true>
HWY_INLINE void AppendSurvivors(const float* row, int32_t first_id, VF vt, float* sv, int32_t* sid, int& n,
                                const Carry& carry = {}) {
  const DF d;
  const DI di;
  const VF v = hn::LoadU(d, row);
  const auto keep = hn::Ge(v, vt);
  const auto ids = hn::Add(hn::Iota(di, 0), hn::Set(di, first_id));
#if SY_HWY_AVX512
  if constexpr (kValues) hn::StoreU(hn::Compress(v, keep), d, sv + n);
  hn::StoreU(hn::Compress(ids, hn::RebindMask(di, keep)), di, sid + n);
  HWY_DASSERT(carry.xs == nullptr);  // kCarryLogits is false here
  n += static_cast<int>(hn::CountTrue(d, keep));
#else
  const uint64_t bits = MaskBits(d, keep);
  if constexpr (kLanes >= 2 && kLanes <= 8) {
    const hn::Rebind<uint8_t, DI> d8;
    const auto from = hn::PromoteTo(di, hn::LoadU(d8, kCompressIndices.lanes[bits]));
    if constexpr (kValues) hn::StoreU(hn::TableLookupLanes(v, hn::IndicesFromVec(d, from)), d, sv + n);
    hn::StoreU(hn::TableLookupLanes(ids, hn::IndicesFromVec(di, from)), di, sid + n);
    if (carry.xs != nullptr) {
      hn::StoreU(hn::TableLookupLanes(hn::LoadU(d, carry.x), hn::IndicesFromVec(d, from)), d, carry.xs + n);
      if (carry.bias != nullptr) {
        hn::StoreU(hn::TableLookupLanes(hn::LoadU(d, carry.bias), hn::IndicesFromVec(d, from)), d, carry.bs + n);
      }
    }
    n += __builtin_popcountll(bits);
  } else {
    HWY_DASSERT(carry.xs == nullptr);  // one lane: no FastSelection, so no filter
    for (uint64_t b = bits; b != 0; b &= b - 1) {
      const int lane = __builtin_ctzll(b);
      if constexpr (kValues) sv[n] = row[lane];
      sid[n++] = first_id + lane;
    }
  }
#endif
}

// Closes n appended survivors for RankSurvivors: -inf values and id 0 up to the next whole
// vector (RankSurvivors reads whole vectors; the padding ranks last and is discarded), and
// zeros after the carried logits and biases, if any.
HWY_INLINE void PadSurvivors(float* sv, int32_t* sid, int n, const Carry& carry = {}) {
  hn::StoreU(hn::Set(DF(), kMinusInf), DF(), sv + n);
  hn::StoreU(hn::Zero(DI()), DI(), sid + n);
  if (carry.xs != nullptr) hn::StoreU(hn::Zero(DF()), DF(), carry.xs + n);
  if (carry.bs != nullptr) hn::StoreU(hn::Zero(DF()), DF(), carry.bs + n);
}

// Ranks over the first N lanes (N a power of two <= kLanes; lanes beyond N, if any, must hold
// -inf and get meaningless ranks), from v compared with its N - 1 rotations (no sort, no
// branch). Lane i reads lane (i + r) mod N in rotation r.
template <int N>
HWY_INLINE hn::Vec<DI> Rotation(int r) {
  const DI di;
  return hn::And(hn::Add(hn::Iota(di, 0), hn::Set(di, r)), hn::Set(di, N - 1));
}

// #{r in [first, N): rotation r of `other` is ahead of v, lane-wise}, where ahead is greater
// (or, `or_equal`, at least equal). Comparisons only (mask logic is slow on AMD's AVX-512).
template <int N, bool or_equal = false>
HWY_INLINE hn::Vec<DI> CountAhead(VF v, VF other, int first) {
  const DF d;
  const DI di;
  auto count = hn::Zero(di);
  HWY_UNROLL(16)
  for (int r = first; r < N; ++r) {
    const VF o = hn::TableLookupLanes(other, hn::IndicesFromVec(d, Rotation<N>(r)));
    const auto ahead = or_equal ? hn::Ge(o, v) : hn::Gt(o, v);
    count = hn::Sub(count, hn::VecFromMask(di, hn::RebindMask(di, ahead)));
  }
  return count;
}

// greater[i] = #{j: v[j] > v[i]}: with no ties among the N lanes, lane i's place in
// descending order.
template <int N>
HWY_INLINE hn::Vec<DI> GreaterCounts(VF v) {
  return CountAhead<N>(v, v, 1);
}

// rank[i] = #{j: v[j] > v[i]} + #{j < i: v[j] == v[i]}: lane i's place in (value desc, lane
// asc) order, ties included. Cheap when the first N lanes hold no tie (the greater-counts
// then sum to N(N-1)/2 minus the ties among the -inf padding); else each rotation also
// counts the equal lanes it brings from below.
template <int N>
HWY_INLINE hn::Vec<DI> RanksOf(VF v, int valid) {
  const DF d;
  const DI di;
  const auto greater = GreaterCounts<N>(v);
  const int64_t padding = N - valid;
  const int64_t sum = hn::GetLane(hn::SumOfLanes(di, hn::IfThenElseZero(hn::FirstN(di, N), greater)));
  if (HWY_LIKELY(sum == int64_t{N} * (N - 1) / 2 - padding * (padding - 1) / 2)) return greater;
  auto rank = greater;
  const auto lane = hn::Iota(di, 0);
  HWY_UNROLL(16)
  for (int r = 1; r < N; ++r) {
    const VF other = hn::TableLookupLanes(v, hn::IndicesFromVec(d, Rotation<N>(r)));
    // The partner (i + r) mod N is a lower lane exactly when i >= N - r.
    const auto from_below = hn::RebindMask(d, hn::Gt(lane, hn::Set(di, N - r - 1)));
    rank = hn::Sub(rank, hn::VecFromMask(di, hn::RebindMask(di, hn::And(hn::Eq(other, v), from_below))));
  }
  return rank;
}

// RanksOf for n lanes (a power of two <= kLanes) of which `valid` are not -inf padding.
HWY_INLINE hn::Vec<DI> Ranks(VF v, int n, int valid) {
  switch (n) {
    case 2: return RanksOf<std::min(2, kLanes)>(v, valid);
    case 4: return RanksOf<std::min(4, kLanes)>(v, valid);
    case 8: return RanksOf<std::min(8, kLanes)>(v, valid);
    case 16: return RanksOf<std::min(16, kLanes)>(v, valid);
    default: return hn::Zero(DI());  // n = 1
  }
}

// The k best of n <= kMaxSurvivors survivors (sv in id order, closed by PadSurvivors)
// into ids, best first, and with ss (the survivors' scores) their scores into `scores`. Needs
// n >= k: the -inf padding lanes rank >= n.
//
// Up to two vectors of survivors: each one's rank (a permutation of 0..n-1 over the valid
// lanes), then for each output slot j < k the lane whose rank is j (a compare and a bit
// scan), read by scalar loads. Not a scatter of each lane to the slot its rank names:
// compilers vectorize that loop into scatter instructions, which are slow on AMD (tens of
// uops each), and the slots then need copying out through a store-forwarding stall.
template <bool kWithScores = false>
HWY_INLINE void RankSurvivors(const float* sv, const int32_t* sid, int n, int k, int32_t* ids,
                              const float* ss = nullptr, float* scores = nullptr) {
  const DF d;
  const DI di;
  auto put = [&](int slot, int i) {
    ids[slot] = sid[i];
    if constexpr (kWithScores) scores[slot] = ss[i];
  };
  if (n <= kLanes) {
    const auto rank = RanksOf<kLanes>(hn::Load(d, sv), n);
    for (int j = 0; j < k; ++j) put(j, static_cast<int>(hn::FindKnownFirstTrue(di, hn::Eq(rank, hn::Set(di, j)))));
  } else if (kLanes > 1 && n <= 2 * kLanes) {  // two vectors: each one's ranks, plus the other's
    const VF first = hn::Load(d, sv), second = hn::Load(d, sv + kLanes);
    // The other vector's lanes are all ahead when greater; the first's also when equal (lower ids).
    const auto rank = hn::Add(RanksOf<kLanes>(first, kLanes), CountAhead<kLanes>(first, second, 0));
    const auto rank2 = hn::Add(RanksOf<kLanes>(second, n - kLanes), CountAhead<kLanes, true>(second, first, 0));
    for (int j = 0; j < k; ++j) {  // the lane's bit among both vectors' (no branch on which one)
      const uint64_t bits =
          MaskBits(di, hn::Eq(rank, hn::Set(di, j))) | MaskBits(di, hn::Eq(rank2, hn::Set(di, j))) << kLanes;
      put(j, __builtin_ctzll(bits));
    }
  } else {  // a vector compare per survivor, each into the slot its rank names (>= k: discarded)
    int32_t out[kMaxSurvivors + 1];
    float out_scores[kMaxSurvivors + 1];
    for (int i = 0; i < n; ++i) {
      const VF vi = hn::Set(d, sv[i]);
      size_t rank = 0;
      for (int j = 0; j < n; j += kLanes) {
        const VF v = hn::Load(d, sv + j);
        const auto before = hn::FirstN(d, static_cast<size_t>(std::clamp(i - j, 0, kLanes)));
        rank += hn::CountTrue(d, hn::Or(hn::Gt(v, vi), hn::And(hn::Eq(v, vi), before)));
      }
      const size_t slot = std::min(rank, static_cast<size_t>(k));
      out[slot] = sid[i];
      if constexpr (kWithScores) out_scores[slot] = ss[i];
    }
    std::copy_n(out, k, ids);
    if constexpr (kWithScores) std::copy_n(out_scores, k, scores);
  }
}

// ---- The general selection: any config, any target ---------------------------------------

// The k best of `n` candidates (values, padded with -inf to whole vectors) into `ids` (their
// positions), best first: higher value, then lower position (TopK's order).
//
// A threshold first: for k <= 16, with S the power of two >= k, the maxima of the S disjoint
// sets {positions = j (mod S)} are S candidates, so at least k candidates are >= t = the
// least of those maxima, and every one of the k best is >= t (lane-wise maxima and a fold;
// no sort). The few survivors are then ranked (RankSurvivors). More than kMaxSurvivors (many
// ties, or k > 16): the scalar keeper over the survivors. Fewer than k (NaN scores, which no
// comparison keeps): the keeper over every candidate, so that k distinct ids come out.
void SelectTopK(const float* values, int n_padded, int k, int32_t* ids, float* kept_values) {
  const DF d;
  constexpr int kSets = kSumLanes / kLanes;
  float t = kMinusInf;
  if (k <= kSumLanes) {
    VF m[kSets];
    for (VF& v : m) v = hn::Set(d, kMinusInf);
    for (int e = 0; e < n_padded; e += kLanes) {
      VF& a = m[(e / kLanes) % kSets];
      a = hn::Max(a, hn::LoadU(d, values + e));
    }
    HWY_ALIGN float maxima[kSumLanes];  // maxima[j]: positions = j (mod 16)
    for (int j = 0; j < kSets; ++j) hn::Store(m[j], d, maxima + j * kLanes);
    int sets = 1;
    while (sets < k) sets *= 2;
    for (int width = kSumLanes / 2; width >= sets; width /= 2) {
      for (int j = 0; j < width; ++j) maxima[j] = std::max(maxima[j], maxima[j + width]);
    }
    t = maxima[0];
    for (int j = 1; j < sets; ++j) t = std::min(t, maxima[j]);
  }
  HWY_ALIGN float sv[kMaxSurvivors + 2 * kLanes];
  HWY_ALIGN int32_t sp[kMaxSurvivors + 2 * kLanes];
  int n = 0;
  const VF vt = hn::Set(d, t);
  for (int e = 0; e < n_padded && n <= kMaxSurvivors; e += kLanes) AppendSurvivors(values + e, e, vt, sv, sp, n);
  if (n > kMaxSurvivors || n < k) {
    TopK top(k, kept_values, ids);
    for (int e = 0; e < n_padded; ++e) {
      if (n < k || values[e] >= t) top.Offer(values[e], e);
    }
    return;
  }
  PadSurvivors(sv, sp, n);
  RankSurvivors(sv, sp, n, k, ids);
}

// Group-limited selection in scalar steps: group scores, the kept groups, their experts.
struct GeneralSelection {
  int group_size, candidates, padded;
  bool grouped;
  std::vector<float> group_score, group_top_values, top_values, values;
  std::vector<int32_t> group_top_ids;

  explicit GeneralSelection(const GatingConfig& c)
      : group_size(c.num_experts / c.num_groups),
        candidates(c.num_groups > 1 && c.top_groups < c.num_groups ? c.top_groups * group_size : c.num_experts),
        padded((candidates + kLanes - 1) / kLanes * kLanes),
        grouped(c.num_groups > 1 && c.top_groups < c.num_groups),
        group_score(c.num_groups),
        group_top_values(c.top_groups),
        top_values(c.top_k),
        values(padded, kMinusInf),
        group_top_ids(c.top_groups) {}

  void Select(const GatingConfig& c, const float* choice, int32_t* ids) {
    // The candidates in ascending expert order: position p is expert first_of(p / group) + p % group.
    if (grouped) {
      TopK groups(c.top_groups, group_top_values.data(), group_top_ids.data());
      // Scores first, then the keeper: the groups' reductions are independent and overlap.
      for (int g = 0; g < c.num_groups; ++g) group_score[g] = GroupScoreOf(c, choice + g * group_size, group_size);
      for (int g = 0; g < c.num_groups; ++g) groups.Offer(group_score[g], g);
      std::sort(group_top_ids.begin(), group_top_ids.end());
      for (int i = 0; i < c.top_groups; ++i) {
        std::copy_n(choice + group_top_ids[i] * group_size, group_size, values.data() + i * group_size);
      }
    } else {
      std::copy_n(choice, c.num_experts, values.data());
    }
    SelectTopK(values.data(), padded, c.top_k, ids, top_values.data());
    for (int i = 0; grouped && i < c.top_k; ++i) {
      ids[i] = group_top_ids[ids[i] / group_size] * group_size + ids[i] % group_size;
    }
  }
};

// ---- The in-register selection -----------------------------------------------------------

// Fits when the groups fit in one vector's lanes and each group (or, ungrouped, the expert
// row) is whole vectors, and k <= lanes. Not on the one-lane target.
struct FastSelection {
  int groups, group_size, padded_groups = 1;
  bool grouped, group_top_two, second_bound, fits;
  // GatherStage by permutations: the candidate ranges are whole pairs of vectors, each pair
  // starting at a multiple of 2 x lanes, and at most kMaxGatherPairs pairs in all.
  bool gather_by_permutes;
  float eps;    // FilterEpsilon, or -1: no filter
  bool filter;  // the selection stages run on FilterScores' approximate scores

  explicit FastSelection(const GatingConfig& c)
      : groups(c.num_groups),
        group_size(c.num_experts / c.num_groups),
        grouped(c.num_groups > 1 && c.top_groups < c.num_groups),
        // A group of one expert has no second best (GroupScoreOf).
        group_top_two(c.group_score == GroupScore::kTopTwoSum && c.num_experts / c.num_groups >= 2),
        // The kept groups' best two are 2 x top_groups candidates: enough to bound the k-th best.
        second_bound(c.num_experts / c.num_groups >= 2 && 2 * c.top_groups >= c.top_k),
        fits(HWY_TARGET != HWY_SCALAR && c.top_k <= kLanes && c.num_experts % kLanes == 0 &&
             (!grouped || (groups <= kLanes && group_size % kLanes == 0))),
        gather_by_permutes((grouped ? group_size : c.num_experts) % (2 * kLanes) == 0 &&
                           (grouped ? c.top_groups * group_size : c.num_experts) <= kMaxGatherPairs * 2 * kLanes),
        // Not on the portable path: it is the exact reference the tests compare the others with.
        eps(fits && HWY_TARGET != HWY_EMU128 ? FilterEpsilon(c) : -1),
        filter(eps >= 0) {
    while (padded_groups < groups) padded_groups *= 2;
  }

  // The selection in stages, each run for every token of a block before the next one starts
  // (GateRows): one token's chain (group tree, group ranks, threshold, survivors, ranks) is
  // long and serial, and the tokens' chains are independent, so staged they interleave.

  // Stage 1, grouped only: lane g (< groups) of `score` and `second`: group g's score and its
  // second best selection score (a tie counts twice); -inf beyond the groups.
  void GroupStage(const float* choice, float* score, float* second) const {
    VF s;
    hn::Store(GroupScores(choice, &s), DF(), score);
    hn::Store(s, DF(), second);
  }

  // Stage 2: the candidate ranges (the kept groups in ascending order, or the whole row) and
  // the threshold t: every one of the k best candidates is >= t (with the filter: every one
  // of the k best by exact score). Returns the number of ranges, or 0 when the filter cannot
  // tell the kept groups apart (the caller then runs the exact scores and general selection).
  HWY_INLINE int RangeStage(const GatingConfig& c, const float* choice, const float* score, const float* second,
                            int* first, float* t) const {
    const DF d;
    const DI di;
    const VF minus_inf = hn::Set(d, kMinusInf), plus_inf = hn::Set(d, kPlusInf);
    int ranges = 1, range_size = c.num_experts;
    first[0] = 0;
    if (grouped) {
      const auto kept = hn::And(hn::Lt(Ranks(hn::Load(d, score), padded_groups, groups), hn::Set(di, c.top_groups)),
                                hn::FirstN(di, groups));
      ranges = 0;
      for (uint64_t bits = MaskBits(di, kept); bits != 0; bits &= bits - 1) {
        first[ranges++] = __builtin_ctzll(bits) * group_size;
      }
      range_size = group_size;
      if (filter) {
        // Each approximate group score is within 2 eps of the exact one: the kept groups are
        // the exact ones when the least kept is more than 4 eps above the best dropped.
        const VF s = hn::Load(d, score);
        const auto kept_f = hn::RebindMask(d, kept);
        const VF least_kept = hn::MinOfLanes(d, hn::IfThenElse(kept_f, s, plus_inf));
        const VF best_dropped = hn::MaxOfLanes(d, hn::IfThenElse(hn::AndNot(kept_f, hn::FirstN(d, groups)), s, minus_inf));
        if (!(hn::GetLane(hn::Sub(least_kept, best_dropped)) > 4 * eps)) return 0;
      }
      if (second_bound) {
        // The kept groups' best and second best are 2 x top_groups >= k distinct candidates,
        // all >= the least second best.
        *t = Lowered(hn::GetLane(hn::MinOfLanes(d, hn::IfThenElse(hn::RebindMask(d, kept), hn::Load(d, second), plus_inf))));
        return ranges;
      }
    }
    // Lane-wise maxima are distinct candidates, so the k-th best of them is <= the k-th best
    // candidate. The k-th best (with multiplicity) is the least of those with fewer than k
    // above. With 8 lanes or fewer, the maxima of the even and of the odd candidate vectors
    // (2 x lanes of them) give a tighter t, and fewer survivors to rank.
    VF m = minus_inf, m_odd = minus_inf;
    int vectors = 0;
    for (int r = 0; r < ranges; ++r) {
      for (int e = 0; e < range_size; e += kLanes, ++vectors) {
        VF& into = kLanes <= 8 && (vectors & 1) ? m_odd : m;
        into = hn::Max(into, hn::Load(d, choice + first[r] + e));
      }
    }
    VF vt;
    if (kLanes <= 8 && vectors >= 2) {
      const auto above = hn::Add(GreaterCounts<kLanes>(m), CountAhead<kLanes>(m, m_odd, 0));
      const auto above_odd = hn::Add(GreaterCounts<kLanes>(m_odd), CountAhead<kLanes>(m_odd, m, 0));
      vt = hn::Min(hn::MinOfLanes(d, hn::IfThenElse(hn::RebindMask(d, hn::Lt(above, hn::Set(di, c.top_k))), m, plus_inf)),
                   hn::MinOfLanes(d, hn::IfThenElse(hn::RebindMask(d, hn::Lt(above_odd, hn::Set(di, c.top_k))), m_odd, plus_inf)));
    } else {
      m = hn::Max(m, m_odd);
      const auto top = hn::RebindMask(d, hn::Lt(GreaterCounts<kLanes>(m), hn::Set(di, c.top_k)));
      vt = hn::MinOfLanes(d, hn::IfThenElse(top, m, plus_inf));
    }
    *t = Lowered(hn::GetLane(vt));
    return ranges;
  }

  // Stage 3: the survivors (candidates >= t) in id order into (sv, sid), -inf padded to whole
  // vectors (their ids padded with 0); their count, or -1 when it is not in [k,
  // kMaxSurvivors] (many ties, or a kept group's second best far below the k-th best; or NaN
  // scores, which no comparison keeps): the caller then runs the general selection. With
  // kCarryLogits and the filter, also their logits (x: the token's) and biases into xs and bs,
  // zero padded.
  int SurvivorStage(const GatingConfig& c, const float* x, const float* choice, const int* first, int ranges, float t,
                    float* sv, int32_t* sid, float* xs, float* bs) const {
    // Four calls, so that each inlined copy knows what it appends. With the filter the
    // approximate values are not kept: RescoreStage writes the exact ones.
    if (!filter) return Survivors<true>(c, choice, first, ranges, t, sv, sid, Carry{});
    if (!kCarryLogits) return Survivors<false>(c, choice, first, ranges, t, sv, sid, Carry{});
    if (c.expert_bias == nullptr) {
      return Survivors<false>(c, choice, first, ranges, t, sv, sid, Carry{x, nullptr, xs, nullptr});
    }
    return Survivors<false>(c, choice, first, ranges, t, sv, sid, Carry{x, c.expert_bias, xs, bs});
  }

  // Stage 3b, with the filter and without kCarryLogits (AVX-512): the n survivors' logits and
  // biases into xs and bs (whole vectors), from the candidate ranges (`ranges` of them, from
  // `first`). Not a gather instruction: slower on Intel (its microcode mitigation of Gather
  // Data Sampling) and no faster elsewhere. With gather_by_permutes (DeepSeek-V3's groups of
  // 32; Kimi K2's 384 and GLM-4.5's 160 experts), each pair of vectors is a two-table
  // permutation indexed by the ids' low 5 bits, kept in the lanes whose ids fall in the pair: 5
  // uops per pair and survivor vector, against 6 per survivor for scalar loads and stores.
  // Elsewhere scalar loads (the padding ids are 0). A stage of its own, so that the next one's
  // vector loads find these stores retired.
  void GatherStage(const GatingConfig& c, const float* x, int n, const int* first, int ranges, const int32_t* sid,
                   float* xs, float* bs) const {
#if SY_HWY_AVX512
    static_assert(kLanes == 16, "a pair of AVX-512 vectors is 32 = 2^5 floats");
    if (gather_by_permutes) {
      const int range_size = grouped ? group_size : c.num_experts;
      const float* bias = c.expert_bias;
      auto pick = [](const float* pair, __m512i id) {
        return _mm512_permutex2var_ps(_mm512_loadu_ps(pair), id, _mm512_loadu_ps(pair + kLanes));
      };
      for (int j = 0; j < n; j += kLanes) {
        const __m512i id = _mm512_load_si512(sid + j);
        const __m512i pair = _mm512_srli_epi32(id, 5);  // the id's pair of vectors
        __m512 xv = _mm512_setzero_ps(), bv = _mm512_setzero_ps();
        for (int r = 0; r < ranges; ++r) {
          for (int e = first[r]; e < first[r] + range_size; e += 2 * kLanes) {
            const __mmask16 in = _mm512_cmpeq_epi32_mask(pair, _mm512_set1_epi32(e >> 5));
            xv = _mm512_mask_mov_ps(xv, in, pick(x + e, id));
            if (bias != nullptr) bv = _mm512_mask_mov_ps(bv, in, pick(bias + e, id));
          }
        }
        _mm512_store_ps(xs + j, xv);
        if (bias != nullptr) _mm512_store_ps(bs + j, bv);
      }
      return;
    }
#else
    (void)first;
    (void)ranges;
#endif
    const int padded = (n + kLanes - 1) / kLanes * kLanes;
    for (int i = 0; i < padded; ++i) xs[i] = x[sid[i]];
    for (int i = 0; c.expert_bias != nullptr && i < padded; ++i) bs[i] = c.expert_bias[sid[i]];
  }

  // Stage 3c, with the filter: the n survivors' exact scores into ss and exact selection
  // scores into sv (the padding stays -inf), from their logits and biases xs and bs (carried
  // by SurvivorStage or loaded by GatherStage). Returns n, or -1
  // when a survivor's exact selection score is NaN (a NaN logit where the target's clamp
  // keeps NaN, as on NEON; x86's min and max turn it into the clamp's bound).
  int RescoreStage(const GatingConfig& c, int n, const float* xs, const float* bs, float* sv, float* ss) const {
    const DF d;
    for (int j = 0; j < n; j += kLanes) {
      const VF score = Sigmoid(d, hn::Load(d, xs + j));
      VF choice = c.expert_bias != nullptr ? hn::Add(score, hn::Load(d, bs + j)) : score;
      if (!hn::AllFalse(d, hn::IsNaN(choice))) return -1;
      choice = hn::IfThenElse(hn::FirstN(d, static_cast<size_t>(n - j)), choice, hn::Set(d, kMinusInf));
      hn::Store(choice, d, sv + j);
      hn::Store(score, d, ss + j);
    }
    return n;
  }

 private:
  // SurvivorStage with `carry`: carry.x and carry.bias point at expert 0's logit and bias
  // (bias null: none), and carry.xs null carries nothing.
  template <bool kValues>
  HWY_INLINE int Survivors(const GatingConfig& c, const float* choice, const int* first, int ranges, float t,
                           float* sv, int32_t* sid, Carry carry) const {
    const VF vt = hn::Set(DF(), t);
    const int range_size = grouped ? group_size : c.num_experts;
    int n = 0;
    for (int r = 0; r < ranges; ++r) {
      Carry at = carry;
      for (int e = first[r]; e < first[r] + range_size; e += kLanes) {
        if (carry.xs != nullptr) at.x = carry.x + e;
        if (carry.bias != nullptr) at.bias = carry.bias + e;
        AppendSurvivors<kValues>(choice + e, e, vt, sv, sid, n, at);
        if (n > kMaxSurvivors) return -1;
      }
    }
    if (n < c.top_k) return -1;
    PadSurvivors(sv, sid, n, carry);
    return n;
  }

  // A threshold over approximate scores, lowered so that it holds for the exact ones: every
  // candidate whose exact score reaches the exact threshold (within eps of this one) has an
  // approximate score no more than 2 eps below this one.
  float Lowered(float t) const { return filter ? t - 2 * eps : t; }

  // Lane g (< groups): group g's score (best, or best + second best); -inf beyond. Each
  // group's lane-wise (best, second), then a tree that halves the lanes per group and packs
  // two vectors into one per level (even and odd lanes merged), until lane g holds group g's.
  // P (the groups padded to a power of two) is a template argument so that the vectors stay
  // in registers; the tree is built depth first, so that few of them are live at once.
  VF GroupScores(const float* choice, VF* second) const {
    switch (padded_groups) {
      case 2: return GroupScoresOf<std::min(2, kLanes)>(choice, second);
      case 4: return GroupScoresOf<std::min(4, kLanes)>(choice, second);
      case 8: return GroupScoresOf<std::min(8, kLanes)>(choice, second);
      default: return GroupScoresOf<std::min(16, kLanes)>(choice, second);
    }
  }

  // Top-2 merge of the even lanes with the odd lanes of (hi:lo): lane i of the result merges
  // lanes 2i and 2i + 1 of the concatenation; a tie counts twice.
  static void MergePair(VF best_lo, VF second_lo, VF best_hi, VF second_hi, VF& best, VF& second) {
#if HWY_TARGET != HWY_SCALAR  // one lane: nothing to merge (and no ConcatEven)
    const DF d;
    const VF b = hn::ConcatEven(d, best_hi, best_lo), s = hn::ConcatEven(d, second_hi, second_lo);
    const VF ob = hn::ConcatOdd(d, best_hi, best_lo), os = hn::ConcatOdd(d, second_hi, second_lo);
    second = hn::Max(hn::Min(b, ob), hn::Max(s, os));
    best = hn::Max(b, ob);
#else
    (void)second_hi;
    (void)best_hi;
    best = best_lo;
    second = second_lo;
#endif
  }

  // Groups [g0, g0 + Count) (Count <= lanes) into one vector, kLanes / Count lanes per group
  // (lane-wise best and second best of each group, merged pairwise Count - 1 times). V: the
  // vectors per group where known at compile time (a loop of fixed length), else 0.
  template <int Count, int V>
  HWY_INLINE void Subtree(const float* choice, int g0, VF& best, VF& second) const {
    const DF d;
    if constexpr (Count == 1) {
      best = second = hn::Set(d, kMinusInf);
      if (g0 >= groups) return;
      const float* v = choice + g0 * group_size;
      best = hn::Load(d, v);
      const int end = V > 0 ? V * kLanes : group_size;
      HWY_UNROLL(8)
      for (int e = kLanes; e < end; e += kLanes) {
        const VF x = hn::Load(d, v + e);
        second = hn::Max(second, hn::Min(best, x));
        best = hn::Max(best, x);
      }
    } else {
      VF best_lo, second_lo, best_hi, second_hi;
      Subtree<Count / 2, V>(choice, g0, best_lo, second_lo);
      Subtree<Count / 2, V>(choice, g0 + Count / 2, best_hi, second_hi);
      MergePair(best_lo, second_lo, best_hi, second_hi, best, second);
    }
  }

  template <int P>
  HWY_INLINE VF GroupScoresOf(const float* choice, VF* second_out) const {
    switch (group_size / kLanes) {
      case 1: return GroupScoresOf<P, 1>(choice, second_out);
      case 2: return GroupScoresOf<P, 2>(choice, second_out);
      case 4: return GroupScoresOf<P, 4>(choice, second_out);
      default: return GroupScoresOf<P, 0>(choice, second_out);
    }
  }

  template <int P, int V>
  HWY_INLINE VF GroupScoresOf(const float* choice, VF* second_out) const {
    const DF d;
    VF best, second;
    Subtree<P, V>(choice, 0, best, second);
    // P lanes per group left: merge the vector with itself until each group has one.
    for (int per = kLanes / P; per > 1; per /= 2) MergePair(best, second, best, second, best, second);
    const VF score = group_top_two ? hn::Add(best, second) : best;
    *second_out = hn::IfThenElse(hn::FirstN(d, groups), second, hn::Set(d, kMinusInf));
    return hn::IfThenElse(hn::FirstN(d, groups), score, hn::Set(d, kMinusInf));
  }
};

}  // namespace

void GateRows(const GatingConfig& c, const float* logits, int64_t tokens, int32_t* expert_ids, float* weights) {
  constexpr int kBlock = 16;  // tokens per block of stages
  constexpr int kSurvivorRow = kMaxSurvivors + 2 * kLanes;
  const int E = c.num_experts, k = c.top_k;
  const FastSelection fast(c);
  GeneralSelection general(c);
  const size_t row = (E + kLanes - 1) / kLanes * kLanes;
  auto scores = hwy::AllocateAligned<float>(kBlock * row), choice = hwy::AllocateAligned<float>(kBlock * row);
  auto survivors = hwy::AllocateAligned<float>(kBlock * kSurvivorRow);
  // With the filter: the survivors' logits, biases and exact scores.
  auto survivor_logits = hwy::AllocateAligned<float>(kBlock * kSurvivorRow);
  auto survivor_biases = hwy::AllocateAligned<float>(kBlock * kSurvivorRow);
  auto survivor_scores = hwy::AllocateAligned<float>(kBlock * kSurvivorRow);
  auto survivor_ids = hwy::AllocateAligned<int32_t>(kBlock * kSurvivorRow);
  HWY_ALIGN float group_score[kBlock * kLanes], group_second[kBlock * kLanes], threshold[kBlock];
  int first[kBlock][kLanes], ranges[kBlock], count[kBlock];
  for (int64_t t0 = 0; t0 < tokens; t0 += kBlock) {
    const int block = static_cast<int>(std::min<int64_t>(kBlock, tokens - t0));
    for (int i = 0; i < block; ++i) {
      if (fast.filter) {
        FilterScores(c, logits + (t0 + i) * E, choice.get() + i * row);
      } else {
        Scores(c, logits + (t0 + i) * E, scores.get() + i * row, choice.get() + i * row);
      }
    }
    if (fast.fits) {
      if (fast.grouped) {
        for (int i = 0; i < block; ++i) fast.GroupStage(choice.get() + i * row, group_score + i * kLanes, group_second + i * kLanes);
      }
      for (int i = 0; i < block; ++i) {
        ranges[i] = fast.RangeStage(c, choice.get() + i * row, group_score + i * kLanes, group_second + i * kLanes, first[i], &threshold[i]);
      }
      for (int i = 0; i < block; ++i) {
        const int at = i * kSurvivorRow;
        count[i] = ranges[i] == 0
                       ? -1
                       : fast.SurvivorStage(c, logits + (t0 + i) * E, choice.get() + i * row, first[i], ranges[i],
                                            threshold[i], survivors.get() + at, survivor_ids.get() + at,
                                            survivor_logits.get() + at, survivor_biases.get() + at);
      }
      for (int i = 0; fast.filter && !kCarryLogits && i < block; ++i) {
        if (count[i] < 0) continue;
        const int at = i * kSurvivorRow;
        fast.GatherStage(c, logits + (t0 + i) * E, count[i], first[i], ranges[i], survivor_ids.get() + at,
                         survivor_logits.get() + at, survivor_biases.get() + at);
      }
      for (int i = 0; fast.filter && i < block; ++i) {
        if (count[i] < 0) continue;
        const int at = i * kSurvivorRow;
        count[i] = fast.RescoreStage(c, count[i], survivor_logits.get() + at, survivor_biases.get() + at,
                                     survivors.get() + at, survivor_scores.get() + at);
      }
    }
    // The k ids, and with the filter their exact scores into the weights.
    for (int i = 0; i < block; ++i) {
      int32_t* ids = expert_ids + (t0 + i) * k;
      if (fast.fits && count[i] >= 0) {
        const int at = i * kSurvivorRow;
        if (fast.filter) {
          RankSurvivors<true>(survivors.get() + at, survivor_ids.get() + at, count[i], k, ids,
                              survivor_scores.get() + at, weights + (t0 + i) * k);
        } else {
          RankSurvivors(survivors.get() + at, survivor_ids.get() + at, count[i], k, ids);
        }
      } else {
        // The filter's approximate scores could not decide: the exact ones.
        if (fast.filter) Scores(c, logits + (t0 + i) * E, scores.get() + i * row, choice.get() + i * row);
        general.Select(c, choice.get() + i * row, ids);
      }
    }
    for (int i = 0; i < block; ++i) {
      const int32_t* ids = expert_ids + (t0 + i) * k;
      const float* s = scores.get() + i * row;
      float* w = weights + (t0 + i) * k;
      const bool have_scores = fast.filter && count[i] >= 0;
      float sum = 0;
      for (int j = 0; j < k; ++j) sum += have_scores ? w[j] : (w[j] = s[ids[j]]);
      const float scale = c.renormalize ? c.routed_scaling_factor / (sum + 1e-20f) : c.routed_scaling_factor;
      for (int j = 0; j < k; ++j) w[j] *= scale;
    }
  }
}

void SharedGateRows(const float* hidden, const float* gate, int64_t tokens, int64_t H, float* scale) {
  const D1 d1;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* h = hidden + t * H;
    auto acc = hn::Zero(d1);
    for (int64_t i = 0; i < H; ++i) acc = Fma(hn::Set(d1, h[i]), hn::Set(d1, gate[i]), acc);
    scale[t] = hn::GetLane(Sigmoid(d1, acc));
  }
}

float FilterSigmoidError(uint32_t first_bits, uint32_t last_bits, uint32_t stride) {
  const DF d;
  const hn::RebindToUnsigned<DF> du;
  const auto lane_step = hn::Mul(hn::Iota(du, 0), hn::Set(du, stride));
  VF worst = hn::Zero(d);
  auto measure = [&](hn::Vec<decltype(du)> bits) {
    const VF x = hn::BitCast(d, bits);
    VF err = hn::Abs(hn::Sub(FilterSigmoid(x, hn::Zero(d)), Sigmoid(d, x)));
    err = hn::IfThenElse(hn::IsNaN(err), hn::Set(d, kPlusInf), err);  // a NaN result counts as infinitely far
    worst = hn::Max(worst, hn::IfThenZeroElse(hn::IsNaN(x), err));
  };
  const uint64_t span = uint64_t{stride} * kLanes, count = (uint64_t{last_bits} - first_bits) / stride + 1;
  const uint64_t whole_end = first_bits + count / kLanes * span;  // whole vectors of inputs below
  for (uint64_t b = first_bits; b < whole_end; b += span) measure(hn::Add(hn::Set(du, static_cast<uint32_t>(b)), lane_step));
  if (count % kLanes != 0) {  // the rest, the lanes past it repeating first_bits
    const auto bits = hn::Add(hn::Set(du, static_cast<uint32_t>(whole_end)), lane_step);
    measure(hn::IfThenElse(hn::FirstN(du, count % kLanes), bits, hn::Set(du, first_bits)));
  }
  return MaxOf(worst);
}

}  // namespace switchyard::kernels::internal::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "kernels/cpu/hwy_dispatch.h"

namespace switchyard::kernels::internal {

GateFn GateFor(CpuIsa isa) { return SY_CPU_ISA_FUNCTION(isa, GateRows); }
SharedGateFn SharedGateFor(CpuIsa isa) { return SY_CPU_ISA_FUNCTION(isa, SharedGateRows); }
FilterErrorFn FilterSigmoidErrorFor(CpuIsa isa) { return SY_CPU_ISA_FUNCTION(isa, FilterSigmoidError); }

}  // namespace switchyard::kernels::internal
#endif  // HWY_ONCE
