// Communicator: how the data plane moves bytes between ranks. Knows bytes, ranks and
// streams, never experts. Backends: mpi/, ucx/, nccl/, inprocess/ (each exposes a factory.h);
// nothing outside comm/ includes mpi.h, ucp.h or nccl.h.
//
// Threads. Collectives (AllToAll, AllToAllV, Barrier, AllReduce, AllGather) are called by
// one thread per rank — the step thread — and in the same order on every rank. Point-to-point
// operations (Isend, Irecv and their Requests) may be used by one other thread at the same
// time — the transfer thread moving expert weights in the background while steps run
// collectives. Backends keep the two apart (separate tag spaces, workers or communicators).
//
// Buffers. The caller owns every buffer; a collective returns when its buffers may be reused;
// a point-to-point buffer must stay valid until its Request completes. `kind` says where a
// buffer lives; Supports() tells which kinds a backend takes (others: InvalidArgument).
//
// Errors. Every failure is a Status naming the call and the peer. A peer that does not show
// up ends the call with DeadlineExceeded after timeout() (never a hang). A collective that
// timed out or failed leaves the communicator broken: later collectives return
// FailedPrecondition; the job should stop (with MPI there is no way to resume), or, where the
// backend allows it (UCX joined through the coordinator), the survivors build a new one.
//
// Cancellation: set_cancel(flag) makes every wait check *flag (a worker's control thread sets
// it when the coordinator says a rank was lost): a collective or point-to-point wait returns
// Aborted ("cancelled") soon after it turns true instead of waiting for its deadline, which
// breaks the communicator like any failure. Backends that cannot honour it (MPI, NCCL) ignore it.
//
// Sizes are bytes, int64: messages larger than 2 GiB are fine on every backend.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace switchyard::comm {

enum class MemoryKind { kHost, kCuda };
enum class ReduceOp { kSum, kMax };

absl::string_view MemoryKindName(MemoryKind kind);

// An asynchronous point-to-point operation. Completes once; then Test/Wait return its final
// status again. Destroying an incomplete Request cancels it (the buffer may be reused after).
class Request {
 public:
  virtual ~Request() = default;
  // Non-blocking: true once complete (an error completes it too and is returned).
  virtual absl::StatusOr<bool> Test() = 0;
  // Blocks until complete, or DeadlineExceeded after `timeout` (the request stays pending
  // and may be waited on again or destroyed).
  virtual absl::Status Wait(absl::Duration timeout) = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual absl::string_view backend() const = 0;  // "mpi", "ucx", "nccl", "inprocess"
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;  // rank among the ranks of this node
  virtual int local_size() const = 0;
  virtual bool Supports(MemoryKind kind) const = 0;
  // The cudaStream_t this backend queues device-memory collectives on (nccl), so that a
  // caller's kernels queued there before a collective need no host wait; null otherwise.
  virtual void* cuda_stream() const { return nullptr; }

  // Deadline for one call to wait on peers (default 60 s).
  absl::Duration timeout() const { return timeout_; }
  void set_timeout(absl::Duration timeout) { timeout_ = timeout; }
  // See "Cancellation" above; null: none. Set before the first call.
  virtual void set_cancel(std::shared_ptr<const std::atomic<bool>> flag) { cancel_ = std::move(flag); }
  bool cancelled() const { return cancel_ != nullptr && cancel_->load(std::memory_order_relaxed); }

  // Fixed-size all-to-all: `bytes_per_peer` bytes from send + p * bytes_per_peer to rank p,
  // received at recv + q * bytes_per_peer from rank q. Used to exchange counts. Runs as
  // AllToAllV with equal counts unless a backend has something better.
  virtual absl::Status AllToAll(const void* send, int64_t bytes_per_peer, void* recv,
                                MemoryKind kind = MemoryKind::kHost);

  // Dispatch and combine: send_counts[p] bytes at send + send_offsets[p] go to rank p;
  // recv_counts[q] bytes from rank q land at recv + recv_offsets[q]. Counts must agree
  // pairwise (exchanged before with AllToAll); zero-size peers and self are fine.
  virtual absl::Status AllToAllV(const void* send, const int64_t* send_counts,
                                 const int64_t* send_offsets, void* recv,
                                 const int64_t* recv_counts, const int64_t* recv_offsets,
                                 MemoryKind kind = MemoryKind::kHost) = 0;

  virtual absl::Status Barrier() = 0;
  // In-place element-wise reduction over all ranks of small arrays.
  virtual absl::Status AllReduce(int64_t* values, int count, ReduceOp op) = 0;
  virtual absl::Status AllReduce(double* values, int count, ReduceOp op) = 0;
  // `bytes` from every rank, rank q's at recv + q * bytes (host memory).
  virtual absl::Status AllGather(const void* send, int64_t bytes, void* recv) = 0;

  // Tagged point-to-point for background transfers. tag >= 0 and < 2^30; a receive matches
  // the send from `peer` with the same tag, in order per (peer, tag).
  virtual absl::StatusOr<std::unique_ptr<Request>> Isend(const void* buffer, int64_t bytes,
                                                        int peer, int tag,
                                                        MemoryKind kind = MemoryKind::kHost) = 0;
  virtual absl::StatusOr<std::unique_ptr<Request>> Irecv(void* buffer, int64_t bytes, int peer,
                                                        int tag,
                                                        MemoryKind kind = MemoryKind::kHost) = 0;

 private:
  absl::Duration timeout_ = absl::Seconds(60);
  std::shared_ptr<const std::atomic<bool>> cancel_;
};

// Checks shared by the backends: peer and tag ranges, memory kind support.
absl::Status CheckPeer(const Communicator& comm, int peer, absl::string_view call);
absl::Status CheckTag(int tag, absl::string_view call);
absl::Status CheckKind(const Communicator& comm, MemoryKind kind, absl::string_view call);

}  // namespace switchyard::comm
