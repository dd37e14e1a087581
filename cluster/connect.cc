#include "cluster/connect.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cluster/file_bootstrap.h"
#include "cluster/launch.h"
#include "common/status.h"
#include "switchyard/config.h"
#if SWITCHYARD_HAVE_MPI
#include "comm/mpi/factory.h"
#endif
#if SWITCHYARD_HAVE_UCX
#include "comm/ucx/factory.h"
#endif
#if SWITCHYARD_HAVE_NCCL
#include "comm/nccl/factory.h"
#endif

namespace switchyard::cluster {
namespace {

absl::StatusOr<std::shared_ptr<comm::Bootstrap>> MakeBootstrap(const ConnectOptions& options) {
  if (options.bootstrap) return options.bootstrap;
#if SWITCHYARD_HAVE_MPI
  if (comm::LaunchedByMpi()) return comm::CreateMpiBootstrap();
#endif
  if (options.join.world_size > 0) return JoinThroughCoordinator(options.join, options.timeout);
  if (!options.rendezvous_dir.empty()) {
    SY_ASSIGN_OR_RETURN(const LaunchInfo where, DetectLaunch());
    return CreateFileBootstrap(options.rendezvous_dir, where);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "backend ", options.backend, " needs its peers: launch with mpirun (or srun --mpi=pmix), ",
      "or join through a coordinator (--coordinator with --world-size), or give a rendezvous directory shared by all ranks"));
}

}  // namespace

std::vector<std::string> AvailableBackends() {
  std::vector<std::string> out;
  if (SWITCHYARD_HAVE_MPI) out.push_back("mpi");
  if (SWITCHYARD_HAVE_UCX) out.push_back("ucx");
  if (SWITCHYARD_HAVE_NCCL) out.push_back("nccl");
  return out;
}

absl::StatusOr<std::unique_ptr<comm::Communicator>> Connect(const ConnectOptions& options) {
  std::unique_ptr<comm::Communicator> comm;
  if (options.backend == "mpi" && SWITCHYARD_HAVE_MPI) {
#if SWITCHYARD_HAVE_MPI
    SY_ASSIGN_OR_RETURN(comm, comm::CreateMpiCommunicator());
#endif
  } else if (options.backend == "ucx" && SWITCHYARD_HAVE_UCX) {
#if SWITCHYARD_HAVE_UCX
    SY_ASSIGN_OR_RETURN(auto bootstrap, MakeBootstrap(options));
    comm::UcxOptions ucx;
    ucx.survive_peer_loss = options.survive_peer_loss;
    ucx.timeout = options.timeout;
    SY_ASSIGN_OR_RETURN(comm, comm::CreateUcxCommunicator(*bootstrap, ucx));
#endif
  } else if (options.backend == "nccl" && SWITCHYARD_HAVE_NCCL) {
#if SWITCHYARD_HAVE_NCCL
    SY_RETURN_IF_ERROR(comm::NcclUsable());  // no GPU: say so before looking for peers
    SY_ASSIGN_OR_RETURN(auto bootstrap, MakeBootstrap(options));
    // Background transfers of host buffers (weight migration) over UCX where the build has
    // it: NCCL's untagged, in-order point-to-point cannot carry credit-paced transfers.
    std::unique_ptr<comm::Communicator> transfers;
#if SWITCHYARD_HAVE_UCX
    comm::UcxOptions ucx;
    ucx.survive_peer_loss = options.survive_peer_loss;
    ucx.timeout = options.timeout;
    SY_ASSIGN_OR_RETURN(transfers, comm::CreateUcxCommunicator(*bootstrap, ucx));
    transfers->set_timeout(options.timeout);
#endif
    SY_ASSIGN_OR_RETURN(comm, comm::CreateNcclCommunicator(*bootstrap, options.cuda_stream, std::move(transfers)));
#endif
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown or unavailable backend '", options.backend,
                                                   "' (this build has: ", absl::StrJoin(AvailableBackends(), ", "), ")"));
  }
  comm->set_timeout(options.timeout);
  return comm;
}

}  // namespace switchyard::cluster
