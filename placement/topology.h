// Cluster shape as the planners see it.
//
// `ranks` workers on `nodes` nodes; nodes are contiguous, equal blocks of ranks (node n holds
// ranks [n * R/N, (n+1) * R/N)), which is how mpirun/srun lay out ranks by default. Every rank
// has `slots_per_rank` slots per MoE layer, each able to hold one expert's weights.
#pragma once

#include "absl/status/statusor.h"

namespace switchyard::placement {

// Largest cluster and rank a topology may describe (the simulator's 4,096 GPUs fit many times
// over); sizes beyond are refused before anything is allocated from them.
inline constexpr int kMaxRanks = 1 << 16;
inline constexpr int kMaxSlotsPerRank = 1 << 12;

class Topology {
 public:
  // Fails (InvalidArgument, naming the value) unless ranks >= 1, nodes >= 1, nodes divides
  // ranks and slots_per_rank >= 1.
  static absl::StatusOr<Topology> Create(int ranks, int nodes, int slots_per_rank);

  Topology() = default;

  int ranks() const { return ranks_; }
  int nodes() const { return nodes_; }
  int slots_per_rank() const { return slots_per_rank_; }
  int ranks_per_node() const { return ranks_ / nodes_; }
  int total_slots() const { return ranks_ * slots_per_rank_; }
  int NodeOf(int rank) const { return rank / ranks_per_node(); }

  friend bool operator==(const Topology&, const Topology&) = default;

 private:
  Topology(int ranks, int nodes, int slots_per_rank)
      : ranks_(ranks), nodes_(nodes), slots_per_rank_(slots_per_rank) {}

  int ranks_ = 1;
  int nodes_ = 1;
  int slots_per_rank_ = 1;
};

}  // namespace switchyard::placement
