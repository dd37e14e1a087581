#include "worker/control_client.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "rpc/rpc_util.h"

namespace switchyard::worker {
namespace {

constexpr absl::Duration kMinBackoff = absl::Milliseconds(50);

// The coordinator refused who we are, or the TLS setup failed (a plaintext client to a TLS
// server sees its socket closed; a wrong CA fails the handshake): retrying cannot help.
bool IsAuthFailure(const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED || s.error_code() == grpc::StatusCode::PERMISSION_DENIED) return true;
  if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
  const std::string& m = s.error_message();
  for (const char* sign : {"Socket closed", "andshake", "SSL", "ssl", "certificate", "TLS"}) {
    if (m.find(sign) != std::string::npos) return true;
  }
  return false;
}

// What to check when the coordinator refuses us (an UNAVAILABLE that IsAuthFailure counts is a
// TLS mismatch).
const char* AuthHint(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE
             ? " (a coordinator serving TLS needs --coordinator-tls-ca with its CA)"
             : " (check --coordinator-token-file against the coordinator's --auth-token-file)";
}

}  // namespace

ControlClient::ControlClient(ControlOptions options, control::RegisterRequest registration)
    : options_(std::move(options)),
      stub_(control::Control::NewStub(rpc::MakeChannel(options_.address, options_.tls_ca_pem))),
      registration_(std::move(registration)) {
  epoch_ = registration_.placement().epoch();
  thread_ = std::thread([this] { Loop(); });
}

ControlClient::~ControlClient() { Stop(options_.rpc_timeout); }

void ControlClient::SetProgress(int64_t step, int64_t epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  step_ = step;
  epoch_ = epoch;
}

void ControlClient::SetPlacement(const switchyard::types::v1::Placement& committed) {
  std::lock_guard<std::mutex> lock(mu_);
  *registration_.mutable_placement() = committed;
  epoch_ = committed.epoch();
}

void ControlClient::PushLocked(Outgoing item, bool front) {
  const bool load = std::holds_alternative<control::LoadReport>(item);
  if (load && load_reports_ >= options_.max_queued_reports) {  // drop the oldest window
    auto oldest = std::find_if(reports_.begin(), reports_.end(),
                               [](const Outgoing& x) { return std::holds_alternative<control::LoadReport>(x); });
    if (front) {  // the one being put back is the oldest
      ++stats_.reports_dropped;
      return;
    }
    reports_.erase(oldest);
    --load_reports_;
    ++stats_.reports_dropped;
  }
  load_reports_ += load;
  if (front) {
    reports_.push_front(std::move(item));
  } else {
    reports_.push_back(std::move(item));
  }
}

void ControlClient::SubmitReport(control::LoadReport report) {
  std::lock_guard<std::mutex> lock(mu_);
  PushLocked(std::move(report), false);
  if (poll_ctx_ != nullptr) poll_ctx_->TryCancel();
  cv_.notify_all();
}

void ControlClient::SubmitMigration(control::MigrationReport report) {
  std::lock_guard<std::mutex> lock(mu_);
  PushLocked(std::move(report), false);
  if (poll_ctx_ != nullptr) poll_ctx_->TryCancel();
  cv_.notify_all();
}

void ControlClient::ResetOrders() {
  std::lock_guard<std::mutex> lock(mu_);
  orders_.reset();
  orders_epoch_seen_ = -1;
}

std::optional<control::Orders> ControlClient::TakeOrders() {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<control::Orders> out = std::move(orders_);
  orders_.reset();
  return out;
}

RegroupOrder ControlClient::regroup() const {
  std::lock_guard<std::mutex> lock(mu_);
  return regroup_;
}

ControlStats ControlClient::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void ControlClient::Stop(absl::Duration flush, bool leave) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      stop_ = true;
      leave_ = leave;
      flush_deadline_ = absl::Now() + flush;
    }
    if (poll_ctx_ != nullptr) poll_ctx_->TryCancel();
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<control::ResumeResponse> RequestResume(const ControlOptions& options, const control::ResumeRequest& request,
                                                      absl::Duration wait, const std::function<bool()>& stop) {
  auto stub = control::Control::NewStub(rpc::MakeChannel(options.address, options.tls_ca_pem));
  const absl::Time deadline = absl::Now() + wait;
  absl::Duration backoff = absl::Milliseconds(50);
  int auth_failures = 0;
  while (true) {
    control::ResumeResponse out;
    const grpc::Status s = stub->Resume(rpc::CallContext(options.rpc_timeout, options.token).get(), request, &out);
    if (s.ok()) return out;
    const absl::Status status = rpc::FromGrpc(s, options.address);
    if (IsAuthFailure(s) && (s.error_code() != grpc::StatusCode::UNAVAILABLE || ++auth_failures >= std::max(1, options.max_auth_failures))) {
      return absl::UnauthenticatedError(absl::StrCat("--resume: cannot authenticate to the coordinator at ", options.address, ": ",
                                                     status.message(), AuthHint(s)));
    }
    if (!absl::IsUnavailable(status) && !absl::IsDeadlineExceeded(status)) return status;
    if (stop && stop()) return absl::CancelledError("--resume: stopped by a signal while waiting for the coordinator");
    if (absl::Now() + backoff > deadline) {
      return absl::UnavailableError(absl::StrCat("--resume: coordinator ", options.address, " not reachable in ",
                                                 absl::FormatDuration(wait), ": ", status.message()));
    }
    absl::SleepFor(backoff);
    backoff = std::min(2 * backoff, options.max_backoff);
  }
}

std::unique_ptr<grpc::ClientContext> ControlClient::Context(absl::Duration timeout) const {
  return rpc::CallContext(timeout, options_.token);
}

void ControlClient::Backoff(const std::string& error) {
  std::unique_lock<std::mutex> lock(mu_);
  ++stats_.rpc_failures;
  if (stats_.last_error != error) {
    LogWarning("rank ", registration_.rank(), ": ", error, " (retrying)");
  }
  stats_.last_error = error;
  backoff_ = std::min(options_.max_backoff, std::max(kMinBackoff, 2 * backoff_));
  const absl::Time until = std::min(absl::Now() + backoff_, flush_deadline_);
  cv_.wait_until(lock, absl::ToChronoTime(until), [&] { return stop_ && absl::Now() >= flush_deadline_; });
}

bool ControlClient::RegisterOnce() {
  control::RegisterRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    request = registration_;
    request.set_step(step_);  // a rejoining rank is past step 0
  }
  control::RegisterResponse response;
  const grpc::Status s = stub_->Register(Context(options_.rpc_timeout).get(), request, &response);
  if (!s.ok()) {
    const std::string message(rpc::FromGrpc(s, options_.address).message());
    const std::string error = absl::StartsWith(message, "register: ") ? message : absl::StrCat("register: ", message);
    if (IsAuthFailure(s)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (options_.max_auth_failures > 0 && ++auth_failures_ >= options_.max_auth_failures) {
        stats_.fatal_error = absl::StrCat(
            "cannot authenticate to the coordinator at ", options_.address, " (", auth_failures_, " attempts): ", error,
            AuthHint(s));
        stats_.last_error = error;
        gave_up_ = true;
        stop_ = true;  // the loop ends; nothing can be sent
        flush_deadline_ = absl::Now();
        cv_.notify_all();
        return false;
      }
    }
    Backoff(error);
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auth_failures_ = 0;
  need_register_ = false;
  backoff_ = absl::ZeroDuration();
  ++stats_.registrations;
  stats_.registered = true;
  stats_.last_error.clear();
  stats_.coordinator_id = response.coordinator_id();
  next_heartbeat_ = absl::Now() + options_.heartbeat_interval;
  return true;
}

bool ControlClient::SendReports() {
  while (true) {
    Outgoing item;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (reports_.empty()) return true;
      item = std::move(reports_.front());
      reports_.pop_front();
      load_reports_ -= std::holds_alternative<control::LoadReport>(item);
    }
    grpc::Status s;
    if (const auto* report = std::get_if<control::LoadReport>(&item)) {
      control::LoadReportResponse response;
      s = stub_->ReportLoad(Context(options_.rpc_timeout).get(), *report, &response);
    } else {
      control::MigrationReportResponse response;
      s = stub_->ReportMigration(Context(options_.rpc_timeout).get(), std::get<control::MigrationReport>(item), &response);
    }
    if (s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      ++(std::holds_alternative<control::LoadReport>(item) ? stats_.reports_sent : stats_.migration_reports_sent);
      backoff_ = absl::ZeroDuration();
      continue;
    }
    if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {  // never acceptable: drop it, say why
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.reports_rejected;
      LogWarning("rank ", registration_.rank(), ": report rejected: ", s.error_message());
      continue;
    }
    {  // keep it for later
      std::lock_guard<std::mutex> lock(mu_);
      PushLocked(std::move(item), true);
      if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {  // it does not know this rank (any more)
        need_register_ = true;
        stats_.registered = false;
        return false;
      }
    }
    Backoff(absl::StrCat("report: ", rpc::FromGrpc(s, options_.address).message()));
    return false;
  }
}

void ControlClient::HeartbeatOnce() {
  control::HeartbeatRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_rank(registration_.rank());
    request.set_step(step_);
    request.set_epoch(epoch_);
    request.set_job_key(registration_.job_key());
    request.set_instance(registration_.instance());
    request.set_generation(registration_.generation());
    next_heartbeat_ = absl::Now() + options_.heartbeat_interval;
  }
  control::HeartbeatResponse response;
  const grpc::Status s = stub_->Heartbeat(Context(options_.rpc_timeout).get(), request, &response);
  if (!s.ok()) {
    Backoff(absl::StrCat("heartbeat: ", rpc::FromGrpc(s, options_.address).message()));
    return;
  }
  if (response.regroup_generation() > registration_.generation() || response.removed()) {
    std::lock_guard<std::mutex> lock(mu_);
    regroup_.generation = response.regroup_generation();
    regroup_.now = regroup_.now || response.regroup_now();
    regroup_.removed = regroup_.removed || response.removed();
    regroup_.reason = response.regroup_reason();
    regroup_asked_.store(true, std::memory_order_relaxed);
    if (regroup_.now && options_.cancel) options_.cancel->store(true);  // a removal waits for the step's end
  }
  if (!response.registered()) {
    std::lock_guard<std::mutex> lock(mu_);
    need_register_ = true;
    stats_.registered = false;
  }
}

void ControlClient::PollOnce() {
  control::PollOrdersRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_rank(registration_.rank());
    // Ask only for epochs beyond those already handed over: the long poll then waits.
    request.set_epoch(std::max(epoch_, orders_epoch_seen_));
    request.set_wait_ms(static_cast<int>(absl::ToInt64Milliseconds(options_.poll_wait)));
  }
  control::Orders orders;
  auto ctx = Context(options_.poll_wait + options_.rpc_timeout);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || !reports_.empty()) return;  // a report arrived meanwhile: send it first
    poll_ctx_ = ctx.get();
  }
  const grpc::Status s = stub_->PollOrders(ctx.get(), request, &orders);
  {
    std::lock_guard<std::mutex> lock(mu_);
    poll_ctx_ = nullptr;
  }
  if (s.error_code() == grpc::StatusCode::CANCELLED) return;  // cut short on purpose
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {  // it does not know this rank (any more)
      std::lock_guard<std::mutex> lock(mu_);
      need_register_ = true;
      stats_.registered = false;
      return;
    }
    Backoff(absl::StrCat("poll orders: ", rpc::FromGrpc(s, options_.address).message()));
    return;
  }
  if (!orders.has_placement()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (orders.placement().epoch() > std::max(epoch_, orders_epoch_seen_)) {
    orders_epoch_seen_ = orders.placement().epoch();
    orders_ = std::move(orders);
    ++stats_.orders_received;
  }
}

void ControlClient::LeaveOnce() {
  control::LeaveRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_rank(registration_.rank());
    request.set_step(step_);
    request.set_epoch(epoch_);
  }
  control::LeaveResponse response;
  const absl::Duration left = std::max(absl::Milliseconds(100), flush_deadline_ - absl::Now());
  (void)stub_->Leave(Context(std::min(left, options_.rpc_timeout)).get(), request, &response);
}

void ControlClient::Loop() {
  while (true) {
    bool register_now, heartbeat_now;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Stopping: done once nothing is queued, or at the flush deadline. A rank asked to
      // leave that has not registered yet (its attempts so far failed: a loaded machine, a
      // coordinator still starting) first keeps trying to, so that the coordinator learns
      // it ran and left (a short job could otherwise end before the retry).
      const bool to_register = leave_ && need_register_;
      if (stop_ && ((reports_.empty() && !to_register) || absl::Now() >= flush_deadline_)) {
        const bool leave = leave_ && !need_register_;
        lock.unlock();
        if (leave) LeaveOnce();
        return;
      }
      register_now = need_register_;
      heartbeat_now = absl::Now() >= next_heartbeat_;
    }
    if (register_now) {
      if (!RegisterOnce()) continue;
    }
    if (!SendReports()) continue;
    if (heartbeat_now) HeartbeatOnce();
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping = stop_;
    }
    if (!stopping) PollOnce();
  }
}

}  // namespace switchyard::worker
