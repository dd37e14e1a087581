// The simulator: cost model against hand-computed cases, determinism, the coordinator's own
// plans, migrations and rank loss; `switchyard sim` as users run it, bad input exiting 2.
#include <gtest/gtest.h>

#include <fstream>
#include <limits>

#include "coordinator/coordinator.h"
#include "coordinator/load_aggregator.h"
#include "coordinator/policy.h"
#include "nlohmann/json.hpp"
#include "placement/io/load_csv.h"
#include "rpc/convert.h"
#include "sim/cost_model.h"
#include "sim/simulator.h"
#include "tests/common/subprocess.h"
#include "tests/coordinator/fixtures.h"

namespace switchyard::sim {
namespace {

namespace control = switchyard::control::v1;
namespace types = switchyard::types::v1;

const std::string kDecode = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_decode_in1000out1000.csv";

// Round numbers, no latencies: every figure below is computed by hand.
Hardware Simple() {
  Hardware hw;
  hw.name = "simple";
  hw.flops = 1e12;
  hw.memory_bandwidth = 1e11;
  hw.intra_bandwidth = 1e10;
  hw.inter_bandwidth = 1e9;
  hw.intra_latency = hw.inter_latency = hw.per_peer = hw.layer_overhead = 0;
  hw.activation_bytes = 2;
  hw.weight_bytes = 2;
  return hw;
}

ModelShape TwoExperts(int top_k) {
  ModelShape m;
  m.num_experts = 2;
  m.top_k = top_k;
  m.hidden = 4;
  m.expert_ffn = 8;
  m.matrices = 3;
  return m;
}

// Expert e alone on rank e.
placement::LayerPlacement OnePerRank() {
  placement::LayerPlacement layer;
  layer.ranks = {{{0, 1.0}}, {{1, 1.0}}};
  return layer;
}

TEST(CostModel, TwoRanksOneNodeByHand) {
  const placement::LayerPlacement layer = OnePerRank();
  LayerInputs in;
  in.layer = &layer;
  const std::vector<double> pairs = {100, 300};  // 400 tokens, top-1
  in.expert_pairs = pairs;
  in.tokens_per_rank = 200;
  const LayerCost c = CostLayer(Simple(), TwoExperts(1), Cluster::Contiguous(2, 1), in, /*dedup=*/false);
  // Rank 0 receives 50 pairs from rank 1 and sends 150; rank 1 the reverse. Rows of 4 x 2
  // bytes: max(50, 150) x 8 = 1200 bytes over 1e10 B/s each way, per all-to-all; plus the
  // permute (200 tokens x 2 x 1 rows of 8 bytes at 1e11) and the combine's weighted sum
  // (200 x 2 rows).
  const double permute = 200 * 2 * 8 / 1e11, reduce = 200 * 2 * 8 / 1e11;
  EXPECT_DOUBLE_EQ(c.dispatch, 1200 / 1e10 + permute);
  EXPECT_DOUBLE_EQ(c.combine, 1200 / 1e10 + reduce);
  // Rank 1: 300 pairs x 2 x 4 x 8 x 3 FLOPs = 57600 at 1e12 vs (192 weight bytes + 300 x 16)
  // at 1e11: compute-bound.
  EXPECT_DOUBLE_EQ(c.ffn, 57600 / 1e12);
  // Gate: 200 tokens x (2 fp32 logits read + 1 id and weight written) at 1e11.
  EXPECT_DOUBLE_EQ(c.gate, 200 * (4.0 * 2 + 8.0) / 1e11);
  EXPECT_EQ(c.critical_rank, 1);
  EXPECT_DOUBLE_EQ(c.balancedness, 200.0 / 300.0);
  EXPECT_DOUBLE_EQ(c.intra_bytes, (50 + 50 + 150 + 150) * 8);
  EXPECT_EQ(c.inter_bytes, 0);
  EXPECT_EQ(c.dominant, Phase::kDispatch);
  EXPECT_DOUBLE_EQ(c.total(), c.gate + 2 * 1200 / 1e10 + permute + reduce + 57600 / 1e12);
}

TEST(CostModel, ACrossNodeExchangeUsesTheNicAndPaysLatencies) {
  const placement::LayerPlacement layer = OnePerRank();
  LayerInputs in;
  in.layer = &layer;
  const std::vector<double> pairs = {100, 300};
  in.expert_pairs = pairs;
  in.tokens_per_rank = 200;
  Hardware hw = Simple();
  hw.inter_latency = 5e-6;
  hw.per_peer = 1e-6;
  hw.layer_overhead = 2e-6;
  const LayerCost c = CostLayer(hw, TwoExperts(1), Cluster::Contiguous(2, 2), in, false);
  EXPECT_DOUBLE_EQ(c.dispatch, 1200 / 1e9 + 5e-6 + 1e-6 + 200 * 2 * 8 / 1e11);  // one peer, the permute
  EXPECT_DOUBLE_EQ(c.inter_bytes, (50 + 50 + 150 + 150) * 8);
  EXPECT_EQ(c.intra_bytes, 0);
  EXPECT_DOUBLE_EQ(c.overhead, 2e-6);
}

TEST(CostModel, DedupSendsATokenOncePerRank) {
  // Both experts on rank 1, top-2 of 2: each of rank 0's 100 tokens sends one row, not two.
  placement::LayerPlacement layer;
  layer.ranks = {{}, {{0, 1.0}, {1, 1.0}}};
  LayerInputs in;
  in.layer = &layer;
  const std::vector<double> counts = {200, 200};
  in.expert_pairs = counts;
  in.tokens_per_rank = 100;
  const LayerCost pairs = CostLayer(Simple(), TwoExperts(2), Cluster::Contiguous(2, 1), in, false);
  const LayerCost rows = CostLayer(Simple(), TwoExperts(2), Cluster::Contiguous(2, 1), in, true);
  const double permute = 100 * 2 * 2 * 8 / 1e11;
  EXPECT_DOUBLE_EQ(pairs.dispatch, 200 * 8 / 1e10 + permute);
  EXPECT_DOUBLE_EQ(rows.dispatch, 100 * 8 / 1e10 + permute);
  EXPECT_DOUBLE_EQ(rows.combine, pairs.combine);  // combine returns one row per pair
  EXPECT_DOUBLE_EQ(rows.balancedness, 0.5);
}

TEST(CostModel, SharesSplitAReplicatedExpertAndLocalPairsStayHome) {
  // Expert 0 on both ranks (half each), expert 1 on rank 1: rank 0's pairs of expert 0 stay on
  // rank 0, rank 1's on rank 1; only expert 1's pairs from rank 0 cross.
  placement::LayerPlacement layer;
  layer.ranks = {{{0, 0.5}}, {{0, 0.5}, {1, 1.0}}};
  LayerInputs in;
  in.layer = &layer;
  const std::vector<double> counts = {200, 100};
  in.expert_pairs = counts;
  in.tokens_per_rank = 150;
  const LayerCost c = CostLayer(Simple(), TwoExperts(1), Cluster::Contiguous(2, 1), in, false);
  EXPECT_DOUBLE_EQ(c.intra_bytes, 2 * 50 * 8);  // dispatch + combine of expert 1's 50 pairs
  EXPECT_DOUBLE_EQ(c.balancedness, 150.0 / 200.0);
}

TEST(Hardware, PresetsAreValidAndFilesOverrideThem) {
  for (const std::string& name : HardwarePresetNames()) {
    auto hw = PresetHardware(name);
    ASSERT_TRUE(hw.ok()) << name;
    EXPECT_TRUE(ValidateHardware(*hw).ok()) << name;
  }
  EXPECT_EQ(PresetHardware("tpu").status().code(), absl::StatusCode::kInvalidArgument);
  test::TempDir dir;
  std::ofstream(dir.File("hw.json")) << R"({"preset": "h100", "inter_bandwidth": 25e9})";
  auto hw = LoadHardware(dir.File("hw.json"));
  ASSERT_TRUE(hw.ok()) << hw.status();
  EXPECT_EQ(hw->inter_bandwidth, 25e9);
  EXPECT_EQ(hw->intra_bandwidth, PresetHardware("h100")->intra_bandwidth);
  std::ofstream(dir.File("bad.json")) << R"({"preset": "h100", "nvlink": 1})";
  EXPECT_NE(LoadHardware(dir.File("bad.json")).status().message().find("$.nvlink: unknown key"), std::string::npos);
  std::ofstream(dir.File("neg.json")) << R"({"preset": "h100", "flops": -1})";
  EXPECT_NE(LoadHardware(dir.File("neg.json")).status().message().find("flops"), std::string::npos);
  // Values that would make the results infinite are out of range.
  std::ofstream(dir.File("tiny.json")) << R"({"memory_bandwidth": 1e-300})";
  EXPECT_NE(LoadHardware(dir.File("tiny.json")).status().message().find("memory_bandwidth"), std::string::npos);
  // Without a preset the base is the default, h200.
  std::ofstream(dir.File("plain.json")) << R"({"flops": 1e15})";
  auto plain = LoadHardware(dir.File("plain.json"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->memory_bandwidth, PresetHardware("h200")->memory_bandwidth);
}

SimOptions SmallRun() {
  SimOptions o;
  o.model = model::PresetModel("deepseek-v3").value();
  o.hardware = PresetHardware("h200").value();
  o.ranks = 16;
  o.nodes = 2;
  o.slots_per_rank = 18;
  o.steps = 60;
  o.tokens_per_rank = 64;
  return o;
}

Trace FirstLayers(int n) {
  placement::LoadMatrix load = placement::ReadLoadCsv(kDecode).value();
  load.layer_ids.resize(n);
  load.values.resize(n);
  return Trace{{load}};
}

TEST(Simulator, SameInputsGiveTheSameBits) {
  SimOptions o = SmallRun();
  o.bursts.push_back(placement::ParseBurst("3:0.35@20..40").value());
  const Trace trace = FirstLayers(4);
  auto a = Simulate(o, trace, "incremental");
  auto b = Simulate(o, trace, "incremental");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(a->steps.size(), b->steps.size());
  for (size_t i = 0; i < a->steps.size(); ++i) {
    EXPECT_EQ(a->steps[i].seconds, b->steps[i].seconds) << i;
    EXPECT_EQ(a->steps[i].epoch, b->steps[i].epoch) << i;
  }
  EXPECT_EQ(a->moved_bytes, b->moved_bytes);
  o.seed = 2;
  auto c = Simulate(o, trace, "incremental");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->steps[5].seconds, c->steps[5].seconds);  // the seed draws the batches
}

TEST(Simulator, ABurstIsRebalancedAndTheMigrationIsPaced) {
  SimOptions o = SmallRun();
  o.steps = 120;
  o.bursts.push_back(placement::ParseBurst("3:0.35@20..120").value());
  const Trace trace = FirstLayers(4);
  auto fixed = Simulate(o, trace, "static");
  auto moving = Simulate(o, trace, "incremental");
  ASSERT_TRUE(fixed.ok() && moving.ok());
  EXPECT_EQ(fixed->plans, 0);
  EXPECT_EQ(fixed->moved_bytes, 0);
  ASSERT_GE(moving->migrations, 1);
  ASSERT_EQ(moving->recoveries.size(), 1u);
  EXPECT_EQ(moving->recoveries[0].step, 20);
  EXPECT_GE(moving->recoveries[0].steps, 0);  // recovered
  ASSERT_EQ(fixed->recoveries.size(), 1u);
  EXPECT_EQ(fixed->recoveries[0].steps, -1);  // a placement that never changes does not
  EXPECT_GE(moving->plans, moving->migrations);
  EXPECT_LT(moving->step_p50, fixed->step_p50);
  const ModelShape shape = ShapeOf(o.model);
  EXPECT_DOUBLE_EQ(moving->moved_bytes, moving->moved_replicas * shape.ExpertBytes(o.hardware.weight_bytes));
  // The migration moves at most the budget per rank and step: a smaller budget takes longer.
  int first = -1, last = -1;
  for (const StepRecord& s : moving->steps) {
    if (s.migration_progress >= 0 && first < 0) first = s.step;
    if (s.migration_progress >= 0 && last < 0 && s.migration_progress >= 1) last = s.step;
  }
  ASSERT_GE(first, 20);
  o.hardware.migration_bytes_per_step /= 8;
  auto slow = Simulate(o, trace, "incremental");
  ASSERT_TRUE(slow.ok());
  int slow_last = -1;
  for (const StepRecord& s : slow->steps) {
    if (s.migration_progress >= 1 && slow_last < 0) slow_last = s.step;
  }
  EXPECT_GT(slow_last - first, last - first);
}

TEST(Simulator, ALostRankStallsOnceAndTheSurvivorsHoldEveryExpert) {
  SimOptions o = SmallRun();
  o.loss = RankLoss{3, 30};
  auto r = Simulate(o, FirstLayers(2), "static");
  ASSERT_TRUE(r.ok()) << r.status();
  const StepRecord& hit = r->steps[30];
  EXPECT_GE(hit.stall_seconds, o.hardware.detect_seconds + o.hardware.regroup_seconds);
  EXPECT_GT(hit.seconds, hit.stall_seconds);
  EXPECT_EQ(hit.epoch, 1);
  EXPECT_EQ(r->steps[31].stall_seconds, 0);
  EXPECT_LT(r->steps[31].seconds, 1.0);
  EXPECT_GT(r->step_p99, 2.0);
}

// The simulator plans exactly as a live coordinator: the same load reports through the
// coordinator (Register, ReportLoad, PollOrders) and through the simulator's calls
// (LoadAggregator + AutoRebalanceWindow) give the same published placement.
TEST(Simulator, PlansAreTheCoordinatorsOnTheSameReports) {
  using namespace test::job;  // NOLINT: the coordinator tests' job
  for (const std::string name : {"incremental", "eplb"}) {
    coordinator::CoordinatorOptions options;
    auto c = coordinator::Coordinator::Create(options);
    ASSERT_TRUE(c.ok()) << c.status();
    for (int r = 0; r < kRanks; ++r) ASSERT_TRUE((*c)->Register(Registration(r)).ok());
    types::Policy policy = SimPolicy(name).value();
    ASSERT_TRUE((*c)->SetPolicy(policy).ok());

    coordinator::LoadAggregator aggregator;
    aggregator.Reset(static_cast<int>(kLayers.size()), kExperts);
    coordinator::AutoRebalanceState state;
    std::optional<placement::Placement> simulated;
    for (int w = 0; w < 3 && !simulated; ++w) {
      for (int r = 0; r < kRanks; ++r) {
        ASSERT_TRUE((*c)->ReportLoad(Report(r, 10 * w, 10 * w + 10, 400 + 50 * w)).ok());
        aggregator.Add(Report(r, 10 * w, 10 * w + 10, 400 + 50 * w));
      }
      aggregator.CompleteReady(kRanks, kRanks, policy.smoothing(), [](int) { return false; });
      auto window = coordinator::AutoRebalanceWindow(policy, state, StartPlacement(),
                                                     aggregator.PlanningLoad(kLayers, policy.smoothing()), {}, false);
      ASSERT_TRUE(window.ok()) << window.status();
      if (*window && (*window)->publish) simulated = (*window)->placement;
    }
    ASSERT_TRUE(simulated.has_value()) << name;
    control::PollOrdersRequest poll;
    poll.set_rank(0);
    auto orders = (*c)->PollOrders(poll);
    ASSERT_TRUE(orders.ok()) << orders.status();
    ASSERT_TRUE(orders->has_placement()) << name << ": the coordinator published nothing";
    auto live = rpc::FromProto(orders->placement());
    ASSERT_TRUE(live.ok());
    EXPECT_EQ(*live, *simulated) << name;
  }
}

// Loads of the test job's two layers: expert 0 takes `hot`, the others 200 each; `jitter`
// adds +-j to alternate experts (sampling noise of that size).
placement::LoadMatrix JobLoad(double hot, double jitter = 0) {
  using namespace test::job;  // NOLINT: the coordinator tests' job
  placement::LoadMatrix load{kLayers, {}};
  for (size_t l = 0; l < kLayers.size(); ++l) {
    std::vector<double> row(kExperts, 200);
    row[0] = hot;
    for (int e = 1; e < kExperts; ++e) row[e] += (e % 2 ? jitter : -jitter);
    load.values.push_back(row);
  }
  return load;
}

TEST(RebalancePolicy, LoadWithinNoiseIsAChiSquareTest) {
  using coordinator::LoadWithinNoise;
  const placement::LoadMatrix load = JobLoad(4000);
  for (bool totals : {false, true}) {
    EXPECT_TRUE(LoadWithinNoise(load, load, totals));
    EXPECT_TRUE(LoadWithinNoise(load, JobLoad(4000, 10), totals));  // ~0.7 sd of a count of 200
    EXPECT_TRUE(LoadWithinNoise(load, JobLoad(4100), totals));      // the hot expert moves by ~1.1 sd
    EXPECT_FALSE(LoadWithinNoise(load, JobLoad(4000, 60), totals));
    EXPECT_FALSE(LoadWithinNoise(load, JobLoad(8000), totals));
  }
  placement::LoadMatrix other_layers = load;
  other_layers.layer_ids = {1, 3};
  EXPECT_FALSE(LoadWithinNoise(load, other_layers, false));
  // The same shape at three times the counts (the smoothing horizon filling up): within noise
  // for a shape-only planner, not for one whose noise gate reads the counts.
  placement::LoadMatrix scaled = load;
  for (auto& row : scaled.values) {
    for (double& v : row) v *= 3;
  }
  EXPECT_TRUE(LoadWithinNoise(load, scaled, false));
  EXPECT_FALSE(LoadWithinNoise(load, scaled, true));
  // One expert of 256 gains half its load: the chi-square over all experts stays within its
  // noise (it dilutes one expert), the expert's own difference (about 10 sd) does not.
  placement::LoadMatrix wide{{1}, {std::vector<double>(256, 1000.0)}};
  placement::LoadMatrix burst = wide;
  burst.values[0][7] = 1500;
  EXPECT_FALSE(LoadWithinNoise(wide, burst, false));
  placement::LoadMatrix nan = wide;
  nan.values[0][3] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(LoadWithinNoise(wide, nan, false));
  EXPECT_FALSE(LoadWithinNoise(wide, nan, true));
}

// A plan found far from worth publishing is not searched again while its inputs hold; any
// change of placement, constraints, policy, move limit, or a load beyond noise plans again.
TEST(RebalancePolicy, ADeclinedPlanIsNotSearchedAgainWhileNothingMoved) {
  using namespace test::job;  // NOLINT: the coordinator tests' job
  types::Policy policy = coordinator::DefaultPolicy();
  policy.set_auto_rebalance(true);
  policy.set_cooldown_windows(0);
  policy.set_min_gain(10);  // no plan is worth it
  coordinator::AutoRebalanceState state;
  const placement::Placement start = StartPlacement();
  auto window = [&](const placement::LoadMatrix& load, const placement::Placement& committed = StartPlacement(),
                    const placement::Constraints& constraints = {}) {
    auto w = coordinator::AutoRebalanceWindow(policy, state, committed, load, constraints, false);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() && w->has_value();  // planned
  };
  ASSERT_TRUE(window(JobLoad(4000)));
  ASSERT_TRUE(state.declined.has_value());
  EXPECT_FALSE(window(JobLoad(4000)));
  EXPECT_FALSE(window(JobLoad(4000, 10)));
  EXPECT_EQ(state.streak, 0);
  EXPECT_TRUE(window(JobLoad(8000)));  // a shift: planned, and declined from there on
  EXPECT_FALSE(window(JobLoad(8000)));

  placement::Placement moved = start;
  std::swap(moved.layers[0].ranks[0][0], moved.layers[0].ranks[1][0]);
  EXPECT_TRUE(window(JobLoad(8000), moved));
  EXPECT_FALSE(window(JobLoad(8000), moved));
  placement::Constraints drained;
  drained.drained_ranks = {3};
  EXPECT_TRUE(window(JobLoad(8000), moved, drained));
  EXPECT_FALSE(window(JobLoad(8000), moved, drained));
  policy.set_min_gain_per_move(0.002);
  EXPECT_TRUE(window(JobLoad(8000), moved, drained));
  coordinator::OnMigrationFailed(policy, state, 64);  // a failed migration: back-off, a new move limit
  state.cooldown = 0;
  EXPECT_TRUE(window(JobLoad(8000), moved, drained));
  coordinator::OnMigrationCommitted(state);
  EXPECT_FALSE(state.declined.has_value());
  EXPECT_TRUE(window(JobLoad(8000), moved, drained));

  // Declined, but within kDeclineBand of min_gain: noise may carry the next one over, so it
  // is planned again each window.
  state = {};
  policy.set_min_gain(0);
  auto probe = coordinator::AutoRebalanceWindow(policy, state, start, JobLoad(8000), {}, false);
  ASSERT_TRUE(probe.ok() && probe->has_value());
  const double gain = (*probe)->gain;
  ASSERT_GT(gain, 0.01) << "the test job's hot expert should make a plan worth something";
  policy.set_min_gain(gain / (0.5 + coordinator::kDeclineBand / 2));  // gain between band and min_gain
  state = {};
  EXPECT_TRUE(window(JobLoad(8000), start));
  EXPECT_FALSE(state.declined.has_value());
  EXPECT_TRUE(window(JobLoad(8000), start));
}

TEST(Simulator, BadInputIsRefusedByName) {
  SimOptions o = SmallRun();
  Trace trace = FirstLayers(2);
  o.ranks = 15;  // not divisible by 2 nodes
  EXPECT_EQ(ValidateSim(o, trace).code(), absl::StatusCode::kInvalidArgument);
  o = SmallRun();
  o.model = model::PresetModel("mixtral-8x7b").value();
  EXPECT_NE(ValidateSim(o, trace).message().find("256 experts per layer"), std::string::npos) << ValidateSim(o, trace);
  o = SmallRun();
  trace.windows[0].layer_ids = {0, 1};  // DeepSeek-V3's first MoE layer is 3
  EXPECT_NE(ValidateSim(o, trace).message().find("not a MoE layer"), std::string::npos);
  EXPECT_EQ(SimPolicy("greedy").status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- The command line -------------------------------------------------------------------

using test::RunCommand;
const std::string kCli = SWITCHYARD_CLI;

TEST(SimCli, ComparesPoliciesAsJson) {
  auto r = RunCommand({kCli, "sim", "--model", "preset:deepseek-v3", "--trace", kDecode, "--first-layers", "3",
                       "--ranks", "16", "--nodes", "2", "--slots-per-rank", "18", "--steps", "40",
                       "--compare", "static,eplb,incremental", "--sim-burst", "3:0.35@10..40", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["policy"], "static");
  EXPECT_EQ(j[2]["policy"], "incremental");
  for (const auto& p : j) {
    EXPECT_GT(p["tokens_per_s"].get<double>(), 0);
    EXPECT_GE(p["step_ms"]["p99"].get<double>(), p["step_ms"]["p50"].get<double>());
    EXPECT_TRUE(p.contains("moved_replicas") && p.contains("moved_bytes"));
    EXPECT_EQ(p["steps"].size(), 40u);
    EXPECT_EQ(p["layers"], nlohmann::json({3, 4, 5}));
  }
  EXPECT_EQ(j[0]["moved_bytes"], 0);
  // The table says which layers ran.
  auto table = RunCommand({kCli, "sim", "--trace", kDecode, "--first-layers", "2", "--ranks", "8", "--steps", "5"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("layers 3,4 (2 of its 58 MoE layers)"), std::string::npos) << table.out;
}

// A placement from `switchyard plan` as the start: EPLB's hierarchical policy (8 groups on 4
// nodes) is capped near 0.87 on the prefill trace; the incremental policy starting from it
// rebalances, and static keeps it.
TEST(SimCli, StartsFromAPlanFile) {
  test::TempDir dir;
  const std::string trace = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_prefill_in1024.csv";
  auto plan = RunCommand({kCli, "plan", "--loads", trace, "--ranks", "32", "--nodes", "4", "--slots-per-rank", "9",
                          "--policy", "eplb", "--groups", "8", "--out", dir.File("hier.json")});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  auto r = RunCommand({kCli, "sim", "--trace", trace, "--first-layers", "6", "--ranks", "32", "--nodes", "4",
                       "--slots-per-rank", "9", "--steps", "40", "--tokens-per-rank", "1024", "--start",
                       dir.File("hier.json"), "--compare", "static,incremental", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j[0]["moved_replicas"], 0);
  EXPECT_GT(j[1]["moved_replicas"].get<int>(), 0);
  EXPECT_GT(j[1]["steps"][39]["balancedness_mean"].get<double>(), j[0]["steps"][39]["balancedness_mean"].get<double>() + 0.02);
  // A placement for another cluster is refused by name.
  auto bad = RunCommand({kCli, "sim", "--trace", trace, "--ranks", "32", "--nodes", "8", "--slots-per-rank", "9",
                         "--start", dir.File("hier.json")});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--start: the placement is for 32 ranks on 4 nodes x 9 slots, the simulation has 32 on 8 x 9"), std::string::npos) << bad.err;
}

TEST(SimCli, BadInputExitsTwoWithOneLine) {
  test::TempDir dir;
  std::ofstream(dir.File("mixtral.csv")) << "layer,expert,tokens\n0,0,5\n0,1,7\n";
  {  // two windows of DeepSeek-V3's layer 3; the second without load
    std::ofstream two(dir.File("two.csv")), empty(dir.File("empty_layer.csv"));
    two << "step,layer,expert,tokens\n";
    empty << "step,layer,expert,tokens\n";
    for (int w = 0; w < 2; ++w) {
      for (int e = 0; e < 256; ++e) {
        two << w << ",3," << e << "," << 10 + e << "\n";
        empty << w << ",3," << e << "," << (w == 0 ? 10 + e : 0) << "\n";
      }
    }
  }
  std::ofstream(dir.File("null.json")) << R"({"flops": null})";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--trace", kDecode, "--ranks", "8", "--hardware", "tpu-v9"}, "unknown hardware preset 'tpu-v9'"},
      {{"--trace", kDecode, "--ranks", "10", "--nodes", "4"}, "--ranks 10 is not divisible by --nodes 4"},
      {{"--trace", dir.File("mixtral.csv"), "--ranks", "8"}, "the trace has 2 experts per layer, the model (deepseek-v3) has 256"},
      {{"--trace", kDecode, "--ranks", "8", "--model", "preset:nope"}, "nope"},
      {{"--trace", kDecode, "--ranks", "8", "--policy", "greedy"}, "unknown policy 'greedy'"},
      {{"--trace", kDecode, "--ranks", "8", "--policy", "eplb", "--compare", "static"}, "not both"},
      {{"--trace", kDecode}, "--ranks R is required"},
      {{"--ranks", "8"}, "--trace LOADS.csv is required"},
      {{"--trace", dir.File("missing.csv"), "--ranks", "8"}, "missing.csv"},
      {{"--trace", kDecode, "--ranks", "8", "--lose-rank", "9@3"}, "--lose-rank: rank 9 is not in 0..7"},
      {{"--trace", kDecode, "--ranks", "8", "--dispatch", "fast"}, "--dispatch 'fast'"},
      {{"--trace", kDecode, "--ranks", "8", "--steps", "0"}, "steps must be in 1.."},
      {{"--trace", kDecode, "--ranks", "8", "--burst", "3:0.3@1..4"}, "--burst is not a flag of switchyard sim (did you mean --sim-burst?)"},
      {{"--trace", kDecode, "--ranks", "8", "--compare", "eplb,eplb"}, "--compare names 'eplb' twice"},
      {{"--trace", kDecode, "--ranks", "8", "--lose-rank", "1@2", "--lose-rank", "2@3"}, "one loss per run"},
      {{"--trace", kDecode, "--ranks", "8", "--max-moves", "-5"}, "--max-moves -5"},
      {{"--trace", kDecode, "--ranks", "8", "--steps-out", kDecode}, "is the trace itself"},
      {{"--trace", kDecode, "--ranks", "8", "--sim-burst", "3:0.3@1..x\nsecond"}, "burst '3:0.3@1..x\\x0asecond'"},
      // Input that would be accepted and never used.
      {{"--trace", kDecode, "--ranks", "8", "--steps", "50", "--sim-burst", "3:0.3@100..120"},
       "a burst starting at step 100 never runs: the steps are 0..49"},
      {{"--trace", dir.File("two.csv"), "--ranks", "8", "--steps", "1"}, "the trace has 2 windows, more than the 1 step"},
      {{"--trace", dir.File("two.csv"), "--ranks", "8", "--steps", "200", "--window-steps", "1000"},
       "--window-steps 1000 x 2 windows: 200 steps reach only the first 1"},
      {{"--trace", dir.File("empty_layer.csv"), "--ranks", "8", "--steps", "10"}, "window 1 of the trace: layer 3 has no load"},
      {{"--trace", kDecode, "--ranks", "8", "--steps", "99999999999"}, "--steps '99999999999': expected an integer in"},
      {{"--trace", kDecode, "--ranks", "8", "--hardware", dir.File("null.json")}, "$.flops: expected a number, got null"},
  };
  for (const auto& [args, want] : cases) {
    std::vector<std::string> argv = {kCli, "sim"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << want << ": " << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

}  // namespace
}  // namespace switchyard::sim
