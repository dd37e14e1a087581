#include "placement/step_shares.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace switchyard::placement {
namespace {

constexpr int64_t kInfinity = std::numeric_limits<int64_t>::max() / 4;
constexpr int kSource = 0, kSink = 1;

// Splits `pairs` over `n` replicas of one expert on one rank: equal parts, the remainder to
// the first ones.
void SplitEvenly(int64_t pairs, const std::vector<int>& replicas, absl::Span<int64_t> quota) {
  const int64_t n = static_cast<int64_t>(replicas.size());
  for (int64_t i = 0; i < n; ++i) quota[replicas[i]] = pairs / n + (i < pairs % n ? 1 : 0);
}

}  // namespace

StepShareSolver::StepShareSolver(const LayerPlacement& layer, const Topology& topology, int num_experts)
    : topology_(topology), num_experts_(num_experts), expert_replicas_(num_experts) {
  for (int r = 0; r < static_cast<int>(layer.ranks.size()); ++r) {
    for (int s = 0; s < static_cast<int>(layer.ranks[r].size()); ++s) {
      const int j = static_cast<int>(replica_rank_.size());
      replica_rank_.push_back(r);
      replica_slot_.push_back(s);
      replica_expert_.push_back(layer.ranks[r][s].expert);
      expert_replicas_[layer.ranks[r][s].expert].push_back(j);
    }
  }
  std::vector<int> rank_node(topology.ranks(), -1);
  for (int e = 0; e < num_experts; ++e) {
    std::vector<int> ranks;
    for (int j : expert_replicas_[e]) {
      if (ranks.empty() || ranks.back() != replica_rank_[j]) ranks.push_back(replica_rank_[j]);
    }
    if (ranks.size() < 2) continue;
    multi_experts_.push_back(e);
    expert_ranks_.push_back(ranks);
    for (int r : ranks) {
      if (rank_node[r] < 0) {
        rank_node[r] = 0;
        flow_ranks_.push_back(r);
      }
    }
  }
  std::sort(flow_ranks_.begin(), flow_ranks_.end());
  // The network's shape is fixed; Feasible sets the capacities. Edges come in pairs (forward,
  // backward): edge i's reverse is i ^ 1.
  const int M = static_cast<int>(multi_experts_.size());
  graph_.assign(2 + M + flow_ranks_.size(), {});
  flow_rank_index_.assign(topology.ranks(), -1);
  for (int i = 0; i < static_cast<int>(flow_ranks_.size()); ++i) flow_rank_index_[flow_ranks_[i]] = i;
  auto add = [&](int from, int to) {
    graph_[from].push_back(static_cast<int>(edges_.size()));
    edges_.push_back({to, 0});
    graph_[to].push_back(static_cast<int>(edges_.size()));
    edges_.push_back({from, 0});
  };
  for (int i = 0; i < M; ++i) add(kSource, 2 + i);                       // edges 2i: source -> expert i
  for (int i = 0; i < M; ++i) {
    expert_edge_.push_back(edges_.size());
    for (int r : expert_ranks_[i]) add(2 + i, 2 + M + flow_rank_index_[r]);   // expert -> rank
  }
  sink_edge_ = edges_.size();
  for (int i = 0; i < static_cast<int>(flow_ranks_.size()); ++i) add(2 + M + i, kSink);  // rank -> sink
  level_.resize(graph_.size());
  next_edge_.resize(graph_.size());
}

int64_t StepShareSolver::BlockingFlow() const {
  // Paths from the source along the level graph, each pushing its bottleneck; after a push
  // the path retreats to the tail of its first saturated edge, a dead end retreats one edge
  // (and is never entered again this phase). Iterative: a path can be as long as the network.
  const int sink_level = level_[kSink];
  int64_t flow = 0;
  path_.clear();
  int node = kSource;
  auto tail = [&] { return path_.empty() ? kSource : edges_[path_.back()].to; };
  while (true) {
    if (node == kSink) {
      int64_t push = kInfinity;
      for (int id : path_) push = std::min(push, edges_[id].cap);
      size_t cut = path_.size();
      for (size_t k = 0; k < path_.size(); ++k) {
        edges_[path_[k]].cap -= push;
        edges_[path_[k] ^ 1].cap += push;
        if (edges_[path_[k]].cap == 0 && cut == path_.size()) cut = k;
      }
      flow += push;
      path_.resize(cut);
      node = tail();
      continue;
    }
    int& i = next_edge_[node];
    const int n = static_cast<int>(graph_[node].size());
    for (; i < n; ++i) {
      const Edge& e = edges_[graph_[node][i]];
      if (e.cap > 0 && level_[e.to] == level_[node] + 1 && (e.to == kSink || level_[e.to] < sink_level)) break;
    }
    if (i < n) {
      path_.push_back(graph_[node][i]);
      node = edges_[path_.back()].to;
      continue;
    }
    if (node == kSource) return flow;
    level_[node] = -1;  // a dead end; the next phase's BFS labels afresh
    path_.pop_back();
    node = tail();
    ++next_edge_[node];
  }
}

int64_t StepShareSolver::Greedy(absl::Span<const int64_t> counts, const std::vector<int64_t>& fixed, int64_t T) const {
  // Capacities at makespan T, no flow.
  const int M = static_cast<int>(multi_experts_.size());
  size_t edge = 0;
  for (int i = 0; i < M; ++i, edge += 2) {
    edges_[edge].cap = counts[multi_experts_[i]];
    edges_[edge + 1].cap = 0;
  }
  for (; edge < sink_edge_; edge += 2) {
    edges_[edge].cap = kInfinity;
    edges_[edge + 1].cap = 0;
  }
  for (int r : flow_ranks_) {
    edges_[edge].cap = std::max<int64_t>(0, T - fixed[r]);
    edges_[edge + 1].cap = 0;
    edge += 2;
  }
  // Experts, most pairs first, pour their pairs into their ranks' room by water-filling:
  // rooms a_0 >= a_1 >= ... come down to a level L with sum (a_t - L) = the pairs (L rounded
  // up; the rounding's few pairs then go one per room).
  int64_t flow = 0;
  for (int i : order_) {
    const std::vector<int>& ranks = expert_ranks_[i];
    const size_t first = expert_edge_[i];
    int64_t left = edges_[2 * i].cap;
    if (left == 0) continue;
    rooms_.clear();
    for (size_t k = 0; k < ranks.size(); ++k) {
      rooms_.push_back({edges_[sink_edge_ + 2 * static_cast<size_t>(flow_rank_index_[ranks[k]])].cap, static_cast<int>(k)});
    }
    std::sort(rooms_.begin(), rooms_.end(),
              [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    int64_t prefix = 0, level = 0;
    size_t c = 0;
    while (c < rooms_.size()) {
      prefix += rooms_[c].first;
      ++c;
      const int64_t next = c < rooms_.size() ? rooms_[c].first : 0;
      if (prefix - static_cast<int64_t>(c) * next >= left) {
        level = (prefix - left + static_cast<int64_t>(c) - 1) / static_cast<int64_t>(c);
        break;
      }
    }
    auto give = [&](int k, int64_t n) {
      const size_t sink = sink_edge_ + 2 * static_cast<size_t>(flow_rank_index_[ranks[k]]);
      edges_[sink].cap -= n;
      edges_[sink + 1].cap += n;
      edges_[first + 2 * k].cap -= n;
      edges_[first + 2 * k + 1].cap += n;
      left -= n;
    };
    for (size_t t = 0; t < c; ++t) give(rooms_[t].second, std::min(left, std::max<int64_t>(0, rooms_[t].first - level)));
    for (size_t t = 0; t < c && left > 0; ++t) {
      const int k = rooms_[t].second;
      if (edges_[sink_edge_ + 2 * static_cast<size_t>(flow_rank_index_[ranks[k]])].cap > 0) give(k, 1);
    }
    flow += edges_[2 * i].cap - left;
    edges_[2 * i + 1].cap += edges_[2 * i].cap - left;
    edges_[2 * i].cap = left;
  }
  return flow;
}

int64_t StepShareSolver::Augment(int& phases_left) const {
  // Dinic: breadth-first levels, then blocking flows along them, until the sink is out of
  // reach (level_ then marks what the source still reaches: the min cut's source side) or the
  // phases run out (phases_left 0 with the sink still reachable: exhausted_).
  int64_t flow = 0;
  std::vector<int>& queue = queue_;
  while (true) {
    std::fill(level_.begin(), level_.end(), -1);
    level_[kSource] = 0;
    queue.assign(1, kSource);
    // Stops at the sink's level: nodes beyond it lie on no shortest path.
    for (size_t q = 0; q < queue.size() && level_[kSink] < 0; ++q) {
      for (int id : graph_[queue[q]]) {
        const Edge& e = edges_[id];
        if (e.cap > 0 && level_[e.to] < 0) {
          level_[e.to] = level_[queue[q]] + 1;
          queue.push_back(e.to);
        }
      }
    }
    if (level_[kSink] < 0) return flow;
    if (phases_left == 0) {
      exhausted_ = true;
      return flow;
    }
    --phases_left;
    std::fill(next_edge_.begin(), next_edge_.end(), 0);
    flow += BlockingFlow();
  }
}

absl::Status StepShareSolver::Solve(absl::Span<const int64_t> counts, absl::Span<int64_t> quota) const {
  if (static_cast<int>(counts.size()) != num_experts_ || static_cast<int>(quota.size()) != num_replicas()) {
    return absl::InvalidArgumentError(absl::StrCat("step shares: ", counts.size(), " counts for ", num_experts_,
                                                   " experts and ", quota.size(), " quotas for ", num_replicas(), " replicas"));
  }
  const int R = topology_.ranks();
  std::vector<int64_t> fixed(R, 0);
  int64_t total = 0;
  for (int e = 0; e < num_experts_; ++e) {
    if (counts[e] < 0 || counts[e] > kMaxStepPairs - total) {
      return absl::InvalidArgumentError(absl::StrCat("step shares: expert ", e, " has count ", counts[e],
                                                     counts[e] < 0 ? "" : absl::StrCat(": the counts add up to more than 2^53")));
    }
    total += counts[e];
  }
  // Experts whose replicas all sit on one rank load it whatever the split.
  size_t m = 0;
  for (int e = 0; e < num_experts_; ++e) {
    if (m < multi_experts_.size() && multi_experts_[m] == e) {
      ++m;
      continue;
    }
    if (expert_replicas_[e].empty()) continue;  // not in a valid placement
    fixed[replica_rank_[expert_replicas_[e][0]]] += counts[e];
    SplitEvenly(counts[e], expert_replicas_[e], quota);
  }
  if (multi_experts_.empty()) return absl::OkStatus();
  const int M = static_cast<int>(multi_experts_.size());
  // A lower bound on the makespan: the mean, the fixed loads, each expert alone on its ranks.
  int64_t T = (total + R - 1) / R;
  for (int r = 0; r < R; ++r) T = std::max(T, fixed[r]);
  for (int i = 0; i < M; ++i) {
    int64_t pairs = counts[multi_experts_[i]];
    for (int r : expert_ranks_[i]) pairs += fixed[r];
    const int64_t n = static_cast<int64_t>(expert_ranks_[i].size());
    T = std::max(T, (pairs + n - 1) / n);
  }
  int64_t need = 0;
  for (int e : multi_experts_) need += counts[e];
  order_.resize(M);
  std::iota(order_.begin(), order_.end(), 0);
  std::sort(order_.begin(), order_.end(), [&](int a, int b) {  // most pairs per replica rank first
    // Cross-multiplied in 128 bits: counts reach 2^53, rank counts 2^16.
    const __int128 ca = static_cast<__int128>(counts[multi_experts_[a]]) * static_cast<__int128>(expert_ranks_[b].size());
    const __int128 cb = static_cast<__int128>(counts[multi_experts_[b]]) * static_cast<__int128>(expert_ranks_[a].size());
    return ca != cb ? ca > cb : a < b;
  });
  // T starts at that lower bound and only grows, so the flow found so far stays valid and
  // each round only augments it (the water-filling greedy gives the first round a head
  // start). A round that falls short leaves a min cut whose source side is an expert set X
  // on ranks N(X): X's pairs must fit there, so T >= (pairs(X) + fixed(N(X))) / |N(X)|, a
  // bound above the current T and the next T. It ends at the least feasible T.
  exhausted_ = false;
  int phases_left = kMaxFlowPhases;
  int64_t flow = Greedy(counts, fixed, T);
  while ((flow += Augment(phases_left)) < need && !exhausted_) {
    int64_t pairs = 0, room = 0;
    for (int i = 0; i < M; ++i) {
      if (level_[2 + i] >= 0) pairs += counts[multi_experts_[i]];
    }
    for (size_t i = 0; i < flow_ranks_.size(); ++i) {
      if (level_[2 + M + i] >= 0) {
        pairs += fixed[flow_ranks_[i]];
        ++room;
      }
    }
    const int64_t next = std::max(T + 1, (pairs + room - 1) / room);
    for (size_t i = 0; i < flow_ranks_.size(); ++i) edges_[sink_edge_ + 2 * i].cap += next - T;
    T = next;
  }
  if (exhausted_) {
    // A network that needs more than kMaxFlowPhases phases (long replica chains across many
    // ranks): the water-filling split at the least T it fits (doubling, then bisection from
    // the bound reached), in bounded time. Not necessarily optimal; exact() says so.
    int64_t lo = T, step = 1;
    while (Greedy(counts, fixed, lo + step) < need) {
      lo += step;
      step *= 2;
    }
    int64_t hi = lo + step;
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      (Greedy(counts, fixed, mid) < need ? lo : hi) = mid;
    }
    Greedy(counts, fixed, hi);
  }
  size_t edge = 2 * static_cast<size_t>(M);
  edge_flow_.clear();
  for (int i = 0; i < M; ++i) {
    for (size_t k = 0; k < expert_ranks_[i].size(); ++k, edge += 2) edge_flow_.push_back(edges_[edge + 1].cap);
  }
  std::vector<int> on_rank;  // an expert's replicas on one rank
  size_t k = 0;
  for (size_t i = 0; i < multi_experts_.size(); ++i) {
    const std::vector<int>& replicas = expert_replicas_[multi_experts_[i]];
    size_t j = 0;
    for (int r : expert_ranks_[i]) {
      on_rank.clear();
      for (; j < replicas.size() && replica_rank_[replicas[j]] == r; ++j) on_rank.push_back(replicas[j]);
      SplitEvenly(edge_flow_[k++], on_rank, quota);
    }
  }
  return absl::OkStatus();
}

std::vector<int64_t> StepShareSolver::RankLoads(absl::Span<const int64_t> quota) const {
  std::vector<int64_t> load(topology_.ranks(), 0);
  for (int j = 0; j < num_replicas(); ++j) load[replica_rank_[j]] += quota[j];
  return load;
}

absl::Status StepShareSolver::Transport(absl::Span<const int32_t> source_counts, absl::Span<const int64_t> quota,
                                        int source, absl::Span<int64_t> routes) const {
  const int R = topology_.ranks(), E = num_experts_;
  if (static_cast<int64_t>(source_counts.size()) != static_cast<int64_t>(R) * E ||
      static_cast<int>(quota.size()) != num_replicas() || static_cast<int>(routes.size()) != num_replicas() || source < 0 ||
      source >= R) {
    return absl::InvalidArgumentError(absl::StrCat("step routes: ", source_counts.size(), " counts for ", R, " ranks x ", E,
                                                   " experts, ", quota.size(), " quotas and ", routes.size(), " routes for ",
                                                   num_replicas(), " replicas, source ", source));
  }
  std::fill(routes.begin(), routes.end(), 0);
  std::vector<int64_t> left_source(R), left_quota;
  std::vector<int> senders;
  for (int e = 0; e < E; ++e) {
    const std::vector<int>& replicas = expert_replicas_[e];
    if (source_counts[static_cast<size_t>(source) * E + e] == 0 || replicas.empty()) continue;
    if (replicas.size() == 1) {
      routes[replicas[0]] = source_counts[static_cast<size_t>(source) * E + e];
      continue;
    }
    senders.clear();
    int64_t sent = 0, owed = 0;
    for (int s = 0; s < R; ++s) {
      left_source[s] = source_counts[static_cast<size_t>(s) * E + e];
      if (left_source[s] < 0) return absl::InvalidArgumentError(absl::StrCat("step routes: rank ", s, " has a negative count"));
      if (left_source[s] > 0) senders.push_back(s);
      sent += left_source[s];
    }
    left_quota.resize(replicas.size());
    for (size_t i = 0; i < replicas.size(); ++i) owed += left_quota[i] = quota[replicas[i]];
    if (sent != owed) {
      return absl::InvalidArgumentError(absl::StrCat("step routes: expert ", e, ": ranks send ", sent, " pairs, quotas take ", owed));
    }
    auto move = [&](int s, size_t i) {
      const int64_t n = std::min(left_source[s], left_quota[i]);
      left_source[s] -= n;
      left_quota[i] -= n;
      if (s == source) routes[replicas[i]] += n;
    };
    // Own rank, then own node, then the rest in rank order (north-west corner).
    for (size_t i = 0; i < replicas.size(); ++i) move(replica_rank_[replicas[i]], i);
    for (size_t i = 0; i < replicas.size(); ++i) {
      const int node = topology_.NodeOf(replica_rank_[replicas[i]]);
      for (int s : senders) {
        if (left_quota[i] == 0) break;
        if (topology_.NodeOf(s) == node) move(s, i);
      }
    }
    size_t i = 0;
    for (int s : senders) {
      while (left_source[s] > 0) {
        while (left_quota[i] == 0) ++i;  // quotas and sources sum to the same total
        move(s, i);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace switchyard::placement
