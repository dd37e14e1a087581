// CPU gating, written once over Highway and compiled for each target (see gating.h for the
// routers and gating_internal.h for the bit-identity contract).
//
// Per token: scores (softmax or sigmoid) and selection scores (+ bias) as vectors; group
// scores (best, or best + second best) from lane-wise maxima; the top-k over the allowed
// experts scans a vector at a time and only looks at lanes above the current k-th value.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/gating_kernel.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

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

// The k best of `n` candidates (values, padded with -inf to whole vectors) into `ids` (their
// positions), best first: higher value, then lower position (TopK's order).
//
// A threshold first: for k <= 16, with S the power of two >= k, the maxima of the S disjoint
// sets {positions = j (mod S)} are S candidates, so at least k candidates are >= t = the
// least of those maxima, and every one of the k best is >= t (lane-wise maxima and a fold;
// no sort). The few survivors (about 20 of 256 for DeepSeek-V3) are then ranked by counting,
// without branches: rank(i) = #{j: v_j > v_i} + #{j < i: v_j == v_i}, a vector compare per
// survivor; rank < k is the output slot. More than kMaxSurvivors (many ties, or k > 16):
// the scalar keeper over the survivors.
constexpr int kMaxSurvivors = 64;
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
  // Survivors in position order. AVX-512: per vector, the kept lanes compressed to its front
  // in registers (CompressStore's memory form is microcoded and slow on AMD Zen 4/5) and
  // stored whole at the end of the list, which then grows by their count.
  HWY_ALIGN float sv[kMaxSurvivors + 2 * kLanes];
  HWY_ALIGN int32_t sp[kMaxSurvivors + 2 * kLanes];
  const DI di;
  int n = 0;
  const VF vt = hn::Set(d, t);
  for (int e = 0; e < n_padded && n <= kMaxSurvivors; e += kLanes) {
    const VF v = hn::LoadU(d, values + e);
    const auto keep = hn::Ge(v, vt);
#if HWY_TARGET == HWY_AVX3
    hn::StoreU(hn::Compress(v, keep), d, sv + n);
    hn::StoreU(hn::Compress(hn::Iota(di, e), hn::RebindMask(di, keep)), di, sp + n);
    n += static_cast<int>(hn::CountTrue(d, keep));
#else  // Highway's table-driven Compress is slower here than walking the mask bits
    if (hn::AllFalse(d, keep)) continue;
    uint8_t bytes[(kLanes + 7) / 8 + 8] = {};
    hn::StoreMaskBits(d, keep, bytes);
    uint64_t bits;
    std::memcpy(&bits, bytes, sizeof bits);
    for (; bits != 0; bits &= bits - 1) {
      const int lane = __builtin_ctzll(bits);
      sv[n] = values[e + lane];
      sp[n++] = e + lane;
    }
#endif
  }
  if (n > kMaxSurvivors) {
    TopK top(k, kept_values, ids);
    for (int e = 0; e < n_padded; ++e) {
      if (values[e] >= t) top.Offer(values[e], e);
    }
    return;
  }
  for (int i = n; i < n + kLanes; ++i) sv[i] = kMinusInf;
  int32_t ranked_ids[kMaxSurvivors + 1];  // k <= n <= kMaxSurvivors here
  float ranked_values[kMaxSurvivors + 1];
  for (int i = 0; i < n; ++i) {
    const VF vi = hn::Set(d, sv[i]);
    size_t rank = 0;
    for (int c = 0; c < n; c += kLanes) {
      const VF v = hn::Load(d, sv + c);
      const auto valid = hn::FirstN(d, static_cast<size_t>(n - c));
      const auto before = hn::FirstN(d, static_cast<size_t>(std::clamp(i - c, 0, kLanes)));
      rank += hn::CountTrue(d, hn::And(hn::Gt(v, vi), valid));
      rank += hn::CountTrue(d, hn::And(hn::Eq(v, vi), before));
    }
    // Branch-free: ranks >= k land in a discarded slot.
    const size_t slot = std::min(rank, static_cast<size_t>(k));
    ranked_ids[slot] = sp[i];
    ranked_values[slot] = sv[i];
  }
  std::copy_n(ranked_ids, k, ids);
  std::copy_n(ranked_values, k, kept_values);
}

}  // namespace

void GateRows(const GatingConfig& c, const float* logits, int64_t tokens, int32_t* expert_ids, float* weights) {
  const int E = c.num_experts, k = c.top_k;
  const int group_size = E / c.num_groups;
  const bool grouped = c.num_groups > 1 && c.top_groups < c.num_groups;
  const int candidates = grouped ? c.top_groups * group_size : E;  // experts left after the group limit
  const int padded = (candidates + kLanes - 1) / kLanes * kLanes;
  std::vector<float> scores(E), choice(E), group_score(c.num_groups), group_top_values(c.top_groups), top_values(k);
  std::vector<float> values(padded, kMinusInf);
  std::vector<int32_t> group_top_ids(c.top_groups);
  for (int64_t t = 0; t < tokens; ++t) {
    Scores(c, logits + t * E, scores.data(), choice.data());
    int32_t* ids = expert_ids + t * k;
    // The candidates in ascending expert order: position p is expert first_of(p / group) + p % group.
    if (grouped) {
      TopK groups(c.top_groups, group_top_values.data(), group_top_ids.data());
      // Scores first, then the keeper: the groups' reductions are independent and overlap.
      for (int g = 0; g < c.num_groups; ++g) group_score[g] = GroupScoreOf(c, choice.data() + g * group_size, group_size);
      for (int g = 0; g < c.num_groups; ++g) groups.Offer(group_score[g], g);
      std::sort(group_top_ids.begin(), group_top_ids.end());
      for (int i = 0; i < c.top_groups; ++i) {
        std::copy_n(choice.data() + group_top_ids[i] * group_size, group_size, values.data() + i * group_size);
      }
    } else {
      std::copy_n(choice.data(), E, values.data());
    }
    SelectTopK(values.data(), padded, k, ids, top_values.data());
    for (int i = 0; i < k; ++i) {
      if (grouped) ids[i] = group_top_ids[ids[i] / group_size] * group_size + ids[i] % group_size;
    }
    float* w = weights + t * k;
    float sum = 0;
    for (int i = 0; i < k; ++i) sum += w[i] = scores[ids[i]];
    const float scale = c.renormalize ? c.routed_scaling_factor / (sum + 1e-20f) : c.routed_scaling_factor;
    for (int i = 0; i < k; ++i) w[i] *= scale;
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

}  // namespace switchyard::kernels::internal::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "kernels/cpu/hwy_dispatch.h"

namespace switchyard::kernels::internal {

GateFn GateFor(CpuIsa isa) { return SY_CPU_ISA_FUNCTION(isa, GateRows); }
SharedGateFn SharedGateFor(CpuIsa isa) { return SY_CPU_ISA_FUNCTION(isa, SharedGateRows); }

}  // namespace switchyard::kernels::internal
#endif  // HWY_ONCE
