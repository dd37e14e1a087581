// Per-step shares: split each expert's pairs of one step over the replicas in force so that
// the most loaded rank computes as few pairs as possible, then route each source rank's pairs
// to replicas, local first (`--shares step`, docs/placement.md "Per-step shares").
//
// Every rank runs the same pure, deterministic computation on the same all-gathered counts, so
// every rank arrives at the same split without a further message.
//
//   1. Quotas (Solve): experts with replicas on one rank load it; the others are divisible
//      load with restricted assignment, a max flow (source -> expert [count] -> rank holding a
//      replica -> sink [T - fixed load]) at the least makespan T. T rises from a lower bound
//      by the min cut's bound (Newton-like, a few rounds, each only augmenting the flow); the
//      flow at T gives each (expert, rank) its pairs. Optimal: no split of the same counts
//      over the same replicas has a lower maximum.
//   2. Routes (Transport): each expert's quotas are filled from its sources' counts, first a
//      source's own rank, then its node, then in rank order, so traffic stays local where the
//      optimum allows it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "placement/placement.h"

namespace switchyard::placement {

// Most pairs one step of one layer may hold over all experts (sums stay exact in int64 and
// double).
inline constexpr int64_t kMaxStepPairs = int64_t{1} << 53;
// Dinic phases one Solve may run before it settles for the water-filling split: planned
// placements need tens (4,096 ranks: 30-45); a replica chain through thousands of ranks, thousands.
inline constexpr int kMaxFlowPhases = 256;

// The replicas of one layer, numbered rank by rank in slot order (the order of
// LayerPlacement::ranks): replica j is slot `slot[j]` of rank `rank[j]`. Solve keeps scratch
// space in the object: one thread at a time.
class StepShareSolver {
 public:
  // `layer` must be valid for `topology` and `num_experts` (ValidatePlacement); shares are
  // ignored.
  StepShareSolver(const LayerPlacement& layer, const Topology& topology, int num_experts);

  int num_replicas() const { return static_cast<int>(replica_rank_.size()); }
  // Whether the last Solve was exact (always, unless its max flow needed more than
  // kMaxFlowPhases phases: then it took a water-filling split, deterministic but maybe above
  // the optimum).
  bool exact() const { return !exhausted_; }
  int num_experts() const { return num_experts_; }
  int replica_rank(int j) const { return replica_rank_[j]; }
  int replica_slot(int j) const { return replica_slot_[j]; }
  int replica_expert(int j) const { return replica_expert_[j]; }
  // Replica ids of expert e, in rank order.
  const std::vector<int>& replicas_of(int e) const { return expert_replicas_[e]; }

  // counts[e] (num_experts values, each >= 0, summing to at most kMaxStepPairs): the layer's
  // pairs for expert e this step over all ranks. quota (num_replicas values, written): pairs replica j computes; per expert they
  // sum to counts[e]; the largest rank load is the least possible. InvalidArgument for a span
  // of the wrong length or a negative count.
  absl::Status Solve(absl::Span<const int64_t> counts, absl::Span<int64_t> quota) const;

  // Per-source routes for one step. source_counts is R x E, row-major (rank s's pairs per
  // expert; column sums = Solve's counts), quota from Solve. Writes, for `source`, the pairs
  // it sends to each replica (num_replicas values; zero for replicas of experts it has none
  // of). The same inputs give the same routes on every rank.
  absl::Status Transport(absl::Span<const int32_t> source_counts, absl::Span<const int64_t> quota, int source,
                         absl::Span<int64_t> routes) const;

  // Per-rank loads (pairs) of a quota vector.
  std::vector<int64_t> RankLoads(absl::Span<const int64_t> quota) const;

 private:
  struct Edge {
    int to;
    int64_t cap;
  };
  // Sets the network's capacities for makespan T and fills it by water-filling; returns the
  // flow placed (need not be all: Augment continues from it).
  int64_t Greedy(absl::Span<const int64_t> counts, const std::vector<int64_t>& fixed, int64_t T) const;
  // Augments the flow in edges_ until the sink is unreachable or phases_left phases ran
  // (then exhausted_); returns the flow added.
  int64_t Augment(int& phases_left) const;
  // One phase of Dinic on the current levels; returns the flow added.
  int64_t BlockingFlow() const;

  Topology topology_;
  int num_experts_ = 0;
  std::vector<int> replica_rank_, replica_slot_, replica_expert_;
  std::vector<std::vector<int>> expert_replicas_;  // replica ids of each expert, rank order
  // The flow network over experts with replicas on more than one rank: node 0 source, 1 sink,
  // then those experts, then the ranks holding any of their replicas.
  std::vector<int> multi_experts_;               // expert ids
  std::vector<int> flow_ranks_;                  // rank ids
  std::vector<int> flow_rank_index_;             // rank id -> index in flow_ranks_, or -1
  std::vector<std::vector<int>> expert_ranks_;   // per multi expert: distinct ranks, ascending
  // Dinic scratch.
  mutable std::vector<Edge> edges_;
  mutable std::vector<std::vector<int>> graph_;
  mutable std::vector<int> level_, next_edge_, queue_, path_;
  mutable std::vector<int64_t> edge_flow_;  // per (multi expert, rank) edge, after Solve
  mutable std::vector<int> order_;
  mutable bool exhausted_ = false;
  mutable std::vector<std::pair<int64_t, int>> rooms_;
  std::vector<size_t> expert_edge_;  // per multi expert: its first expert -> rank edge
  size_t sink_edge_ = 0;             // the first rank -> sink edge
};

}  // namespace switchyard::placement
