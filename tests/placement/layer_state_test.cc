// The share solver against the optimality conditions of min sum of squared rank loads: for
// every replicated expert, the ranks that give it work share one level, and its other
// replicas' ranks are at or above that level (else load could move down to them).
#include "placement/internal/layer_state.h"

#include <gtest/gtest.h>

#include <random>

namespace switchyard::placement::internal {
namespace {

void ExpectOptimal(const LayerState& s, double tolerance) {
  for (int e = 0; e < s.num_experts(); ++e) {
    if (s.replicas(e) < 2 || s.load(e) <= 0) continue;
    double lowest_working = 1e300, highest_working = -1, lowest_idle = 1e300;
    double share_sum = 0;
    for (int slot = s.first_slot_of(e); slot >= 0; slot = s.next_slot_of(slot)) {
      const double load = s.rank_load(s.RankOfSlot(slot));
      share_sum += s.share_at(slot);
      EXPECT_GE(s.share_at(slot), 0.0);
      if (s.share_at(slot) > 1e-12) {
        lowest_working = std::min(lowest_working, load);
        highest_working = std::max(highest_working, load);
      } else {
        lowest_idle = std::min(lowest_idle, load);
      }
    }
    EXPECT_NEAR(share_sum, 1.0, 1e-9) << "expert " << e;
    EXPECT_LE(highest_working - lowest_working, tolerance) << "expert " << e;
    EXPECT_GE(lowest_idle, highest_working - tolerance) << "expert " << e;
  }
}

TEST(LayerStateTest, SolveSharesReachesTheOptimum) {
  std::mt19937 rng(42);
  for (int trial = 0; trial < 40; ++trial) {
    const int ranks = 3 + trial % 13, slots = 2 + trial % 5, experts = ranks * slots - 1 - trial % 7;
    if (experts < 2) continue;
    std::vector<double> load(experts);
    std::exponential_distribution<double> exp(1.0);
    for (double& x : load) x = std::round(1000 * exp(rng) * exp(rng));
    LayerState s(slots, load, std::vector<int>(ranks, slots));
    // Every expert once, the remaining slots get random extra replicas.
    std::vector<int> free_slots;
    for (int slot = 0; slot < ranks * slots; ++slot) free_slots.push_back(slot);
    std::shuffle(free_slots.begin(), free_slots.end(), rng);
    for (int e = 0; e < experts; ++e) s.Add(free_slots[e], e);
    for (size_t i = experts; i < free_slots.size(); ++i) {
      const int r = free_slots[i] / slots;
      int e = std::uniform_int_distribution<int>(0, experts - 1)(rng);
      if (!s.RankHolds(r, e)) s.Add(free_slots[i], e);
    }
    s.ResetShares();
    double total = 0;
    for (double x : load) total += x;
    s.SolveShares();
    double sum = 0;
    for (int r = 0; r < ranks; ++r) sum += s.rank_load(r);
    EXPECT_NEAR(sum, total, 1e-6 * total);
    ExpectOptimal(s, 1e-5 * total / ranks);
  }
}

TEST(LayerStateTest, ChainOfReplicasLevelsEveryRank) {
  // Ranks 0..7 linked by expert i on ranks i and i+1; all load starts on rank 0.
  const int ranks = 8;
  std::vector<double> load = {800, 0, 0, 0, 0, 0, 0, 0};
  LayerState s(2, load, std::vector<int>(ranks, 2));
  for (int i = 0; i < ranks - 1; ++i) {
    s.Add(i * 2, i);
    s.Add((i + 1) * 2 + 1, i);
  }
  s.ResetShares();
  s.SolveShares();
  // Only expert 0 has load: it can reach ranks 0 and 1 only.
  EXPECT_NEAR(s.rank_load(0), 400, 1e-6);
  EXPECT_NEAR(s.rank_load(1), 400, 1e-6);
  ExpectOptimal(s, 1e-6);
}

TEST(LayerStateTest, SwapAndRemoveKeepLoadsConsistent) {
  std::vector<double> load = {10, 20, 30, 40};
  LayerState s(2, load, {2, 2, 2});
  s.Add(0, 0);
  s.Add(1, 1);
  s.Add(2, 2);
  s.Add(3, 1);
  s.Add(4, 3);
  s.ResetShares();
  EXPECT_DOUBLE_EQ(s.rank_load(0), 10 + 10);
  EXPECT_DOUBLE_EQ(s.rank_load(1), 30 + 10);
  s.SwapSlots(0, 5);  // expert 0 moves to the free slot on rank 2
  EXPECT_DOUBLE_EQ(s.rank_load(0), 10);
  EXPECT_DOUBLE_EQ(s.rank_load(2), 40 + 10);
  s.Remove(1);  // expert 1 keeps one replica, which now takes all of it
  EXPECT_DOUBLE_EQ(s.rank_load(0), 0);
  EXPECT_DOUBLE_EQ(s.rank_load(1), 30 + 20);
  EXPECT_EQ(s.replicas(1), 1);
}

}  // namespace
}  // namespace switchyard::placement::internal
