// Workloads: the gate's choices follow the trace; values are a pure function of (seed, step,
// layer, token); phases switch at their step; bad specs are rejected.
#include "worker/workload.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/gating.h"

namespace switchyard::worker {
namespace {

const std::string kTrace = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_prefill_in4096.csv";

// Share of the gate's choices per expert over `tokens` generated tokens.
std::vector<double> Frequencies(const Workload& w, const model::ModelConfig& m, int step, int64_t tokens) {
  std::vector<float> logits(tokens * m.num_experts), weights(tokens * m.top_k);
  std::vector<int32_t> ids(tokens * m.top_k);
  w.Logits(step, 0, 0, tokens, logits.data());
  EXPECT_TRUE(kernels::GateCpu(m.Gating(nullptr), logits.data(), tokens, ids.data(), weights.data()).ok());
  std::vector<double> f(m.num_experts, 0);
  for (int32_t e : ids) f[e] += 1.0 / ids.size();
  return f;
}

TEST(WorkloadTest, GateChoicesFollowTheTrace) {
  model::ModelConfig m = *model::PresetModel("qwen3-30b-a3b");  // softmax top-8: the Gumbel trick is exact
  m.num_experts = 256;  // the DeepSeek trace has 256 experts
  auto w = Workload::Create({"trace:" + kTrace}, m, {3}, 1);
  ASSERT_TRUE(w.ok()) << w.status();
  const std::vector<double> f = Frequencies(**w, m, 0, 20000);
  const std::vector<double> p = (*w)->Expected(0)[0];
  // Sampling without replacement flattens the hottest experts a little (an expert is picked at
  // most once per token); compare hot and cold halves and the overall shape.
  double tv = 0;
  for (int e = 0; e < 256; ++e) tv += std::abs(f[e] - p[e]) / 2;
  EXPECT_LT(tv, 0.08) << "total variation distance";
  const int hottest = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
  EXPECT_EQ(std::max_element(f.begin(), f.end()) - f.begin(), hottest);
}

TEST(WorkloadTest, DeterministicByGlobalTokenId) {
  model::ModelConfig m = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  auto w = *Workload::Create({"zipf:1.1"}, m, {3, 4}, 9);
  std::vector<float> all(40 * 256), part(10 * 256), h_all(40 * m.hidden), h_part(10 * m.hidden);
  w->Logits(5, 1, 0, 40, all.data());
  w->Logits(5, 1, 20, 10, part.data());  // tokens 20..29
  EXPECT_TRUE(std::equal(part.begin(), part.end(), all.begin() + 20 * 256));
  w->Hidden(5, 0, 40, h_all.data());
  w->Hidden(5, 20, 10, h_part.data());
  EXPECT_TRUE(std::equal(h_part.begin(), h_part.end(), h_all.begin() + 20 * m.hidden));
  auto other = *Workload::Create({"zipf:1.1"}, m, {3, 4}, 10);
  std::vector<float> seeded(10 * 256);
  other->Logits(5, 1, 20, 10, seeded.data());
  EXPECT_NE(seeded, part);
}

TEST(WorkloadTest, PhasesSwitchAtTheirStepAndZipfDrifts) {
  model::ModelConfig m = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  auto w = *Workload::Create({"zipf:1.2:10", "uniform@50", "trace:" + kTrace + "@80"}, m, {3}, 1);
  EXPECT_EQ(w->SpecAt(49), "zipf:1.2:10");
  EXPECT_EQ(w->SpecAt(50), "uniform@50");
  EXPECT_EQ(w->SpecAt(200), "trace:" + kTrace + "@80");
  EXPECT_NEAR(w->Expected(60)[0][17], 1.0 / 256, 1e-12);
  // Drift: after 10 steps every expert's probability moved to the next expert.
  const auto p0 = w->Expected(0)[0], p1 = w->Expected(10)[0];
  for (int e = 0; e < 256; ++e) EXPECT_DOUBLE_EQ(p1[(e + 1) % 256], p0[e]);
  EXPECT_EQ(w->Expected(9)[0], p0);
}

TEST(WorkloadTest, PerStepTraceUsesOneStepPerRunStep) {
  model::ModelConfig m = *model::PresetModel("qwen3-30b-a3b");
  m.num_experts = 60;
  m.top_k = 4;
  const std::string qwen = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/qwen15moe_gsm8k_steps.csv";
  auto w = Workload::Create({"trace:" + qwen}, m, {0, 1}, 1);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NE((*w)->Expected(0)[0], (*w)->Expected(1)[0]);   // step 0 (prefill) vs step 1
  EXPECT_EQ((*w)->Expected(1)[0], (*w)->Expected(129)[0]);  // 128 trace steps, cycled
  auto selected = Workload::Create({"trace:" + qwen + ":0"}, m, {0}, 1);
  ASSERT_TRUE(selected.ok());
  EXPECT_EQ((*selected)->Expected(0)[0], (*selected)->Expected(7)[0]);
}

// A burst on top of a trace: during its steps the hot experts take their share of the gate's
// choices; every rank (any token range) and every run draws the same hot experts; before and
// after it the trace runs unchanged.
TEST(WorkloadTest, BurstInjectsTheSameCollapseOnEveryRank) {
  model::ModelConfig m = *model::PresetModel("qwen3-30b-a3b");
  m.num_experts = 256;
  auto w = Workload::Create({"trace:" + kTrace, "burst:3:0.35@10..20"}, m, {3, 4}, 5);
  ASSERT_TRUE(w.ok()) << w.status();
  auto plain = *Workload::Create({"trace:" + kTrace}, m, {3, 4}, 5);
  EXPECT_EQ((*w)->Expected(9), plain->Expected(9));
  EXPECT_EQ((*w)->Expected(20), plain->Expected(20));
  const std::vector<int> hot = (*w)->HotExpertsAt(10, 0);
  ASSERT_EQ(hot.size(), 3u);
  EXPECT_TRUE((*w)->HotExpertsAt(9, 0).empty());
  EXPECT_NE((*w)->HotExpertsAt(10, 1), hot);  // per layer
  const std::vector<double> p = (*w)->Expected(10)[0];
  EXPECT_NEAR(p[hot[0]] + p[hot[1]] + p[hot[2]], 0.35 + 0.65 * (plain->Expected(10)[0][hot[0]] +
                                                               plain->Expected(10)[0][hot[1]] +
                                                               plain->Expected(10)[0][hot[2]]), 1e-12);
  // The gate sees it: the hot experts are chosen far more often during the burst.
  const std::vector<double> during = Frequencies(**w, m, 12, 4000), before = Frequencies(**w, m, 5, 4000);
  EXPECT_GT(during[hot[0]] + during[hot[1]] + during[hot[2]], 3 * (before[hot[0]] + before[hot[1]] + before[hot[2]]));
  // The same on every rank and run: a pure function of (seed, step, layer, token).
  auto again = *Workload::Create({"trace:" + kTrace, "burst:3:0.35@10..20"}, m, {3, 4}, 5);
  EXPECT_EQ(again->HotExpertsAt(15, 1), (*w)->HotExpertsAt(15, 1));
  std::vector<float> all(40 * 256), part(10 * 256);
  (*w)->Logits(12, 1, 0, 40, all.data());
  again->Logits(12, 1, 30, 10, part.data());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), all.begin() + 30 * 256));
}

TEST(WorkloadTest, BadSpecsAreRejected) {
  model::ModelConfig m = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  struct Case {
    std::vector<std::string> specs;
    const char* message;
  };
  for (const Case& c : {Case{{"gauss:3"}, "expected trace:FILE[:KEY], zipf:S[:DRIFT] or uniform"},
                        Case{{"zipf:-1"}, "zipf skew must be a number in [0, 100]"},
                        Case{{"zipf:nan"}, "zipf skew must be a number in [0, 100]"},
                        Case{{"zipf:1:0"}, "drift must be a step count >= 1"},
                        Case{{"uniform@x"}, "'@' must be followed by a step"},
                        Case{{"uniform@5"}, "must start at step 0"},
                        Case{{"trace:/nonexistent.csv"}, "/nonexistent.csv"},
                        Case{{"trace:" + std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/switch_base_128_specmoe.csv"},
                             "the trace has 128 experts, the model has 256"},
                        Case{{}, "no --workload"},
                        Case{{"burst:3:0.35@10..20"}, "a burst needs a workload"},
                        Case{{"uniform", "burst:3:0.35@20"}, "EXPERTS:SHARE@START..END"},
                        Case{{"uniform", "burst:300:0.35@1..2"}, "300 hot experts per layer, the model has 256"},
                        Case{{"uniform", "burst:3:1.2@1..2"}, "SHARE must be a number in (0, 1)"}}) {
    auto w = Workload::Create(c.specs, m, {3}, 1);
    ASSERT_FALSE(w.ok());
    EXPECT_NE(w.status().message().find(c.message), absl::string_view::npos) << w.status().message();
  }
}

}  // namespace
}  // namespace switchyard::worker
