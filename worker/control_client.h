// ControlClient: a worker's control thread (DESIGN.md section 7). It registers the rank with
// the coordinator, sends heartbeats and the load windows the step thread hands it, and
// long-polls for orders (placement epochs to migrate to).
//
// The data plane never waits on it: SubmitReport, SetProgress and TakeOrders only touch a
// queue under a mutex. When the coordinator is unreachable the thread backs off (doubling up
// to max_backoff) and keeps at most max_queued_reports windows (the oldest are dropped and
// counted); when it is back — or restarted and no longer knows the rank — the thread
// registers again with the placement the rank runs now, then sends what is queued.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "switchyard/control/v1/control.grpc.pb.h"

namespace switchyard::worker {

namespace control = switchyard::control::v1;

struct ControlOptions {
  std::string address;      // host:port of the coordinator
  std::string tls_ca_pem;   // empty: plaintext
  std::string token;        // bearer token, when the coordinator has one
  absl::Duration heartbeat_interval = absl::Milliseconds(250);  // the coordinator declares a worker lost after 2 s of silence (default)
  absl::Duration poll_wait = absl::Milliseconds(200);  // long-poll slice for orders (a new report ends it early)
  absl::Duration rpc_timeout = absl::Seconds(3);
  absl::Duration max_backoff = absl::Seconds(2);
  size_t max_queued_reports = 256;
  // Registrations refused in a row for authentication (wrong or missing token, a TLS
  // mismatch) before the client gives up for good (fatal_error); 0: never.
  int max_auth_failures = 5;
  // Joined jobs: set when a heartbeat says a member was lost (regroup now; this worker itself
  // included, when the job went on without it): the communicator's waits end (set_cancel).
  std::shared_ptr<std::atomic<bool>> cancel;
};

// What the coordinator said about a joined job's membership (the last heartbeat's answer).
struct RegroupOrder {
  int64_t generation = 0;  // the generation forming (0: none)
  bool now = false;        // a member was lost: abandon the step in flight
  bool removed = false;    // the operator removed this worker: it leaves after its step
  std::string reason;
};

struct ControlStats {
  int64_t registrations = 0;     // successful Register calls (1 + re-registrations)
  int64_t reports_sent = 0;
  int64_t reports_dropped = 0;   // queue full while the coordinator was away
  int64_t migration_reports_sent = 0;
  int64_t reports_rejected = 0;  // the coordinator refused them (INVALID_ARGUMENT)
  int64_t rpc_failures = 0;
  int64_t orders_received = 0;
  bool registered = false;
  // Set when the client gave up (max_auth_failures): why. The worker then stops and exits 2.
  std::string fatal_error;
  std::string coordinator_id;
  std::string last_error;
};

// One Resume call (worker --resume): the coordinator's committed placement for this job's
// shape, if it has one. Retried while the coordinator is unreachable (it may be starting next
// to the workers) until `wait` has passed (then Unavailable) or `stop` says so (Cancelled);
// Unauthenticated (with what to check) for a wrong token or a TLS mismatch, other errors at once.
absl::StatusOr<control::ResumeResponse> RequestResume(const ControlOptions& options, const control::ResumeRequest& request,
                                                      absl::Duration wait, const std::function<bool()>& stop = nullptr);

class ControlClient {
 public:
  // Starts the control thread; it registers with `registration` (its placement is replaced
  // by what SetPlacement says later).
  ControlClient(ControlOptions options, control::RegisterRequest registration);
  // Stop(rpc_timeout) without Leave.
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Step thread, non-blocking.
  void SetProgress(int64_t step, int64_t epoch);
  void SetPlacement(const switchyard::types::v1::Placement& committed);
  void SubmitReport(control::LoadReport report);
  // Migration phases go in the same queue, in order, and are never dropped.
  void SubmitMigration(control::MigrationReport report);
  // Forget which orders were handed over (after an aborted migration): the coordinator may
  // publish the same epoch number again.
  void ResetOrders();
  // Orders for an epoch above every epoch returned before, if the coordinator published one.
  std::optional<control::Orders> TakeOrders();

  ControlStats stats() const;
  RegroupOrder regroup() const;
  // Lock-free, for the step thread every step: a regroup (or this worker's removal) is asked.
  bool regroup_requested() const { return regroup_asked_.load(std::memory_order_relaxed); }
  // True once the client gave up (max_auth_failures; stats().fatal_error says why). Lock-free:
  // the step thread asks every step.
  bool gave_up() const { return gave_up_.load(std::memory_order_relaxed); }
  // Sends what is queued (giving up after `flush`), tells the coordinator this rank is done
  // (Leave) when `leave` (registering first, within `flush`, if it has not yet), then ends
  // the thread. Idempotent.
  void Stop(absl::Duration flush, bool leave = false);

 private:
  using Outgoing = std::variant<control::LoadReport, control::MigrationReport>;
  void Loop();
  bool RegisterOnce();
  void Backoff(const std::string& error);  // takes mu_
  bool SendReports();                      // false: the coordinator needs a registration first
  void PushLocked(Outgoing item, bool front);
  void HeartbeatOnce();
  void PollOnce();
  void LeaveOnce();
  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) const;

  const ControlOptions options_;
  std::unique_ptr<control::Control::Stub> stub_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, leave_ = false;
  grpc::ClientContext* poll_ctx_ = nullptr;  // the long poll in flight: a new report cuts it short
  absl::Time flush_deadline_ = absl::InfiniteFuture();
  control::RegisterRequest registration_;
  int64_t step_ = 0, epoch_ = 0;
  int auth_failures_ = 0;  // registrations refused for authentication, in a row
  std::atomic<bool> gave_up_{false};
  std::atomic<bool> regroup_asked_{false};
  RegroupOrder regroup_;
  std::deque<Outgoing> reports_;
  size_t load_reports_ = 0;  // how many of reports_ are load windows (the droppable ones)
  std::optional<control::Orders> orders_;
  int64_t orders_epoch_seen_ = -1;  // highest epoch handed to TakeOrders or pending
  bool need_register_ = true;
  absl::Duration backoff_ = absl::ZeroDuration();
  absl::Time next_heartbeat_ = absl::InfinitePast();
  ControlStats stats_;
  std::thread thread_;
};

}  // namespace switchyard::worker
