// MPI backend (Open MPI): collectives as non-blocking MPI calls (MPI_Ialltoallw, ...) polled
// against the deadline; sizes beyond MPI's int counts through derived datatypes (all-to-all)
// or chunks (point-to-point); the transfer thread's Isend/Irecv on a communicator of their
// own. Initialises MPI with
// MPI_THREAD_MULTIPLE if nobody has (and then finalises it at exit).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"

namespace switchyard::comm {

// A communicator over MPI_COMM_WORLD.
absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator();

// A Bootstrap over MPI_COMM_WORLD (MPI_Allgather), for backends launched by mpirun/srun.
absl::StatusOr<std::unique_ptr<Bootstrap>> CreateMpiBootstrap();

// True when this process was started by an MPI launcher (mpirun, srun --mpi=pmix), judged
// from the environment without initialising MPI.
bool LaunchedByMpi();

// The peer benchmarks compare against: one blocking MPI_Alltoallv (MPI_BYTE, int counts) on
// MPI_COMM_WORLD, exactly as an application would call it. InvalidArgument beyond 2 GiB.
absl::Status MpiAlltoallvBaseline(const void* send, const int64_t* send_counts,
                                  const int64_t* send_offsets, void* recv,
                                  const int64_t* recv_counts, const int64_t* recv_offsets);

// MPI_Abort on MPI_COMM_WORLD (when initialised): stops every rank of the job at once.
[[noreturn]] void AbortMpiJob(int code);

}  // namespace switchyard::comm
