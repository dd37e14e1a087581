#include "cluster/coordinator_bootstrap.h"

#include <unistd.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "rpc/rpc_util.h"
#include "switchyard/control/v1/control.grpc.pb.h"

namespace switchyard::cluster {

namespace control = switchyard::control::v1;

class JoinedJob::Stub {
 public:
  explicit Stub(std::unique_ptr<control::Control::Stub> stub) : stub(std::move(stub)) {}
  std::unique_ptr<control::Control::Stub> stub;
};

namespace {

constexpr int kWaitMs = 1000;  // each long poll; the loops ask again until their deadline

// Transient: the coordinator may be starting (or restarting), or a long poll ran out.
bool Retry(const absl::Status& s) { return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s); }

class CoordinatorBootstrap final : public comm::Bootstrap {
 public:
  CoordinatorBootstrap(const CoordinatorJoin& join, std::string instance, std::shared_ptr<JoinedJob::Stub> stub,
                       const control::JoinResponse& joined, control::Control::Stub* raw)
      : join_(join), instance_(std::move(instance)), stub_(std::move(stub)), raw_(raw), joined_(joined) {}

  int rank() const override { return joined_.rank(); }
  int size() const override { return joined_.world_size(); }
  int local_rank() const override { return joined_.local_rank(); }
  int local_size() const override { return joined_.local_size(); }

  absl::StatusOr<std::vector<std::string>> Exchange(const std::string& mine, absl::Duration timeout) override {
    control::ExchangeRequest request;
    request.set_job_key(join_.job_key);
    request.set_instance(instance_);
    request.set_round(round_++);
    request.set_value(mine);
    request.set_wait_ms(kWaitMs);
    request.set_generation(joined_.generation());
    const absl::Time deadline = absl::Now() + timeout;
    absl::Status last = absl::OkStatus();
    while (absl::Now() < deadline) {
      control::ExchangeResponse out;
      const grpc::Status s =
          raw_->Exchange(rpc::CallContext(absl::Milliseconds(kWaitMs) + absl::Seconds(5), join_.token).get(), request, &out);
      if (s.ok() && out.complete()) return std::vector<std::string>(out.values().begin(), out.values().end());
      if (!s.ok()) {
        last = rpc::FromGrpc(s, join_.address);
        if (!Retry(last)) return last;
        absl::SleepFor(absl::Milliseconds(50));
      }
    }
    return absl::DeadlineExceededError(absl::StrCat("bootstrap exchange ", request.round(), " through ", join_.address,
                                                    ": not every rank sent its value in ", absl::FormatDuration(timeout),
                                                    last.ok() ? "" : absl::StrCat(" (", last.message(), ")")));
  }

 private:
  const CoordinatorJoin join_;
  const std::string instance_;
  std::shared_ptr<JoinedJob::Stub> stub_;  // keeps raw_ alive
  control::Control::Stub* raw_;
  const control::JoinResponse joined_;
  int round_ = 0;
};

}  // namespace

JoinedJob::~JoinedJob() = default;

absl::StatusOr<control::JoinResponse> JoinedJob::JoinLoop(control::JoinRequest request, absl::Duration timeout) {
  request.set_wait_ms(kWaitMs);
  const absl::Time deadline = absl::Now() + timeout;
  control::JoinResponse out;
  absl::Status last = absl::OkStatus();
  while (absl::Now() < deadline) {
    out.Clear();
    const grpc::Status s =
        stub_->stub->Join(rpc::CallContext(absl::Milliseconds(kWaitMs) + absl::Seconds(5), join_.token).get(), request, &out);
    if (s.ok() && out.complete()) return out;
    if (s.ok() && out.removed()) return absl::CancelledError("removed from the job by the operator (drain --remove)");
    if (!s.ok()) {
      last = rpc::FromGrpc(s, join_.address);
      if (!Retry(last)) return last;
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  if (request.regroup()) {
    return absl::DeadlineExceededError(absl::StrCat("regroup of job '", join_.job_key, "' (after generation ", request.generation(),
                                                    ") at ", join_.address, ": the next generation did not form in ",
                                                    absl::FormatDuration(timeout),
                                                    last.ok() ? "" : absl::StrCat(" (", last.message(), ")")));
  }
  return absl::DeadlineExceededError(absl::StrCat("join job '", join_.job_key, "' at ", join_.address, ": ", out.joined(), " of ",
                                                  join_.world_size, " ranks came in ", absl::FormatDuration(timeout),
                                                  last.ok() ? "" : absl::StrCat(" (", last.message(), ")")));
}

absl::StatusOr<std::unique_ptr<JoinedJob>> JoinedJob::Join(const CoordinatorJoin& join, absl::Duration timeout) {
  if (join.world_size < 1) return absl::InvalidArgumentError(absl::StrCat("join: world size ", join.world_size, " must be >= 1"));
  if (join.job_key.empty()) return absl::InvalidArgumentError("join: a job key is needed (the same for the job's workers)");
  auto job = std::unique_ptr<JoinedJob>(new JoinedJob());
  job->join_ = join;
  std::random_device rd;
  job->instance_ = absl::StrFormat("%08x%08x-%d", rd(), rd(), getpid());
  job->node_name_ = join.node_name;
  if (job->node_name_.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    job->node_name_ = host;
  }
  job->stub_ = std::make_shared<Stub>(control::Control::NewStub(rpc::MakeChannel(join.address, join.tls_ca_pem)));
  control::JoinRequest request;
  request.set_job_key(join.job_key);
  request.set_world_size(join.world_size);
  request.set_instance(job->instance_);
  request.set_node_name(job->node_name_);
  request.set_fingerprint(join.fingerprint);
  SY_ASSIGN_OR_RETURN(job->membership_, job->JoinLoop(request, timeout));
  job->bootstrap_ = std::make_unique<CoordinatorBootstrap>(job->join_, job->instance_, job->stub_, job->membership_, job->stub_->stub.get());
  return job;
}

absl::Status JoinedJob::Regroup(const std::string& reason, absl::Duration timeout) {
  bootstrap_.reset();
  control::JoinRequest request;
  request.set_job_key(join_.job_key);
  request.set_world_size(join_.world_size);
  request.set_instance(instance_);
  request.set_node_name(node_name_);
  request.set_generation(membership_.generation());
  request.set_regroup(true);
  request.set_fingerprint(join_.fingerprint);
  request.set_reason(reason.substr(0, 1024));
  request.set_job_id(membership_.job_id());
  *request.mutable_members() = membership_.members();
  SY_ASSIGN_OR_RETURN(membership_, JoinLoop(request, timeout));
  bootstrap_ = std::make_unique<CoordinatorBootstrap>(join_, instance_, stub_, membership_, stub_->stub.get());
  return absl::OkStatus();
}

comm::Bootstrap& JoinedJob::bootstrap() {
  SY_CHECK(bootstrap_ != nullptr);
  return *bootstrap_;
}

LaunchInfo JoinedJob::launch_info() const {
  LaunchInfo info;
  info.launcher = "coordinator";
  info.rank = membership_.rank();
  info.size = membership_.world_size();
  info.local_rank = membership_.local_rank();
  info.local_size = membership_.local_size();
  info.node = membership_.node();
  info.nodes = membership_.nodes();
  info.ranks_per_node = membership_.ranks_per_node();
  info.node_name = node_name_;
  info.nodes_from = "the coordinator's join";
  return info;
}

namespace {

// A Bootstrap that owns the JoinedJob it comes from.
class OwningBootstrap final : public comm::Bootstrap {
 public:
  explicit OwningBootstrap(std::unique_ptr<JoinedJob> job) : job_(std::move(job)) {}
  int rank() const override { return job_->membership().rank(); }
  int size() const override { return job_->membership().world_size(); }
  int local_rank() const override { return job_->membership().local_rank(); }
  int local_size() const override { return job_->membership().local_size(); }
  absl::StatusOr<std::vector<std::string>> Exchange(const std::string& mine, absl::Duration timeout) override {
    return job_->bootstrap().Exchange(mine, timeout);
  }

 private:
  std::unique_ptr<JoinedJob> job_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<comm::Bootstrap>> JoinThroughCoordinator(const CoordinatorJoin& join, absl::Duration timeout) {
  SY_ASSIGN_OR_RETURN(std::unique_ptr<JoinedJob> job, JoinedJob::Join(join, timeout));
  return std::unique_ptr<comm::Bootstrap>(std::make_unique<OwningBootstrap>(std::move(job)));
}

}  // namespace switchyard::cluster
