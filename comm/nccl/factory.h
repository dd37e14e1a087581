// NCCL backend: device buffers on a CUDA stream; AllToAllV as grouped ncclSend/ncclRecv.
// The NCCL unique id goes from rank 0 to all through the Bootstrap. Each rank uses GPU
// local_rank % device count. Host buffers are staged through device memory: the small
// collectives (AllReduce, AllGather, Barrier), AllToAll/AllToAllV of host arrays (a MoE
// layer's counts and pair metadata). Calls poll the stream and ncclCommGetAsyncError against
// the deadline; a timeout aborts the communicator (ncclCommAbort) and breaks it.
//
// Background Isend/Irecv: with a `transfers` communicator (the worker passes a UCX one over
// the same bootstrap), host buffers go through it: tag-matched, independent of posting order.
// Otherwise, and for device buffers, they run on a second NCCL communicator and stream (never
// queued behind the step's all-to-alls), posted as one NCCL group at the first Test or Wait
// after them. NCCL has no tags and runs a communicator's operations in the order they were
// posted (the tag is checked for range only): both sides must post matching operations in
// the same order, and a receive whose send the peer posts only later holds every operation
// posted after it. Weight migration (credit-paced, many peers) therefore needs `transfers`.
// A request destroyed before its first Test or Wait is cancelled; once posted, NCCL cannot
// cancel it: a staged host receive then never writes the caller's buffer, but a device
// buffer stays in NCCL's use until the operation completes. Requests must not outlive the
// communicator. Using NCCL's point-to-point while the step thread runs collectives puts two
// NCCL communicators to work at once, which NCCL leaves to the caller to make safe; the
// worker's host transfers never do.
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
// `transfers`: the communicator of background transfers of host buffers (null: NCCL's own).
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Bootstrap& bootstrap,
                                                                     void* stream = nullptr,
                                                                     std::unique_ptr<Communicator> transfers = nullptr);

}  // namespace switchyard::comm
