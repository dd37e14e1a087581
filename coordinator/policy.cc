#include "coordinator/policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "google/protobuf/util/message_differencer.h"
#include "placement/metrics.h"
#include "placement/planner.h"

namespace switchyard::coordinator {

namespace types = switchyard::types::v1;

types::Policy DefaultPolicy() {
  types::Policy p;
  p.set_auto_rebalance(false);
  // Churn is guarded at this level (a plan must promise min_gain for hysteresis_windows
  // windows); the planner's own noise guard (noise_z x sqrt of the bottleneck's count) would
  // block moving ordinary experts at window-sized counts, so it is off by default.
  p.set_min_gain(0.05);
  p.set_hysteresis_windows(1);
  p.set_cooldown_windows(1);
  p.set_max_moves(0);
  p.set_min_gain_per_move(0.001);
  p.set_noise_z(0.0);
  p.set_smoothing(0.5);
  p.set_planner("incremental");
  return p;
}

absl::Status ValidatePolicy(const types::Policy& p) {
  auto bad = [](absl::string_view field, auto value, absl::string_view range) {
    return absl::InvalidArgumentError(absl::StrCat("policy ", field, " = ", value, ": must be ", range));
  };
  if (!(p.min_gain() >= 0 && p.min_gain() <= 10)) return bad("min_gain", p.min_gain(), "in [0, 10]");
  if (p.hysteresis_windows() < 1 || p.hysteresis_windows() > 1000) return bad("hysteresis_windows", p.hysteresis_windows(), "in [1, 1000]");
  if (p.cooldown_windows() < 0 || p.cooldown_windows() > 100000) return bad("cooldown_windows", p.cooldown_windows(), "in [0, 100000]");
  if (p.max_moves() < 0) return bad("max_moves", p.max_moves(), ">= 0 (0: no limit)");
  if (!(p.min_gain_per_move() >= 0 && p.min_gain_per_move() <= 1)) return bad("min_gain_per_move", p.min_gain_per_move(), "in [0, 1]");
  if (!(p.noise_z() >= 0 && p.noise_z() <= 100)) return bad("noise_z", p.noise_z(), "in [0, 100]");
  if (!(p.smoothing() > 0 && p.smoothing() <= 1)) return bad("smoothing", p.smoothing(), "in (0, 1]");
  const auto names = placement::PlannerNames();
  if (std::find(names.begin(), names.end(), p.planner()) == names.end()) {
    return bad("planner", absl::StrCat("'", EchoValue(p.planner()), "'"), absl::StrCat("one of ", absl::StrJoin(names, ", ")));
  }
  return absl::OkStatus();
}

bool ShouldPlan(AutoRebalanceState& state) {
  if (state.cooldown > 0) {
    --state.cooldown;
    return false;
  }
  return true;
}

bool ShouldPublish(const types::Policy& policy, AutoRebalanceState& state, int moved_replicas, double gain) {
  state.streak = moved_replicas > 0 && gain >= policy.min_gain() ? state.streak + 1 : 0;
  if (state.streak < policy.hysteresis_windows()) return false;
  state.streak = 0;
  state.cooldown = policy.cooldown_windows();
  return true;
}

void OnMigrationFailed(const types::Policy& policy, AutoRebalanceState& state, int moved_replicas) {
  ++state.failed_streak;
  state.failed_moves = moved_replicas;
  state.cooldown = std::max(1, policy.cooldown_windows()) << std::min(state.failed_streak, 6);
  state.declined.reset();
}

void OnMigrationCommitted(AutoRebalanceState& state) {
  state.failed_streak = 0;
  state.declined.reset();
}

int BackoffMoveLimit(const types::Policy& policy, const AutoRebalanceState& state) {
  if (state.failed_streak == 0) return 0;  // the policy's budget
  int limit = std::max(1, state.failed_moves >> state.failed_streak);
  if (policy.max_moves() > 0) limit = std::min(limit, policy.max_moves());
  return limit;
}

absl::StatusOr<placement::Placement> PlanWithPolicy(const types::Policy& policy, const placement::Placement& committed,
                                                    const placement::LoadMatrix& load,
                                                    const placement::Constraints& constraints, int max_moves) {
  placement::PlanRequest request{committed.topology, load, &committed, constraints, {}};
  request.options.min_gain_per_move = policy.min_gain_per_move();
  request.options.noise_z = policy.noise_z();
  const int budget = max_moves == kNoMoveLimit ? 0 : (max_moves > 0 ? max_moves : policy.max_moves());
  request.options.max_moves = budget > 0 ? budget : -1;
  SY_ASSIGN_OR_RETURN(auto planner, placement::CreatePlanner(policy.planner()));
  return planner->Plan(request);
}

double StepCost(const placement::Placement& p, const placement::LoadMatrix& load) {
  double cost = 0;
  for (int i = 0; i < load.num_layers(); ++i) {
    const placement::LayerPlacement* layer = p.FindLayer(load.layer_ids[i]);
    if (layer == nullptr) continue;
    const auto ranks = placement::RankLoads(*layer, load.values[i]);
    cost += *std::max_element(ranks.begin(), ranks.end());
  }
  return cost;
}

bool LoadWithinNoise(const placement::LoadMatrix& a, const placement::LoadMatrix& b, bool totals) {
  if (a.layer_ids != b.layer_ids || a.values.size() != b.values.size()) return false;
  for (size_t i = 0; i < a.values.size(); ++i) {
    const std::vector<double>&x = a.values[i], &y = b.values[i];
    if (x.size() != y.size()) return false;
    double sx = 0, sy = 0;
    for (size_t e = 0; e < x.size(); ++e) {
      sx += x[e];
      sy += y[e];
    }
    if (totals && !(std::abs(sx - sy) <= kReplanNoiseZ * std::sqrt(sx + sy))) return false;
    if (sx <= 0 || sy <= 0) {
      if (!(sx == sy)) return false;
      continue;  // both empty
    }
    // The shape: two samples of one distribution give sum_e d_e^2 with
    // d_e = (x_e sqrt(sy/sx) - y_e sqrt(sx/sy)) / sqrt(x_e + y_e), chi-square with (experts with
    // load - 1) degrees of freedom; and no single expert's d_e beyond kReplanCellZ (one
    // expert's burst is diluted in the sum over all of them).
    const double fx = std::sqrt(sy / sx), fy = std::sqrt(sx / sy);
    double chi2 = 0;
    int cells = 0;
    for (size_t e = 0; e < x.size(); ++e) {
      if (!(x[e] + y[e] > 0)) continue;
      const double d = (x[e] * fx - y[e] * fy) / std::sqrt(x[e] + y[e]);
      if (!(std::abs(d) <= kReplanCellZ)) return false;
      chi2 += d * d;
      ++cells;
    }
    const double df = std::max(1, cells - 1);
    if (!(chi2 <= df + kReplanNoiseZ * std::sqrt(2 * df))) return false;  // (NaN is never within)
  }
  return true;
}

namespace {

bool StillDeclined(const DeclinedPlan& d, const types::Policy& policy, const placement::Placement& committed,
                   const placement::LoadMatrix& load, const placement::Constraints& constraints, int move_limit) {
  return d.move_limit == move_limit && d.constraints.pins == constraints.pins &&
         d.constraints.drained_ranks == constraints.drained_ranks &&
         google::protobuf::util::MessageDifferencer::Equals(d.policy, policy) &&
         LoadWithinNoise(d.load, load, /*totals=*/true) &&
         d.committed == committed;
}

}  // namespace

absl::StatusOr<std::optional<WindowPlan>> AutoRebalanceWindow(const types::Policy& policy, AutoRebalanceState& state,
                                                              const placement::Placement& committed,
                                                              const placement::LoadMatrix& load,
                                                              const placement::Constraints& constraints,
                                                              bool migration_in_flight) {
  if (!ShouldPlan(state) || !policy.auto_rebalance() || migration_in_flight) return std::nullopt;
  const int move_limit = BackoffMoveLimit(policy, state);
  if (state.declined && StillDeclined(*state.declined, policy, committed, load, constraints, move_limit)) {
    state.streak = 0;  // as the declined plan left it
    return std::nullopt;
  }
  WindowPlan plan;
  SY_ASSIGN_OR_RETURN(plan.placement, PlanWithPolicy(policy, committed, load, constraints, move_limit));
  plan.moved_replicas = placement::MovedReplicas(committed, plan.placement);
  const double before = StepCost(committed, load), after = StepCost(plan.placement, load);
  plan.gain = after > 0 ? before / after - 1 : 0;
  plan.publish = ShouldPublish(policy, state, plan.moved_replicas, plan.gain);
  if (plan.publish) {
    state.declined.reset();
  } else if (plan.moved_replicas == 0 || plan.gain < kDeclineBand * policy.min_gain()) {
    state.declined = DeclinedPlan{load, committed, constraints, policy, move_limit};
  } else {
    state.declined.reset();  // close to min_gain: the next window's noise may carry it over
  }
  return plan;
}

}  // namespace switchyard::coordinator
