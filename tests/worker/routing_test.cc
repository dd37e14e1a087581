// The routing table: every source's fractions sum to 1, replicas get their shares overall,
// local replicas are preferred as far as shares allow, choices are deterministic.
#include "placement/routing.h"

#include <gtest/gtest.h>

#include "placement/planner.h"
#include "tests/placement/test_util.h"

namespace switchyard::placement {
namespace {

void CheckTable(const Placement& p) {
  auto table = RoutingTable::Build(p, 7);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->epoch(), 7);
  const int R = p.topology.ranks();
  for (int l = 0; l < table->num_layers(); ++l) {
    for (int r = 0; r < R; ++r) {
      for (int s = 0; s < static_cast<int>(p.layers[l].ranks[r].size()); ++s) {
        const Replica& rep = p.layers[l].ranks[r][s];
        double received = 0;
        for (int src = 0; src < R; ++src) received += table->Fraction(l, rep.expert, src, {r, s}) / R;
        EXPECT_NEAR(received, rep.share, 1e-9) << "layer " << l << " rank " << r << " slot " << s;
        // Local first: the source on this rank sends it min(1, R * share) of its pairs
        // (or shares that with its other local replicas of the same expert).
        int local_copies = 0;
        for (const Replica& other : p.layers[l].ranks[r]) local_copies += other.expert == rep.expert;
        if (local_copies == 1) {
          EXPECT_NEAR(table->Fraction(l, rep.expert, r, {r, s}), std::min(1.0, R * rep.share), 1e-9);
        }
      }
    }
  }
  // Draws land on replicas of the right expert, deterministically.
  for (int e = 0; e < p.num_experts; ++e) {
    for (double u : {0.0, 0.3, 0.9999}) {
      const ReplicaLocation where = table->Route(0, e, 0, u);
      EXPECT_EQ(p.layers[0].ranks[where.rank][where.slot].expert, e);
      EXPECT_EQ(table->Route(0, e, 0, u), where);
    }
  }
}

TEST(RoutingTest, SharesAndLocalityOnPlannedPlacements) {
  const auto topo = *Topology::Create(16, 2, 17);
  const LoadMatrix load = test::DeepSeekLayers("prefill_in4096", 0, 3);
  for (absl::string_view policy : PlannerNames()) {
    SCOPED_TRACE(std::string(policy));
    CheckTable(*(*CreatePlanner(policy))->Plan({topo, load, nullptr, {}, {}}));
  }
  CheckTable(*ContiguousPlacement(topo, 256, load.layer_ids));
}

TEST(RoutingTest, UnevenSharesAndDuplicatesOnOneRank) {
  // Expert 0: 0.7 on rank 0, 0.1 + 0.2 on rank 1 (two slots); expert 1 on rank 2.
  Placement p{*Topology::Create(3, 1, 2), 2, {}};
  p.layers.push_back({5, {{{0, 0.7}}, {{0, 0.1}, {0, 0.2}}, {{1, 1.0}}}});
  CheckTable(p);
  auto table = *RoutingTable::Build(p, 0);
  EXPECT_EQ(table.LayerIndex(5), 0);
  EXPECT_EQ(table.LayerIndex(4), -1);
  // Rank 2 has no replica of expert 0: it sends by shares. Its pairs cover what the local
  // sources left: rank 0 keeps 1 unit (cap 2.1), rank 1 keeps 0.9 of its 1 unit...
  double total = 0;
  for (ReplicaLocation where : {ReplicaLocation{0, 0}, {1, 0}, {1, 1}}) total += table.Fraction(0, 0, 2, where);
  EXPECT_NEAR(total, 1.0, 1e-12);
}

}  // namespace
}  // namespace switchyard::placement
