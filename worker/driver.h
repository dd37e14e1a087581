// Driver: runs steps of a workload through the MoE layers on every rank and reports what
// happened (the engine of switchyard-worker; tests run it on in-process ranks too).
//
// A step: each rank generates its tokens' hidden states, then for every MoE layer its router
// logits, runs MoeLayer::Forward and adds the result (residual): h = h + MoE(h).
//
// output_checksum: sum over steps and tokens of a hash of (step, global token id, the token's
// final hidden state), so it does not depend on how tokens were split over ranks: the same
// workload on R ranks of T tokens and on 1 rank of R*T tokens gives the same checksum, for
// any valid placement and backend — and with or without migrations during the run.
//
// Every step ends with one exchange (AllGather) of each rank's figures: wall and busy time,
// communication time, migration CPU, its epoch vote (worker/migration.h) and the pairs it
// computed per layer. From it every rank derives the same step time, critical path,
// per-step balancedness and epoch decision.
//
// Critical path of a step: for each MoE layer, the busiest rank's busy time (the layer's
// all-to-alls make every rank wait for it) plus the least communication wall time of any
// rank in that layer; summed over layers; plus the most migration CPU any rank spent in the
// step. Ranks here share cores, so wall time hides imbalance; busy time is each rank's own
// thread CPU time outside communication calls, and the least waiting rank's communication
// time approximates the transfers themselves.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "placement/routing.h"
#include "worker/migration.h"
#include "model/model.h"
#include "worker/moe_layer.h"
#include "worker/weights.h"
#include "worker/workload.h"

namespace switchyard::worker {

// One load window of this rank: steps [first_step, end_step), the per-(layer, expert) counts.
struct LoadWindow {
  int64_t first_step = 0, end_step = 0;
  int64_t epoch = 0;
  std::vector<LayerCounts> counts;  // in the order of WeightStore::layer_ids()
  // Per layer: per-step balancedness over the window's steps, median and 1st percentile.
  std::vector<std::pair<double, double>> step_balance;
  std::vector<double> step_ms;  // each step's wall time (the slowest rank's)
  // Bytes this rank sent in the window's all-to-alls, to its own node's ranks and to others.
  int64_t alltoall_bytes_intra_node = 0, alltoall_bytes_inter_node = 0;
};

struct DriverOptions {
  int steps = 100;
  int64_t tokens_per_rank = 512;
  int log_every = 20;                          // rank 0 prints a line every N steps (0: never)
  std::function<void(const std::string&)> log{};  // where rank 0's lines go (null: nowhere)
  // Every `window_steps` steps (0: never) each rank hands its load window to on_window (the
  // control thread's queue: it must not block). After every step, on_step(steps done, epoch).
  int window_steps = 0;
  std::function<void(LoadWindow)> on_window{};
  // Ranks per node (placement's node blocks), to split all-to-all bytes by link class (0: one node).
  int ranks_per_node = 0;
  std::function<void(int64_t, int64_t)> on_step{};
  // Each rank writes PREFIX.rank<ORIGIN>.csv (ORIGIN: the token stream it serves, its rank
  // unless the job regrouped): one line per step it did — step, epoch, wall/busy/comm/migration
  // ms, migrating, origin, output_hash (TokenHash summed over its tokens: the step's outputs),
  // done_unix_s (when the step's exchange returned), pairs (it computed, all layers).
  std::string step_log{};
  // Threads of this rank's CPU kernels (the grouped FFN); no output bit depends on it.
  int cpu_threads = 1;
  // Polled once per step (null: never): when it returns true on any rank, every rank ends the
  // run after the same step (the request travels in the step's exchange), the last partial
  // load window is handed over, and the report says stopped_early.
  std::function<bool()> stop_requested{};
  // Polled once per step (null: never): when it returns true on any rank, every rank ends
  // after the same step and Run returns Aborted with kRegroupMessage (a joined job's
  // membership changes at a step boundary: a newcomer, a removal); Run(progress) continues.
  std::function<bool()> regroup_requested{};
  // The token stream this rank serves: its tokens are global ids origin * tokens_per_rank + t
  // (-1: its rank). A joined job's workers keep theirs when ranks change.
  int origin = -1;
};

// Writes PREFIX.rank<ORIGIN>.csv (DriverOptions::step_log) from what a run did so far; Run
// calls it at the end, a worker leaving a joined job early (removed) calls it itself.
absl::Status WriteStepLog(const std::string& prefix, int64_t origin, const struct RunProgress& progress);

// Run's message when the ranks agreed to regroup (DriverOptions::regroup_requested).
inline constexpr char kRegroupMessage[] = "the ranks agreed to regroup after this step";

// What a run has done so far, kept by the caller across communicators: a joined job's
// survivors (a rank lost) or members (a newcomer, a removal) regroup and call Run again with
// it. A step counts as done on a rank once its step exchange returned there; after a loss the
// ranks may differ by one step, so the new generation starts at the lowest (`resume_step`)
// and a rank re-runs a step it already did without counting it twice (its outputs are the
// same bits: they do not depend on the placement or the rank count).
struct RunProgress {
  int resume_step = 0;     // where the next Run starts (set by the caller after a regroup)
  int first_step = -1;     // the first step this rank ran (a newcomer starts late)
  int next_step = 0;       // steps before it are done on this rank
  bool stopped = false;    // a stop was agreed (stop_requested)
  int regroups = 0;        // the caller counts them: the run's ranks changed
  bool conserved = true;   // every done step: pairs processed == pairs chosen, per layer, over the ranks
  uint64_t checksum = 0;   // this rank's part of the output checksum
  std::vector<double> step_ms, critical_ms, migration_ms;  // per done step
  std::vector<bool> migrating_step;
  std::vector<std::vector<double>> step_balance;           // per layer, per done step
  std::vector<std::pair<int, double>> worst_balancedness_by_step;
  std::vector<LayerCounts> whole;                           // counts of the done steps
  std::vector<MigrationRecord> migrations;                  // of earlier generations
  std::string step_log{};
};

struct LayerReport {
  int layer = 0;
  double balancedness = 1;             // mean / max over ranks of pairs processed, whole run
  // Per step (mean / max over ranks of the step's pairs): the median, and the value 99% of
  // steps reach ("p99", the 1st percentile: balancedness is better when higher).
  double step_balancedness_p50 = 1, step_balancedness_p99 = 1;
  std::vector<int64_t> expert_tokens;  // pairs per expert, summed over ranks and steps
  std::vector<double> balancedness_by_step;  // per step this rank counted (the report's plots)
};

// One rank's time per step in each phase (ms, averaged over the run's steps): gate, dispatch,
// ffn, combine (wall, waiting included), busy (its CPU time outside communication), comm.
struct RankPhases {
  double gate = 0, dispatch = 0, ffn = 0, combine = 0, busy = 0, comm = 0;
};

struct RunReport {
  int ranks = 0, steps = 0, top_k = 0;  // steps: run (fewer than asked when stopped early)
  int experts = 0;                       // the model's routed experts per layer
  bool stopped_early = false;
  int64_t tokens_per_rank = 0;
  double tokens_per_s = 0;
  double step_ms_p50 = 0, step_ms_p90 = 0, step_ms_p99 = 0, step_ms_max = 0;
  double phase_ms_gate = 0, phase_ms_dispatch = 0, phase_ms_ffn = 0, phase_ms_combine = 0;  // per step, slowest rank
  std::vector<RankPhases> rank_phase_ms;  // per rank
  // Work per step, for speed-of-light fractions: bytes a rank's dispatch and combine exchanges
  // carry (measured, mean over ranks, all layers, itself included: dispatch one row per
  // (token, destination rank), combine one per pair), and the FFN FLOPs of the busiest rank.
  double dispatch_bytes = 0, combine_bytes = 0, ffn_flops = 0;
  double dispatch_meta_bytes = 0;  // each pair's (slot, row index), 8 bytes
  std::vector<LayerReport> layers;
  uint64_t output_checksum = 0;
  // processed == chosen per (layer, expert) over all ranks and steps; after a regroup (the
  // lost rank's counts are gone) per layer in every step instead.
  bool tokens_conserved = false;
  std::string model, backend, placement_policy, workload;
  std::string shares = "epoch";  // ShareModeName of the run
  // Where the layers ran (DeviceName), the kernel path (LayerDevice::KernelName: on the CPU
  // kernels::FfnKernelName) and the CPU threads per rank the FFN ran on (0 on a GPU).
  std::string device = "cpu";
  std::string cpu_isa;
  int cpu_threads = 1;

  // Critical path (see above): tokens/s and step times; `steady` steps ran with no
  // migration, `migration` steps from a migration's start to its first step after the switch.
  double critical_tokens_per_s = 0, critical_step_ms_p50 = 0, critical_step_ms_p99 = 0;
  double critical_steady_ms_p99 = 0, critical_migration_ms_p99 = 0;
  double critical_migration_work_ms_p99 = 0;  // over migration steps: the most migration CPU any rank did
  int migration_steps = 0;
  std::vector<double> critical_step_ms;  // per step
  std::vector<MigrationRecord> migrations;
  std::vector<std::pair<int, double>> worst_balancedness_by_step;  // [step, worst-layer value]
  // At the end: the epoch, how many replicas each rank holds, and whether every replica of
  // each (layer, expert) has the same bytes on every rank (migrated ones included).
  int64_t final_epoch = 0;
  placement::Placement final_placement;
  std::vector<int> held_replicas;
  bool weights_identical = false;
  int replicas_checked = 0;

  std::string ToJson() const;
};

class Driver {
 public:
  Driver(const model::ModelConfig& model, comm::Communicator& comm, const Workload& workload, WeightStore& weights,
         std::shared_ptr<const placement::RoutingTable> table, DriverOptions options);
  // The same with the layers on `device` (CreateLayerDevice): a device other than the CPU
  // keeps the hidden states there for the whole step (the workload's are uploaded, the
  // outputs downloaded once per step for the checksum). options.cpu_threads is then unused.
  Driver(const model::ModelConfig& model, comm::Communicator& comm, const Workload& workload, WeightStore& weights,
         std::shared_ptr<const placement::RoutingTable> table, DriverOptions options, std::unique_ptr<LayerDevice> device);

  // Runs the steps; every rank returns the same report. With `progress` (kept by the caller)
  // it starts at progress->resume_step and records what it did there, so that a run that
  // failed (a lost rank: Aborted, DeadlineExceeded, Internal from the communicator) or agreed
  // to regroup can continue on a new communicator.
  absl::StatusOr<RunReport> Run(RunProgress* progress = nullptr);
  MoeLayer& layer() { return layer_; }
  // Live rebalancing: the epoch manager of this rank (built on layer()) and where its orders
  // come from (polled at every step boundary). Without one the placement never changes.
  void set_epochs(EpochManager* epochs, std::function<std::optional<control::Orders>()> poll_orders = nullptr) {
    epochs_ = epochs;
    poll_orders_ = std::move(poll_orders);
  }

 private:
  absl::Status CheckWeights(RunReport& report);

  model::ModelConfig model_;
  comm::Communicator& comm_;
  const Workload& workload_;
  WeightStore& weights_;
  DriverOptions options_;
  MoeLayer layer_;
  EpochManager* epochs_ = nullptr;
  std::function<std::optional<control::Orders>()> poll_orders_;
};

// A fast 64-bit hash of bytes, 8 at a time (weights comparison).
uint64_t HashBytes(const void* data, size_t bytes);
// One token's contribution to the order-free output checksum; a rank's step log records the
// sum over its tokens per step (output_hash), which names each step's outputs on that rank.
uint64_t TokenHash(uint64_t step, uint64_t global_token, const float* hidden, int64_t width);

}  // namespace switchyard::worker
