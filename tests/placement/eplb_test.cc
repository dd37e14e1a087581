// EPLB against the known answer from deepseek-ai/EPLB's README.
#include "placement/eplb.h"

#include <gtest/gtest.h>

#include "placement/metrics.h"

namespace switchyard::placement {
namespace {

const std::vector<std::vector<double>> kReadmeWeights = {
    {90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
    {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}};

TEST(EplbTest, ReadmeExampleHierarchical) {
  // 16 physical experts, 4 groups, 2 nodes, 8 GPUs.
  const std::vector<std::vector<int>> expected = {
      {5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1},
      {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}};
  for (size_t l = 0; l < kReadmeWeights.size(); ++l) {
    EXPECT_EQ(EplbPhysicalToLogical(kReadmeWeights[l], 16, 4, 2, 8), expected[l]) << "layer " << l;
  }
}

TEST(EplbTest, PlannerMatchesReadmeLayout) {
  // Through the Planner interface: slot i of rank g is phy2log[g * 2 + i], shares 1/replicas.
  const auto topo = *Topology::Create(8, 2, 2);
  PlanRequest request{topo, {{0, 1}, kReadmeWeights}, nullptr, {}, {}};
  request.options.eplb_groups = 4;
  auto placement = EplbPlanner().Plan(request);
  ASSERT_TRUE(placement.ok()) << placement.status();
  const std::vector<int> expected = {5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1};
  const LayerPlacement& layer = placement->layers[0];
  for (int g = 0; g < 8; ++g) {
    ASSERT_EQ(layer.ranks[g].size(), 2u);
    for (int i = 0; i < 2; ++i) EXPECT_EQ(layer.ranks[g][i].expert, expected[g * 2 + i]);
  }
  // Expert 5 has 2 replicas (slots 0 and 2) -> share 1/2 each.
  EXPECT_DOUBLE_EQ(layer.ranks[0][0].share, 0.5);
  EXPECT_TRUE(ValidatePlacement(*placement).ok());
}

TEST(EplbTest, GlobalPolicyWhenGroupsDoNotDivideNodes) {
  const auto topo = *Topology::Create(8, 2, 2);
  PlanRequest request{topo, {{0}, {kReadmeWeights[0]}}, nullptr, {}, {}};
  request.options.eplb_groups = 3;  // 3 % 2 != 0 -> global policy (one group, one node)
  auto placement = EplbPlanner().Plan(request);
  ASSERT_TRUE(placement.ok()) << placement.status();
  std::vector<int> phy2log;
  for (const auto& rank : placement->layers[0].ranks) {
    for (const auto& rep : rank) phy2log.push_back(rep.expert);
  }
  EXPECT_EQ(phy2log, EplbPhysicalToLogical(kReadmeWeights[0], 16, 1, 1, 8));
}

TEST(EplbTest, RejectsGroupsThatDoNotDivideExperts) {
  const auto topo = *Topology::Create(8, 1, 2);
  PlanRequest request{topo, {{0}, {kReadmeWeights[0]}}, nullptr, {}, {}};
  request.options.eplb_groups = 5;  // 5 % 1 == 0 -> hierarchical, but 12 % 5 != 0
  auto placement = EplbPlanner().Plan(request);
  EXPECT_EQ(placement.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(placement.status().message().find("do not divide 12 experts"), absl::string_view::npos);
}

}  // namespace
}  // namespace switchyard::placement
