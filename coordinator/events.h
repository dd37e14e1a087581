// The coordinator's event log (admin API WatchEvents, `switchyard events`): numbered events
// (joins, losses, plans, commits, rejected reports, constraint changes), the newest 2,000
// kept. Thread-safe, with its own lock: watchers wait here without holding the
// coordinator's.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "switchyard/admin/v1/admin.pb.h"

namespace switchyard::coordinator {

class EventLog {
 public:
  static constexpr size_t kMaxEvents = 2000;

  // Appends an event (seq = previous + 1) and wakes the watchers; returns its seq.
  int64_t Add(const std::string& kind, const std::string& message, int rank, int64_t epoch, absl::Time at);
  // Events after `after_seq`, waiting up to `timeout` for one to arrive (or Stop).
  std::vector<switchyard::admin::v1::Event> Wait(int64_t after_seq, absl::Duration timeout);
  // Wakes every watcher for good (shutdown).
  void Stop();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<switchyard::admin::v1::Event> events_;
  int64_t next_seq_ = 1;
};

}  // namespace switchyard::coordinator
