// Where this process sits in the job, from its launcher's environment (no MPI calls):
//   Open MPI (mpirun):  OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}
//   Slurm (srun):       SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_STEP_TASKS_PER_NODE
//   PMIx:               PMIX_RANK with PMIX_SIZE / PMIX_LOCAL_RANK / PMIX_LOCAL_SIZE if set
//   explicit:           SWITCHYARD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE} (override all)
// A process with none of these is rank 0 of 1.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace switchyard::cluster {

struct LaunchInfo {
  int rank = 0;
  int size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string launcher = "none";  // "switchyard", "mpirun", "srun", "pmix", "none"
};

// InvalidArgument naming the variable when one is set but malformed or inconsistent.
absl::StatusOr<LaunchInfo> DetectLaunch();

}  // namespace switchyard::cluster
