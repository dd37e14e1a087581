// Gating against a direct scalar reference of each router; ties; edge cases.
#include "kernels/gating.h"

#include <gtest/gtest.h>

#include "kernels/cpu/gating_internal.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>

namespace switchyard::kernels {
namespace {

// Reference: sort all allowed experts by (selection score desc, id asc), take k.
void Reference(const GatingConfig& c, const float* x, std::vector<int32_t>& ids, std::vector<float>& w) {
  const int E = c.num_experts;
  std::vector<double> score(E), choice(E);
  if (c.score == ScoreFunction::kSoftmax) {
    double max = *std::max_element(x, x + E), sum = 0;
    for (int e = 0; e < E; ++e) sum += score[e] = std::exp(x[e] - max);
    for (double& s : score) s /= sum;
  } else {
    for (int e = 0; e < E; ++e) score[e] = 1 / (1 + std::exp(-double(x[e])));
  }
  for (int e = 0; e < E; ++e) choice[e] = score[e] + (c.expert_bias ? c.expert_bias[e] : 0);
  std::vector<int> allowed(E);
  std::iota(allowed.begin(), allowed.end(), 0);
  if (c.num_groups > 1) {
    const int gs = E / c.num_groups;
    std::vector<std::pair<double, int>> groups;
    for (int g = 0; g < c.num_groups; ++g) {
      std::vector<double> v(choice.begin() + g * gs, choice.begin() + (g + 1) * gs);
      std::sort(v.rbegin(), v.rend());
      const bool max = c.group_score == GroupScore::kMax;
      groups.push_back({-(v[0] + (gs > 1 && !max ? v[1] : 0)), g});
    }
    std::sort(groups.begin(), groups.end());
    allowed.clear();
    for (int i = 0; i < c.top_groups; ++i) {
      for (int e = groups[i].second * gs; e < (groups[i].second + 1) * gs; ++e) allowed.push_back(e);
    }
  }
  std::stable_sort(allowed.begin(), allowed.end(), [&](int a, int b) {
    return float(choice[a]) > float(choice[b]) || (float(choice[a]) == float(choice[b]) && a < b);
  });
  ids.assign(allowed.begin(), allowed.begin() + c.top_k);
  double sum = 0;
  w.clear();
  for (int id : ids) {
    w.push_back(score[id]);
    sum += score[id];
  }
  for (float& v : w) v = float(v * (c.renormalize ? c.routed_scaling_factor / sum : c.routed_scaling_factor));
}

void Check(const GatingConfig& c, int tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 2);
  std::vector<float> logits(tokens * c.num_experts);
  for (float& v : logits) v = n(rng);
  std::vector<int32_t> ids(tokens * c.top_k);
  std::vector<float> w(tokens * c.top_k);
  ASSERT_TRUE(GateCpu(c, logits.data(), tokens, ids.data(), w.data()).ok());
  for (int t = 0; t < tokens; ++t) {
    std::vector<int32_t> rid;
    std::vector<float> rw;
    Reference(c, logits.data() + t * c.num_experts, rid, rw);
    for (int j = 0; j < c.top_k; ++j) {
      ASSERT_EQ(ids[t * c.top_k + j], rid[j]) << "token " << t << " choice " << j;
      EXPECT_NEAR(w[t * c.top_k + j], rw[j], 1e-5 * std::max(1.0f, std::abs(rw[j])));
    }
  }
}

TEST(GatingTest, SoftmaxTopKRenormalised) {  // Mixtral / Qwen3-MoE
  Check({8, 2, ScoreFunction::kSoftmax, true}, 200, 1);
  Check({128, 8, ScoreFunction::kSoftmax, true}, 50, 2);
  Check({60, 4, ScoreFunction::kSoftmax, false}, 50, 3);  // Qwen1.5-MoE: no renorm
}

TEST(GatingTest, DeepSeekSigmoidBiasGroupLimited) {
  std::vector<float> bias(256);
  std::mt19937 rng(4);
  for (float& b : bias) b = std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng);
  GatingConfig c{256, 8, ScoreFunction::kSigmoid, true, 8, 4, 2.5f, bias.data()};
  Check(c, 100, 5);
}

TEST(GatingTest, DeepSeekV2SoftmaxGroupMax) {
  GatingConfig c{160, 6, ScoreFunction::kSoftmax, false, 8, 3, 16.0f};
  c.group_score = GroupScore::kMax;
  Check(c, 100, 8);
}

TEST(GatingTest, PlainSigmoidTopK) {  // Nemotron-H style
  Check({128, 6, ScoreFunction::kSigmoid, true, 1, 1, 2.5f}, 60, 6);
}

TEST(GatingTest, TiesGoToTheLowestExpertIdAndTheLowestGroup) {
  // All logits equal: experts 0..k-1; with groups, groups 0..top_groups-1.
  std::vector<float> logits(16, 0.5f);
  std::vector<int32_t> ids(4);
  std::vector<float> w(4);
  ASSERT_TRUE(GateCpu({16, 4, ScoreFunction::kSoftmax, true}, logits.data(), 1, ids.data(), w.data()).ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1, 2, 3}));
  for (float v : w) EXPECT_FLOAT_EQ(v, 0.25f);
  // 4 groups of 4; groups 1 and 3 tie above the rest: group 1 wins the single group slot.
  logits.assign(16, 0.0f);
  for (int e : {4, 5, 12, 13}) logits[e] = 3.0f;
  logits[6] = 1.0f;
  ASSERT_TRUE(GateCpu({16, 3, ScoreFunction::kSigmoid, false, 4, 1}, logits.data(), 1, ids.data(), w.data()).ok());
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + 3), (std::vector<int32_t>{4, 5, 6}));
}

TEST(GatingTest, EdgeCases) {
  std::vector<float> logits(8 * 3);
  std::iota(logits.begin(), logits.end(), 0.0f);
  std::vector<int32_t> ids(8 * 3);
  std::vector<float> w(8 * 3);
  // T = 0.
  EXPECT_TRUE(GateCpu({8, 2}, logits.data(), 0, ids.data(), w.data()).ok());
  // k = E: every expert, in descending score order.
  ASSERT_TRUE(GateCpu({8, 8, ScoreFunction::kSoftmax, true}, logits.data(), 3, ids.data(), w.data()).ok());
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + 8), (std::vector<int32_t>{7, 6, 5, 4, 3, 2, 1, 0}));
  EXPECT_NEAR(std::accumulate(w.begin(), w.begin() + 8, 0.0f), 1.0f, 1e-6);
}

TEST(GatingTest, InvalidConfigsNameTheField) {
  float x = 0;
  int32_t id;
  float w;
  struct Case {
    GatingConfig config;
    const char* message;
  };
  for (const Case& c : {Case{{8, 0}, "top_k 0 must be in 1..8"}, Case{{8, 9}, "top_k 9"},
                        Case{{8, 2, ScoreFunction::kSigmoid, false, 3, 1}, "3 groups do not divide 8"},
                        Case{{8, 2, ScoreFunction::kSigmoid, false, 4, 5}, "top_groups 5"},
                        Case{{8, 5, ScoreFunction::kSigmoid, false, 4, 2}, "cannot supply top_k 5"}}) {
    absl::Status s = GateCpu(c.config, &x, 1, &id, &w);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(c.message), absl::string_view::npos) << s.message();
  }
}

}  // namespace
}  // namespace switchyard::kernels

namespace switchyard::kernels {
namespace {

// Gates on the portable path and on every path this CPU has; each must give the portable
// path's ids and weight bits. Returns the portable path's ids.
std::vector<int32_t> ExpectSameOnEveryPath(const GatingConfig& config, const std::vector<float>& logits, int tokens,
                                           const std::string& where) {
  std::vector<int32_t> want_ids(tokens * config.top_k);
  std::vector<float> want_w(tokens * config.top_k);
  EXPECT_TRUE(GateCpu(config, logits.data(), tokens, want_ids.data(), want_w.data(), CpuIsa::kPortable).ok());
  for (CpuIsa isa : SupportedCpuIsas()) {
    std::vector<int32_t> ids(tokens * config.top_k);
    std::vector<float> w(tokens * config.top_k);
    EXPECT_TRUE(GateCpu(config, logits.data(), tokens, ids.data(), w.data(), isa).ok());
    EXPECT_EQ(ids, want_ids) << CpuIsaName(isa) << " " << where;
    EXPECT_EQ(std::memcmp(w.data(), want_w.data(), w.size() * 4), 0) << CpuIsaName(isa) << " " << where;
  }
  return want_ids;
}

// Every ISA path gives the same ids and the same weight bits (exp is math-inl.h's, the
// softmax sum has a fixed order), for widths that are and are not multiples of the vectors.
TEST(GatingTest, SameIdsAndBitsOnEveryPath) {
  std::mt19937 rng(17);
  std::normal_distribution<float> n(0, 2);
  struct Case {
    int experts, top_k, groups, top_groups;
    ScoreFunction score;
    bool bias;
  };
  for (const Case& c : {Case{256, 8, 8, 4, ScoreFunction::kSigmoid, true}, Case{60, 4, 1, 1, ScoreFunction::kSoftmax, false},
                        Case{37, 5, 1, 1, ScoreFunction::kSoftmax, false}, Case{64, 6, 8, 3, ScoreFunction::kSoftmax, false},
                        Case{128, 20, 1, 1, ScoreFunction::kSigmoid, true}, Case{48, 20, 1, 1, ScoreFunction::kSoftmax, false},
                        Case{64, 17, 4, 2, ScoreFunction::kSigmoid, true}}) {
    const int tokens = 257;
    std::vector<float> logits(tokens * c.experts), bias(c.experts);
    for (float& v : logits) v = n(rng);
    for (float& v : bias) v = n(rng) * 0.05f;
    // Ties: a few tokens with equal logits everywhere.
    std::fill(logits.begin(), logits.begin() + c.experts, 0.5f);
    const GatingConfig config{c.experts, c.top_k, c.score, true, c.groups, c.top_groups, 2.5f, c.bias ? bias.data() : nullptr};
    const std::vector<int32_t> want_ids = ExpectSameOnEveryPath(config, logits, tokens, absl::StrCat("E=", c.experts));
    // Ties go to the lowest ids.
    for (int i = 0; i < c.top_k && c.groups == 1 && !c.bias; ++i) EXPECT_EQ(want_ids[i], i) << "E=" << c.experts;
  }
}

// The in-register selection (AVX2 / AVX-512, where groups and k fit the lanes; with the
// filter for sigmoid routers) against the portable path, which has no filter and runs the
// general selection unless the router fits its lanes (EMU128: 4; SCALAR: never): router
// shapes that fit and that do not, group counts that are and are not powers of two, k up to
// 16, and logits on a coarse
// grid, so that many tokens tie at the group boundary, among the survivors, or so often that
// the threshold keeps more than 64 candidates (the general fallback).
TEST(GatingTest, InRegisterSelectionMatchesTheGeneralOneWithTies) {
  std::mt19937 rng(29);
  std::normal_distribution<float> n(0, 2);
  struct Case {
    int experts, top_k, groups, top_groups;
    ScoreFunction score;
    GroupScore group_score;
  };
  const Case cases[] = {
      {256, 8, 8, 4, ScoreFunction::kSigmoid, GroupScore::kTopTwoSum},  // DeepSeek-V3
      {160, 6, 8, 3, ScoreFunction::kSoftmax, GroupScore::kMax},         // DeepSeek-V2
      {128, 8, 1, 1, ScoreFunction::kSoftmax, GroupScore::kTopTwoSum},   // Qwen3
      {8, 2, 1, 1, ScoreFunction::kSoftmax, GroupScore::kTopTwoSum},     // Mixtral
      {192, 8, 6, 2, ScoreFunction::kSigmoid, GroupScore::kTopTwoSum},   // 6 groups: padded to 8
      {256, 16, 16, 4, ScoreFunction::kSigmoid, GroupScore::kTopTwoSum}, // k = 16 lanes
      {64, 4, 2, 1, ScoreFunction::kSigmoid, GroupScore::kTopTwoSum},
      {512, 10, 4, 2, ScoreFunction::kSigmoid, GroupScore::kMax},
      {256, 8, 8, 4, ScoreFunction::kSigmoid, GroupScore::kMax},          // kept groups' second best as threshold
      {384, 8, 1, 1, ScoreFunction::kSigmoid, GroupScore::kTopTwoSum},   // Kimi K2: 12 pairs of AVX-512 vectors
      {1024, 8, 1, 1, ScoreFunction::kSigmoid, GroupScore::kTopTwoSum},  // past kMaxGatherPairs: scalar gather
  };
  for (const Case& c : cases) {
    for (float grid : {0.0f, 0.5f, 4.0f}) {  // 0: continuous logits
      const int tokens = 300;
      std::vector<float> logits(tokens * c.experts), bias(c.experts);
      for (float& v : logits) v = grid > 0 ? std::round(n(rng) * grid) / grid : n(rng);
      for (float& v : bias) v = grid > 0 ? std::round(n(rng) * 4) / 64 : n(rng) * 0.05f;
      std::fill(logits.begin(), logits.begin() + c.experts, 0.25f);  // one token: all tied
      GatingConfig config{c.experts, c.top_k, c.score, true, c.groups, c.top_groups, 2.5f, bias.data(), c.group_score};
      for (bool with_bias : {false, true}) {
        config.expert_bias = with_bias ? bias.data() : nullptr;
        const std::vector<int32_t> want_ids = ExpectSameOnEveryPath(
            config, logits, tokens,
            absl::StrCat("E=", c.experts, " k=", c.top_k, " groups=", c.groups, " grid=", grid, " bias=", with_bias));
        // The all-tied token: the lowest groups, and in them the lowest ids, i.e. 0..k-1.
        for (int i = 0; i < c.top_k && !with_bias; ++i) EXPECT_EQ(want_ids[i], i) << "E=" << c.experts;
      }
    }
  }
}

// Threads share the tokens in chunks; each token is gated whole by one thread, so the ids and
// weight bits do not depend on the thread count (4 chunks, the last one ending mid-block).
TEST(GatingTest, SameIdsAndBitsOnAnyThreadCount) {
  std::mt19937 rng(31);
  std::normal_distribution<float> n(0, 2);
  const int E = 256, k = 8, tokens = 3 * static_cast<int>(kGateChunkTokens) + 77;
  std::vector<float> logits(tokens * E), bias(E);
  for (float& v : logits) v = std::round(n(rng) * 4) / 4;  // ties: some tokens take the general selection
  for (float& v : bias) v = n(rng) * 0.01f;
  const GatingConfig config{E, k, ScoreFunction::kSigmoid, true, 8, 4, 2.5f, bias.data()};
  std::vector<int32_t> want_ids(tokens * k);
  std::vector<float> want_w(tokens * k);
  ASSERT_TRUE(GateCpu(config, logits.data(), tokens, want_ids.data(), want_w.data(), CpuIsa::kPortable).ok());
  for (CpuIsa isa : SupportedCpuIsas()) {
    for (int threads : {1, 2, 3}) {
      std::vector<int32_t> ids(tokens * k);
      std::vector<float> w(tokens * k);
      ASSERT_TRUE(GateCpu(config, logits.data(), tokens, ids.data(), w.data(), isa, threads).ok());
      EXPECT_EQ(ids, want_ids) << CpuIsaName(isa) << " threads=" << threads;
      EXPECT_EQ(std::memcmp(w.data(), want_w.data(), w.size() * 4), 0) << CpuIsaName(isa) << " threads=" << threads;
    }
  }
  int32_t id;
  float w;
  const absl::Status zero = GateCpu(config, logits.data(), 1, &id, &w, BestCpuIsa(), 0);
  EXPECT_EQ(zero.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(zero.message().find("threads 0"), std::string::npos) << zero.message();
}

// Logits must be finite (the worker rejects others), but a NaN or an infinity must not reach
// uninitialised or out-of-range ids: every path gives k distinct ids in range per token.
TEST(GatingTest, NonFiniteLogitsStillGiveDistinctIdsInRange) {
  std::mt19937 rng(37);
  std::normal_distribution<float> n(0, 2);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Case {
    int experts, top_k, groups, top_groups;
    ScoreFunction score;
  };
  for (const Case& c : {Case{256, 8, 8, 4, ScoreFunction::kSigmoid}, Case{256, 8, 8, 4, ScoreFunction::kSoftmax},
                        Case{128, 20, 1, 1, ScoreFunction::kSoftmax}, Case{60, 4, 1, 1, ScoreFunction::kSoftmax}}) {
    const int tokens = 40;
    std::vector<float> logits(tokens * c.experts), bias(c.experts);
    for (float& v : logits) v = n(rng);
    for (float& v : bias) v = n(rng) * 0.01f;
    for (int t = 0; t < tokens; ++t) {  // none, one, a few, most or all of a token's logits
      const int bad = std::vector<int>{0, 1, 5, c.experts - 3, c.experts}[t % 5];
      for (int j = 0; j < bad; ++j) logits[t * c.experts + (j * 37 + t) % c.experts] = t % 2 ? nan : (j % 2 ? inf : -inf);
    }
    // Biases: finite; a NaN for a few experts; NaN for all (every selection score NaN).
    for (int nan_biases : {0, 3, c.experts}) {
      for (int e = 0; e < nan_biases; ++e) bias[(e * 7) % c.experts] = nan;
      const GatingConfig config{c.experts, c.top_k, c.score, true, c.groups, c.top_groups, 2.5f, bias.data()};
      for (CpuIsa isa : SupportedCpuIsas()) {
        std::vector<int32_t> ids(tokens * c.top_k, -1);
        std::vector<float> w(tokens * c.top_k);
        ASSERT_TRUE(GateCpu(config, logits.data(), tokens, ids.data(), w.data(), isa).ok());
        for (int t = 0; t < tokens; ++t) {
          const std::string where = absl::StrCat(CpuIsaName(isa), " E=", c.experts, " NaN biases ", nan_biases, " token ", t);
          std::set<int32_t> distinct(ids.begin() + t * c.top_k, ids.begin() + (t + 1) * c.top_k);
          EXPECT_EQ(distinct.size(), static_cast<size_t>(c.top_k)) << where;
          EXPECT_GE(*distinct.begin(), 0) << where;
          EXPECT_LT(*distinct.rbegin(), c.experts) << where;
        }
      }
    }
  }
}

// Qwen's gated shared expert: sigmoid(hidden . gate) per token, the same bits on every path.
TEST(GatingTest, SharedExpertGateIsSigmoidOfTheDotOnEveryPath) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int64_t H : {1, 7, 64, 448, 1000}) {
    const int64_t tokens = 33;
    std::vector<float> hidden(tokens * H), gate(H);
    for (float& v : hidden) v = n(rng);
    for (float& v : gate) v = n(rng) / std::sqrt(static_cast<float>(H));
    std::vector<float> want(tokens);
    ASSERT_TRUE(SharedExpertGateCpu(hidden.data(), gate.data(), tokens, H, want.data(), CpuIsa::kPortable).ok());
    for (int64_t t = 0; t < tokens; ++t) {
      double dot = 0;
      for (int64_t i = 0; i < H; ++i) dot += static_cast<double>(hidden[t * H + i]) * gate[i];
      EXPECT_NEAR(want[t], 1.0 / (1.0 + std::exp(-dot)), 1e-5) << "H=" << H << " t=" << t;
    }
    for (CpuIsa isa : SupportedCpuIsas()) {
      std::vector<float> got(tokens);
      ASSERT_TRUE(SharedExpertGateCpu(hidden.data(), gate.data(), tokens, H, got.data(), isa).ok());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << CpuIsaName(isa) << " H=" << H;
    }
  }
  float out = 0;
  EXPECT_FALSE(SharedExpertGateCpu(nullptr, nullptr, 1, 0, &out).ok());
}

// The shared sigmoid at the ends of exp's range (H = 1, gate 1: the dot is x itself): e^-x for
// x <= -88.38 is 2^128 x p, scaled as 2^127 then 2 (finite or +inf, rounded once); beyond the
// clamp the result saturates. Every path matches the double reference (subnormal results
// within 2 ulps of the smallest subnormal) and the portable bits.
TEST(GatingTest, SigmoidAtTheEndsOfTheExpRange) {
  const std::vector<float> x = {-200.0f, -88.7f, -88.6f, -88.5f, -88.38f, -88.37f, -87.4f, -87.3f, -50.0f,
                                -1e-30f, 0.0f, 1e-30f, 1.5f, 50.0f, 87.3f, 88.0f, 88.7f, 200.0f};
  const float gate = 1.0f;
  std::vector<float> want(x.size());
  ASSERT_TRUE(SharedExpertGateCpu(x.data(), &gate, x.size(), 1, want.data(), CpuIsa::kPortable).ok());
  for (size_t i = 0; i < x.size(); ++i) {
    // exp's own clamp of -x, at its fp32 bounds
    const double clamped = std::clamp(static_cast<double>(x[i]), double{-88.7f}, double{87.3f});
    const double reference = 1.0 / (1.0 + std::exp(-clamped));
    EXPECT_NEAR(want[i], reference, std::max(2e-6 * reference, 3e-45)) << "x=" << x[i];
    EXPECT_GT(want[i], 0.0f) << "x=" << x[i];
  }
  for (CpuIsa isa : SupportedCpuIsas()) {
    std::vector<float> got(x.size());
    ASSERT_TRUE(SharedExpertGateCpu(x.data(), &gate, x.size(), 1, got.data(), isa).ok());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << CpuIsaName(isa);
  }
}

// The sigmoid routers' selection filter (gating_kernel.cc) rests on one bound: its cheap
// sigmoid is within kFilterSigmoidError of the exact one for every input. Measured on every
// path this CPU has over every float that matters (NaNs skipped), and on the portable path
// (one lane at a time through std::fma: slow) over every 61st of them.
TEST(GatingTest, FilterSigmoidIsWithinItsBoundForEveryFloat) {
  for (CpuIsa isa : SupportedCpuIsas()) {
    const internal::FilterErrorFn error = internal::FilterSigmoidErrorFor(isa);
    ASSERT_NE(error, nullptr) << CpuIsaName(isa);
    const uint32_t stride = isa == CpuIsa::kPortable ? 61 : 1;
    const auto start = std::chrono::steady_clock::now();
    // Every float of magnitude in [2^-24, 32] (the filter clamps to [-16, 16]; below, sigmoid
    // is 1/2 within 2^-26, and the squares go subnormal: slow), every 4099th elsewhere.
    float worst = 0;
    for (uint32_t sign : {0u, 0x80000000u}) {
      worst = std::max({worst, error(sign | 0x33800000u, sign | 0x42000000u, stride), error(sign, sign | 0x33800000u, 4099),
                        error(sign | 0x42000000u, sign | 0x7FFFFFFFu, 4099)});
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LE(worst, internal::kFilterSigmoidError) << CpuIsaName(isa);
    EXPECT_GT(worst, 0.0f) << CpuIsaName(isa) << ": the filter is an approximation";
    std::printf("%s: filter sigmoid within %.3g of the exact one (%.1f s)\n", std::string(CpuIsaName(isa)).c_str(), worst,
                seconds);
  }
}

// The filter's decisions at their edges: tokens whose 4th and 5th groups, or whose 8th and
// 9th experts (either one first), are closer than the filter can tell (every gap from 0 to
// well past the bound; bitwise ties are InRegisterSelectionMatchesTheGeneralOneWithTies')
// must come out as the exact selection on every path (the portable path has no filter).
TEST(GatingTest, FilterDecidesLikeTheExactSelectionAtItsBound) {
  std::mt19937 rng(43);
  std::normal_distribution<float> n(-4, 1);
  std::uniform_real_distribution<double> gap(0, 8 * internal::kFilterSigmoidError);
  const int E = 256, k = 8, group = 32, tokens = 800;
  std::vector<float> logits(tokens * E), bias(E);
  for (float& v : bias) v = n(rng) * 0.002f;
  for (float& v : logits) v = n(rng);  // sigmoid about 0.02: far below the planted experts
  // x with Sigmoid(x) + bias[e] about `choice`.
  auto plant = [&](float* x, int e, double choice) {
    const double s = choice - bias[e];
    x[e] = static_cast<float>(std::log(s / (1 - s)));
  };
  for (int t = 0; t < tokens; ++t) {
    float* x = logits.data() + t * E;
    const double g = t % 3 == 0 ? 0.0 : gap(rng);  // a third planted as ties
    const int first = t % 8;                        // groups first, first + 1, ... (mod 8)
    double sum4 = 0;
    for (int j = 0; j < 4; ++j) {  // four kept groups: a pair each, the 8 best experts
      const int base = (first + j) % 8 * group + (t + j) % (group - 2);
      plant(x, base, 0.9 - 0.05 * j);
      plant(x, base + 2, 0.89 - 0.05 * j);
      sum4 = (0.9 - 0.05 * j) + (0.89 - 0.05 * j);
    }
    if (t % 2 == 0) {  // a fifth group g below the 4th in score
      const int base = (first + 4) % 8 * group + t % (group - 1);
      plant(x, base, sum4 / 2);
      plant(x, base + 1, sum4 / 2 - g);
    } else {  // a 9th expert about the 8th (above or below it by up to 4 bounds), in the first kept group
      const double offset = g == 0 ? 0.0 : g - 4 * internal::kFilterSigmoidError;
      plant(x, (first % 8) * group + (t + 1) % (group - 2), 0.89 - 0.15 - offset);
    }
  }
  const GatingConfig config{E, k, ScoreFunction::kSigmoid, true, 8, 4, 2.5f, bias.data()};
  ExpectSameOnEveryPath(config, logits, tokens, "filter edge");
}

}  // namespace
}  // namespace switchyard::kernels
