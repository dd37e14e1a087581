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
namespace {

namespace control = switchyard::control::v1;

constexpr int kWaitMs = 1000;  // each long poll; the loops ask again until their deadline

// Transient: the coordinator may be starting, or a long poll ran out.
bool Retry(const absl::Status& s) { return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s); }

class CoordinatorBootstrap final : public comm::Bootstrap {
 public:
  CoordinatorBootstrap(CoordinatorJoin join, std::string instance, std::unique_ptr<control::Control::Stub> stub,
                       const control::JoinResponse& joined)
      : join_(std::move(join)), instance_(std::move(instance)), stub_(std::move(stub)), joined_(joined) {}

  int rank() const override { return joined_.rank(); }
  int size() const override { return joined_.world_size(); }
  int local_rank() const override { return joined_.local_rank(); }
  int local_size() const override { return joined_.local_size(); }
  const control::JoinResponse& joined() const { return joined_; }
  const std::string& node_name() const { return node_name_; }
  void set_node_name(std::string name) { node_name_ = std::move(name); }

  absl::StatusOr<std::vector<std::string>> Exchange(const std::string& mine, absl::Duration timeout) override {
    control::ExchangeRequest request;
    request.set_job_key(join_.job_key);
    request.set_instance(instance_);
    request.set_round(round_++);
    request.set_value(mine);
    request.set_wait_ms(kWaitMs);
    const absl::Time deadline = absl::Now() + timeout;
    absl::Status last = absl::OkStatus();
    while (absl::Now() < deadline) {
      control::ExchangeResponse out;
      const grpc::Status s =
          stub_->Exchange(rpc::CallContext(absl::Milliseconds(kWaitMs) + absl::Seconds(5), join_.token).get(), request, &out);
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
  std::unique_ptr<control::Control::Stub> stub_;
  const control::JoinResponse joined_;
  int round_ = 0;
  std::string node_name_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<comm::Bootstrap>> JoinThroughCoordinator(const CoordinatorJoin& join, absl::Duration timeout) {
  if (join.world_size < 1) return absl::InvalidArgumentError(absl::StrCat("join: world size ", join.world_size, " must be >= 1"));
  if (join.job_key.empty()) return absl::InvalidArgumentError("join: a job key is needed (the same for the job's workers)");
  std::random_device rd;
  const std::string instance = absl::StrFormat("%08x%08x-%d", rd(), rd(), getpid());
  std::string node = join.node_name;
  if (node.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    node = host;
  }
  auto stub = control::Control::NewStub(rpc::MakeChannel(join.address, join.tls_ca_pem));
  control::JoinRequest request;
  request.set_job_key(join.job_key);
  request.set_world_size(join.world_size);
  request.set_instance(instance);
  request.set_node_name(node);
  request.set_wait_ms(kWaitMs);
  const absl::Time deadline = absl::Now() + timeout;
  control::JoinResponse out;
  absl::Status last = absl::OkStatus();
  while (absl::Now() < deadline) {
    out.Clear();
    const grpc::Status s = stub->Join(rpc::CallContext(absl::Milliseconds(kWaitMs) + absl::Seconds(5), join.token).get(), request, &out);
    if (s.ok() && out.complete()) {
      auto bootstrap = std::make_unique<CoordinatorBootstrap>(join, instance, std::move(stub), out);
      bootstrap->set_node_name(node);
      return std::unique_ptr<comm::Bootstrap>(std::move(bootstrap));
    }
    if (!s.ok()) {
      last = rpc::FromGrpc(s, join.address);
      if (!Retry(last)) return last;
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  return absl::DeadlineExceededError(absl::StrCat("join job '", join.job_key, "' at ", join.address, ": ", out.joined(), " of ",
                                                  join.world_size, " ranks came in ", absl::FormatDuration(timeout),
                                                  last.ok() ? "" : absl::StrCat(" (", last.message(), ")")));
}

LaunchInfo JoinedLaunchInfo(const comm::Bootstrap& joined) {
  const auto& b = static_cast<const CoordinatorBootstrap&>(joined);
  LaunchInfo info;
  info.launcher = "coordinator";
  info.rank = b.rank();
  info.size = b.size();
  info.local_rank = b.local_rank();
  info.local_size = b.local_size();
  info.node = b.joined().node();
  info.nodes = b.joined().nodes();
  info.ranks_per_node = b.joined().ranks_per_node();
  info.node_name = b.node_name();
  info.nodes_from = "the coordinator's join";
  return info;
}

}  // namespace switchyard::cluster
