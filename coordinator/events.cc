#include "coordinator/events.h"

namespace switchyard::coordinator {

int64_t EventLog::Add(const std::string& kind, const std::string& message, int rank, int64_t epoch, absl::Time at) {
  std::lock_guard<std::mutex> lock(mu_);
  switchyard::admin::v1::Event e;
  e.set_seq(next_seq_++);
  e.set_unix_ms(absl::ToUnixMillis(at));
  e.set_kind(kind);
  e.set_message(message);
  e.set_rank(rank);
  e.set_epoch(epoch);
  events_.push_back(std::move(e));
  if (events_.size() > kMaxEvents) events_.pop_front();
  cv_.notify_all();
  return next_seq_ - 1;
}

std::vector<switchyard::admin::v1::Event> EventLog::Wait(int64_t after_seq, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  cv_.wait_until(lock, deadline, [&] { return stopping_ || (!events_.empty() && events_.back().seq() > after_seq); });
  std::vector<switchyard::admin::v1::Event> out;
  for (const auto& e : events_) {
    if (e.seq() > after_seq) out.push_back(e);
  }
  return out;
}

void EventLog::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  cv_.notify_all();
}

}  // namespace switchyard::coordinator
