// The distributed MoE layer on in-process ranks: outputs bit-identical to the single-process
// reference for several placements and rank counts, tokens conserved, counters exact.
#include "worker/moe_layer.h"

#include "kernels/gating.h"

#include <gtest/gtest.h>

#include <set>

#include <thread>

#include "comm/inprocess/factory.h"
#include "placement/planner.h"
#include "worker/driver.h"

namespace switchyard::worker {
namespace {

const std::string kTrace = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_decode_in1000out1000.csv";

// Runs the driver on `ranks` in-process ranks with a placement from `make`; returns rank 0's report.
RunReport RunWorld(const model::ModelConfig& model, int ranks, int64_t tokens_per_rank, int steps,
                   const std::function<placement::Placement(const placement::Topology&, const Workload&)>& make,
                   int slots_per_rank, ShareMode shares = ShareMode::kEpoch) {
  const std::vector<int> layers(model.moe_layers.begin(), model.moe_layers.begin() + 2);
  // The DeepSeek-V3 trace where the expert count matches, a skewed Zipf otherwise.
  const std::string spec = model.num_experts == 256 ? "trace:" + kTrace : "zipf:1.2";
  auto workload = *Workload::Create({spec}, model, layers, 3);
  const auto topo = *placement::Topology::Create(ranks, ranks % 2 == 0 ? 2 : 1, slots_per_rank);
  const placement::Placement p = make(topo, *workload);
  auto table = std::make_shared<placement::RoutingTable>(*placement::RoutingTable::Build(p, 0));
  auto world = comm::CreateInProcessWorld(ranks, ranks % 2 == 0 ? ranks / 2 : ranks);
  std::vector<RunReport> reports(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      WeightStore store(model, layers);
      auto source = SeededWeights(model, 11);
      ASSERT_TRUE(store.Load(p, r, *source).ok());
      Driver driver(model, *world[r], *workload, store, table, {steps, tokens_per_rank, 0, nullptr});
      driver.layer().set_share_mode(shares);
      auto report = driver.Run();
      ASSERT_TRUE(report.ok()) << report.status();
      reports[r] = *report;
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 1; r < ranks; ++r) EXPECT_EQ(reports[r].output_checksum, reports[0].output_checksum);
  return reports[0];
}

placement::Placement Contiguous(const placement::Topology& topo, const Workload&, const model::ModelConfig& m) {
  return *placement::ContiguousPlacement(topo, m.num_experts, {m.moe_layers[0], m.moe_layers[1]});
}

placement::Placement Planned(const char* policy, const placement::Topology& topo, const Workload& w, const model::ModelConfig& m) {
  placement::LoadMatrix load{{m.moe_layers[0], m.moe_layers[1]}, w.Expected(0)};
  for (auto& row : load.values) for (double& x : row) x *= 1e5;
  return *(*placement::CreatePlanner(policy))->Plan({topo, load, nullptr, {}, {}});
}

class MoeLayerIdentityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MoeLayerIdentityTest, EveryPlacementAndRankCountGivesTheSameBits) {
  const model::ModelConfig model = *model::ScaleModel(*model::PresetModel(GetParam()), GetParam() == "mixtral-8x7b" ? 1.0 / 64 : 0.0625);
  const int E = model.num_experts;
  const int64_t total = 96;
  auto contiguous = [&](auto& t, auto& w) { return Contiguous(t, w, model); };
  const RunReport reference = RunWorld(model, 1, total, 2, contiguous, E);
  EXPECT_TRUE(reference.tokens_conserved);
  int64_t pairs = 0;
  for (int64_t x : reference.layers[0].expert_tokens) pairs += x;
  EXPECT_EQ(pairs, total * model.top_k * 2);  // 2 steps
  for (int ranks : {2, 3, 4}) {
    if (total % ranks != 0) continue;
    const int slots = (E + ranks - 1) / ranks + 1;
    SCOPED_TRACE(ranks);
    for (const char* policy : {"contiguous", "eplb", "incremental"}) {
      SCOPED_TRACE(policy);
      auto make = [&](const placement::Topology& t, const Workload& w) {
        return std::string(policy) == "contiguous" ? Contiguous(t, w, model) : Planned(policy, t, w, model);
      };
      const RunReport r = RunWorld(model, ranks, total / ranks, 2, make, slots);
      EXPECT_EQ(r.output_checksum, reference.output_checksum);
      EXPECT_TRUE(r.tokens_conserved);
      for (size_t l = 0; l < r.layers.size(); ++l) EXPECT_EQ(r.layers[l].expert_tokens, reference.layers[l].expert_tokens);
      // Per-step shares: the same bits, and every step at least as balanced (the solver's
      // split is optimal over the same replicas; the epoch's draw is one of the splits).
      const RunReport step = RunWorld(model, ranks, total / ranks, 2, make, slots, ShareMode::kStep);
      EXPECT_EQ(step.output_checksum, reference.output_checksum);
      EXPECT_TRUE(step.tokens_conserved);
      for (size_t l = 0; l < step.layers.size(); ++l) {
        EXPECT_GE(step.layers[l].step_balancedness_p99, r.layers[l].step_balancedness_p99) << "layer " << l;
        EXPECT_GE(step.layers[l].step_balancedness_p50, r.layers[l].step_balancedness_p50) << "layer " << l;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, MoeLayerIdentityTest,
                         ::testing::Values("deepseek-v3", "nemotron-3-nano-30b-a3b"));

// Dispatch sends a token once per destination rank: the rows exchanged are exactly the
// distinct (token, destination rank) pairs; the metadata is 8 bytes per (token, expert) pair and
// the combine one row per pair (summed over the ranks that computed them).
TEST(MoeLayerTest, DispatchSendsATokenOncePerDestinationRank) {
  const model::ModelConfig model = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  const int R = 4, E = model.num_experts, k = model.top_k;
  const int64_t T = 64, H = model.hidden;
  auto workload = *Workload::Create({"trace:" + kTrace}, model, {3}, 5);
  const auto topo = *placement::Topology::Create(R, 1, E / R);
  const placement::Placement p = *placement::ContiguousPlacement(topo, E, {3});  // expert e on rank e * R / E
  auto table = std::make_shared<placement::RoutingTable>(*placement::RoutingTable::Build(p, 0));
  auto world = comm::CreateInProcessWorld(R);
  std::vector<MoeLayer::ExchangeBytes> bytes(R);
  std::vector<int64_t> distinct(R, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < R; ++r) {
    threads.emplace_back([&, r] {
      WeightStore store(model, {3});
      ASSERT_TRUE(store.Load(p, r, *SeededWeights(model, 2)).ok());
      MoeLayer layer(model, *world[r], store, table);
      std::vector<float> h(T * H), logits(T * E), out(T * H);
      workload->Hidden(0, r * T, T, h.data());
      workload->Logits(0, 0, r * T, T, logits.data());
      ASSERT_TRUE(layer.Forward(3, h.data(), logits.data(), T, out.data()).ok());
      bytes[r] = layer.exchange_bytes();
      std::vector<int32_t> ids(T * k);
      std::vector<float> w(T * k);
      ASSERT_TRUE(kernels::GateCpu(model.Gating(store.router_bias(0)), logits.data(), T, ids.data(), w.data()).ok());
      for (int64_t t = 0; t < T; ++t) {
        std::set<int> ranks;
        for (int j = 0; j < k; ++j) ranks.insert(ids[t * k + j] * R / E);
        distinct[r] += static_cast<int64_t>(ranks.size());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < R; ++r) {
    SCOPED_TRACE(r);
    EXPECT_EQ(bytes[r].dispatch_rows, distinct[r] * H * 4);
    EXPECT_LT(bytes[r].dispatch_rows, T * k * H * 4);  // top-8 over 4 ranks: a token meets some rank twice
    EXPECT_EQ(bytes[r].dispatch_meta, T * k * 8);
  }
  int64_t combined = 0;  // a rank returns the rows it computed: over all ranks, one per pair
  for (int r = 0; r < R; ++r) combined += bytes[r].combine;
  EXPECT_EQ(combined, R * T * k * H * 4);
}

TEST(MoeLayerTest, RejectsALayerItDoesNotRun) {
  const model::ModelConfig model = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  auto world = comm::CreateInProcessWorld(1);
  const auto topo = *placement::Topology::Create(1, 1, 256);
  auto p = *placement::ContiguousPlacement(topo, 256, {3});
  WeightStore store(model, {3});
  ASSERT_TRUE(store.Load(p, 0, *SeededWeights(model, 1)).ok());
  MoeLayer layer(model, *world[0], store, std::make_shared<placement::RoutingTable>(*placement::RoutingTable::Build(p, 0)));
  std::vector<float> h(model.hidden), logits(256), out(model.hidden);
  EXPECT_EQ(layer.Forward(4, h.data(), logits.data(), 1, out.data()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(layer.Forward(3, h.data(), logits.data(), 1, out.data()).ok());
  EXPECT_TRUE(layer.Forward(3, h.data(), logits.data(), 0, out.data()).ok());  // T = 0
}

}  // namespace
}  // namespace switchyard::worker
