// The rebalance policy (types.v1.Policy): its defaults, the ranges each setting must lie in,
// and the automatic rebalancer's decision at each complete load window. Pure: shared by the
// coordinator, its state store, the CLI's checks and the simulator (sim/), which therefore
// plan, gate and back off exactly as the live coordinator does.
#pragma once

#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "placement/load.h"
#include "placement/placement.h"
#include "switchyard/types/v1/types.pb.h"

namespace switchyard::coordinator {

switchyard::types::v1::Policy DefaultPolicy();
// InvalidArgument naming the first setting out of range.
absl::Status ValidatePolicy(const switchyard::types::v1::Policy& policy);

// An automatic plan found clearly not worth publishing (no move, or a gain below
// kDeclineBand x min_gain): what it was planned from. The planners are deterministic, so a
// search from the same placement under the same policy, constraints and move limit, on a
// planning load within its sampling noise of this one (LoadWithinNoise), is not run again:
// a heuristic (such a load is expected to give a similar plan, still far from min_gain), not
// a proof. A plan declined closer to min_gain is planned again each window: noise may carry
// the next one over.
inline constexpr double kDeclineBand = 0.5;
struct DeclinedPlan {
  placement::LoadMatrix load;
  placement::Placement committed;
  placement::Constraints constraints;
  switchyard::types::v1::Policy policy;
  int move_limit = 0;
};

// The automatic rebalancer's state between load windows.
struct AutoRebalanceState {
  int streak = 0;    // windows in a row whose plan promised at least min_gain
  int cooldown = 0;  // windows to wait before planning again
  // Migrations that failed in a row since the last commit, and the moves of the last one.
  int failed_streak = 0;
  int failed_moves = 0;
  // The last declined plan's inputs, until a plan is published or a migration ends.
  std::optional<DeclinedPlan> declined;
};

// Planning loads that differ by no more than sampling noise (the loads are counts: the
// aggregator scales them to the pairs of its smoothing horizon), per layer: with `totals`,
// the totals within kReplanNoiseZ Poisson standard deviations (the planner's noise gates read
// absolute counts, and the planning load grows over the smoothing horizon's first windows,
// when a window's shape is still a noisy estimate: AutoRebalanceWindow always checks them);
// the two-sample chi-square statistic of
// homogeneity over the experts with load within kReplanNoiseZ standard deviations of its mean
// under pure noise; and no single expert's standardised difference beyond kReplanCellZ. Also
// the same layers and experts; NaN is never within noise.
inline constexpr double kReplanNoiseZ = 3.0;
inline constexpr double kReplanCellZ = 5.0;
bool LoadWithinNoise(const placement::LoadMatrix& a, const placement::LoadMatrix& b, bool totals);

// A migration of `moved_replicas` failed: the same plan would likely fail the same way. Each
// failure in a row doubles the wait before the next automatic plan (up to 64x the cooldown)
// and halves the moves it may plan (BackoffMoveLimit).
void OnMigrationFailed(const switchyard::types::v1::Policy& policy, AutoRebalanceState& state, int moved_replicas);
// A migration committed: back to the policy's pace and budget.
void OnMigrationCommitted(AutoRebalanceState& state);
// The move limit for the next automatic plan: 0 (the policy's budget) unless migrations failed
// in a row, then half the last failed one's moves per failure (at least 1, at most max_moves).
int BackoffMoveLimit(const switchyard::types::v1::Policy& policy, const AutoRebalanceState& state);

// Whether to plan at this window: false while cooling down (the window counts towards it).
bool ShouldPlan(AutoRebalanceState& state);

// A plan for this window moves `moved_replicas` and is predicted to cut the step time by
// `gain` (before / after - 1): true when it is to be published (min_gain held for
// hysteresis_windows windows in a row; the cooldown then starts). Pure; the coordinator and
// the simulator call the same function.
bool ShouldPublish(const switchyard::types::v1::Policy& policy, AutoRebalanceState& state, int moved_replicas, double gain);

// Move limits for PlanWithPolicy: kPolicyMoveBudget is the policy's max_moves; kNoMoveLimit
// none (the forced moves of pins and drains, which the planner keeps to what the constraints
// need plus worthwhile moves); > 0 that many replicas.
inline constexpr int kPolicyMoveBudget = 0;
inline constexpr int kNoMoveLimit = -1;

// Plans from `committed` under `load` (planning load, token counts) with the policy's planner
// and settings (min_gain_per_move, noise_z) and the move limit above. Errors: the planner's.
absl::StatusOr<placement::Placement> PlanWithPolicy(const switchyard::types::v1::Policy& policy,
                                                    const placement::Placement& committed,
                                                    const placement::LoadMatrix& load,
                                                    const placement::Constraints& constraints, int max_moves);

// A step's time in load units: the sum over load layers of the most loaded rank (layers the
// placement lacks are skipped). The automatic rebalancer's gain is StepCost(before) /
// StepCost(after) - 1.
double StepCost(const placement::Placement& placement, const placement::LoadMatrix& load);

// The automatic rebalancer's plan at one complete load window.
struct WindowPlan {
  placement::Placement placement;
  int moved_replicas = 0;
  double gain = 0;       // predicted step time before / after - 1
  bool publish = false;  // ShouldPublish's verdict: publish it as the next epoch
};

// What the coordinator does at each complete window: counts the window against the cooldown
// (ShouldPlan), then, when automatic rebalancing is on and no migration is in flight, plans
// from `committed` within the back-off move limit and decides whether to publish. nullopt
// when it does not plan, also when the last declined plan's inputs still hold (DeclinedPlan:
// the window counts as declined again, without the search). Errors: the planner's (the caller reports them; state is updated as
// for a window without a plan).
absl::StatusOr<std::optional<WindowPlan>> AutoRebalanceWindow(const switchyard::types::v1::Policy& policy,
                                                              AutoRebalanceState& state,
                                                              const placement::Placement& committed,
                                                              const placement::LoadMatrix& load,
                                                              const placement::Constraints& constraints,
                                                              bool migration_in_flight);

}  // namespace switchyard::coordinator
