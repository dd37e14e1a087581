#include "placement/internal/layer_state.h"

#include <algorithm>
#include <cmath>

#include "common/status.h"

namespace switchyard::placement::internal {

LayerState::LayerState(int slots_per_rank, std::span<const double> load,
                       std::vector<int> capacity)
    : slots_per_rank_(slots_per_rank),
      load_(load),
      capacity_(std::move(capacity)),
      slot_expert_(capacity_.size() * slots_per_rank, -1),
      slot_share_(capacity_.size() * slots_per_rank, 0.0),
      next_(capacity_.size() * slots_per_rank, -1),
      head_(load.size(), -1),
      count_(load.size(), 0),
      used_(capacity_.size(), 0),
      rank_load_(capacity_.size(), 0.0) {
  double total = 0;
  for (double l : load_) total += l;
  const auto active = std::count_if(capacity_.begin(), capacity_.end(), [](int c) { return c > 0; });
  mean_load_ = active > 0 ? total / static_cast<double>(active) : 0.0;
}

LayerState LayerState::FromLayer(const LayerPlacement& layer, int slots_per_rank,
                                 std::span<const double> load, std::vector<int> capacity) {
  LayerState state(slots_per_rank, load, std::move(capacity));
  std::vector<double> share_sum(load.size(), 0.0);
  for (const auto& slots : layer.ranks) {
    for (const Replica& rep : slots) share_sum[rep.expert] += rep.share;
  }
  for (int r = 0; r < static_cast<int>(layer.ranks.size()); ++r) {
    for (size_t i = 0; i < layer.ranks[r].size(); ++i) {
      const Replica& rep = layer.ranks[r][i];
      const int slot = r * slots_per_rank + static_cast<int>(i);
      state.Link(slot, rep.expert);
      state.slot_share_[slot] = share_sum[rep.expert] > 0 ? rep.share / share_sum[rep.expert]
                                                          : 0.0;
    }
  }
  for (int e = 0; e < state.num_experts(); ++e) {
    if (share_sum[e] <= 0 && state.count_[e] > 0) {
      for (int s = state.head_[e]; s >= 0; s = state.next_[s]) {
        state.slot_share_[s] = 1.0 / state.count_[e];
      }
    }
  }
  for (size_t s = 0; s < state.slot_expert_.size(); ++s) {
    state.rank_load_[state.RankOfSlot(static_cast<int>(s))] += state.contribution(static_cast<int>(s));
  }
  return state;
}

bool LayerState::RankHolds(int rank, int expert) const {
  for (int s = first_slot(rank), end = s + slots_per_rank_; s < end; ++s) {
    if (slot_expert_[s] == expert) return true;
  }
  return false;
}

int LayerState::FreeSlot(int rank) const {
  if (used_[rank] >= capacity_[rank]) return -1;
  for (int s = first_slot(rank), end = s + slots_per_rank_; s < end; ++s) {
    if (slot_expert_[s] < 0) return s;
  }
  return -1;
}

std::vector<int> LayerState::SlotsOf(int expert) const {
  std::vector<int> slots;
  for (int s = head_[expert]; s >= 0; s = next_[s]) slots.push_back(s);
  std::sort(slots.begin(), slots.end());
  return slots;
}

void LayerState::Link(int slot, int expert) {
  SY_CHECK(slot_expert_[slot] < 0);
  slot_expert_[slot] = expert;
  next_[slot] = head_[expert];
  head_[expert] = slot;
  ++count_[expert];
  ++used_[RankOfSlot(slot)];
}

void LayerState::Unlink(int slot) {
  const int expert = slot_expert_[slot];
  SY_CHECK(expert >= 0);
  int* link = &head_[expert];
  while (*link != slot) link = &next_[*link];
  *link = next_[slot];
  next_[slot] = -1;
  slot_expert_[slot] = -1;
  slot_share_[slot] = 0;
  --count_[expert];
  --used_[RankOfSlot(slot)];
}

void LayerState::Add(int slot, int expert) {
  Link(slot, expert);
  slot_share_[slot] = count_[expert] == 1 ? 1.0 : 0.0;
  rank_load_[RankOfSlot(slot)] += contribution(slot);
}

void LayerState::Remove(int slot) {
  const int expert = slot_expert_[slot];
  SY_CHECK(count_[expert] >= 2);
  const double removed = slot_share_[slot];
  rank_load_[RankOfSlot(slot)] -= contribution(slot);
  Unlink(slot);
  const double rest = 1.0 - removed;
  for (int s = head_[expert]; s >= 0; s = next_[s]) {
    const double share = rest > 1e-12 ? slot_share_[s] / rest : 1.0 / count_[expert];
    rank_load_[RankOfSlot(s)] += load_[expert] * (share - slot_share_[s]);
    slot_share_[s] = share;
  }
}

void LayerState::ResetShares() {
  std::fill(rank_load_.begin(), rank_load_.end(), 0.0);
  for (int s = 0; s < static_cast<int>(slot_expert_.size()); ++s) {
    if (slot_expert_[s] < 0) continue;
    slot_share_[s] = 1.0 / count_[slot_expert_[s]];
    rank_load_[RankOfSlot(s)] += contribution(s);
  }
}

void LayerState::SetShares(const std::vector<std::pair<int, double>>& slot_shares) {
  for (const auto& [slot, share] : slot_shares) slot_share_[slot] = share;
  std::fill(rank_load_.begin(), rank_load_.end(), 0.0);
  for (int s = 0; s < static_cast<int>(slot_expert_.size()); ++s) {
    rank_load_[RankOfSlot(s)] += contribution(s);
  }
}

void LayerState::SwapSlots(int a, int b) {
  const int ea = slot_expert_[a], eb = slot_expert_[b];
  const double sa = slot_share_[a], sb = slot_share_[b];
  const double ca = contribution(a), cb = contribution(b);
  if (ea >= 0) Unlink(a);
  if (eb >= 0) Unlink(b);
  if (eb >= 0) {
    Link(a, eb);
    slot_share_[a] = sb;
  }
  if (ea >= 0) {
    Link(b, ea);
    slot_share_[b] = sa;
  }
  rank_load_[RankOfSlot(a)] += cb - ca;
  rank_load_[RankOfSlot(b)] += ca - cb;
}

void LayerState::ShiftLoad(int expert, int from, int to, double amount) {
  const double L = load_[expert];
  double on_from = 0;
  int to_slot = -1;
  for (int s = head_[expert]; s >= 0; s = next_[s]) {
    const int r = RankOfSlot(s);
    if (r == from) on_from += slot_share_[s];
    if (r == to && (to_slot < 0 || s < to_slot)) to_slot = s;
  }
  if (on_from <= 0 || to_slot < 0) return;
  double moved_share = std::min(amount / L, on_from);
  double keep = on_from > 0 ? 1.0 - moved_share / on_from : 0.0;
  if (keep < 1e-12) {  // saturated: leave exactly zero so the edge disappears
    keep = 0;
    moved_share = on_from;
  }
  for (int s = head_[expert]; s >= 0; s = next_[s]) {
    if (RankOfSlot(s) == from) slot_share_[s] *= keep;
  }
  slot_share_[to_slot] += moved_share;
  rank_load_[from] -= moved_share * L;
  rank_load_[to] += moved_share * L;
}

void LayerState::SolveShares(double tolerance) {
  scratch_.settled.assign(ranks(), 0);
  scratch_.unsettled.resize(ranks());
  for (int r = 0; r < ranks(); ++r) scratch_.unsettled[r] = r;
  SolveUnsettled(tolerance);
}

void LayerState::SolveSharesNear(const std::vector<int>& seeds, double tolerance) {
  // The component: ranks reachable from the seeds over replicated experts' replicas.
  auto& settled = scratch_.settled;
  auto& order = scratch_.bfs_order;
  settled.assign(ranks(), 1);
  order.clear();
  for (int r : seeds) {
    if (r >= 0 && r < ranks() && settled[r]) {
      settled[r] = 0;
      order.push_back(r);
    }
  }
  for (size_t i = 0; i < order.size(); ++i) {
    const int a = order[i];
    for (int t = first_slot(a), end = t + slots_per_rank_; t < end; ++t) {
      const int e = slot_expert_[t];
      if (e < 0 || count_[e] < 2) continue;
      for (int x = head_[e]; x >= 0; x = next_[x]) {
        const int b = RankOfSlot(x);
        if (settled[b]) {
          settled[b] = 0;
          order.push_back(b);
        }
      }
    }
  }
  scratch_.unsettled = order;
  SolveUnsettled(tolerance);
}

void LayerState::SolveUnsettled(double tolerance) {
  auto& settled = scratch_.settled;
  auto& visited = scratch_.visited;
  auto& movable = scratch_.movable;
  auto& tree = scratch_.tree;
  auto& edges = scratch_.edges;
  auto& bfs_order = scratch_.bfs_order;
  const int R = ranks();
  const double tol = tolerance * std::max(MeanLoad(), 1e-300);
  // Only the unsettled ranks' entries are read below, and a search clears the visited flags
  // it sets: the scratch is sized here, not cleared (a small component costs what it holds).
  visited.resize(R, 0);
  tree.resize(R);
  movable.resize(R);
  // movable[r]: r gives work to a replicated expert, so load can leave it. Other ranks
  // can only receive (and become movable when they do).
  auto& heap = scratch_.heap;
  heap.clear();
  for (int r : scratch_.unsettled) {
    movable[r] = 0;
    for (int t = first_slot(r), end = t + slots_per_rank_; t < end; ++t) {
      const int e = slot_expert_[t];
      if (e >= 0 && count_[e] >= 2 && slot_share_[t] > 0 && load_[e] > 0) movable[r] = 1;
    }
    if (movable[r]) heap.emplace_back(rank_load_[r], -r);
  }
  // (load, -rank) keys are unique: the pops come in the same order whatever the build order.
  std::make_heap(heap.begin(), heap.end());
  const int max_rounds = 64 * R + 1024;
  for (int round = 0; round < max_rounds; ++round) {
    int u = -1;  // the most loaded unsettled rank that can shed load (lowest on ties)
    while (!heap.empty() && u < 0) {
      const auto [load, neg] = heap.front();
      std::pop_heap(heap.begin(), heap.end());
      heap.pop_back();
      if (!settled[-neg] && movable[-neg] && load == rank_load_[-neg]) u = -neg;
    }
    if (u < 0) break;
    // Breadth-first search over unsettled ranks. A tree edge is a (rank, expert) pair: the
    // expert's load on that rank can move to the expert's other replicas, up to that load.
    bfs_order.clear();
    edges.clear();
    bfs_order.push_back(u);
    visited[u] = 1;
    // Ranks above u (they cannot shed load, or they would be u) only pass load through.
    const double top = rank_load_[u];
    double min_load = top, sum = 0;
    int below = 0;
    for (size_t i = 0; i < bfs_order.size(); ++i) {
      const int a = bfs_order[i];
      if (rank_load_[a] <= top) {
        sum += rank_load_[a];
        ++below;
      }
      for (int t = first_slot(a), end = t + slots_per_rank_; t < end; ++t) {
        const int e = slot_expert_[t];
        if (e < 0 || count_[e] < 2 || slot_share_[t] <= 0 || load_[e] <= 0) continue;
        int edge = -1;
        for (int s = head_[e]; s >= 0; s = next_[s]) {
          const int b = RankOfSlot(s);
          if (visited[b] || settled[b]) continue;
          if (edge < 0) {
            edge = static_cast<int>(edges.size());
            edges.push_back({a, e});
          }
          visited[b] = 1;
          tree[b].parent_edge = edge;
          bfs_order.push_back(b);
          min_load = std::min(min_load, rank_load_[b]);
        }
      }
    }
    for (int r : bfs_order) visited[r] = 0;
    if (rank_load_[u] - min_load <= tol) {
      for (int r : bfs_order) settled[r] = 1;
      continue;
    }
    // Balance the tree toward the mean `level` of the reachable ranks not above u, in one pass: the flow over
    // each tree edge is its subtree's net surplus (bottom-up), moving the edge's expert
    // from the child to the parent when the subtree has too much, the other way when too
    // little, as far as the expert's load on the giving end allows.
    const double level = sum / below;
    for (int r : bfs_order) tree[r].surplus = rank_load_[r] <= top ? rank_load_[r] - level : 0.0;
    for (size_t i = bfs_order.size(); i-- > 1;) {
      const int c = bfs_order[i];
      tree[edges[tree[c].parent_edge].from].surplus += tree[c].surplus;
    }
    for (size_t i = bfs_order.size(); i-- > 1;) {
      const int c = bfs_order[i];
      const Edge& edge = edges[tree[c].parent_edge];
      const double surplus = tree[c].surplus;
      if (surplus > 0) {
        ShiftLoad(edge.expert, c, edge.from, surplus);
      } else if (surplus < 0) {
        ShiftLoad(edge.expert, edge.from, c, -surplus);
        movable[c] = 1;
      }
    }
    // The tree's loads (and movable flags) changed: its ranks compete again at their new loads.
    for (int r : bfs_order) {
      if (!settled[r] && movable[r]) {
        heap.emplace_back(rank_load_[r], -r);
        std::push_heap(heap.begin(), heap.end());
      }
    }
  }
}

double LayerState::MaxLoad() const {
  double m = 0;
  for (int r = 0; r < ranks(); ++r) m = std::max(m, rank_load_[r]);
  return m;
}


LayerPlacement LayerState::ToLayer(int layer_id) const {
  LayerPlacement layer{layer_id, std::vector<std::vector<Replica>>(ranks())};
  for (int s = 0; s < static_cast<int>(slot_expert_.size()); ++s) {
    // Shares are renormalised in floating point: keep them in [0, 1] (a lone replica's share
    // can come out as 1 + 2^-52), the range every reader checks.
    if (slot_expert_[s] >= 0) {
      layer.ranks[RankOfSlot(s)].push_back(
          {slot_expert_[s], count_[slot_expert_[s]] == 1 ? 1.0 : std::clamp(slot_share_[s], 0.0, 1.0)});
    }
  }
  return layer;
}

}  // namespace switchyard::placement::internal
