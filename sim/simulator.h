// The cluster simulator (DESIGN.md module map: sim/ -> {placement, coordinator's policy}):
// replays an expert-load trace on R simulated ranks on N nodes, step by step, with the
// coordinator's own load aggregation (LoadAggregator), automatic rebalancer
// (AutoRebalanceWindow: planner, min_gain, hysteresis, cooldown, move budget and back-off),
// and transfer planning (placement::PlanTransfers); migrations move at the worker's per-step
// byte budget and switch all ranks at one step; a lost rank regroups the placement with the
// workers' own placement::RegroupPlacement. Step times come from the cost model.
//
// Deterministic: the same options and trace give the same result bits (randomness only
// from the seed, SplitMix64). Single-threaded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model.h"
#include "placement/load.h"
#include "placement/scenario.h"
#include "sim/cost_model.h"
#include "switchyard/types/v1/types.pb.h"

namespace switchyard::sim {

// A rank lost at the start of a step: the step stalls for detection and the regroup, then
// re-runs on the survivors.
struct RankLoss {
  int rank = 0;
  int step = 0;
};

struct SimOptions {
  model::ModelConfig model;
  Hardware hardware;
  int ranks = 0, nodes = 1, slots_per_rank = 0;
  int steps = 0;
  double tokens_per_rank = 128;  // tokens each rank routes per step and layer
  // Steps per trace window; 0 spreads the trace's windows evenly over the steps.
  int window_steps = 0;
  // Steps per load window the workers report to the coordinator (worker --window-steps).
  int report_steps = 5;
  bool dedup = false;  // dispatch sends a token once per destination rank
  int max_moves = 0;   // the policy's move budget per plan (types.v1.Policy max_moves; 0: none)
  uint64_t seed = 1;
  std::optional<RankLoss> loss;
  // Collapse bursts over steps on top of the trace (placement/scenario.h; hot experts drawn
  // from the seed), at most 16.
  std::vector<placement::Burst> bursts;
  bool keep_layers = false;  // keep per-layer costs in each StepRecord
  // The placement every policy starts from (e.g. `switchyard plan` output); null: EPLB's
  // global policy on the first window's expected load. Must match the ranks, nodes, slots,
  // experts, and hold every trace layer.
  const placement::Placement* start = nullptr;
};

// The policies `--policy` / `--compare` name, as the coordinator's Policy: "static" (no
// rebalancing), "eplb" (EPLB from scratch at every window, published whenever it moves
// anything and does not predict a slower step), "incremental" (the coordinator's default
// policy with automatic rebalancing on). InvalidArgument listing them for another name.
absl::StatusOr<switchyard::types::v1::Policy> SimPolicy(const std::string& name);
std::vector<std::string> SimPolicyNames();

struct StepRecord {
  int step = 0;
  int64_t epoch = 0;          // the placement epoch the step ran under
  double seconds = 0;         // the step: sum over layers (plus a loss's stall)
  LayerCost phases;           // gate, dispatch, ffn, combine, overhead summed over layers
  double balancedness_min = 1, balancedness_mean = 1;  // over layers, of pairs per rank
  int critical_layer = 0;     // model layer id of the slowest layer
  int critical_rank = 0;      // its critical rank (numbered among the ranks in the step: after a loss, the survivors')
  Phase dominant = Phase::kFfn;  // its dominant phase
  double intra_bytes = 0, inter_bytes = 0;  // all layers, dispatch + combine + migration
  double migration_progress = -1;           // bytes moved / bytes of the migration in flight; -1: none
  double stall_seconds = 0;                 // a loss's detection, regroup and reload
  std::vector<LayerCost> layers;            // with keep_layers, in trace layer order
};

// A load shift (the distribution a step draws from moves: mean total-variation distance over
// layers >= 0.1; a burst starting or ending counts) or a lost rank, and how long the policy
// took to recover from it: the steps until the mean balancedness over layers is at least 0.95
// of what EPLB planned from scratch for the new distribution reaches (on its expected load),
// before the next event.
struct Recovery {
  int step = 0;
  std::string event;       // "shift" or "loss"
  double target = 0;       // the balancedness to reach
  int steps = -1;          // -1: not recovered before the next event or the run's end
  double seconds = 0;      // simulated time of the `steps` steps before the recovered one (0: not recovered)
};

struct PolicyResult {
  std::string policy;
  std::vector<StepRecord> steps;
  double tokens_per_s = 0;
  double step_p50 = 0, step_p99 = 0, step_mean = 0;  // seconds
  // Committed migrations: what they moved.
  int moved_replicas = 0;
  double moved_bytes = 0;
  int migrations = 0;
  int plans = 0;          // published (committed, dropped by a loss, or in flight at the end)
  std::vector<Recovery> recoveries;
  double balancedness_mean = 0;  // over steps and layers
};

// The trace: windows of expert load (counts or any nonnegative weights; each is normalised to
// a distribution per layer), all with the same layers and experts.
struct Trace {
  std::vector<placement::LoadMatrix> windows;
};

// Checks options against the trace: model experts = trace experts, trace layers among the
// model's MoE layers, R divisible by N, enough slots, sizes in range. InvalidArgument naming
// the problem.
absl::Status ValidateSim(const SimOptions& options, const Trace& trace);

absl::StatusOr<PolicyResult> Simulate(const SimOptions& options, const Trace& trace, const std::string& policy);

}  // namespace switchyard::sim
