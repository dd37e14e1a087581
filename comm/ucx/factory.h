// UCX backend: UCP tag matching over whatever transports UCX finds (shared memory, TCP here;
// RDMA on clusters). Two UCP workers: one for the step thread's collectives, one for the
// transfer thread's point-to-point. Peers' worker addresses come from a Bootstrap (MPI
// under mpirun/srun, a directory or the coordinator otherwise).
//
// AllToAllV: all receives posted first, then sends in pairwise-shift order (rank + 1,
// rank + 2, ...) with a small window of sends in flight, so no rank is hit by every sender
// at once (incast).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"

namespace switchyard::comm {

struct UcxOptions {
  int send_window = 4;  // AllToAllV sends in flight per rank
  // A job that survives a lost rank (workers joined through the coordinator): leave out the
  // transports that abort this process when a peer dies — CMA (process_vm_readv of a dead
  // peer is fatal in UCX 1.13) — unless $UCX_TLS chooses the transports. Shared memory
  // (posix, sysv) and TCP stay; a dead peer then ends our waits by deadline or cancellation.
  // UCX's own log goes to level fatal unless $UCX_LOG_LEVEL is set (its complaints about dead
  // peers are expected in such a job).
  bool survive_peer_loss = false;
  // How long calls wait for peers, from the address exchange on (Communicator::timeout).
  absl::Duration timeout = absl::Seconds(60);
};

// Collective over `bootstrap` (which must outlive the call, not the communicator).
absl::StatusOr<std::unique_ptr<Communicator>> CreateUcxCommunicator(Bootstrap& bootstrap,
                                                                    const UcxOptions& options = {});

}  // namespace switchyard::comm
