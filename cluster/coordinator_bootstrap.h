// A Bootstrap through the coordinator, for workers started without a launcher: N plain
// processes given the coordinator's address, a job key and the world size N (the coordinator's
// Join and Exchange, coordinator/rendezvous.h). Join waits until all N have come; the answer
// says this process's rank, local rank and node. Exchange number n is round n there.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/launch.h"
#include "comm/bootstrap.h"

namespace switchyard::cluster {

struct CoordinatorJoin {
  std::string address;     // HOST:PORT of the coordinator
  std::string token;       // its bearer token, if it has one
  std::string tls_ca_pem;  // empty: plaintext
  std::string job_key;     // the same for the job's workers
  int world_size = 0;      // > 0: join this way
  std::string node_name;   // empty: the host name
};

// Joins and returns the job's Bootstrap. DeadlineExceeded (naming how many joined) if not all
// ranks came within `timeout`; FailedPrecondition for a job of another size or a full one;
// Unauthenticated for a wrong token; Unavailable when the coordinator cannot be reached.
absl::StatusOr<std::unique_ptr<comm::Bootstrap>> JoinThroughCoordinator(const CoordinatorJoin& join, absl::Duration timeout);

// Where a joined process sits (rank, size, local rank and size, node, nodes, ranks per node,
// node name), from the Bootstrap JoinThroughCoordinator returned.
LaunchInfo JoinedLaunchInfo(const comm::Bootstrap& joined);

}  // namespace switchyard::cluster
