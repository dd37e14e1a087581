// Membership: the workers of the job as the coordinator knows them — registration, health
// from heartbeats, progress (step, epoch) and the plausibility of what they claim. Pure state,
// no lock: the Coordinator calls it under its lock, with the time from its clock.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "switchyard/control/v1/control.pb.h"

namespace switchyard::coordinator {

struct WorkerState {
  switchyard::control::v1::RegisterRequest info;
  absl::Time last_heartbeat;
  absl::Time last_report = absl::InfinitePast();
  int64_t step = 0;
  int64_t epoch = 0;
  bool healthy = true;
  bool left = false;           // finished its run
  int64_t reported_until = 0;  // end step of its last accepted load report: windows never overlap
};

class Membership {
 public:
  // The most steps a worker may advance between two messages (a report, heartbeat or leave
  // claiming a bigger jump is refused): a million steps a second for 16 s.
  static constexpr int64_t kMaxStepJump = int64_t{1} << 24;

  void Clear() { workers_.clear(); }
  // (Re)registers `r` at `now`: healthy, not left, at the epoch of its placement and at least
  // at the step it says. Returns whether the rank was known before.
  bool Join(const switchyard::control::v1::RegisterRequest& r, absl::Time now);
  // nullptr when the rank is not registered.
  WorkerState* Find(int rank);
  const WorkerState* Find(int rank) const;
  // InvalidArgument unless `step` is at most kMaxStepJump past what the worker said before
  // and `epoch` is in 0..latest_epoch (a published epoch).
  absl::Status CheckProgress(absl::string_view what, const WorkerState& w, int64_t step, int64_t epoch,
                             int64_t latest_epoch) const;
  // Marks workers that are neither lost nor left and sent no heartbeat for `timeout` as lost;
  // returns each one's rank and silence.
  std::vector<std::pair<int, absl::Duration>> ExpireSilent(absl::Time now, absl::Duration timeout);
  // A registered rank that is lost or left: no window waits for it.
  bool Gone(int rank) const;
  // The most tokens per step any registered rank gates (0: none said).
  int64_t WidestTokensPerStep() const;

  const std::map<int, WorkerState>& workers() const { return workers_; }

 private:
  std::map<int, WorkerState> workers_;
};

}  // namespace switchyard::coordinator
