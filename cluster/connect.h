// Connect: the Communicator of this process for the job it was launched in.
//
//   backend mpi:   over MPI_COMM_WORLD (mpirun, srun --mpi=pmix, or a lone process).
//   backend nccl: the step's collectives over NCCL, background transfers of host buffers
//     (weight migration) over UCX when the build has it (comm/nccl/factory.h).
//   backend ucx / nccl: peers found through a Bootstrap: MPI when launched by mpirun/srun
//     with PMIx, else the coordinator (`join`: ranks assigned there), else the shared directory
//     `rendezvous_dir` (positions from DetectLaunch), else an error saying what is missing.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cluster/coordinator_bootstrap.h"
#include "comm/communicator.h"

namespace switchyard::cluster {

struct ConnectOptions {
  std::string backend = "mpi";
  std::string rendezvous_dir;        // for ucx/nccl without an MPI launcher
  CoordinatorJoin join;              // or meet through a coordinator (join.world_size > 0)
  // Or a bootstrap made already (e.g. JoinThroughCoordinator's, whose answer the caller read).
  std::shared_ptr<comm::Bootstrap> bootstrap;
  absl::Duration timeout = absl::Seconds(60);
  void* cuda_stream = nullptr;       // nccl: the step's stream
  bool survive_peer_loss = false;    // ucx: no transport that aborts the process when a peer dies (UcxOptions)
};

absl::StatusOr<std::unique_ptr<comm::Communicator>> Connect(const ConnectOptions& options);

// The backends this build has ("mpi", "ucx", "nccl").
std::vector<std::string> AvailableBackends();

}  // namespace switchyard::cluster
