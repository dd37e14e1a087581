// PlanTransfers: one transfer per expert a rank gains, from a current holder on its node when
// there is one, spreading the sending over holders.
#include <gtest/gtest.h>

#include "placement/metrics.h"
#include "placement/placement.h"

namespace switchyard::placement {
namespace {

LayerPlacement Layer(int id, std::vector<std::vector<int>> ranks) {
  LayerPlacement l{id, std::vector<std::vector<Replica>>(ranks.size())};
  for (size_t r = 0; r < ranks.size(); ++r) {
    for (int e : ranks[r]) l.ranks[r].push_back({e, 1.0});
  }
  return l;
}

TEST(PlanTransfers, OneTransferPerGainedExpertFromANearHolder) {
  const Topology topo = *Topology::Create(4, 2, 3);  // nodes {0,1} and {2,3}
  const Placement from{topo, 4, {Layer(7, {{0}, {1}, {2}, {3}})}};
  // Rank 1 gains 0 (rank 0 is on its node); rank 3 gains 0 too (only remote holders) and 2
  // (rank 2 is on its node); rank 2 keeps 2 and gains nothing new.
  const Placement to{topo, 4, {Layer(7, {{0}, {1, 0}, {2}, {3, 0, 2}})}};
  const std::vector<Transfer> t = PlanTransfers(from, to);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0], (Transfer{7, 0, 0, 1}));
  EXPECT_EQ(t[1], (Transfer{7, 0, 0, 3}));  // remote: the only holder
  EXPECT_EQ(t[2], (Transfer{7, 2, 2, 3}));
  EXPECT_EQ(static_cast<int>(t.size()), MovedReplicas(from, to));
  EXPECT_TRUE(PlanTransfers(from, from).empty());
}

TEST(PlanTransfers, SpreadsSendingOverHolders) {
  const Topology topo = *Topology::Create(4, 1, 3);
  const Placement from{topo, 4, {Layer(1, {{0}, {0, 1}, {2}, {3}}), Layer(2, {{0}, {0, 1}, {2}, {3}})}};
  const Placement to{topo, 4, {Layer(1, {{0}, {0, 1}, {2, 0}, {3}}), Layer(2, {{0}, {0, 1}, {2}, {3, 0}})}};
  const std::vector<Transfer> t = PlanTransfers(from, to);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_NE(t[0].from, t[1].from);  // ranks 0 and 1 both hold expert 0: one each
}

}  // namespace
}  // namespace switchyard::placement
