#include "sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/hash.h"
#include "common/json_reader.h"
#include "common/stats.h"
#include "common/status.h"
#include "coordinator/load_aggregator.h"
#include "coordinator/policy.h"
#include "placement/metrics.h"
#include "placement/planner.h"
#include "placement/regroup.h"
#include "placement/topology.h"

namespace switchyard::sim {
namespace {

namespace types = switchyard::types::v1;

constexpr double kShiftDistance = 0.1;    // mean total-variation distance that counts as a load shift
constexpr double kRecoveredFraction = 0.95;
constexpr int kMaxSteps = 100000;
// Sizes whose arrays would not fit: slots per layer (placements are per slot), and kept
// per-layer records (--steps-out).
constexpr int64_t kMaxSlots = int64_t{1} << 20;
constexpr int64_t kMaxLayerRecords = int64_t{1} << 22;

// Standard normal (Box-Muller; one value per call).
double Normal(SplitMix64Stream& rng) {
  const double u = 1.0 - rng.Uniform(), v = rng.Uniform();
  return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
}

// Poisson(mean): exact (inversion) below 30, the normal approximation above.
double Poisson(SplitMix64Stream& rng, double mean) {
  if (mean <= 0) return 0;
  if (mean >= 30) return std::max(0.0, std::round(mean + std::sqrt(mean) * Normal(rng)));
  const double limit = std::exp(-mean);
  double p = rng.Uniform(), k = 0;
  while (p > limit) {
    p *= rng.Uniform();
    ++k;
  }
  return k;
}

// One migration in flight: the bytes each rank still has to move (sent + received), per link
// class, and when it started.
struct Migration {
  placement::Placement target;
  int start_step = 0;
  int moved_replicas = 0;
  double bytes = 0;  // of the transfers
  double total_rank_bytes = 0, moved_rank_bytes = 0;
  std::vector<double> intra, inter;  // per rank, remaining
};

Migration StartMigration(const placement::Placement& from, const placement::Placement& to, const Cluster& cluster,
                         double expert_bytes, int start_step) {
  Migration m;
  m.target = to;
  m.start_step = start_step;
  m.moved_replicas = placement::MovedReplicas(from, to);
  m.intra.assign(cluster.ranks(), 0);
  m.inter.assign(cluster.ranks(), 0);
  for (const placement::Transfer& t : placement::PlanTransfers(from, to)) {
    auto& cls = cluster.node_of[t.from] == cluster.node_of[t.to] ? m.intra : m.inter;
    cls[t.from] += expert_bytes;
    cls[t.to] += expert_bytes;
    m.bytes += expert_bytes;
  }
  for (int r = 0; r < cluster.ranks(); ++r) m.total_rank_bytes += m.intra[r] + m.inter[r];
  return m;
}

// A step of migration: every rank moves up to its budget, intra- and inter-node bytes in
// proportion. Fills the bytes moved per rank; returns whether every rank is done.
bool AdvanceMigration(Migration& m, double budget, std::vector<double>& intra, std::vector<double>& inter) {
  bool done = true;
  for (size_t r = 0; r < m.intra.size(); ++r) {
    const double left = m.intra[r] + m.inter[r];
    const double move = std::min(budget, left);
    const double fi = left > 0 ? m.intra[r] / left : 0;
    intra[r] = move * fi;
    inter[r] = move - intra[r];
    m.intra[r] -= intra[r];
    m.inter[r] -= inter[r];
    m.moved_rank_bytes += move;
    if (m.intra[r] + m.inter[r] > 1e-6) done = false;
  }
  return done;
}

// The load report the workers send for a window, summed over ranks (the aggregator counts a
// window once every rank reported it; the simulator reports as one rank).
control::v1::LoadReport WindowReport(int first_step, int end_step, const std::vector<std::vector<double>>& counts) {
  control::v1::LoadReport r;
  r.set_rank(0);
  r.set_first_step(first_step);
  r.set_end_step(end_step);
  for (const auto& row : counts) {
    types::LayerCounts* layer = r.add_layers();
    for (double c : row) {
      layer->add_chosen(static_cast<int64_t>(c));
      layer->add_processed(static_cast<int64_t>(c));
    }
  }
  return r;
}

// Mean over layers of the total-variation distance between two windows' distributions.
double ShiftDistance(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  double sum = 0;
  for (size_t l = 0; l < a.size(); ++l) {
    double d = 0;
    for (size_t e = 0; e < a[l].size(); ++e) d += std::abs(a[l][e] - b[l][e]);
    sum += d / 2;
  }
  return a.empty() ? 0 : sum / a.size();
}

// Every policy starts from the same placement: EPLB's global policy on the first window's
// expected load (the worker's --policy eplb start, without expert groups: the hierarchical
// policy packs whole groups per node and is capped far below 1 when group loads differ).
absl::StatusOr<placement::Placement> StartPlacement(const placement::Topology& topology, const placement::LoadMatrix& expected) {
  SY_ASSIGN_OR_RETURN(auto planner, placement::CreatePlanner("eplb"));
  return planner->Plan(placement::PlanRequest{topology, expected, nullptr, {}, {}});
}

}  // namespace

std::vector<std::string> SimPolicyNames() { return {"static", "eplb", "incremental"}; }

absl::StatusOr<types::Policy> SimPolicy(const std::string& name) {
  types::Policy p = coordinator::DefaultPolicy();
  if (name == "static") {
    p.set_auto_rebalance(false);
  } else if (name == "eplb") {
    p.set_auto_rebalance(true);
    p.set_planner("eplb");
    p.set_min_gain(0);
    p.set_hysteresis_windows(1);
    p.set_cooldown_windows(0);
  } else if (name == "incremental") {
    p.set_auto_rebalance(true);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown policy '", EchoValue(name), "' (policies: ",
                                                   absl::StrJoin(SimPolicyNames(), ", "), ")"));
  }
  return p;
}

absl::Status ValidateSim(const SimOptions& o, const Trace& trace) {
  SY_RETURN_IF_ERROR(o.model.Validate());
  SY_RETURN_IF_ERROR(ValidateHardware(o.hardware));
  if (trace.windows.empty()) return absl::InvalidArgumentError("the trace has no windows");
  SY_RETURN_IF_ERROR(placement::Topology::Create(o.ranks, o.nodes, o.slots_per_rank).status());
  const placement::LoadMatrix& first = trace.windows.front();
  SY_RETURN_IF_ERROR(first.Validate());
  if (first.num_experts() != o.model.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("the trace has ", first.num_experts(), " experts per layer, the model (",
                                                   o.model.name, ") has ", o.model.num_experts));
  }
  for (int id : first.layer_ids) {
    if (std::find(o.model.moe_layers.begin(), o.model.moe_layers.end(), id) == o.model.moe_layers.end()) {
      return absl::InvalidArgumentError(absl::StrCat("the trace's layer ", id, " is not a MoE layer of ", o.model.name,
                                                     " (its MoE layers: ", o.model.moe_layers.front(), "..",
                                                     o.model.moe_layers.back(), ")"));
    }
  }
  if (static_cast<int64_t>(o.ranks) * o.slots_per_rank < o.model.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(o.ranks, " ranks x ", o.slots_per_rank, " slots cannot hold ",
                                                   o.model.num_experts, " experts"));
  }
  if (static_cast<int64_t>(o.ranks) * o.slots_per_rank > kMaxSlots) {
    return absl::InvalidArgumentError(absl::StrCat(o.ranks, " ranks x ", o.slots_per_rank, " slots: at most ", kMaxSlots,
                                                   " slots per layer"));
  }
  if (o.steps < 1 || o.steps > kMaxSteps) return absl::InvalidArgumentError(absl::StrCat("--steps must be in 1..", kMaxSteps));
  if (o.keep_layers && static_cast<int64_t>(o.steps) * first.num_layers() > kMaxLayerRecords) {
    return absl::InvalidArgumentError(absl::StrCat("per-layer records of ", o.steps, " steps x ", first.num_layers(),
                                                   " layers: at most ", kMaxLayerRecords, " (fewer steps or layers)"));
  }
  if (!(o.tokens_per_rank >= 1 && o.tokens_per_rank <= (1 << 24))) {
    return absl::InvalidArgumentError("--tokens-per-rank must be in 1..16777216");
  }
  if (o.window_steps < 0 || o.window_steps > kMaxSteps) {
    return absl::InvalidArgumentError(absl::StrCat("--window-steps must be in 0..", kMaxSteps));
  }
  if (o.report_steps < 1 || o.report_steps > kMaxSteps) {
    return absl::InvalidArgumentError(absl::StrCat("--report-steps must be in 1..", kMaxSteps));
  }
  if (o.max_moves < 0) return absl::InvalidArgumentError("--max-moves must be >= 0 (0: none)");
  if (o.start != nullptr) {
    const placement::Placement& p = *o.start;
    if (p.topology.ranks() != o.ranks || p.topology.nodes() != o.nodes || p.topology.slots_per_rank() != o.slots_per_rank) {
      return absl::InvalidArgumentError(absl::StrCat("--start: the placement is for ", p.topology.ranks(), " ranks on ",
                                                     p.topology.nodes(), " nodes x ", p.topology.slots_per_rank(),
                                                     " slots, the simulation has ", o.ranks, " on ", o.nodes, " x ",
                                                     o.slots_per_rank));
    }
    if (p.num_experts != o.model.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("--start: the placement has ", p.num_experts, " experts, the model ",
                                                     o.model.num_experts));
    }
    for (int id : first.layer_ids) {
      if (p.FindLayer(id) == nullptr) return absl::InvalidArgumentError(absl::StrCat("--start: the placement has no layer ", id));
    }
    SY_RETURN_IF_ERROR(placement::ValidatePlacement(p));
  }
  if (o.bursts.size() > 16) return absl::InvalidArgumentError("at most 16 --sim-burst");
  for (const placement::Burst& b : o.bursts) {
    if (b.experts > o.model.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("a burst of ", b.experts, " hot experts: the model has ", o.model.num_experts));
    }
    if (b.start >= o.steps) {
      return absl::InvalidArgumentError(absl::StrCat("a burst starting at step ", b.start, " never runs: the steps are 0..",
                                                     o.steps - 1));
    }
  }
  // Every window is simulated: at least one step each.
  const int64_t windows = static_cast<int64_t>(trace.windows.size());
  if (o.window_steps == 0 && windows > o.steps) {
    return absl::InvalidArgumentError(absl::StrCat("the trace has ", windows, " windows, more than the ", o.steps,
                                                   o.steps == 1 ? " step" : " steps",
                                                   ": each step draws from one window (more --steps, or fewer windows)"));
  }
  if (o.window_steps > 0 && (windows - 1) * o.window_steps >= o.steps) {
    return absl::InvalidArgumentError(absl::StrCat("--window-steps ", o.window_steps, " x ", windows, " windows: ", o.steps,
                                                   " steps reach only the first ", (o.steps - 1) / o.window_steps + 1));
  }
  // Each window's layers: the same shape as the first, and some load (a step draws its pairs
  // from the layer's distribution).
  for (size_t w = 0; w < trace.windows.size(); ++w) {
    const placement::LoadMatrix& window = trace.windows[w];
    if (w > 0) SY_RETURN_IF_ERROR(window.Validate());
    if (window.layer_ids != first.layer_ids || window.num_experts() != first.num_experts()) {
      return absl::InvalidArgumentError(absl::StrCat("window ", w, " of the trace has other layers or experts than window 0"));
    }
    for (int i = 0; i < window.num_layers(); ++i) {
      if (std::all_of(window.values[i].begin(), window.values[i].end(), [](double v) { return v == 0; })) {
        return absl::InvalidArgumentError(absl::StrCat("window ", w, " of the trace: layer ", window.layer_ids[i],
                                                       " has no load (nothing to draw a step's pairs from)"));
      }
    }
  }
  if (o.loss) {
    if (o.ranks < 2) return absl::InvalidArgumentError("a rank loss needs at least 2 ranks");
    if (o.loss->rank < 0 || o.loss->rank >= o.ranks) {
      return absl::InvalidArgumentError(absl::StrCat("--lose-rank: rank ", o.loss->rank, " is not in 0..", o.ranks - 1));
    }
    if (o.loss->step < 0 || o.loss->step >= o.steps) {
      return absl::InvalidArgumentError(absl::StrCat("--lose-rank: step ", o.loss->step, " is not in 0..", o.steps - 1));
    }
    // The survivors grow their slots when the spare ones cannot hold the lost rank's experts.
    const int survivors = o.ranks - 1;
    if ((o.model.num_experts + survivors - 1) / survivors > placement::kMaxSlotsPerRank) {
      return absl::InvalidArgumentError(absl::StrCat("after losing a rank, ", survivors, " ranks would need ",
                                                     (o.model.num_experts + survivors - 1) / survivors,
                                                     " slots each to hold ", o.model.num_experts, " experts (at most ",
                                                     placement::kMaxSlotsPerRank, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PolicyResult> Simulate(const SimOptions& o, const Trace& trace, const std::string& policy_name) {
  SY_RETURN_IF_ERROR(ValidateSim(o, trace));
  SY_ASSIGN_OR_RETURN(types::Policy policy, SimPolicy(policy_name));
  policy.set_max_moves(o.max_moves);
  const ModelShape shape = ShapeOf(o.model);
  const Hardware& hw = o.hardware;
  const int L = trace.windows.front().num_layers(), E = shape.num_experts, W = static_cast<int>(trace.windows.size());
  const std::vector<int>& layer_ids = trace.windows.front().layer_ids;
  const double expert_bytes = shape.ExpertBytes(hw.weight_bytes);

  // Each window's distribution per layer.
  std::vector<std::vector<std::vector<double>>> dist(W);
  for (int w = 0; w < W; ++w) {
    for (const auto& row : trace.windows[w].values) dist[w].push_back(placement::Probabilities(row));
  }
  auto window_of = [&](int step) {
    if (o.window_steps > 0) return std::min(W - 1, step / o.window_steps);
    return static_cast<int>(static_cast<int64_t>(step) * W / o.steps);
  };
  // The distribution a step draws from: its window's, under the bursts active then (cached
  // per window and set of active bursts).
  std::vector<std::vector<std::vector<int>>> hot(o.bursts.size());
  for (size_t b = 0; b < o.bursts.size(); ++b) {
    for (int l = 0; l < L; ++l) {
      SY_ASSIGN_OR_RETURN(std::vector<int> experts, placement::HotExperts(o.bursts[b], E, l, o.seed));
      hot[b].push_back(std::move(experts));
    }
  }
  std::map<std::pair<int, uint32_t>, std::vector<std::vector<double>>> burst_dist;
  auto dist_at = [&](int step) -> const std::vector<std::vector<double>>& {
    const int w = window_of(step);
    uint32_t active = 0;
    for (size_t b = 0; b < o.bursts.size(); ++b) active |= o.bursts[b].ActiveAt(step) ? 1u << b : 0u;
    if (active == 0) return dist[w];
    auto [it, added] = burst_dist.try_emplace({w, active});
    if (added) {
      it->second = dist[w];
      for (size_t b = 0; b < o.bursts.size(); ++b) {
        if (!(active & (1u << b))) continue;
        for (int l = 0; l < L; ++l) it->second[l] = placement::ApplyBurst(it->second[l], hot[b][l], o.bursts[b].share);
      }
    }
    return it->second;
  };

  SY_ASSIGN_OR_RETURN(placement::Topology topology, placement::Topology::Create(o.ranks, o.nodes, o.slots_per_rank));
  Cluster cluster = Cluster::Contiguous(o.ranks, o.nodes);
  double pairs_per_step = o.ranks * o.tokens_per_rank * shape.top_k;
  placement::Placement committed;
  if (o.start != nullptr) {
    committed = *o.start;
    std::erase_if(committed.layers, [&](const placement::LayerPlacement& l) {
      return std::find(layer_ids.begin(), layer_ids.end(), l.layer_id) == layer_ids.end();
    });
  } else {
    placement::LoadMatrix expected{layer_ids, dist[0]};  // pairs per step, count units
    for (auto& row : expected.values) {
      for (double& x : row) x *= pairs_per_step;
    }
    SY_ASSIGN_OR_RETURN(committed, StartPlacement(topology, expected));
  }

  coordinator::LoadAggregator aggregator;
  aggregator.Reset(L, E);
  coordinator::AutoRebalanceState auto_state;
  std::optional<Migration> migration;
  int64_t epoch = 0;

  PolicyResult result;
  result.policy = policy_name;
  result.steps.reserve(o.steps);
  SplitMix64Stream rng(o.seed + kGoldenGamma);  // the draws start at the stream's value 1
  std::vector<std::vector<double>> counts(L, std::vector<double>(E)), window_counts(L, std::vector<double>(E, 0));
  std::vector<double> mig_intra, mig_inter;  // migration bytes per rank in each layer of this step
  CostScratch cost_scratch;
  int window_first = 0;
  double tokens = 0;  // every rank's batch, each step
  auto commit = [&] {
    result.moved_replicas += migration->moved_replicas;
    result.moved_bytes += migration->bytes;
    ++result.migrations;
    committed = std::move(migration->target);
    migration.reset();
    ++epoch;
    coordinator::OnMigrationCommitted(auto_state);
  };
  for (int step = 0; step < o.steps; ++step) {
    StepRecord rec;
    rec.step = step;
    rec.epoch = epoch;
    // A lost rank: the step stalls for the detection and the regroup, the orphans are read
    // from the weight source, and the step re-runs on the survivors.
    if (o.loss && o.loss->step == step) {
      const int R = cluster.ranks();
      std::vector<int> previous;
      for (int r = 0; r < R; ++r) {
        if (r != o.loss->rank) previous.push_back(r);
      }
      const int survivors = R - 1;
      const int nodes = survivors % o.nodes == 0 ? o.nodes : 1;  // as the workers' regroup
      int slots = committed.topology.slots_per_rank();
      if (static_cast<int64_t>(survivors) * slots < E) slots = (E + survivors - 1) / survivors;
      SY_ASSIGN_OR_RETURN(const placement::Topology next, placement::Topology::Create(survivors, nodes, slots));
      placement::LoadMatrix seen = aggregator.PlanningLoad(layer_ids, policy.smoothing());
      SY_ASSIGN_OR_RETURN(placement::RegroupResult regrouped, placement::RegroupPlacement(committed, previous, next, &seen));
      Cluster kept;
      kept.num_nodes = cluster.num_nodes;
      for (int r : previous) kept.node_of.push_back(cluster.node_of[r]);
      cluster = std::move(kept);
      committed = std::move(regrouped.placement);
      // The orphans: each re-placed expert's rank reads its weights; ranks read in parallel.
      const double per_rank = regrouped.replaced > 0 ? expert_bytes * std::ceil(static_cast<double>(regrouped.replaced) / survivors) : 0;
      rec.stall_seconds = hw.detect_seconds + hw.regroup_seconds + per_rank / hw.reload_bandwidth;
      migration.reset();  // the workers drop a migration in flight and agree on the committed epoch
      ++epoch;
      rec.epoch = epoch;
      aggregator.Reset(L, E);  // a new generation reports afresh
      std::fill(window_counts.begin(), window_counts.end(), std::vector<double>(E, 0));
      window_first = step;
      pairs_per_step = survivors * o.tokens_per_rank * shape.top_k;
    }
    const int R = cluster.ranks();
    tokens += R * o.tokens_per_rank;
    // This step's batch: pairs per expert drawn from the window's distribution.
    const auto& d = dist_at(step);
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < E; ++e) counts[l][e] = Poisson(rng, pairs_per_step * d[l][e]);
    }
    // Migration bytes on the links this step, spread over the layers.
    const bool migrating = migration && step >= migration->start_step;
    bool migration_done = false;
    if (migrating) {
      mig_intra.assign(R, 0);
      mig_inter.assign(R, 0);
      migration_done = AdvanceMigration(*migration, hw.migration_bytes_per_step, mig_intra, mig_inter);
      for (int r = 0; r < R; ++r) {
        mig_intra[r] /= L;
        mig_inter[r] /= L;
      }
      rec.migration_progress = migration->total_rank_bytes > 0 ? migration->moved_rank_bytes / migration->total_rank_bytes : 1;
    }
    double worst_layer = -1, balance_sum = 0;
    rec.balancedness_min = 1;
    for (int l = 0; l < L; ++l) {
      LayerInputs in;
      in.layer = committed.FindLayer(layer_ids[l]);
      in.expert_pairs = counts[l];
      in.tokens_per_rank = o.tokens_per_rank;
      if (migrating) {
        in.migration_intra = mig_intra;
        in.migration_inter = mig_inter;
      }
      const LayerCost c = CostLayer(hw, shape, cluster, in, o.dedup, cost_scratch);
      rec.seconds += c.total();
      rec.phases.gate += c.gate;
      rec.phases.dispatch += c.dispatch;
      rec.phases.ffn += c.ffn;
      rec.phases.combine += c.combine;
      rec.phases.overhead += c.overhead;
      rec.intra_bytes += c.intra_bytes;
      rec.inter_bytes += c.inter_bytes;
      rec.balancedness_min = std::min(rec.balancedness_min, c.balancedness);
      balance_sum += c.balancedness;
      if (c.total() > worst_layer) {
        worst_layer = c.total();
        rec.critical_layer = layer_ids[l];
        rec.critical_rank = c.critical_rank;
        rec.dominant = c.dominant;
      }
      if (o.keep_layers) rec.layers.push_back(c);
    }
    rec.balancedness_mean = balance_sum / L;
    if (rec.stall_seconds > 0) rec.seconds += rec.stall_seconds + rec.seconds;  // the step runs again
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < E; ++e) window_counts[l][e] += counts[l][e];
    }
    // The migration commits at this step's boundary: the next step runs the target.
    if (migration_done) commit();
    // A complete load window: the coordinator's aggregation and automatic rebalancer.
    if (step + 1 - window_first >= o.report_steps) {
      aggregator.Add(WindowReport(window_first, step + 1, window_counts));
      aggregator.CompleteReady(1, 1, policy.smoothing(), [](int) { return false; });
      for (auto& row : window_counts) std::fill(row.begin(), row.end(), 0);
      window_first = step + 1;
      const placement::LoadMatrix load = aggregator.PlanningLoad(layer_ids, policy.smoothing());
      SY_ASSIGN_OR_RETURN(const auto window, coordinator::AutoRebalanceWindow(policy, auto_state, committed, load, {},
                                                                              migration.has_value()));
      if (window && window->publish) {
        // Orders reach the workers with their next heartbeat; all ranks start at one boundary.
        migration = StartMigration(committed, window->placement, cluster, expert_bytes, step + 2);
        ++result.plans;
        if (migration->total_rank_bytes == 0) commit();  // shares only: nothing to copy
      }
    }
    result.steps.push_back(std::move(rec));
  }

  // Summary.
  std::vector<double> times;
  double total = 0, balance = 0;
  for (const StepRecord& s : result.steps) {
    times.push_back(s.seconds);
    total += s.seconds;
    balance += s.balancedness_mean;
  }
  result.step_mean = total / o.steps;
  result.step_p50 = Percentile(times, 0.5);
  result.step_p99 = Percentile(times, 0.99);
  result.tokens_per_s = total > 0 ? tokens / total : 0;
  result.balancedness_mean = balance / o.steps;

  // Load shifts, losses and recovery: against what EPLB from scratch reaches on the new
  // distribution's expected load (on the cluster of that moment).
  struct Event {
    int step;
    const char* kind;
  };
  std::vector<Event> events;
  for (int step = 1; step < o.steps; ++step) {
    const auto& a = dist_at(step - 1);
    const auto& b = dist_at(step);
    if (o.loss && o.loss->step == step) {
      events.push_back({step, "loss"});  // a shift at the same step is part of it
    } else if (&a != &b && ShiftDistance(a, b) >= kShiftDistance) {
      events.push_back({step, "shift"});
    }
  }
  if (o.loss && o.loss->step == 0) events.insert(events.begin(), {0, "loss"});
  for (size_t i = 0; i < events.size(); ++i) {
    Recovery rec;
    rec.step = events[i].step;
    rec.event = events[i].kind;
    const bool after_loss = o.loss && rec.step >= o.loss->step;
    const int ranks = after_loss ? o.ranks - 1 : o.ranks;
    const int nodes = after_loss && (o.ranks - 1) % o.nodes != 0 ? 1 : o.nodes;
    const int slots = std::max(o.slots_per_rank, after_loss ? (E + ranks - 1) / ranks : 0);
    SY_ASSIGN_OR_RETURN(const placement::Topology shape, placement::Topology::Create(ranks, nodes, slots));
    placement::LoadMatrix expected_now{layer_ids, dist_at(rec.step)};
    SY_ASSIGN_OR_RETURN(const placement::Placement reference, StartPlacement(shape, expected_now));
    SY_ASSIGN_OR_RETURN(const placement::PlacementScore score, placement::ScorePlacement(reference, expected_now));
    rec.target = kRecoveredFraction * score.balancedness_mean;
    const int end = i + 1 < events.size() ? events[i + 1].step : o.steps;
    for (int s = rec.step; s < end; ++s) {
      if (result.steps[s].balancedness_mean >= rec.target) {
        rec.steps = s - rec.step;
        break;
      }
      rec.seconds += result.steps[s].seconds;
    }
    if (rec.steps < 0) rec.seconds = 0;
    result.recoveries.push_back(rec);
  }
  return result;
}

}  // namespace switchyard::sim
