#include "placement/incremental.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <queue>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "placement/internal/layer_state.h"

namespace switchyard::placement {
namespace {

using internal::LayerState;

// Two rank loads within this fraction of the bottleneck load count as tied.
constexpr double kTieTolerance = 1e-6;
// Candidates tried for real (shares re-solved) per improvement step: from scratch, where the
// construction is already close; from the layout in force, which a burst may have left far
// from any good layout.
constexpr int kTrialsFromScratch = 2;
constexpr int kTrialsFromCurrent = 6;
// From scratch, moves are free: any gain above this fraction of the mean rank load is taken.
constexpr double kFromScratchMinGain = 1e-4;
// A walk from the layout in force ends once this many moved replicas (or as many as its best
// prefix took, if more) have passed without a better prefix. Past the best prefix the walk's
// gain per move falls below the move cost and stays there: on noisy windows the best prefix
// is 2-60 moves into walks of 150-300.
constexpr int kWalkPatience = 64;
// A layer is rebuilt (RepairLayer) only when that lowers its bottleneck by this fraction.
constexpr double kRepairMargin = 0.02;

// What a layer's constraints allow.
struct LayerRules {
  int layer_id;
  const Constraints* constraints;
  bool Pinned(int expert, int rank) const {
    return !constraints->pins.empty() && constraints->IsPinned(layer_id, expert, rank);
  }
};

struct Candidate {
  enum class Kind { kAddReplica, kMove, kExchange };
  Kind kind;
  int expert;     // kAddReplica: the expert to replicate
  int from_slot;  // kMove / kExchange: the replica leaving the bottleneck group
  int to_slot;    // free slot, replica to evict (kAddReplica) or to exchange with
  int cost;       // moved replicas
  double gain;    // estimated drop of the bottleneck group's load
};

struct Proposal {
  LayerState after;
  double gain;  // actual drop of the bottleneck group's load, shares re-solved
  int cost;
};

// The most loaded rank and the ranks tied to it through replicated experts that give both
// work: water-filling keeps them level, so relieving any of them relieves all.
std::vector<int> BottleneckGroup(const LayerState& s, double* level) {
  int top = 0;
  for (int r = 1; r < s.ranks(); ++r) {
    if (s.rank_load(r) > s.rank_load(top)) top = r;
  }
  *level = s.rank_load(top);
  const double tie = kTieTolerance * std::max(*level, 1e-300);
  std::vector<char> in(s.ranks(), 0);
  std::vector<int> group{top};
  in[top] = 1;
  for (size_t i = 0; i < group.size(); ++i) {
    const int r = group[i];
    for (int slot = s.first_slot(r), end = slot + s.slots_per_rank(); slot < end; ++slot) {
      const int e = s.expert_at(slot);
      if (e < 0 || s.replicas(e) < 2 || s.share_at(slot) <= 0) continue;
      for (int other = s.first_slot_of(e); other >= 0; other = s.next_slot_of(other)) {
        const int r2 = s.RankOfSlot(other);
        if (in[r2] || s.share_at(other) <= 0 || std::abs(s.rank_load(r2) - *level) > tie) continue;
        in[r2] = 1;
        group.push_back(r2);
      }
    }
  }
  return group;
}

// A slot on `rank` that can take a new replica of `expert`: a free one, else the unpinned
// redundant replica with the least load. -1 if none.
int RoomOn(const LayerState& s, const LayerRules& rules, int rank, int expert) {
  if (s.capacity(rank) == 0) return -1;
  if (int free = s.FreeSlot(rank); free >= 0) return free;
  int best = -1;
  for (int slot = s.first_slot(rank), end = slot + s.slots_per_rank(); slot < end; ++slot) {
    const int e = s.expert_at(slot);
    if (e < 0 || e == expert || s.replicas(e) < 2 || rules.Pinned(e, rank)) continue;
    if (best < 0 || s.contribution(slot) < s.contribution(best)) best = slot;
  }
  return best;
}

// Applies a candidate to a solved state and re-solves the shares where it changed something:
// the components of the touched ranks and of every holder of the experts whose replicas it
// moved, added or evicted.
void Apply(LayerState& s, const Candidate& c) {
  std::vector<int> touched;
  auto touch_expert = [&](int e) {
    if (e < 0) return;
    for (int slot = s.first_slot_of(e); slot >= 0; slot = s.next_slot_of(slot)) touched.push_back(s.RankOfSlot(slot));
  };
  const int displaced = s.expert_at(c.to_slot);
  touch_expert(displaced);
  touch_expert(c.expert);
  if (c.from_slot >= 0) touched.push_back(s.RankOfSlot(c.from_slot));
  touched.push_back(s.RankOfSlot(c.to_slot));
  switch (c.kind) {
    case Candidate::Kind::kAddReplica:
      if (displaced >= 0) s.Remove(c.to_slot);
      s.Add(c.to_slot, c.expert);
      break;
    case Candidate::Kind::kMove:
    case Candidate::Kind::kExchange:
      s.SwapSlots(c.from_slot, c.to_slot);
      break;
  }
  touch_expert(displaced);
  touch_expert(c.expert);
  s.SolveSharesNear(touched);
}

// The best few candidates by estimated gain per moved replica (ties: the first offered).
class TopCandidates {
 public:
  explicit TopCandidates(size_t keep) : keep_(keep) {}
  void Offer(const Candidate& c) {
    const double rate = c.gain / c.cost;
    if (best_.size() == keep_ && rate <= rates_.back()) return;
    const size_t at = std::find_if(rates_.begin(), rates_.end(), [&](double r) { return rate > r; }) - rates_.begin();
    best_.insert(best_.begin() + at, c);
    rates_.insert(rates_.begin() + at, rate);
    if (best_.size() > keep_) {
      best_.pop_back();
      rates_.pop_back();
    }
  }
  const std::vector<Candidate>& best() const { return best_; }
  // A candidate of this rate or less would not be kept.
  bool Full() const { return best_.size() == keep_; }
  double WorstRate() const { return rates_.back(); }

 private:
  size_t keep_;
  std::vector<Candidate> best_;  // descending rate
  std::vector<double> rates_;    // best_[i].gain / best_[i].cost
};

// An expert's replicas seen from a bottleneck group: how many sit in it, and the two most
// loaded ranks outside it that hold one (load -1: none), with the slots.
struct OtherHolders {
  int in_group = 0;
  double load[2] = {-1, -1};
  int slot[2] = {-1, -1};
  double most = 0;  // the largest contribution of its replicas outside the group
};

// Destinations tried per improvement step for moves and exchanges: the least loaded ranks
// outside the group; and the group's replicas tried: the heaviest.
constexpr int kDestinations = 8;
constexpr int kHeavyReplicas = 8;

// Adding a replica of a group expert that carries `on_group` of the group's work to a rank at
// `base` (its load once the evicted replica, if any, is gone), for a group of g ranks at
// `group_level`: the higher of the group's new level and the rank's. The group and the rank
// level out when the expert's group work is enough; else the rank takes all of it.
double AfterAdding(double g, double group_level, double base, double on_group) {
  double new_level = (g * group_level + base) / (g + 1);
  double new_d = new_level;
  if (g * (group_level - new_level) > on_group) {
    new_level = group_level - on_group / g;
    new_d = base + on_group;
  }
  return std::max(new_level, new_d);
}

// Candidate moves relieving the bottleneck group, with a first-order estimate of each one's
// gain (the group re-levels over its ranks; the destination rises by what it takes).
std::vector<Candidate> Candidates(const LayerState& s, const LayerRules& rules,
                                  const std::vector<int>& group, double level, int max_cost, int trials) {
  std::vector<char> in_group(s.ranks(), 0);
  for (int r : group) in_group[r] = 1;
  const double g = static_cast<double>(group.size());
  TopCandidates top(trials);
  // RankHolds scans the rank's S slots: cheaper than filling an R x E table per call (at 4,096
  // ranks that table is 4 MiB of cache misses).
  const int E = s.num_experts();
  auto rank_holds = [&](int r, int e) { return s.RankHolds(r, e); };
  // The group's heaviest replicas: those worth moving or exchanging.
  std::vector<int> heavy;
  for (int r : group) {
    for (int slot = s.first_slot(r), end = slot + s.slots_per_rank(); slot < end; ++slot) {
      const int e = s.expert_at(slot);
      if (e >= 0 && s.contribution(slot) > 0 && !rules.Pinned(e, r)) heavy.push_back(slot);
    }
  }
  const size_t n_heavy = std::min<size_t>(kHeavyReplicas, heavy.size());
  std::partial_sort(heavy.begin(), heavy.begin() + n_heavy, heavy.end(), [&](int a, int b) {
    return s.contribution(a) > s.contribution(b) || (s.contribution(a) == s.contribution(b) && a < b);
  });
  heavy.resize(n_heavy);

  // Experts with work on the group, and how much of it the group carries.
  std::vector<double> on_group(s.num_experts(), 0.0);
  std::vector<int> group_experts;
  for (int r : group) {
    for (int slot = s.first_slot(r), end = slot + s.slots_per_rank(); slot < end; ++slot) {
      const int e = s.expert_at(slot);
      if (e < 0 || s.contribution(slot) <= 0) continue;
      if (on_group[e] == 0) group_experts.push_back(e);
      on_group[e] += s.contribution(slot);
    }
  }
  // Per expert, for evicting one of its replicas on a rank outside the group: how many of its
  // replicas sit in the group, and the two most loaded ranks holding it outside the group
  // (the evicted slot may be one of them). One pass over the slots instead of one per rank.
  std::vector<OtherHolders> holders(max_cost >= 1 ? E : 0);
  if (max_cost >= 1) {
    for (int r = 0; r < s.ranks(); ++r) {
      for (int slot = s.first_slot(r), end = slot + s.slots_per_rank(); slot < end; ++slot) {
        const int e = s.expert_at(slot);
        if (e < 0) continue;
        OtherHolders& h = holders[e];
        if (in_group[r]) {
          ++h.in_group;
          continue;
        }
        h.most = std::max(h.most, s.contribution(slot));
        if (s.rank_load(r) > h.load[0]) {
          h.load[1] = h.load[0];
          h.slot[1] = h.slot[0];
          h.load[0] = s.rank_load(r);
          h.slot[0] = slot;
        } else if (s.rank_load(r) > h.load[1]) {
          h.load[1] = s.rank_load(r);
          h.slot[1] = slot;
        }
      }
    }
  }
  // Adding a replica is tried on every rank outside the group (a redundant replica to
  // replace may sit anywhere); moves and exchanges only toward the lightest ranks.
  std::vector<int> dests;
  for (int d = 0; d < s.ranks(); ++d) {
    if (!in_group[d] && s.capacity(d) > 0) dests.push_back(d);
  }
  // Without replicated experts (pure packing) exchanges are the only tool: try every rank.
  bool replicated = false;
  for (int e = 0; e < s.num_experts() && !replicated; ++e) replicated = s.replicas(e) > 1;
  const size_t n_dests = replicated ? std::min<size_t>(kDestinations, dests.size()) : dests.size();
  std::partial_sort(dests.begin(), dests.begin() + n_dests, dests.end(), [&](int a, int b) {
    return s.rank_load(a) < s.rank_load(b) || (s.rank_load(a) == s.rank_load(b) && a < b);
  });

  // Whichever group expert h a rank takes, the rank and the group end at
  // after(h) = max(A(h), raised), where A(h) (the group's new level, or the rank's) depends on
  // the rank only through (group level, base): no rate the rank offers exceeds
  // level - max(min_h A(h), raised) (the minimum also runs over experts the rank holds). With
  // one slot per rank most ranks share those two values (nothing of theirs in the group,
  // base 0), so min_h A(h) is kept per pair (a small cache) and a rank whose bound the full
  // list rejects is skipped: the same list, without its offers.
  struct LevelKey {
    double group_level = -1, base = 0, min_after = 0;
  };
  std::array<LevelKey, 16> min_after_cache{};
  auto min_after = [&](double group_level, double base_d) {
    LevelKey& entry = min_after_cache[(std::hash<double>{}(group_level) ^ (std::hash<double>{}(base_d) * 31)) % 16];
    if (entry.group_level == group_level && entry.base == base_d) return entry.min_after;
    double m = std::numeric_limits<double>::infinity();
    for (int h : group_experts) m = std::min(m, AfterAdding(g, group_level, base_d, on_group[h]));
    entry = {group_level, base_d, m};
    return m;
  };
  // tie_after: min_h A(h) at (level, base 0). level_ties[x]: x has no replica in the group and
  // `raised` stays at most tie_after on every holder of x, so a rank at base 0 whose room
  // holds x offers at most level - tie_after (with one slot per rank thousands of ranks tie
  // there). Such ranks are skipped while the full list rejects that rate.
  std::vector<char> level_ties(max_cost >= 1 ? E : 0, 0);
  const double tie_after = max_cost >= 1 ? min_after(level, 0.0) : 0;
  for (int x = 0; x < static_cast<int>(level_ties.size()); ++x) {
    const OtherHolders& h = holders[x];
    if (s.replicas(x) < 2 || h.in_group > 0) continue;
    const double raised_ceiling = h.load[0] >= 0 ? h.load[0] + h.most / (s.replicas(x) - 1) : 0;
    level_ties[x] = raised_ceiling <= tie_after;
  }
  for (size_t k = 0; k < dests.size(); ++k) {
    const int d = dests[k];
    const double load_d = s.rank_load(d);
    // Add a replica of a group expert on d, into a free slot or over a redundant replica.
    if (max_cost >= 1) {
      const int room = RoomOn(s, rules, d, -1);
      const int evicts = room >= 0 ? s.expert_at(room) : -1;
      const bool skip = evicts >= 0 && level_ties[evicts] && load_d - s.contribution(room) == 0 && top.Full() &&
                        level - tie_after <= top.WorstRate();
      if (room >= 0 && !skip) {
        double evicted = 0, group_level = level, raised = 0;
        if (const int x = s.expert_at(room); x >= 0) {
          // The evicted replica's load spreads over x's other replicas: the group's share
          // raises its level, the most loaded other holder rises by `each`.
          evicted = s.contribution(room);
          const double each = evicted / (s.replicas(x) - 1);
          const OtherHolders& h = holders[x];
          for (int i = 0; i < h.in_group; ++i) group_level += each / g;
          const double top = h.slot[0] != room ? h.load[0] : h.load[1];
          if (top >= 0) raised = std::max(raised, top + each);
        }
        const double base_d = load_d - evicted;
        // Whichever expert d takes, the group and d end at or above the level they share when
        // the expert's group work is enough to level them (`after` >= max(that, raised)): a
        // bound on every candidate's gain here (with a margin for rounding), so a full list
        // that it cannot enter skips the experts (same result, fewer offers).
        const double shared = (g * group_level + base_d) / (g + 1);
        const bool bounded_out = top.Full() && level - std::max(shared, raised) + 1e-9 * level <= top.WorstRate();
        const double best_after = bounded_out ? level : std::max(min_after(group_level, base_d), raised);
        if (best_after < level && !(top.Full() && level - best_after <= top.WorstRate())) {
          for (int h : group_experts) {
            if (rank_holds(d, h)) continue;
            const double after = std::max(AfterAdding(g, group_level, base_d, on_group[h]), raised);
            if (after < level) top.Offer({Candidate::Kind::kAddReplica, h, -1, room, 1, level - after});
          }
        }
      }
    }
    // Move or exchange one of the group's replicas with d.
    if (k >= n_dests) continue;
    const int free_d = s.FreeSlot(d);
    for (int from : heavy) {
      const int b = s.RankOfSlot(from);
      const int a = s.expert_at(from);
      const double w_a = s.contribution(from);
      if (rank_holds(d, a)) continue;
      if (free_d >= 0 && max_cost >= 1) {
        const double after = std::max(level - w_a / g, load_d + w_a);
        if (after < level) top.Offer({Candidate::Kind::kMove, a, from, free_d, 1, level - after});
      }
      if (max_cost < 2) continue;
      for (int to = s.first_slot(d), to_end = to + s.slots_per_rank(); to < to_end; ++to) {
        const int c = s.expert_at(to);
        if (c < 0 || rules.Pinned(c, d) || rank_holds(b, c)) continue;
        const double delta = w_a - s.contribution(to);
        if (delta <= 0) continue;
        const double after = std::max(level - delta / g, load_d + delta);
        if (after < level) top.Offer({Candidate::Kind::kExchange, a, from, to, 2, level - after});
      }
    }
  }
  return top.best();
}

// Drop of the bottleneck group's load after a move: the new maximum over the group and over
// every rank the move loaded more, against the group's old level.
double ActualGain(const LayerState& before, const LayerState& after,
                  const std::vector<int>& group, double level) {
  double new_level = 0;
  for (int r : group) new_level = std::max(new_level, after.rank_load(r));
  const double tie = kTieTolerance * std::max(level, 1e-300);
  for (int r = 0; r < after.ranks(); ++r) {
    if (after.rank_load(r) > before.rank_load(r) + tie) {
      new_level = std::max(new_level, after.rank_load(r));
    }
  }
  return level - new_level;
}

// The most promising candidate (by estimated gain per moved replica) that, tried for real,
// gains at least `min_gain_per_move` per moved replica; it costs at most `max_cost`. Candidates
// are tried on `trial` (any state of this layer: overwritten, its buffers reused); when one
// pays, `trial` holds the state after it.
struct Move {
  double gain;  // actual drop of the bottleneck group's load, shares re-solved
  int cost;
};
std::optional<Move> BestMoveInto(const LayerState& s, const LayerRules& rules, int max_cost, double min_gain_per_move,
                                 int trials, LayerState& trial) {
  if (max_cost <= 0) return std::nullopt;
  double level = 0;
  const std::vector<int> group = BottleneckGroup(s, &level);
  const std::vector<Candidate> candidates = Candidates(s, rules, group, level, max_cost, trials);
  // First improvement: the best-estimated candidate that really pays is taken.
  for (const Candidate& candidate : candidates) {
    trial = s;
    Apply(trial, candidate);
    const double gain = ActualGain(s, trial, group, level);
    if (gain >= min_gain_per_move * candidate.cost) return Move{gain, candidate.cost};
  }
  return std::nullopt;
}

std::optional<Proposal> BestMove(const LayerState& s, const LayerRules& rules, int max_cost,
                                 double min_gain_per_move, int trials = kTrialsFromScratch) {
  LayerState trial = s;
  const std::optional<Move> move = BestMoveInto(s, rules, max_cost, min_gain_per_move, trials, trial);
  if (!move) return std::nullopt;
  return Proposal{std::move(trial), move->gain, move->cost};
}

// With a move budget, one move must gain this much: the per-move threshold, and the Poisson
// noise of the bottleneck's count.
double BudgetedMinGainPerMove(const LayerState& s, const PlanOptions& options) {
  return std::max(options.min_gain_per_move * s.MeanLoad(), options.noise_z * std::sqrt(s.MaxLoad()));
}

// A layer built from scratch, improved until no move gains (moves are free there).
void ImproveFromScratch(LayerState& s, const LayerRules& rules) {
  const int max_steps = 4 * s.ranks() * s.slots_per_rank();
  LayerState trial = s;
  for (int step = 0; step < max_steps; ++step) {
    if (!BestMoveInto(s, rules, std::numeric_limits<int>::max(), kFromScratchMinGain * s.MeanLoad(),
                      kTrialsFromScratch, trial)) {
      break;
    }
    std::swap(s, trial);  // the old state's buffers serve the next trials
  }
}

// No layout of this layer's slots has a bottleneck below this: every expert keeps at least
// one replica, the replicas of an expert share its load (one of them takes at least load /
// replicas), and the replicas fit in the ranks' capacity. The least max_e load_e / r_e over
// replica counts r_e >= 1 summing to at most the slots: each spare slot to the expert with
// the most load per replica (greedy is optimal for this separable min-max). Also at least
// the mean rank load.
double BottleneckFloor(const LayerState& s) {
  int slots = 0;
  for (int r = 0; r < s.ranks(); ++r) slots += s.capacity(r);
  const int E = s.num_experts();
  std::priority_queue<std::pair<double, int>> per_replica;  // (load / replicas, expert)
  std::vector<int> replicas(E, 1);
  for (int e = 0; e < E; ++e) per_replica.emplace(s.load(e), e);
  for (int spare = slots - E; spare > 0 && per_replica.top().first > 0; --spare) {
    const int e = per_replica.top().second;
    per_replica.pop();
    per_replica.emplace(s.load(e) / ++replicas[e], e);
  }
  return std::max(s.MeanLoad(), per_replica.empty() ? 0.0 : per_replica.top().first);
}

// From the layout in force: improvement steps at the from-scratch threshold, so that plateaus
// of near-tied ranks (several hot experts on different ranks) are crossed; the sequence is
// judged as a whole, and ends early when even BottleneckFloor could not pay for its moves or
// after kWalkPatience moves that found no better prefix. The prefix kept maximises gain - moves x min_gain_per_move x mean, and
// it is kept only if its gain beats the noise of that gain: noise_z x sqrt(level before +
// level after), the two maxima being Poisson counts of the window. A regime change (a burst)
// gains many times its noise; re-fitting a window's sampling noise does not. Returns the
// moved replicas.
int ImproveFromCurrent(LayerState& s, const LayerRules& rules, const PlanOptions& options) {
  const double level0 = s.MaxLoad();
  const double move_cost = options.min_gain_per_move * s.MeanLoad();
  // No layout's bottleneck is below BottleneckFloor: once even reaching it would not beat the
  // best prefix's value, the rest of the walk cannot change the outcome.
  const double floor = BottleneckFloor(s) * (1 - 1e-9);  // (slack for rounding)
  LayerState walk = s, trial = s;
  std::optional<LayerState> best;
  int best_moves = 0, moves = 0;
  double best_value = 0;
  const int max_steps = 4 * s.ranks() * s.slots_per_rank();
  for (int step = 0; step < max_steps; ++step) {
    if ((level0 - floor) - move_cost * (moves + 1) <= best_value) break;
    if (moves - best_moves > std::max(kWalkPatience, best_moves)) break;
    const std::optional<Move> next = BestMoveInto(walk, rules, std::numeric_limits<int>::max(),
                                                  kFromScratchMinGain * walk.MeanLoad(), kTrialsFromCurrent, trial);
    if (!next) break;
    std::swap(walk, trial);
    moves += next->cost;
    const double value = (level0 - walk.MaxLoad()) - move_cost * moves;
    if (value > best_value) {
      best_value = value;
      best_moves = moves;
      best = walk;
    }
  }
  if (!best) return 0;
  const double level = best->MaxLoad();
  if (level0 - level < options.noise_z * std::sqrt(level0 + level)) return 0;
  s = *std::move(best);
  return best_moves;
}

std::vector<int> Capacities(const Topology& topo, const Constraints& constraints) {
  std::vector<int> capacity(topo.ranks(), topo.slots_per_rank());
  for (int r : constraints.drained_ranks) capacity[r] = 0;
  return capacity;
}

// Pinned experts of a layer, as (expert, rank), deduplicated.
std::vector<std::pair<int, int>> LayerPins(const LayerRules& rules) {
  std::vector<std::pair<int, int>> pins;
  for (const Pin& pin : rules.constraints->pins) {
    if (pin.layer_id == kAllLayers || pin.layer_id == rules.layer_id) {
      pins.emplace_back(pin.expert, pin.rank);
    }
  }
  std::sort(pins.begin(), pins.end());
  pins.erase(std::unique(pins.begin(), pins.end()), pins.end());
  return pins;
}

// From scratch: replica counts by highest load per replica (as EPLB), then a layout whose
// replica graph is one ring through every rank, so that the share solve can level them all:
//   - the replicated experts' replicas go to consecutive ranks, each expert starting on the
//     rank where the previous one ended (that rank holds both; the ring closes at the end);
//   - the single-replica experts follow, heaviest first, onto the rank with the least
//     planned load that has room;
//   - shares are then solved exactly.
// Pinned replicas are placed first and count toward their expert's replicas.
absl::StatusOr<LayerState> BuildLayer(std::span<const double> load, const Topology& topo,
                                      const LayerRules& rules) {
  LayerState s(topo.slots_per_rank(), load, Capacities(topo, *rules.constraints));
  const int E = static_cast<int>(load.size());
  std::vector<int> ring;  // ranks that can hold experts, in order
  int total = 0;
  for (int r = 0; r < s.ranks(); ++r) {
    total += s.capacity(r);
    if (s.capacity(r) > 0) ring.push_back(r);
  }
  const int active = static_cast<int>(ring.size());
  std::vector<int> count(E, 0);  // replicas placed so far
  const auto pins = LayerPins(rules);
  for (const auto& [e, r] : pins) {
    s.Add(s.FreeSlot(r), e);
    ++count[e];
  }
  std::vector<int> target(E);
  int needed = 0;
  for (int e = 0; e < E; ++e) {
    target[e] = std::max(count[e], 1);
    needed += target[e];
  }
  if (needed > total) {
    return absl::FailedPreconditionError(absl::StrCat(
        "layer ", rules.layer_id, ": pins and experts need ", needed, " slots, ", total,
        " are available"));
  }
  // Extra replicas: highest load per replica first (lowest expert on ties), never more
  // replicas than there are ranks to hold them.
  using Entry = std::pair<double, int>;  // (load per replica, -expert)
  std::priority_queue<Entry> heap;
  for (int e = 0; e < E; ++e) {
    if (target[e] < active) heap.push({load[e] / target[e], -e});
  }
  for (int extra = total - needed; extra > 0 && !heap.empty(); --extra) {
    const int e = -heap.top().second;
    heap.pop();
    ++target[e];
    if (target[e] < active) heap.push({load[e] / target[e], -e});
  }
  std::vector<int> order(E);
  for (int e = 0; e < E; ++e) order[e] = e;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return load[a] > load[b]; });

  // Replicated experts along the ring.
  int pos = 0;
  for (int e : order) {
    if (target[e] < 2) continue;
    for (int tries = 0; count[e] < target[e] && tries < 2 * active; ++tries) {
      const int r = ring[pos % active];
      if (s.FreeSlot(r) >= 0 && !s.RankHolds(r, e)) {
        s.Add(s.FreeSlot(r), e);
        ++count[e];
        if (count[e] == target[e]) break;  // the next expert starts on this rank
      }
      ++pos;
    }
  }
  // The rest (single replicas, and any replica the ring had no room for), heaviest piece
  // first, onto the least planned load with room.
  std::vector<double> planned(s.ranks(), 0.0);
  for (int slot = 0; slot < s.ranks() * s.slots_per_rank(); ++slot) {
    if (const int e = s.expert_at(slot); e >= 0) planned[s.RankOfSlot(slot)] += load[e] / target[e];
  }
  for (int e : order) {
    while (count[e] < target[e]) {
      int best = -1;
      for (int pass = 0; pass < 2 && best < 0; ++pass) {  // pass 1 allows a second copy
        for (int r : ring) {
          if (s.used_slots(r) >= s.capacity(r)) continue;
          if (pass == 0 && count[e] > 0 && s.RankHolds(r, e)) continue;
          if (best < 0 || planned[r] < planned[best]) best = r;
        }
      }
      SY_CHECK(best >= 0);
      s.Add(s.FreeSlot(best), e);
      planned[best] += load[e] / target[e];
      ++count[e];
    }
  }
  s.ResetShares();
  s.SolveShares();
  return s;
}

// Empties drained ranks: replicas with a copy elsewhere are dropped (free), the others move
// to the lightest undrained rank with room. Returns the moved replicas.
absl::StatusOr<int> DrainRanks(LayerState& s, const LayerRules& rules) {
  int moved = 0;
  for (int r = 0; r < s.ranks(); ++r) {
    if (s.capacity(r) > 0) continue;
    for (int slot = s.first_slot(r), end = slot + s.slots_per_rank(); slot < end; ++slot) {
      const int x = s.expert_at(slot);
      if (x < 0) continue;
      bool elsewhere = false;
      for (int other : s.SlotsOf(x)) elsewhere |= s.capacity(s.RankOfSlot(other)) > 0;
      if (elsewhere) {
        s.Remove(slot);
        continue;
      }
      int dest = -1, room = -1;
      for (int d = 0; d < s.ranks(); ++d) {
        if (s.capacity(d) == 0 || s.RankHolds(d, x)) continue;
        const int candidate = RoomOn(s, rules, d, x);
        if (candidate >= 0 && (dest < 0 || s.rank_load(d) < s.rank_load(dest))) {
          dest = d;
          room = candidate;
        }
      }
      if (room < 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer ", rules.layer_id, ": draining rank ", r, " leaves no room for expert ", x));
      }
      if (s.expert_at(room) >= 0) s.Remove(room);
      s.SwapSlots(slot, room);
      ++moved;
    }
  }
  return moved;
}

// Gives every pinned expert a replica on its rank, making room if needed (a redundant
// replica is dropped, or the lightest unpinned replica moves away). Returns moved replicas.
absl::StatusOr<int> HonourPins(LayerState& s, const LayerRules& rules) {
  int moved = 0;
  for (const auto& [e, r] : LayerPins(rules)) {
    if (s.RankHolds(r, e)) continue;
    int room = RoomOn(s, rules, r, e);
    if (room < 0) {  // r is full of single, or pinned, replicas: move the lightest unpinned one
      int victim = -1;
      for (int slot = s.first_slot(r), end = slot + s.slots_per_rank(); slot < end; ++slot) {
        const int x = s.expert_at(slot);
        if (x < 0 || rules.Pinned(x, r)) continue;
        if (victim < 0 || s.contribution(slot) < s.contribution(victim)) victim = slot;
      }
      int dest_room = -1, dest = -1;
      if (victim >= 0) {
        const int x = s.expert_at(victim);
        for (int d = 0; d < s.ranks(); ++d) {
          if (d == r || s.capacity(d) == 0 || s.RankHolds(d, x)) continue;
          const int candidate = RoomOn(s, rules, d, x);
          if (candidate >= 0 && (dest < 0 || s.rank_load(d) < s.rank_load(dest))) {
            dest = d;
            dest_room = candidate;
          }
        }
      }
      if (dest_room < 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer ", rules.layer_id, ": no room on rank ", r, " for pinned expert ", e));
      }
      if (s.expert_at(dest_room) >= 0) s.Remove(dest_room);
      s.SwapSlots(victim, dest_room);
      ++moved;
      room = victim;
    }
    if (s.expert_at(room) >= 0) s.Remove(room);
    s.Add(room, e);
    ++moved;
  }
  return moved;
}

// `fresh` (a layer planned from scratch) with its ranks renamed to keep as many of the
// current layout's replicas in place as possible: ranks are matched greedily by the number
// of experts they share, within a node (node-aware traffic is kept); drained ranks and ranks
// holding pins of this layer keep their own number. Returns `current` turned into that
// layout (retained replicas stay in their slots), shares solved.
LayerState AlignedTo(const LayerState& current, const LayerState& fresh, const Topology& topo,
                     const LayerRules& rules, std::span<const double> load) {
  const int R = current.ranks(), E = current.num_experts();
  std::vector<char> fixed(R, 0);
  for (int r = 0; r < R; ++r) fixed[r] = current.capacity(r) == 0;
  for (const auto& [e, r] : LayerPins(rules)) fixed[r] = 1;
  std::vector<int> rank_of(R, -1);  // fresh rank -> current rank
  std::vector<char> taken(R, 0);
  for (int r = 0; r < R; ++r) {
    if (fixed[r]) {
      rank_of[r] = r;
      taken[r] = 1;
    }
  }
  struct Pair {
    int shared, fresh_rank, current_rank;
  };
  std::vector<Pair> pairs;
  std::vector<char> holds(static_cast<size_t>(E), 0);
  for (int a = 0; a < R; ++a) {
    if (fixed[a]) continue;
    std::fill(holds.begin(), holds.end(), 0);
    for (int slot = fresh.first_slot(a), end = slot + fresh.slots_per_rank(); slot < end; ++slot) {
      if (const int e = fresh.expert_at(slot); e >= 0) holds[e] = 1;
    }
    // Candidates: the ranks of a's node (nodes are contiguous blocks), in rank order.
    const int first = topo.NodeOf(a) * topo.ranks_per_node();
    for (int b = first; b < first + topo.ranks_per_node(); ++b) {
      if (fixed[b]) continue;
      int shared = 0;
      for (int slot = current.first_slot(b), end = slot + current.slots_per_rank(); slot < end; ++slot) {
        if (const int e = current.expert_at(slot); e >= 0) shared += holds[e];
      }
      pairs.push_back({shared, a, b});
    }
  }
  std::stable_sort(pairs.begin(), pairs.end(), [](const Pair& x, const Pair& y) { return x.shared > y.shared; });
  for (const Pair& p : pairs) {
    if (rank_of[p.fresh_rank] >= 0 || taken[p.current_rank]) continue;
    rank_of[p.fresh_rank] = p.current_rank;
    taken[p.current_rank] = 1;
  }
  std::vector<int> capacity(R);
  for (int r = 0; r < R; ++r) capacity[r] = current.capacity(r);
  LayerState out(current.slots_per_rank(), load, capacity);
  for (int a = 0; a < R; ++a) {
    const int b = rank_of[a];
    std::fill(holds.begin(), holds.end(), 0);
    for (int slot = fresh.first_slot(a), end = slot + fresh.slots_per_rank(); slot < end; ++slot) {
      if (const int e = fresh.expert_at(slot); e >= 0) holds[e] = 1;
    }
    for (int slot = current.first_slot(b), end = slot + current.slots_per_rank(); slot < end; ++slot) {
      const int e = current.expert_at(slot);
      if (e >= 0 && holds[e]) {
        out.Add(slot, e);  // kept in place
        holds[e] = 0;
      }
    }
    for (int e = 0; e < E; ++e) {
      if (holds[e]) out.Add(out.FreeSlot(b), e);
    }
  }
  out.ResetShares();
  out.SolveShares();
  return out;
}

// Moved replicas from `a` to `b` in one layer: experts a rank holds in b and not in a.
int MovesBetween(const LayerState& a, const LayerState& b) {
  int moved = 0;
  for (int r = 0; r < b.ranks(); ++r) {
    for (int slot = b.first_slot(r), end = slot + b.slots_per_rank(); slot < end; ++slot) {
      if (const int e = b.expert_at(slot); e >= 0 && !a.RankHolds(r, e)) ++moved;
    }
  }
  return moved;
}

// A layer that local moves leave far below what a plan from scratch reaches is rebuilt from
// scratch, aligned to the current layout (AlignedTo), when the gain beats its noise (as in
// ImproveFromCurrent), is at least kRepairMargin of the level, and pays min_gain_per_move x
// mean per moved replica. Only without a move budget. Returns the moved replicas (0: kept).
int RepairLayer(LayerState& s, const LayerState& before, const Topology& topo, const LayerRules& rules,
                const PlanOptions& options, std::span<const double> load) {
  // No layout goes below BottleneckFloor (a plan from scratch included): skip building one
  // when even that would not clear the bar below.
  {
    const double level = s.MaxLoad(), floor = BottleneckFloor(s) * (1 - 1e-9);  // (slack for rounding)
    if (level - floor < std::max(options.noise_z * std::sqrt(level + floor), kRepairMargin * level)) return 0;
  }
  auto built = BuildLayer(load, topo, rules);
  if (!built.ok()) return 0;
  LayerState fresh = *std::move(built);
  ImproveFromScratch(fresh, rules);
  const double level = s.MaxLoad();
  const double bar = std::max(options.noise_z * std::sqrt(level + fresh.MaxLoad()), kRepairMargin * level);
  if (level - fresh.MaxLoad() < bar) return 0;
  LayerState aligned = AlignedTo(before, fresh, topo, rules, load);
  const double gain = level - aligned.MaxLoad();
  const int moves = MovesBetween(before, aligned);
  const int kept_moves = MovesBetween(before, s);
  if (gain < bar) return 0;
  if (gain < options.min_gain_per_move * s.MeanLoad() * std::max(0, moves - kept_moves)) return 0;
  s = std::move(aligned);
  return moves;
}

}  // namespace

absl::StatusOr<Placement> IncrementalPlanner::Plan(const PlanRequest& request) const {
  SY_RETURN_IF_ERROR(ValidateRequest(request));
  const Topology& topo = request.topology;
  const LoadMatrix& load = request.load;
  const PlanOptions& options = request.options;
  const bool from_scratch = request.current == nullptr;

  std::vector<LayerState> states;
  std::vector<LayerRules> rules;
  int forced = 0;
  for (int i = 0; i < load.num_layers(); ++i) {
    rules.push_back({load.layer_ids[i], &request.constraints});
    if (from_scratch) {
      SY_ASSIGN_OR_RETURN(LayerState s, BuildLayer(load.values[i], topo, rules[i]));
      states.push_back(std::move(s));
      continue;
    }
    LayerState s = LayerState::FromLayer(*request.current->FindLayer(load.layer_ids[i]),
                                         topo.slots_per_rank(), load.values[i],
                                         Capacities(topo, request.constraints));
    SY_ASSIGN_OR_RETURN(const int drained, DrainRanks(s, rules[i]));
    SY_ASSIGN_OR_RETURN(const int pinned, HonourPins(s, rules[i]));
    forced += drained + pinned;
    s.SolveShares();
    states.push_back(std::move(s));
  }

  const bool budgeted = !from_scratch && options.max_moves >= 0;
  if (budgeted && forced > options.max_moves) {
    return absl::FailedPreconditionError(absl::StrCat(
        "drains and pins need ", forced, " moved replicas, the move budget is ",
        options.max_moves));
  }
  if (!budgeted) {
    for (size_t i = 0; i < states.size(); ++i) {
      if (from_scratch) {
        ImproveFromScratch(states[i], rules[i]);
      } else {
        const LayerState before = states[i];
        ImproveFromCurrent(states[i], rules[i], options);
        RepairLayer(states[i], before, topo, rules[i], options, load.values[i]);
      }
    }
  } else {
    // Spend the budget where a move gains most (absolute load: a layer's step time follows
    // its most loaded rank, and layers add up).
    int remaining = options.max_moves - forced;
    std::vector<std::optional<Proposal>> proposals(states.size());
    auto propose = [&](size_t i) {
      proposals[i] = BestMove(states[i], rules[i], remaining,
                              BudgetedMinGainPerMove(states[i], options));
    };
    for (size_t i = 0; i < states.size(); ++i) propose(i);
    while (remaining > 0) {
      int pick = -1;
      for (size_t i = 0; i < proposals.size(); ++i) {
        if (!proposals[i]) continue;
        const double rate = proposals[i]->gain / proposals[i]->cost;
        if (pick < 0 || rate > proposals[pick]->gain / proposals[pick]->cost) pick = static_cast<int>(i);
      }
      if (pick < 0) break;
      if (proposals[pick]->cost > remaining) {
        propose(pick);
        continue;
      }
      remaining -= proposals[pick]->cost;
      states[pick] = std::move(proposals[pick]->after);
      propose(pick);
    }
  }

  Placement placement{topo, load.num_experts(), {}};
  for (size_t i = 0; i < states.size(); ++i) {
    placement.layers.push_back(states[i].ToLayer(load.layer_ids[i]));
  }
  if (absl::Status valid = ValidatePlacement(placement, request.constraints); !valid.ok()) {
    return absl::InternalError(absl::StrCat("incremental planner broke an invariant: ",
                                            valid.message()));
  }
  return placement;
}

}  // namespace switchyard::placement
