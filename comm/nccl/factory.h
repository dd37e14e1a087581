// NCCL backend: device buffers on a CUDA stream; AllToAllV as grouped ncclSend/ncclRecv.
// The NCCL unique id goes from rank 0 to all through the Bootstrap. Each rank uses GPU
// local_rank % device count. Small collectives (AllReduce, AllGather, Barrier) take host
// arrays and stage them through device memory. Background Isend/Irecv run on a second
// NCCL communicator and stream, so they never queue behind the step's all-to-alls.
//
// NCCL has no tags: point-to-point messages between two ranks match in the order they are
// posted (the tag is checked for range only), so both sides must post them in the same
// order. Calls poll the stream and ncclCommGetAsyncError against the deadline; a timeout
// aborts the communicator (ncclCommAbort) and breaks it.
//
// Built when NCCL is found; on a machine without a GPU, creation fails with
// FailedPrecondition saying so.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"

namespace switchyard::comm {

// OK when this process sees a CUDA device; FailedPrecondition "nccl backend: no usable GPU on
// this machine" otherwise (checked before any peer is contacted).
absl::Status NcclUsable();

// `stream`: the cudaStream_t the step's collectives run on (null: a stream of its own).
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Bootstrap& bootstrap,
                                                                     void* stream = nullptr);

}  // namespace switchyard::comm
