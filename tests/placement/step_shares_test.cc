// Per-step shares: the quota solver against a brute force on small cases, its invariants on
// random layers (quotas sum to the counts, optimal bound, deterministic), replicas that should
// get nothing, bad input; the transport's row and column sums and its local-first rule.
#include "placement/step_shares.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <numeric>
#include <random>

namespace switchyard::placement {
namespace {

using ::testing::HasSubstr;

// A layer from per-rank expert lists.
LayerPlacement Layer(const std::vector<std::vector<int>>& ranks) {
  LayerPlacement l;
  for (const auto& experts : ranks) {
    l.ranks.emplace_back();
    for (int e : experts) l.ranks.back().push_back({e, 1.0});
  }
  return l;
}

int64_t MaxLoad(const StepShareSolver& s, const std::vector<int64_t>& quota) {
  const std::vector<int64_t> loads = s.RankLoads(quota);
  return *std::max_element(loads.begin(), loads.end());
}

// The least makespan by trying every integer split of every expert over its replicas.
int64_t BruteForce(const StepShareSolver& s, const std::vector<int64_t>& counts) {
  std::vector<int64_t> quota(s.num_replicas(), 0);
  int64_t best = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int>> replicas(s.num_experts());
  for (int j = 0; j < s.num_replicas(); ++j) replicas[s.replica_expert(j)].push_back(j);
  std::function<void(int)> expert = [&](int e) {
    if (e == s.num_experts()) {
      best = std::min(best, MaxLoad(s, quota));
      return;
    }
    std::function<void(size_t, int64_t)> split = [&](size_t i, int64_t left) {
      if (i + 1 == replicas[e].size()) {
        quota[replicas[e][i]] = left;
        expert(e + 1);
        return;
      }
      for (int64_t n = 0; n <= left; ++n) {
        quota[replicas[e][i]] = n;
        split(i + 1, left - n);
      }
    };
    split(0, counts[e]);
  };
  expert(0);
  return best;
}

// Quotas per expert add up to its count, none negative.
void ExpectConserved(const StepShareSolver& s, const std::vector<int64_t>& counts, const std::vector<int64_t>& quota) {
  std::vector<int64_t> sum(s.num_experts(), 0);
  for (int j = 0; j < s.num_replicas(); ++j) {
    EXPECT_GE(quota[j], 0);
    sum[s.replica_expert(j)] += quota[j];
  }
  EXPECT_EQ(sum, counts);
}

TEST(StepShares, MatchesBruteForceOnSmallLayers) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int R = 2 + static_cast<int>(rng() % 3), E = 2 + static_cast<int>(rng() % 3), slots = 2;
    const Topology topo = *Topology::Create(R, 1, slots);
    // Every expert once, then random extra replicas in the free slots.
    std::vector<std::vector<int>> ranks(R);
    for (int e = 0; e < E; ++e) ranks[e % R].push_back(e);
    for (int r = 0; r < R; ++r) {
      while (static_cast<int>(ranks[r].size()) < slots && rng() % 2) ranks[r].push_back(static_cast<int>(rng() % E));
    }
    const StepShareSolver s(Layer(ranks), topo, E);
    std::vector<int64_t> counts(E);
    for (int64_t& c : counts) c = static_cast<int64_t>(rng() % 7);
    std::vector<int64_t> quota(s.num_replicas());
    ASSERT_TRUE(s.Solve(counts, absl::MakeSpan(quota)).ok());
    ExpectConserved(s, counts, quota);
    ASSERT_EQ(MaxLoad(s, quota), BruteForce(s, counts)) << "trial " << trial;
  }
}

// A 32-rank DeepSeek-like layer: 256 experts, 9 slots, random replicas of hot experts.
struct BigLayer {
  Topology topo = *Topology::Create(32, 4, 9);
  LayerPlacement layer;
  std::vector<int64_t> counts;
  explicit BigLayer(uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::vector<int>> ranks(32);
    for (int e = 0; e < 256; ++e) ranks[e / 8].push_back(e);
    for (int r = 0; r < 32; ++r) ranks[r].push_back(static_cast<int>(rng() % 32));  // replicas of the first 32
    layer = Layer(ranks);
    std::lognormal_distribution<double> skew(0, 1.2);
    counts.resize(256);
    for (int e = 0; e < 256; ++e) counts[e] = static_cast<int64_t>(64 * skew(rng)) * (e < 32 ? 4 : 1);
  }
};

TEST(StepShares, OptimalBoundsAndDeterminismOnALargeLayer) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    const BigLayer b(seed);
    const StepShareSolver s(b.layer, b.topo, 256);
    std::vector<int64_t> quota(s.num_replicas()), again(s.num_replicas());
    ASSERT_TRUE(s.Solve(b.counts, absl::MakeSpan(quota)).ok());
    ExpectConserved(s, b.counts, quota);
    const StepShareSolver fresh(b.layer, b.topo, 256);
    ASSERT_TRUE(fresh.Solve(b.counts, absl::MakeSpan(again)).ok());
    EXPECT_EQ(quota, again);  // same input, same split, in any solver object
    // Optimality itself is checked against the brute force above; here: the mean bounds it,
    // and equal splits over the same replicas (epoch-like shares) are never better.
    const std::vector<int64_t> loads = s.RankLoads(quota);
    const int64_t best = *std::max_element(loads.begin(), loads.end());
    const int64_t total = std::accumulate(b.counts.begin(), b.counts.end(), int64_t{0});
    EXPECT_GE(best, (total + 31) / 32);
    std::vector<int64_t> equal(s.num_replicas());
    std::vector<int> n(256, 0), seen(256, 0);
    for (int j = 0; j < s.num_replicas(); ++j) ++n[s.replica_expert(j)];
    for (int j = 0; j < s.num_replicas(); ++j) {
      const int e = s.replica_expert(j);
      equal[j] = b.counts[e] / n[e] + (seen[e]++ < b.counts[e] % n[e] ? 1 : 0);
    }
    EXPECT_LE(best, MaxLoad(s, equal));
  }
}

// A replica chain through thousands of ranks (expert i on ranks i and i+1) needs thousands of
// max-flow phases: Solve settles for the water-filling split in bounded time, says so, and the
// split is still a valid one. Planned layers stay exact.
TEST(StepShares, LongReplicaChainsSettleInBoundedTime) {
  const int R = 4096;
  const Topology topo = *Topology::Create(R, 1, 3);
  std::vector<std::vector<int>> ranks(R);
  for (int e = 0; e + 1 < R; ++e) {
    ranks[e].push_back(e);
    ranks[e + 1].push_back(e);
  }
  const StepShareSolver s(Layer(ranks), topo, R - 1);
  std::vector<int64_t> counts(R - 1), quota(s.num_replicas());
  for (int e = 0; e + 1 < R; ++e) counts[e] = 100000 + e * 7 % 1000;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(s.Solve(counts, absl::MakeSpan(quota)).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));  // was 0.3 s unbounded; 2 s: sanitizers
  EXPECT_FALSE(s.exact());
  ExpectConserved(s, counts, quota);
  const BigLayer b(1);
  const StepShareSolver planned(b.layer, b.topo, 256);
  std::vector<int64_t> q(planned.num_replicas());
  ASSERT_TRUE(planned.Solve(b.counts, absl::MakeSpan(q)).ok());
  EXPECT_TRUE(planned.exact());
}

TEST(StepShares, ReplicasOnOverloadedRanksGetNothing) {
  // Rank 0 holds hot expert 0 alone (100 pairs); expert 1 has replicas on ranks 0 and 1:
  // all of it must go to rank 1.
  const Topology topo = *Topology::Create(2, 1, 2);
  const StepShareSolver s(Layer({{0, 1}, {1}}), topo, 2);
  std::vector<int64_t> quota(3);
  ASSERT_TRUE(s.Solve({100, 40}, absl::MakeSpan(quota)).ok());
  EXPECT_EQ(quota, (std::vector<int64_t>{100, 0, 40}));
  // No pairs at all: nothing anywhere.
  ASSERT_TRUE(s.Solve({0, 0}, absl::MakeSpan(quota)).ok());
  EXPECT_EQ(quota, (std::vector<int64_t>{0, 0, 0}));
  // Two replicas of one expert on the same rank split its pairs.
  const StepShareSolver twice(Layer({{0, 0}, {1}}), topo, 2);
  ASSERT_TRUE(twice.Solve({5, 1}, absl::MakeSpan(quota)).ok());
  EXPECT_EQ(quota, (std::vector<int64_t>{3, 2, 1}));
}

TEST(StepShares, RefusesBadInput) {
  const Topology topo = *Topology::Create(2, 1, 2);
  const StepShareSolver s(Layer({{0, 1}, {1}}), topo, 2);
  std::vector<int64_t> quota(3), routes(3);
  EXPECT_THAT(s.Solve({1, 2, 3}, absl::MakeSpan(quota)).message(), HasSubstr("3 counts for 2 experts"));
  EXPECT_THAT(s.Solve({1, -2}, absl::MakeSpan(quota)).message(), HasSubstr("expert 1 has count -2"));
  EXPECT_THAT(s.Solve({kMaxStepPairs, 1}, absl::MakeSpan(quota)).message(), HasSubstr("add up to more than 2^53"));
  const std::vector<int32_t> wrong = {1, 2, 3};
  EXPECT_FALSE(s.Transport(wrong, quota, 0, absl::MakeSpan(routes)).ok());
  ASSERT_TRUE(s.Solve({1, 2}, absl::MakeSpan(quota)).ok());
  const std::vector<int32_t> mismatch = {1, 5, 0, 0};  // 5 pairs of expert 1, the quotas take 2
  EXPECT_THAT(s.Transport(mismatch, quota, 0, absl::MakeSpan(routes)).message(), HasSubstr("quotas take 2"));
  const std::vector<int32_t> fine = {1, 2, 0, 0};
  EXPECT_FALSE(s.Transport(fine, quota, 2, absl::MakeSpan(routes)).ok());  // no rank 2
}

TEST(StepShares, TransportFillsQuotasLocalFirst) {
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    const BigLayer b(seed);
    const StepShareSolver s(b.layer, b.topo, 256);
    const int R = 32, E = 256;
    // Split each expert's count over the 32 source ranks at random.
    std::mt19937 rng(seed);
    std::vector<int32_t> source(static_cast<size_t>(R) * E, 0);
    for (int e = 0; e < E; ++e) {
      for (int64_t n = 0; n < b.counts[e]; ++n) ++source[static_cast<size_t>(rng() % R) * E + e];
    }
    std::vector<int64_t> quota(s.num_replicas());
    ASSERT_TRUE(s.Solve(b.counts, absl::MakeSpan(quota)).ok());
    std::vector<int64_t> column(s.num_replicas(), 0), routes(s.num_replicas());
    for (int src = 0; src < R; ++src) {
      ASSERT_TRUE(s.Transport(source, quota, src, absl::MakeSpan(routes)).ok());
      std::vector<int64_t> row(E, 0), local_routes(E, 0), local_quota(E, 0);
      for (int j = 0; j < s.num_replicas(); ++j) {
        row[s.replica_expert(j)] += routes[j];
        column[j] += routes[j];
        if (s.replica_rank(j) == src) {
          local_routes[s.replica_expert(j)] += routes[j];
          local_quota[s.replica_expert(j)] += quota[j];
        }
      }
      for (int e = 0; e < E; ++e) {
        const int64_t mine = source[static_cast<size_t>(src) * E + e];
        ASSERT_EQ(row[e], mine);
        // Local first: a source holding replicas of the expert keeps what their quotas allow.
        EXPECT_EQ(local_routes[e], std::min(local_quota[e], mine)) << "seed " << seed << " source " << src << " expert " << e;
      }
    }
    EXPECT_EQ(column, quota);
  }
}

}  // namespace
}  // namespace switchyard::placement
