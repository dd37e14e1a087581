// The rebalance policy (types.v1.Policy): its defaults and the ranges each setting must lie
// in. Pure: shared by the coordinator, its state store, and the CLI's checks.
#pragma once

#include "absl/status/status.h"
#include "switchyard/types/v1/types.pb.h"

namespace switchyard::coordinator {

switchyard::types::v1::Policy DefaultPolicy();
// InvalidArgument naming the first setting out of range.
absl::Status ValidatePolicy(const switchyard::types::v1::Policy& policy);

// The automatic rebalancer's state between load windows.
struct AutoRebalanceState {
  int streak = 0;    // windows in a row whose plan promised at least min_gain
  int cooldown = 0;  // windows to wait before planning again
  // Migrations that failed in a row since the last commit, and the moves of the last one.
  int failed_streak = 0;
  int failed_moves = 0;
};

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

}  // namespace switchyard::coordinator
