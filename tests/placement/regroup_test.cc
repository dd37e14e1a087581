// RegroupPlacement: survivors keep their slots, orphaned experts are re-placed (free slots of
// the least loaded ranks first, then over extra replicas, never over a last one), shares are
// renormalised, and the answer is the same on every call.
#include "placement/regroup.h"

#include <gtest/gtest.h>

#include <set>

namespace switchyard::placement {
namespace {

Placement Make(int ranks, int slots, int experts, std::vector<std::vector<Replica>> layer) {
  Placement p;
  p.topology = *Topology::Create(ranks, 1, slots);
  p.num_experts = experts;
  p.layers.push_back({3, std::move(layer)});
  return p;
}

int Replicas(const LayerPlacement& l, int expert) {
  int n = 0;
  for (const auto& rank : l.ranks) {
    for (const Replica& x : rank) n += x.expert == expert;
  }
  return n;
}

TEST(RegroupPlacement, SurvivorsKeepTheirSlotsAndOrphansTakeFreeSlotsOfTheLeastLoaded) {
  // 4 ranks x 3 slots, 8 experts; rank 2 (experts 4, 5, and a replica of 0) is lost.
  const Placement before = Make(4, 3, 8,
                                {{{0, 0.5}, {1, 1}}, {{2, 1}, {3, 1}}, {{4, 1}, {5, 1}, {0, 0.5}}, {{6, 1}, {7, 1}}});
  const Topology after = *Topology::Create(3, 1, 3);
  LoadMatrix load{{3}, {{10, 1, 1, 1, 50, 5, 1, 1}}};
  auto r = RegroupPlacement(before, {0, 1, 3}, after, &load);
  ASSERT_TRUE(r.ok()) << r.status();
  const LayerPlacement& l = r->placement.layers[0];
  EXPECT_EQ(r->replaced, 2);  // experts 4 and 5
  EXPECT_EQ(r->evicted, 0);
  // Survivors' slots are unchanged in order (expert 0's lone replica now has share 1).
  EXPECT_EQ(l.ranks[0][0].expert, 0);
  EXPECT_DOUBLE_EQ(l.ranks[0][0].share, 1.0);
  EXPECT_EQ(l.ranks[0][1].expert, 1);
  EXPECT_EQ(l.ranks[2][0].expert, 6);
  // The heavy orphan (4, load 50) went to the least loaded rank with a free slot: rank 1
  // (load 2) before rank 2 (load 2, later index) and rank 0 (load 11); then 5 to rank 2.
  EXPECT_EQ(l.ranks[1].back().expert, 4);
  EXPECT_EQ(l.ranks[2].back().expert, 5);
  EXPECT_TRUE(ValidatePlacement(r->placement).ok());
  // The same input gives the same answer (every member computes it alone).
  auto again = RegroupPlacement(before, {0, 1, 3}, after, &load);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->placement, r->placement);
}

TEST(RegroupPlacement, WithoutFreeSlotsItGivesUpExtraReplicasNeverALastOne) {
  // 3 ranks x 2 slots, full; expert 0 has 3 replicas, 1 has 2. Rank 2 (experts 2 and 0) leaves.
  const Placement before = Make(3, 2, 3, {{{0, 0.4}, {1, 0.5}}, {{0, 0.3}, {1, 0.5}}, {{2, 1}, {0, 0.3}}});
  auto r = RegroupPlacement(before, {0, 1}, *Topology::Create(2, 1, 2));
  ASSERT_TRUE(r.ok()) << r.status();
  const LayerPlacement& l = r->placement.layers[0];
  EXPECT_EQ(r->replaced, 1);
  EXPECT_EQ(r->evicted, 1);
  for (int e = 0; e < 3; ++e) EXPECT_GE(Replicas(l, e), 1) << e;
  EXPECT_TRUE(ValidatePlacement(r->placement).ok());
}

TEST(RegroupPlacement, ANewcomerStartsEmptyAndTakesOrphans) {
  const Placement before = Make(2, 2, 4, {{{0, 1}, {1, 1}}, {{2, 1}, {3, 1}}});
  // Rank 1 lost, a newcomer joins as rank 0; rank 0 before is rank 1 now.
  auto r = RegroupPlacement(before, {-1, 0}, *Topology::Create(2, 1, 2));
  ASSERT_TRUE(r.ok()) << r.status();
  const LayerPlacement& l = r->placement.layers[0];
  EXPECT_EQ(l.ranks[1], before.layers[0].ranks[0]);
  std::set<int> newcomer;
  for (const Replica& x : l.ranks[0]) newcomer.insert(x.expert);
  EXPECT_EQ(newcomer, (std::set<int>{2, 3}));
  // No loss: the newcomer's slots stay free for the planner.
  auto grow = RegroupPlacement(before, {0, 1, -1}, *Topology::Create(3, 1, 2));
  ASSERT_TRUE(grow.ok());
  EXPECT_TRUE(grow->placement.layers[0].ranks[2].empty());
  EXPECT_EQ(grow->replaced, 0);
}

TEST(RegroupPlacement, RefusesWhatDoesNotFit) {
  const Placement before = Make(2, 2, 4, {{{0, 1}, {1, 1}}, {{2, 1}, {3, 1}}});
  EXPECT_EQ(RegroupPlacement(before, {0}, *Topology::Create(1, 1, 2)).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(RegroupPlacement(before, {0, 0}, *Topology::Create(2, 1, 2)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RegroupPlacement(before, {0, 5}, *Topology::Create(2, 1, 2)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RegroupPlacement(before, {0, 1, -1}, *Topology::Create(2, 1, 2)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RegroupPlacement(before, {0, 1}, *Topology::Create(2, 1, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  // More slots than before: the orphans fit on one survivor.
  auto grown = RegroupPlacement(before, {1}, *Topology::Create(1, 1, 4));
  ASSERT_TRUE(grown.ok()) << grown.status();
  EXPECT_EQ(grown->placement.layers[0].ranks[0].size(), 4u);
}

}  // namespace
}  // namespace switchyard::placement
