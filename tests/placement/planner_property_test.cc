// One property suite run over every placement policy (STYLE.md "One test suite per
// interface"): validity, shares, pins, drains, determinism, no churn on identical load.
#include <gtest/gtest.h>

#include "placement/metrics.h"
#include "placement/planner.h"
#include "tests/placement/test_util.h"

namespace switchyard::placement {
namespace {

struct Scenario {
  std::string name;
  int ranks, nodes, slots;
  LoadMatrix load;
  Constraints constraints;
};

std::vector<Scenario> Scenarios() {
  std::vector<Scenario> out;
  out.push_back({"deepseek_32x9", 32, 4, 9, test::DeepSeekLayers("prefill_in4096", 0, 6), {}});
  out.push_back({"deepseek_no_redundancy_32x8", 32, 1, 8,
                 test::DeepSeekLayers("decode_in1000out1000", 10, 4), {}});
  out.push_back({"zipf_8x5_60_experts", 8, 2, 9, test::ZipfLoad(5, 60, 1.1, 5000, 7), {}});
  out.push_back({"zipf_uneven_7x6", 7, 1, 6, test::ZipfLoad(3, 37, 0.8, 900, 3), {}});
  out.push_back({"zero_load_layer", 4, 1, 3, {{0}, {std::vector<double>(10, 0.0)}}, {}});
  Constraints pins;
  pins.pins = {{kAllLayers, 0, 5}, {kAllLayers, 3, 5}, {1, 17, 2}, {kAllLayers, 17, 6}};
  out.push_back({"pins_8x9", 8, 1, 9, test::ZipfLoad(3, 60, 1.2, 8000, 11), pins});
  Constraints drains;
  drains.drained_ranks = {1, 6};
  drains.pins = {{kAllLayers, 4, 0}};
  out.push_back({"drains_8x10", 8, 2, 10, test::ZipfLoad(3, 48, 1.0, 8000, 5), drains});
  return out;
}

class PlannerPropertyTest
    : public ::testing::TestWithParam<std::tuple<std::string, int /*scenario*/>> {
 protected:
  void SetUp() override {
    scenario_ = Scenarios()[std::get<1>(GetParam())];
    planner_ = *CreatePlanner(std::get<0>(GetParam()));
    topo_ = *Topology::Create(scenario_.ranks, scenario_.nodes, scenario_.slots);
  }
  PlanRequest Request(const Placement* current = nullptr) const {
    return {topo_, scenario_.load, current, scenario_.constraints, {}};
  }

  Scenario scenario_;
  std::unique_ptr<Planner> planner_;
  Topology topo_;
};

TEST_P(PlannerPropertyTest, PlacementIsValidAndHonoursConstraints) {
  auto placement = planner_->Plan(Request());
  ASSERT_TRUE(placement.ok()) << placement.status();
  EXPECT_TRUE(ValidatePlacement(*placement, scenario_.constraints).ok())
      << ValidatePlacement(*placement, scenario_.constraints);
  EXPECT_EQ(placement->topology, topo_);
  ASSERT_EQ(placement->layers.size(), scenario_.load.layer_ids.size());
  for (size_t i = 0; i < placement->layers.size(); ++i) {
    EXPECT_EQ(placement->layers[i].layer_id, scenario_.load.layer_ids[i]);
  }
}

TEST_P(PlannerPropertyTest, ShareWeightedLoadIsConserved) {
  auto placement = planner_->Plan(Request());
  ASSERT_TRUE(placement.ok()) << placement.status();
  for (size_t i = 0; i < placement->layers.size(); ++i) {
    double expert_total = 0, rank_total = 0;
    for (double x : scenario_.load.values[i]) expert_total += x;
    for (double x : RankLoads(placement->layers[i], scenario_.load.values[i])) rank_total += x;
    EXPECT_NEAR(rank_total, expert_total, 1e-9 * std::max(1.0, expert_total));
  }
}

TEST_P(PlannerPropertyTest, IsDeterministic) {
  auto a = planner_->Plan(Request());
  auto b = planner_->Plan(Request());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST_P(PlannerPropertyTest, NoChurnOnIdenticalLoad) {
  auto first = planner_->Plan(Request());
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = planner_->Plan(Request(&*first));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(MovedReplicas(*first, *again), 0);
}

INSTANTIATE_TEST_SUITE_P(
    AllPolicies, PlannerPropertyTest,
    ::testing::Combine(::testing::Values("incremental", "eplb"),
                       ::testing::Range(0, static_cast<int>(Scenarios().size()))),
    [](const auto& info) {
      return std::get<0>(info.param) + "_" + Scenarios()[std::get<1>(info.param)].name;
    });

TEST(PlannerBalanceTest, EveryPolicyBeatsTheContiguousPlacement) {
  for (const Scenario& scenario : Scenarios()) {
    const auto topo = *Topology::Create(scenario.ranks, scenario.nodes, scenario.slots);
    auto contiguous = ContiguousPlacement(topo, scenario.load.num_experts(), scenario.load.layer_ids);
    if (!contiguous.ok() || !scenario.constraints.drained_ranks.empty()) continue;
    const double before = ScorePlacement(*contiguous, scenario.load)->balancedness_mean;
    for (absl::string_view policy : PlannerNames()) {
      SCOPED_TRACE(scenario.name + " " + std::string(policy));
      auto placement = (*CreatePlanner(policy))->Plan({topo, scenario.load, nullptr, scenario.constraints, {}});
      ASSERT_TRUE(placement.ok()) << placement.status();
      EXPECT_GE(ScorePlacement(*placement, scenario.load)->balancedness_mean, before - 1e-12);
    }
  }
}

// Requests every policy must reject, naming the problem.
TEST(PlannerErrorsTest, BadRequestsAreRejected) {
  const LoadMatrix load = test::ZipfLoad(2, 20, 1.0, 1000, 1);
  for (absl::string_view policy : PlannerNames()) {
    auto planner = *CreatePlanner(policy);
    SCOPED_TRACE(std::string(policy));
    // R * S < E.
    auto small = planner->Plan({*Topology::Create(4, 1, 4), load, nullptr, {}, {}});
    EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(small.status().message().find("cannot hold 20 experts"), absl::string_view::npos);
    // Draining leaves too few slots.
    Constraints drain;
    drain.drained_ranks = {0, 1};
    auto drained = planner->Plan({*Topology::Create(4, 1, 6), load, nullptr, drain, {}});
    EXPECT_EQ(drained.status().code(), absl::StatusCode::kFailedPrecondition);
    // Pin to a drained rank; pin of an unknown expert.
    Constraints bad_pin;
    bad_pin.drained_ranks = {3};
    bad_pin.pins = {{kAllLayers, 2, 3}};
    EXPECT_EQ(planner->Plan({*Topology::Create(4, 1, 8), load, nullptr, bad_pin, {}}).status().code(),
              absl::StatusCode::kFailedPrecondition);
    Constraints unknown;
    unknown.pins = {{kAllLayers, 20, 0}};
    EXPECT_EQ(planner->Plan({*Topology::Create(4, 1, 8), load, nullptr, unknown, {}}).status().code(),
              absl::StatusCode::kInvalidArgument);
    // Current placement for another topology.
    auto other = *ContiguousPlacement(*Topology::Create(5, 1, 4), 20, load.layer_ids);
    auto mismatch = planner->Plan({*Topology::Create(4, 1, 8), load, &other, {}, {}});
    EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(mismatch.status().message().find("current placement is for 5 ranks"),
              absl::string_view::npos);
  }
  EXPECT_EQ(CreatePlanner("random").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::placement
