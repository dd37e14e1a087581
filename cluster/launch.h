// Where this process sits in the job, from its launcher's environment (no MPI calls):
//   Open MPI (mpirun):  OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}
//   Slurm (srun):       SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, and the step's nodes
//                       (cluster/slurm.h: SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE,
//                       SLURM_NODEID, SLURMD_NODENAME)
//   PMIx:               PMIX_RANK with PMIX_SIZE / PMIX_LOCAL_RANK / PMIX_LOCAL_SIZE if set
//   explicit:           SWITCHYARD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE} (override all)
// A process with none of these is rank 0 of 1.
//
// Nodes: ranks are laid out node by node (rank r's node holds ranks FirstRank..+local_size);
// srun's node list gives the nodes' names and counts, other launchers give the local size and
// the node count follows from it. The node name is Slurm's (SLURMD_NODENAME, also set for
// ranks mpirun starts inside an allocation), else the host name.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace switchyard::cluster {

struct LaunchInfo {
  int rank = 0;
  int size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string launcher = "none";  // "switchyard", "mpirun", "srun", "pmix", "coordinator", "none"
  int node = 0;                   // this rank's node, 0..nodes-1
  int nodes = 1;                  // nodes the ranks span
  // Ranks on every node when all nodes hold the same number (placement's topology needs it);
  // 0 when they differ (Slurm's "3,1") or the launcher does not say.
  int ranks_per_node = 1;
  std::string node_name{};        // SLURMD_NODENAME, else the host name
  std::string nodes_from{};       // where `nodes` came from, for messages ("SLURM_STEP_NODELIST=n[1-2]")
};

// InvalidArgument naming the variable when one is set but malformed or inconsistent (also:
// srun ranks not in node order, which placement's node blocks need).
absl::StatusOr<LaunchInfo> DetectLaunch();

}  // namespace switchyard::cluster
