// A Bootstrap through the coordinator, for workers started without a launcher: N plain
// processes given the coordinator's address, a job key and the world size N (the coordinator's
// Join and Exchange, coordinator/rendezvous.h). Join waits until all N have come; the answer
// says this process's rank, local rank and node. Exchange number n is round n there.
//
// JoinedJob keeps the membership over the job's life: after a lost rank (or when the
// coordinator says a newcomer or a removal is coming) Regroup joins the next generation,
// whose Bootstrap builds the new communicator.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/launch.h"
#include "comm/bootstrap.h"
#include "switchyard/control/v1/control.pb.h"

namespace switchyard::cluster {

struct CoordinatorJoin {
  std::string address;     // HOST:PORT of the coordinator
  std::string token;       // its bearer token, if it has one
  std::string tls_ca_pem;  // empty: plaintext
  std::string job_key;     // the same for the job's workers
  int world_size = 0;      // > 0: join this way
  std::string node_name;   // empty: the host name
  // What every member must run alike (model, layers, steps, ...): a process with another one
  // is refused, naming both.
  std::string fingerprint;
};

class JoinedJob {
 public:
  // Joins (a new process: generation 0 if the job is forming, else as a newcomer to a formed
  // job with fewer live members than its world size). DeadlineExceeded (naming how many
  // joined) if not all ranks came within `timeout`; FailedPrecondition for a job of another
  // size or a full one; Unauthenticated for a wrong token; Unavailable when the coordinator
  // cannot be reached.
  static absl::StatusOr<std::unique_ptr<JoinedJob>> Join(const CoordinatorJoin& join, absl::Duration timeout);
  ~JoinedJob();

  // Joins the next generation; blocks until it formed (every other member joined again or was
  // declared lost) or `timeout`. FailedPrecondition when the coordinator left this process out
  // (it was lost); Cancelled when the operator removed it. The previous bootstrap must no
  // longer be used.
  absl::Status Regroup(const std::string& reason, absl::Duration timeout);

  // The current generation's bootstrap (valid until the next Regroup).
  comm::Bootstrap& bootstrap();
  const switchyard::control::v1::JoinResponse& membership() const { return membership_; }
  int64_t generation() const { return membership_.generation(); }
  int origin() const { return membership_.members(membership_.rank()).origin(); }
  const std::string& instance() const { return instance_; }
  const std::string& job_key() const { return join_.job_key; }
  const std::string& node_name() const { return node_name_; }
  // Where this process sits now (rank, size, local rank and size, node, nodes, ranks per node, node name).
  LaunchInfo launch_info() const;

  class Stub;  // the gRPC stub, shared with the bootstraps

 private:
  JoinedJob() = default;
  absl::StatusOr<switchyard::control::v1::JoinResponse> JoinLoop(switchyard::control::v1::JoinRequest request, absl::Duration timeout);

  CoordinatorJoin join_;
  std::string instance_, node_name_;
  std::shared_ptr<Stub> stub_;
  switchyard::control::v1::JoinResponse membership_;
  std::unique_ptr<comm::Bootstrap> bootstrap_;
};

// The first join alone, as a Bootstrap (tests, cluster::Connect).
absl::StatusOr<std::unique_ptr<comm::Bootstrap>> JoinThroughCoordinator(const CoordinatorJoin& join, absl::Duration timeout);

}  // namespace switchyard::cluster
