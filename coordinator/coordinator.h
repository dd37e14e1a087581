// Coordinator: the control plane's state and logic (DESIGN.md section 5), behind the gRPC
// services (service.h) and testable without them.
//
// Owns: the job (model shape, topology, ranks), workers (registration, heartbeats, health),
// the committed placement and its epoch, the target epoch being published, constraints (pins,
// drains), the rebalance policy, load aggregation (windows, smoothed per-(layer, expert)
// load, measured balancedness), an event log for watchers, and metrics counters.
//
// Thread-safe: every public method takes the lock; WaitEvents blocks without it. Every
// mutation either fully applies (and is persisted when the state is durable) or returns an
// error naming the problem with the state unchanged.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/events.h"
#include "coordinator/histogram.h"
#include "coordinator/load_aggregator.h"
#include "coordinator/membership.h"
#include "coordinator/policy.h"
#include "coordinator/rendezvous.h"
#include "coordinator/state_store.h"
#include "placement/load.h"
#include "placement/placement.h"
#include "switchyard/admin/v1/admin.pb.h"
#include "switchyard/control/v1/control.pb.h"
#include "switchyard/types/v1/types.pb.h"

namespace switchyard::coordinator {

namespace types = switchyard::types::v1;
namespace control = switchyard::control::v1;
namespace admin = switchyard::admin::v1;

struct CoordinatorOptions {
  std::string state_dir{};                             // empty: nothing persisted
  absl::Duration heartbeat_timeout = absl::Seconds(2);  // after this without a heartbeat a worker is lost (workers send one every 250 ms)
  // The time of heartbeats, reports, events and loss detection (null: absl::Now). Tests
  // inject a fake clock instead of sleeping; waits (long polls, event streams) use real time.
  std::function<absl::Time()> clock{};
};

class Coordinator {
 public:
  // Restores the persisted state from options.state_dir if there is one (error if it is
  // unreadable or malformed: a coordinator must not silently forget pins and drains). The
  // directory is locked (state_dir/lock, flock) for the coordinator's lifetime: a second
  // coordinator on it is refused with InvalidArgument naming the holder's pid.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorOptions& options);

  // Control API.
  absl::StatusOr<control::RegisterResponse> Register(const control::RegisterRequest& request);
  absl::StatusOr<control::HeartbeatResponse> Heartbeat(const control::HeartbeatRequest& request);
  absl::Status ReportLoad(const control::LoadReport& report);
  // Waits up to request.wait_ms for orders newer than request.epoch.
  absl::StatusOr<control::Orders> PollOrders(const control::PollOrdersRequest& request);
  absl::Status Leave(const control::LeaveRequest& request);
  // The committed placement for a job of the request's shape (found = false and a reason
  // when there is none or the shape differs). A job that then registers with exactly that
  // placement and epoch continues it under its new job id ("job_resumed"): pins, drains,
  // policy and epoch are kept; a migration in flight for the old job is dropped.
  absl::StatusOr<control::ResumeResponse> Resume(const control::ResumeRequest& request);

  // Writes the state now (it is written on every change anyway) and records why, e.g. a
  // SIGUSR1 time-limit warning or a stop. No-op without a state directory.
  absl::Status Checkpoint(const std::string& why);
  // A worker's migration phase: the first "started" of an epoch is an event, "committed"
  // commits the target, "aborted" and "refused" drop it (the cluster stays on the committed
  // epoch).
  absl::Status ReportMigration(const control::MigrationReport& report);

  // Admin API.
  admin::ClusterStatus Status();
  absl::StatusOr<types::Placement> GetPlacement(std::optional<int> layer);
  absl::StatusOr<admin::GetLoadResponse> GetLoad(std::optional<int> layer);
  absl::StatusOr<admin::RebalanceResponse> Rebalance(bool dry_run, int max_moves);
  absl::StatusOr<admin::ConstraintsResponse> Pin(const types::Pin& pin);
  absl::StatusOr<admin::ConstraintsResponse> Unpin(const types::Pin& pin);
  // remove: retire the rank from a joined job (the others regroup without it, Rendezvous).
  absl::StatusOr<admin::ConstraintsResponse> Drain(int rank, bool remove = false);
  absl::StatusOr<admin::ConstraintsResponse> Undrain(int rank);
  types::Policy GetPolicy();
  absl::StatusOr<types::Policy> SetPolicy(const types::Policy& policy);

  // Events after `after_seq`, waiting up to `timeout` for one to arrive.
  std::vector<admin::Event> WaitEvents(int64_t after_seq, absl::Duration timeout);
  // Wakes every waiter (shutdown).
  void StopWaiters();

  // Marks workers without a heartbeat for heartbeat_timeout as lost (called periodically); a
  // joined job's lost members make the others regroup without them.
  void Tick();
  // Where workers started without a launcher meet (Join, Exchange) and regroup.
  Rendezvous& rendezvous() { return rendezvous_; }
  // Prometheus text exposition of the metrics.
  std::string MetricsText();

  // The dashboard's history (bounded: the newest kHistoryWindows windows, kHistoryMigrations
  // migrations).
  struct BalanceSample {
    int64_t window = 0;                 // complete windows so far when measured
    int64_t unix_ms = 0;
    std::vector<double> per_layer;      // measured balancedness, in the model's layer order
  };
  struct MigrationSpan {
    int64_t epoch = 0;
    std::string state;                  // "in_flight", "committed", "aborted", "refused", "abandoned" (the job ended)
    int64_t published_ms = 0, started_ms = -1, ended_ms = -1;  // unix ms (-1: not yet)
    int moved_replicas = 0;
    int64_t bytes = 0, done_bytes = 0;  // bytes: known once started
    double seconds = 0;                 // committed: the migration's duration as the ranks measured it
    std::string why, error;
  };
  static constexpr size_t kHistoryWindows = 2000, kHistoryMigrations = 200;
  std::vector<BalanceSample> BalanceHistory();
  std::vector<MigrationSpan> MigrationHistory();
  // The model's MoE layer ids (empty before a job).
  std::vector<int> Layers();
  const std::string& id() const { return id_; }

 private:

  explicit Coordinator(const CoordinatorOptions& options);
 public:
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

 private:
  absl::Time Now() const { return options_.clock ? options_.clock() : absl::Now(); }
  absl::Status RestoreLocked();
  PersistedState StateLocked() const;
  absl::Status PersistLocked();
  void EventLocked(const std::string& kind, const std::string& message, int rank = -1, int64_t epoch = -1);
  absl::Status RequireJobLocked() const;
  absl::Status ValidateReportLocked(const control::LoadReport& report) const;
  // The newest epoch a worker may name: the last one published (in flight, committed or aborted).
  int64_t LatestEpochLocked() const;
  // Completes every pending window that no rank still owes.
  void CompleteWindowsLocked();
  placement::LoadMatrix PlanningLoadLocked() const;
  // The job's --shares mode from its workers' registrations: "epoch", "step", "mixed", or ""
  // before any.
  std::string SharesLocked() const;
  // Plans from the committed placement under `constraints`, moving at most `max_moves`
  // replicas (PlanWithPolicy: kPolicyMoveBudget, kNoMoveLimit or a count).
  // The automatic rebalancer's move limit for its next plan: 0 (the policy's budget) unless
  // migrations failed in a row, then half the last failed one's moves per failure.
  int BackoffMoveLimitLocked() const;
  absl::StatusOr<admin::RebalanceResponse> PlanLocked(const placement::Constraints& constraints, int max_moves);
  // The admin view of a plan: target epoch, moves, balancedness before and after under `load`,
  // and the moves EPLB from scratch would make.
  absl::StatusOr<admin::RebalanceResponse> DescribePlanLocked(const placement::Placement& planned,
                                                              const placement::LoadMatrix& load,
                                                              const placement::Constraints& constraints) const;
  // Publishes `plan` as the target epoch. Only one target is in flight at a time: workers
  // migrate from the committed epoch to it, and a target is never replaced before it commits
  // (workers may be copying its replicas).
  absl::Status PublishLocked(const admin::RebalanceResponse& plan, const std::string& why);
  bool MigrationInFlightLocked() const { return target_.has_value(); }
  // The workers run `epoch` (heartbeat, registration, leave): the target commits once one of
  // them is there (ranks switch together, DESIGN.md section 5). A deferred re-plan follows.
  void ObserveWorkerEpochLocked(int64_t epoch, int rank, const std::string& how = "");
  void EvaluateAutoRebalanceLocked();
  placement::Constraints ConstraintsLocked() const;
  admin::ConstraintsResponse ConstraintsResponseLocked() const;
  // Applies a constraint change: re-plans (forced moves) and publishes, or fails unchanged.
  absl::StatusOr<admin::ConstraintsResponse> ChangeConstraintsLocked(placement::Constraints next, const std::string& what);

  CoordinatorOptions options_;
  int state_lock_fd_ = -1;
  std::vector<std::pair<double, double>> step_balance_;  // per layer: p50, p99 of the last reported window  // flock on state_dir/lock while this coordinator owns the directory
  std::string id_;
  std::mutex mu_;
  std::condition_variable state_cv_;  // notified with every event: long polls wait on it
  bool stopping_ = false;

  // The job (set by the first registration, or restored).
  std::optional<types::ModelShape> model_;
  std::string job_id_;
  std::optional<placement::Placement> committed_;
  int64_t committed_epoch_ = 0;
  std::optional<placement::Placement> target_;  // set while a migration is in flight
  int64_t target_epoch_ = 0;
  bool replan_pending_ = false;  // constraints changed during a migration: plan after it commits
  int target_scratch_moves_ = -1;
  uint64_t target_nonce_ = 0;
  bool target_started_ = false;
  std::vector<control::Transfer> transfers_;
  std::vector<types::Pin> pins_;
  std::vector<int> drained_;
  types::Policy policy_;

  Membership members_;
  // Joined jobs (--world-size workers): the job key and the membership generation registered.
  std::string job_key_;
  int64_t generation_ = 0;
  int64_t workers_lost_total_ = 0, regroups_total_ = 0;
  std::optional<std::chrono::steady_clock::time_point> last_tick_;  // real time of the last Tick
  Rendezvous rendezvous_;
  LoadAggregator load_;
  // The automatic rebalancer: hysteresis streak, cooldown and back-off after failed migrations.
  AutoRebalanceState auto_;

  EventLog events_;
  int64_t reports_rejected_ = 0;
  int64_t plans_published_ = 0;
  int64_t moved_replicas_total_ = 0;
  int64_t migrations_committed_ = 0, migrations_failed_ = 0;
  int64_t migration_bytes_total_ = 0;
  double last_migration_seconds_ = 0;
  // Dashboard and metrics: what was measured over time.
  std::deque<BalanceSample> balance_history_;
  std::deque<MigrationSpan> migrations_;
  MigrationSpan* CurrentSpanLocked();  // the target epoch's span, or null
  void ClearJobHistoryLocked();
  Histogram step_seconds_{{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  Histogram migration_seconds_{{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800}};
  int64_t migration_bytes_intra_node_ = 0, migration_bytes_inter_node_ = 0;
  int64_t alltoall_bytes_intra_node_ = 0, alltoall_bytes_inter_node_ = 0;
};


}  // namespace switchyard::coordinator
