#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/collectives_util.h"
#include "comm/nccl/factory.h"
#include "common/status.h"

#define SY_NCCL_CHECK(expr)                                                                   \
  do {                                                                                        \
    if (const ncclResult_t sy_r_ = (expr); sy_r_ != ncclSuccess && sy_r_ != ncclInProgress) { \
      return ::absl::InternalError(::absl::StrCat(#expr, " failed at ", __FILE__, ":",        \
                                                  __LINE__, ": ", ncclGetErrorString(sy_r_))); \
    }                                                                                         \
  } while (false)

#define SY_CUDA_CHECK(expr)                                                                   \
  do {                                                                                        \
    if (const cudaError_t sy_e_ = (expr); sy_e_ != cudaSuccess) {                             \
      return ::absl::InternalError(::absl::StrCat(#expr, " failed at ", __FILE__, ":",        \
                                                  __LINE__, ": ", cudaGetErrorString(sy_e_))); \
    }                                                                                         \
  } while (false)

namespace switchyard::comm {
namespace {

// Waits for `comm` to finish initialising (nonblocking init) or for work on `stream`.
absl::Status Poll(ncclComm_t comm, cudaStream_t stream, absl::Time deadline, absl::string_view what) {
  while (true) {
    ncclResult_t async = ncclSuccess;
    SY_NCCL_CHECK(ncclCommGetAsyncError(comm, &async));
    if (async != ncclSuccess && async != ncclInProgress) {
      return absl::InternalError(absl::StrCat("nccl ", what, ": ", ncclGetErrorString(async)));
    }
    if (async == ncclSuccess) {
      if (stream == nullptr) return absl::OkStatus();
      const cudaError_t q = cudaStreamQuery(stream);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        return absl::InternalError(absl::StrCat("nccl ", what, ": ", cudaGetErrorString(q)));
      }
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("nccl ", what, ": timed out"));
    }
  }
}

absl::StatusOr<ncclComm_t> InitComm(const ncclUniqueId& id, int size, int rank, absl::Time deadline) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  SY_NCCL_CHECK(ncclCommInitRankConfig(&comm, size, id, rank, &config));
  absl::Status ready = Poll(comm, nullptr, deadline, "ncclCommInitRank");
  if (!ready.ok()) {
    ncclCommAbort(comm);
    return ready;
  }
  return comm;
}

// A point-to-point operation: posted to NCCL at the next flush (see PostPending), complete
// once its event has passed. `staging`: the device copy of a host buffer.
struct P2pOp {
  void* buffer = nullptr;
  int64_t bytes = 0;
  int peer = 0;
  bool recv = false;
  void* staging = nullptr;
  cudaEvent_t event = nullptr;
  bool posted = false;
  bool delivered = false;  // complete, a staged receive copied to the caller's buffer
  absl::Status error;  // of the flush that posted it
  std::string what;
};

class NcclCommunicator;

class NcclRequest : public Request {
 public:
  NcclRequest(NcclCommunicator* owner, ncclComm_t comm, std::shared_ptr<P2pOp> op)
      : owner_(owner), comm_(comm), op_(std::move(op)) {}
  ~NcclRequest() override;
  absl::StatusOr<bool> Test() override;
  absl::Status Wait(absl::Duration timeout) override {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      SY_ASSIGN_OR_RETURN(const bool done, Test());
      if (done) return absl::OkStatus();
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        return absl::InternalError(absl::StrCat("nccl ", op_->what, ": ", ncclGetErrorString(async)));
      }
      if (absl::Now() >= deadline) return absl::DeadlineExceededError(absl::StrCat("nccl ", op_->what, ": timed out"));
    }
  }

 private:
  NcclCommunicator* owner_;
  ncclComm_t comm_;
  std::shared_ptr<P2pOp> op_;
};

class NcclCommunicator : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(Bootstrap& bootstrap, void* stream,
                                                              std::unique_ptr<Communicator> transfers) {
    SY_RETURN_IF_ERROR(NcclUsable());
    int devices = 0;
    cudaGetDeviceCount(&devices);
    auto comm = std::unique_ptr<NcclCommunicator>(new NcclCommunicator(bootstrap));
    comm->transfers_ = std::move(transfers);
    comm->device_ = bootstrap.local_rank() % devices;
    SY_CUDA_CHECK(cudaSetDevice(comm->device_));
    if (stream != nullptr) {
      comm->stream_ = static_cast<cudaStream_t>(stream);
    } else {
      SY_CUDA_CHECK(cudaStreamCreateWithFlags(&comm->stream_, cudaStreamNonBlocking));
      comm->own_stream_ = true;
    }
    SY_CUDA_CHECK(cudaStreamCreateWithFlags(&comm->p2p_stream_, cudaStreamNonBlocking));
    // Two unique ids from rank 0: the step's communicator and the transfer thread's.
    std::string mine;
    if (bootstrap.rank() == 0) {
      ncclUniqueId ids[2];
      SY_NCCL_CHECK(ncclGetUniqueId(&ids[0]));
      SY_NCCL_CHECK(ncclGetUniqueId(&ids[1]));
      mine.assign(reinterpret_cast<const char*>(ids), sizeof ids);
    }
    SY_ASSIGN_OR_RETURN(const std::vector<std::string> all, bootstrap.Exchange(mine, comm->timeout()));
    if (all[0].size() != 2 * sizeof(ncclUniqueId)) return absl::InternalError("nccl: bad unique id from rank 0");
    ncclUniqueId ids[2];
    std::memcpy(ids, all[0].data(), sizeof ids);
    const absl::Time deadline = absl::Now() + comm->timeout();
    SY_ASSIGN_OR_RETURN(comm->comm_, InitComm(ids[0], comm->size_, comm->rank_, deadline));
    SY_ASSIGN_OR_RETURN(comm->p2p_, InitComm(ids[1], comm->size_, comm->rank_, deadline));
    return comm;
  }

  ~NcclCommunicator() override {
    for (ncclComm_t c : {comm_, p2p_}) {
      if (c != nullptr) ncclCommAbort(c);
    }
    if (staging_ != nullptr) cudaFree(staging_);
    if (p2p_stream_ != nullptr) cudaStreamDestroy(p2p_stream_);
    if (own_stream_) cudaStreamDestroy(stream_);
  }

  absl::string_view backend() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  // Device buffers, and host buffers staged through device memory (the layer's small
  // exchanges, migration of host-held weights).
  bool Supports(MemoryKind) const override { return true; }
  void* cuda_stream() const override { return stream_; }

  absl::Status AllToAllV(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                         void* recv, const int64_t* recv_counts, const int64_t* recv_offsets,
                         MemoryKind kind) override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, kind, "AllToAllV"));
    const auto* in = static_cast<const char*>(send);
    auto* out = static_cast<char*>(recv);
    absl::Status s = [&]() -> absl::Status {
      int64_t send_bytes = 0, recv_bytes = 0;  // extents, for staging
      if (kind == MemoryKind::kHost) {
        for (int r = 0; r < size_; ++r) {
          if (send_counts[r] > 0) send_bytes = std::max(send_bytes, send_offsets[r] + send_counts[r]);
          if (recv_counts[r] > 0) recv_bytes = std::max(recv_bytes, recv_offsets[r] + recv_counts[r]);
        }
        SY_RETURN_IF_ERROR(Stage(send_bytes + recv_bytes));
        char* dev = static_cast<char*>(staging_);
        if (send_bytes > 0) SY_CUDA_CHECK(cudaMemcpyAsync(dev, in, send_bytes, cudaMemcpyHostToDevice, stream_));
        in = dev;
        out = dev + send_bytes;
      }
      SY_RETURN_IF_ERROR(Grouped([&]() -> absl::Status {
        for (int step = 0; step < size_; ++step) {
          const int to = (rank_ + step) % size_, from = (rank_ - step + size_) % size_;
          if (send_counts[to] > 0) SY_NCCL_CHECK(ncclSend(in + send_offsets[to], send_counts[to], ncclUint8, to, comm_, stream_));
          if (recv_counts[from] > 0) SY_NCCL_CHECK(ncclRecv(out + recv_offsets[from], recv_counts[from], ncclUint8, from, comm_, stream_));
        }
        return absl::OkStatus();
      }));
      const absl::Time deadline = absl::Now() + timeout();
      if (kind == MemoryKind::kHost && recv_bytes > 0) {
        // A nonblocking communicator may still be enqueueing the group: the copies go after it,
        // one per peer block (the gaps between blocks stay as the caller left them).
        SY_RETURN_IF_ERROR(Poll(comm_, nullptr, deadline, "AllToAllV"));
        for (int r = 0; r < size_; ++r) {
          if (recv_counts[r] == 0) continue;
          SY_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(recv) + recv_offsets[r], out + recv_offsets[r], recv_counts[r],
                                        cudaMemcpyDeviceToHost, stream_));
        }
      }
      return Poll(comm_, stream_, deadline, "AllToAllV");
    }();
    return Break(s);
  }

  absl::Status Barrier() override {
    int64_t zero = 0;
    return AllReduce(&zero, 1, ReduceOp::kSum);
  }
  absl::Status AllReduce(int64_t* values, int count, ReduceOp op) override { return AllReduceImpl(values, count, op); }
  absl::Status AllReduce(double* values, int count, ReduceOp op) override { return AllReduceImpl(values, count, op); }

  // Host arrays, staged through device memory.
  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, MemoryKind::kCuda, "AllGather"));
    absl::Status s = [&]() -> absl::Status {
      SY_RETURN_IF_ERROR(Stage(bytes * (size_ + 1)));
      char* dev = static_cast<char*>(staging_);
      SY_CUDA_CHECK(cudaMemcpyAsync(dev, send, bytes, cudaMemcpyHostToDevice, stream_));
      SY_NCCL_CHECK(ncclAllGather(dev, dev + bytes, bytes, ncclUint8, comm_, stream_));
      const absl::Time deadline = absl::Now() + timeout();
      SY_RETURN_IF_ERROR(Poll(comm_, nullptr, deadline, "AllGather"));  // enqueued (nonblocking communicator)
      SY_CUDA_CHECK(cudaMemcpyAsync(recv, dev + bytes, bytes * size_, cudaMemcpyDeviceToHost, stream_));
      return Poll(comm_, stream_, deadline, "AllGather");
    }();
    return Break(s);
  }

  // With a transfers communicator, host buffers go through it (tag-matched, no ordering
  // hazard); device buffers, and everything without one, through NCCL.
  absl::StatusOr<std::unique_ptr<Request>> Isend(const void* buffer, int64_t bytes, int peer, int tag,
                                                MemoryKind kind) override {
    if (transfers_ != nullptr && kind == MemoryKind::kHost) return transfers_->Isend(buffer, bytes, peer, tag, kind);
    return PointToPoint(const_cast<void*>(buffer), bytes, peer, tag, kind, false);
  }
  absl::StatusOr<std::unique_ptr<Request>> Irecv(void* buffer, int64_t bytes, int peer, int tag,
                                                MemoryKind kind) override {
    if (transfers_ != nullptr && kind == MemoryKind::kHost) return transfers_->Irecv(buffer, bytes, peer, tag, kind);
    return PointToPoint(buffer, bytes, peer, tag, kind, true);
  }
  void set_cancel(std::shared_ptr<const std::atomic<bool>> flag) override {
    if (transfers_ != nullptr) transfers_->set_cancel(flag);
    Communicator::set_cancel(std::move(flag));
  }

  void DropPending(const P2pOp* op) {
    std::erase_if(pending_, [op](const std::shared_ptr<P2pOp>& p) { return p.get() == op; });
  }

  // Posts the operations queued since the last flush as one NCCL group, so that a send and
  // a receive posted together (to itself included) progress together. Called by the first
  // Test or Wait of any request.
  void PostPending() {
    if (pending_.empty()) return;
    std::vector<std::shared_ptr<P2pOp>> ops;
    ops.swap(pending_);
    absl::Status s = [&]() -> absl::Status {
      SY_CUDA_CHECK(cudaSetDevice(device_));
      SY_RETURN_IF_ERROR(Grouped([&]() -> absl::Status {
        for (const std::shared_ptr<P2pOp>& op : ops) {
          void* data = op->staging != nullptr ? op->staging : op->buffer;
          if (op->recv) {
            SY_NCCL_CHECK(ncclRecv(data, op->bytes, ncclUint8, op->peer, p2p_, p2p_stream_));
          } else {
            SY_NCCL_CHECK(ncclSend(data, op->bytes, ncclUint8, op->peer, p2p_, p2p_stream_));
          }
        }
        return absl::OkStatus();
      }));
      // The communicator is nonblocking: the group is on the stream once this says so; the
      // events must come after it. (A staged receive's copy to the host is made by Test once
      // its event has passed, so that a destroyed request never writes the caller's buffer.)
      SY_RETURN_IF_ERROR(Poll(p2p_, nullptr, absl::Now() + timeout(), "Isend/Irecv group"));
      for (const std::shared_ptr<P2pOp>& op : ops) SY_CUDA_CHECK(cudaEventRecord(op->event, p2p_stream_));
      return absl::OkStatus();
    }();
    for (const std::shared_ptr<P2pOp>& op : ops) {
      op->posted = true;
      op->error = s;
    }
  }

 private:
  explicit NcclCommunicator(Bootstrap& b)
      : rank_(b.rank()), size_(b.size()), local_rank_(b.local_rank()), local_size_(b.local_size()) {}

  // Runs `post` between ncclGroupStart and ncclGroupEnd; the group is ended whatever `post`
  // returns (NCCL's group depth is per thread: an open group would defer every later call).
  template <typename Post>
  static absl::Status Grouped(Post&& post) {
    SY_NCCL_CHECK(ncclGroupStart());
    absl::Status posted = post();
    const ncclResult_t end = ncclGroupEnd();
    SY_RETURN_IF_ERROR(posted);
    SY_NCCL_CHECK(end);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Request>> PointToPoint(void* buffer, int64_t bytes, int peer, int tag,
                                                        MemoryKind kind, bool recv) {
    const char* call = recv ? "Irecv" : "Isend";
    SY_RETURN_IF_ERROR(CheckPeer(*this, peer, call));
    SY_RETURN_IF_ERROR(CheckTag(tag, call));
    SY_RETURN_IF_ERROR(CheckKind(*this, kind, call));
    SY_CUDA_CHECK(cudaSetDevice(device_));  // the transfer thread's current device is its own
    auto op = std::make_shared<P2pOp>();
    op->buffer = buffer;
    op->bytes = bytes;
    op->peer = peer;
    op->recv = recv;
    op->what = absl::StrCat(call, "(peer ", peer, ", tag ", tag, ")");
    SY_CUDA_CHECK(cudaEventCreateWithFlags(&op->event, cudaEventDisableTiming));
    if (kind == MemoryKind::kHost && bytes > 0) {  // through device memory of its own
      const cudaError_t e = cudaMalloc(&op->staging, bytes);
      if (e != cudaSuccess) {
        cudaEventDestroy(op->event);
        SY_CUDA_CHECK(e);
      }
      if (!recv) SY_CUDA_CHECK(cudaMemcpyAsync(op->staging, buffer, bytes, cudaMemcpyHostToDevice, p2p_stream_));
    }
    pending_.push_back(op);
    return std::make_unique<NcclRequest>(this, p2p_, std::move(op));
  }

  absl::Status Stage(int64_t bytes) {
    if (bytes <= staging_bytes_) return absl::OkStatus();
    if (staging_ != nullptr) cudaFree(staging_);
    staging_ = nullptr;
    SY_CUDA_CHECK(cudaMalloc(&staging_, bytes));
    staging_bytes_ = bytes;
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status AllReduceImpl(T* values, int count, ReduceOp op) {
    std::vector<T> all(static_cast<size_t>(count) * size_);
    SY_RETURN_IF_ERROR(AllGather(values, static_cast<int64_t>(count * sizeof(T)), all.data()));
    ReduceInRankOrder(all.data(), size_, count, op, values);
    return absl::OkStatus();
  }

  absl::Status Break(absl::Status s) {
    if (!s.ok() && !guard_.broken()) {
      ncclCommAbort(comm_);  // an abandoned NCCL collective cannot be resumed
      comm_ = nullptr;
    }
    return guard_.Break(std::move(s));
  }

  int rank_, size_, local_rank_, local_size_;
  int device_ = 0;  // the GPU this rank uses
  ncclComm_t comm_ = nullptr, p2p_ = nullptr;
  cudaStream_t stream_ = nullptr, p2p_stream_ = nullptr;
  bool own_stream_ = false;
  void* staging_ = nullptr;
  int64_t staging_bytes_ = 0;
  BrokenGuard guard_;
  std::unique_ptr<Communicator> transfers_;       // background transfers of host buffers, if given
  std::vector<std::shared_ptr<P2pOp>> pending_;  // point-to-point operations not yet posted
};

NcclRequest::~NcclRequest() {
  if (!op_->posted) {  // still queued: cancelled for real
    owner_->DropPending(op_.get());
    if (op_->staging != nullptr) cudaFree(op_->staging);
    cudaEventDestroy(op_->event);
    return;
  }
  // NCCL cannot cancel a posted operation: an incomplete one keeps its staging allocated
  // rather than have NCCL write into reused memory.
  if (op_->posted && cudaEventQuery(op_->event) == cudaSuccess) {
    if (op_->staging != nullptr) cudaFree(op_->staging);
    cudaEventDestroy(op_->event);
  }
}

absl::StatusOr<bool> NcclRequest::Test() {
  owner_->PostPending();
  SY_RETURN_IF_ERROR(op_->error);
  if (op_->delivered) return true;
  const cudaError_t q = cudaEventQuery(op_->event);
  if (q == cudaSuccess) {
    if (op_->recv && op_->staging != nullptr) {  // the staged bytes to the caller's host buffer
      SY_CUDA_CHECK(cudaMemcpy(op_->buffer, op_->staging, op_->bytes, cudaMemcpyDeviceToHost));
    }
    op_->delivered = true;
    return true;
  }
  if (q == cudaErrorNotReady) return false;
  return absl::InternalError(absl::StrCat("nccl ", op_->what, ": ", cudaGetErrorString(q)));
}

}  // namespace

absl::Status NcclUsable() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError("nccl backend: no usable GPU on this machine");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Bootstrap& bootstrap, void* stream,
                                                                     std::unique_ptr<Communicator> transfers) {
  return NcclCommunicator::Create(bootstrap, stream, std::move(transfers));
}

}  // namespace switchyard::comm
