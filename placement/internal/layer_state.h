// LayerState: the planners' mutable working copy of one layer's placement.
//
// Flat arrays (slot grid, per-expert singly linked replica lists through the slots, rank
// loads) so that a trial move is a cheap copy. Rank loads are kept equal to
// sum(load[expert] * share) over each rank's slots after every public mutation.
// Not thread-safe; the load vector must outlive the state.
#pragma once

#include <span>
#include <vector>

#include "placement/placement.h"

namespace switchyard::placement::internal {

class LayerState {
 public:
  // Empty layer: every slot free. capacity[r] is how many slots rank r may use (S, or 0 when
  // drained). `load` (per expert) is read for the state's whole life and must not change
  // (MeanLoad is fixed from it here).
  LayerState(int slots_per_rank, std::span<const double> load, std::vector<int> capacity);

  // Copies `layer` (replicas and shares; shares are renormalised per expert).
  static LayerState FromLayer(const LayerPlacement& layer, int slots_per_rank,
                              std::span<const double> load, std::vector<int> capacity);

  int ranks() const { return static_cast<int>(capacity_.size()); }
  int slots_per_rank() const { return slots_per_rank_; }
  int num_experts() const { return static_cast<int>(load_.size()); }
  double load(int expert) const { return load_[expert]; }
  int capacity(int rank) const { return capacity_[rank]; }

  int expert_at(int slot) const { return slot_expert_[slot]; }
  double share_at(int slot) const { return slot_share_[slot]; }
  // Load the replica in `slot` receives (0 for a free slot).
  double contribution(int slot) const {
    return slot_expert_[slot] < 0 ? 0.0 : load_[slot_expert_[slot]] * slot_share_[slot];
  }
  int replicas(int expert) const { return count_[expert]; }
  double rank_load(int rank) const { return rank_load_[rank]; }
  const std::vector<double>& rank_loads() const { return rank_load_; }
  int used_slots(int rank) const { return used_[rank]; }

  int first_slot(int rank) const { return rank * slots_per_rank_; }
  int RankOfSlot(int slot) const { return slot / slots_per_rank_; }
  bool RankHolds(int rank, int expert) const;
  // Lowest free slot of `rank` within its capacity, or -1.
  int FreeSlot(int rank) const;
  // Slots holding `expert`, ascending.
  std::vector<int> SlotsOf(int expert) const;
  // Allocation-free walk over an expert's slots (unordered):
  //   for (int s = first_slot_of(e); s >= 0; s = next_slot_of(s)) ...
  int first_slot_of(int expert) const { return head_[expert]; }
  int next_slot_of(int slot) const { return next_[slot]; }

  // Puts `expert` into free `slot`; a first replica gets share 1, a further one share 0
  // (SolveShares gives it work).
  void Add(int slot, int expert);
  // Empties `slot`; the removed share goes to the expert's other replicas in proportion.
  // The expert must keep at least one replica.
  void Remove(int slot);

  // Gives every replica of each expert an equal share.
  void ResetShares();
  // Sets the shares of the listed slots (the caller keeps each expert's shares summing to 1)
  // and recomputes rank loads.
  void SetShares(const std::vector<std::pair<int, double>>& slot_shares);

  // Exchanges the contents of two slots (either may be free); replicas keep their shares.
  // Moving a replica into a free slot is a SwapSlots with that slot.
  void SwapSlots(int a, int b);

  // Re-splits every replicated expert's load among its replicas to minimise the sum of
  // squared rank loads. The minimiser of the sum of squares also minimises the maximum rank
  // load (it is the lexicographically optimal load vector), and re-solving costs no moves.
  //
  // Exact up to `tolerance` x mean rank load, by augmenting paths: from the most loaded
  // unsettled rank, a breadth-first search over replicas (rank a -> rank b when an expert
  // with work on a has a replica on b) reaches the ranks load can flow to; load moves along
  // the tree paths toward the reachable set's mean. When every reachable rank is within the
  // tolerance, no improving path exists from any of them (the optimality condition of a
  // convex flow) and the whole set is settled at its level.
  void SolveShares(double tolerance = 1e-6);
  // SolveShares limited to the ranks connected (through replicated experts) to `ranks`, for a
  // state that was solved before a change touching only those ranks' replicas: the other
  // components were settled and stay as they are. Same result as SolveShares then, at the
  // cost of the changed components (the whole layer when its replica graph is connected).
  void SolveSharesNear(const std::vector<int>& ranks, double tolerance = 1e-6);

  double MaxLoad() const;
  // Over ranks with capacity > 0: the layer's load over those ranks, fixed at construction
  // (every expert's load sits on them whenever the state is complete).
  double MeanLoad() const { return mean_load_; }

  LayerPlacement ToLayer(int layer_id) const;

 private:
  // Moves `amount` of `expert`'s load from rank `from` to rank `to` (both hold it), or as
  // much of it as `from` has.
  void ShiftLoad(int expert, int from, int to, double amount);
  // SolveShares over scratch_.unsettled, the ranks not marked settled in scratch_.settled
  // (both set by the caller).
  void SolveUnsettled(double tolerance);
  void Link(int slot, int expert);
  void Unlink(int slot);

  int slots_per_rank_;
  std::span<const double> load_;
  std::vector<int> capacity_;
  std::vector<int> slot_expert_;    // -1 = free
  std::vector<double> slot_share_;
  std::vector<int> next_;           // next slot of the same expert, -1 = end
  std::vector<int> head_;           // first slot of each expert, -1 = none
  std::vector<int> count_;          // replicas per expert
  std::vector<int> used_;           // occupied slots per rank
  std::vector<double> rank_load_;
  double mean_load_ = 0;
  // Scratch of SolveShares (the search tree), kept between calls to avoid allocation. Not
  // part of the state: a copy starts with empty scratch.
  struct Edge {
    int from;    // parent rank
    int expert;  // whose load moves between the parent and its children over this edge
  };
  struct TreeNode {
    int parent_edge = -1;
    double surplus = 0;  // load above the level, summed over the subtree
  };
  struct Scratch {
    Scratch() = default;
    Scratch(const Scratch&) {}
    Scratch& operator=(const Scratch&) { return *this; }
    Scratch(Scratch&&) = default;
    Scratch& operator=(Scratch&&) = default;
    std::vector<int> bfs_order, unsettled;
    std::vector<Edge> edges;
    std::vector<TreeNode> tree;
    std::vector<char> settled, visited, movable;
    // Max-heap of (load, -rank) over unsettled movable ranks; entries whose load is no longer
    // the rank's are stale and skipped, so the top valid entry is the most loaded such rank
    // (lowest rank on ties), found in O(log R) instead of a scan of every rank per round.
    std::vector<std::pair<double, int>> heap;
  };
  Scratch scratch_;
};

}  // namespace switchyard::placement::internal
