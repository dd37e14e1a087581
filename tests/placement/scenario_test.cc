// Load scenarios: burst parsing (bad input named), hot experts, and sampled windows.
#include "placement/scenario.h"

#include <gtest/gtest.h>

#include <numeric>

#include "tests/placement/test_util.h"

namespace switchyard::placement {
namespace {

TEST(ScenarioTest, ParseBurst) {
  const auto b = ParseBurst("3:0.35@20..35");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->experts, 3);
  EXPECT_DOUBLE_EQ(b->share, 0.35);
  EXPECT_EQ(b->start, 20);
  EXPECT_EQ(b->end, 35);
  EXPECT_TRUE(b->ActiveAt(20) && b->ActiveAt(34) && !b->ActiveAt(35) && !b->ActiveAt(19));
  for (const char* bad : {"", "3", "3:0.35", "3:0.35@20", "0:0.3@1..2", "3:1.5@1..2", "3:0@1..2", "3:nan@1..2",
                          "3:0.3@5..5", "3:0.3@-1..4", "x:0.3@1..2", "3:0.3@1..2x"}) {
    const auto parsed = ParseBurst(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_NE(parsed.status().message().find("EXPERTS:SHARE@START..END"), std::string::npos) << parsed.status();
  }
}

TEST(ScenarioTest, HotExpertsAreSeededDistinctAndPerLayer) {
  const Burst b = *ParseBurst("4:0.5@0..1");
  const auto a = *HotExperts(b, 256, 0, 9), again = *HotExperts(b, 256, 0, 9), other = *HotExperts(b, 256, 1, 9);
  EXPECT_EQ(a, again);
  EXPECT_NE(a, other);
  std::vector<int> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());
  EXPECT_FALSE(HotExperts(*ParseBurst("9:0.5@0..1"), 8, 0, 1).ok());
}

TEST(ScenarioTest, ApplyBurstKeepsAProbability) {
  const std::vector<double> p = {0.5, 0.25, 0.125, 0.125};
  const auto q = ApplyBurst(p, {2, 3}, 0.4);
  EXPECT_NEAR(std::accumulate(q.begin(), q.end(), 0.0), 1.0, 1e-12);
  EXPECT_NEAR(q[2] + q[3], 0.4 + 0.6 * 0.25, 1e-12);
}

TEST(ScenarioTest, SampledWindowsCountEveryTokenOnceAndFollowTheBurst) {
  const LoadMatrix decode = test::DeepSeekLayers("decode_in1000out1000", 0, 2);
  WindowSpec spec;
  spec.windows = 3;
  spec.tokens = 4096;
  spec.top_k = 8;
  spec.bursts = {*ParseBurst("2:0.5@1..2")};
  const auto windows = SampleWindows(decode, {}, spec);
  ASSERT_TRUE(windows.ok()) << windows.status();
  ASSERT_EQ(windows->size(), 3u);
  for (const LoadMatrix& w : *windows) {
    for (const auto& row : w.values) EXPECT_EQ(std::accumulate(row.begin(), row.end(), 0.0), 4096.0 * 8);
  }
  const auto hot = *HotExperts(spec.bursts[0], 256, 0, spec.seed);
  const double before = (*windows)[0].values[0][hot[0]] + (*windows)[0].values[0][hot[1]];
  const double during = (*windows)[1].values[0][hot[0]] + (*windows)[1].values[0][hot[1]];
  // The two hot experts are in most tokens' choices during the burst, in few before it.
  EXPECT_GT(during, 4096.0 * 8 / 8);
  EXPECT_GT(during, 4 * before);
  // Deterministic.
  EXPECT_EQ((*SampleWindows(decode, {}, spec))[1].values, (*windows)[1].values);
  spec.top_k = 300;
  EXPECT_FALSE(SampleWindows(decode, {}, spec).ok());
}

// A dominant expert (almost all of the mass) or values whose sum overflows must not stall
// the sampler; runs too large are refused, naming the sizes.
TEST(ScenarioTest, SkewedAndHugeInputsAreSampledOrRefused) {
  LoadMatrix skewed{{0}, {{1e12, 1, 1, 1}}};
  WindowSpec spec;
  spec.windows = 2;
  spec.tokens = 1000;
  spec.top_k = 3;
  auto w = SampleWindows(skewed, {}, spec);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)[0].values[0][0], 1000);
  // Loads beyond 2^53 are not counts: refused, naming the value (sums of them would overflow).
  LoadMatrix huge{{0}, {std::vector<double>(8, 1.7e308)}};
  w = SampleWindows(huge, {}, spec);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("load 1.7e+308 is not a number in [0, 2^53]"), std::string::npos) << w.status();
  LoadMatrix largest{{0}, {std::vector<double>(8, kMaxLoad)}};
  w = SampleWindows(largest, {}, spec);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(std::accumulate((*w)[1].values[0].begin(), (*w)[1].values[0].end(), 0.0), 3000);
  const LoadMatrix decode = test::DeepSeekLayers("decode_in1000out1000", 0, 1);
  spec.bursts = {*ParseBurst("1:0.9999999999@0..2")};
  spec.top_k = 8;
  w = SampleWindows(decode, {}, spec);
  ASSERT_TRUE(w.ok()) << w.status();
  spec.windows = 100000;
  spec.tokens = 1 << 20;
  const auto refused = SampleWindows(decode, {}, spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("draws"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace switchyard::placement
