// `mpirun -np N switchyard bench a2a --backend mpi|ucx [--json]`: all-to-all-v of a
// dispatch-like pattern, the backend against raw MPI_Alltoallv and memcpy on the same bytes,
// plus point-to-point bandwidth for background weight transfer. Rank 0 prints the results.
#pragma once

#include "absl/status/status.h"

namespace switchyard::cli {

absl::Status RunAllToAllBenchmark();

}  // namespace switchyard::cli
