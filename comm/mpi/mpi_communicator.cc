#include <mpi.h>
#include <sched.h>

#include <climits>
#include <functional>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/collectives_util.h"
#include "comm/mpi/factory.h"
#include "common/status.h"

// Wrap an MPI error code into a Status naming the call (file and line).
#define SY_MPI_CHECK(expr)                                                                  \
  do {                                                                                      \
    if (const int sy_rc_ = (expr); sy_rc_ != MPI_SUCCESS) {                                 \
      return ::absl::InternalError(::absl::StrCat(#expr, " failed at ", __FILE__, ":",      \
                                                  __LINE__, ": ", MpiErrorString(sy_rc_))); \
    }                                                                                       \
  } while (false)

namespace switchyard::comm {
namespace {

std::string MpiErrorString(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return std::string(text, len);
}

// MPI is initialised once per process, with MPI_THREAD_MULTIPLE; finalised at exit if we
// initialised it.
absl::Status EnsureMpi() {
  static absl::Status status = [] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        return absl::InternalError("MPI_Init_thread failed");
      }
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
      if (provided < MPI_THREAD_MULTIPLE) {
        return absl::FailedPreconditionError(
            "this MPI does not provide MPI_THREAD_MULTIPLE (needed for background transfers)");
      }
    } else {
      int provided = 0;
      MPI_Query_thread(&provided);
      if (provided < MPI_THREAD_MULTIPLE) {
        return absl::FailedPreconditionError(
            "MPI was initialised without MPI_THREAD_MULTIPLE (needed for background transfers)");
      }
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return absl::OkStatus();
  }();
  return status;
}

// Polls requests until all complete or the deadline; yields between polls (ranks may share
// cores). On timeout the requests stay active.
absl::Status WaitAll(std::vector<MPI_Request>& requests, absl::Time deadline,
                     const std::function<std::string()>& what) {
  int spins = 0;
  while (true) {
    int done = 0;
    SY_MPI_CHECK(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done,
                             MPI_STATUSES_IGNORE));
    if (done) return absl::OkStatus();
    if ((++spins & 63) == 0 && absl::Now() >= deadline) {
      return absl::DeadlineExceededError(what());
    }
    sched_yield();
  }
}

constexpr int64_t kMaxChunk = int64_t{1} << 30;  // per MPI message (int counts)

// Per-peer counts, displacements and datatypes of one side of an MPI_Ialltoallw; frees the
// datatypes it made.
struct Layout {
  std::vector<int> counts, displs;
  std::vector<MPI_Datatype> types;
  std::vector<MPI_Datatype> owned;

  ~Layout() {
    for (MPI_Datatype& t : owned) MPI_Type_free(&t);
  }

  absl::Status Build(int size, const int64_t* bytes, const int64_t* offsets) {
    counts.assign(size, 0);
    displs.assign(size, 0);
    types.assign(size, MPI_BYTE);
    for (int p = 0; p < size; ++p) {
      if (bytes[p] <= INT_MAX && offsets[p] <= INT_MAX) {
        counts[p] = static_cast<int>(bytes[p]);
        displs[p] = static_cast<int>(offsets[p]);
        continue;
      }
      // bytes[p] bytes at offsets[p]: n blocks of kMaxChunk bytes, then the remainder.
      MPI_Datatype chunk, chunks;
      const int n = static_cast<int>(bytes[p] / kMaxChunk);
      const int rest = static_cast<int>(bytes[p] % kMaxChunk);
      if (MPI_Type_contiguous(static_cast<int>(kMaxChunk), MPI_BYTE, &chunk) != MPI_SUCCESS ||
          MPI_Type_contiguous(n, chunk, &chunks) != MPI_SUCCESS) {
        return absl::InternalError("MPI_Type_contiguous failed");
      }
      MPI_Type_free(&chunk);
      int lengths[2] = {1, rest};
      MPI_Aint where[2] = {static_cast<MPI_Aint>(offsets[p]), static_cast<MPI_Aint>(offsets[p] + int64_t{n} * kMaxChunk)};
      MPI_Datatype parts[2] = {chunks, MPI_BYTE};
      MPI_Datatype whole;
      if (MPI_Type_create_struct(rest > 0 ? 2 : 1, lengths, where, parts, &whole) != MPI_SUCCESS ||
          MPI_Type_commit(&whole) != MPI_SUCCESS) {
        MPI_Type_free(&chunks);
        return absl::InternalError("MPI_Type_create_struct failed");
      }
      MPI_Type_free(&chunks);
      owned.push_back(whole);
      types[p] = whole;
      counts[p] = 1;
    }
    return absl::OkStatus();
  }
};

class MpiRequest : public Request {
 public:
  MpiRequest(std::vector<MPI_Request> requests, std::string what, bool is_recv)
      : requests_(std::move(requests)), what_(std::move(what)), is_recv_(is_recv) {}
  ~MpiRequest() override {
    if (done_) return;
    for (MPI_Request& r : requests_) {
      if (r == MPI_REQUEST_NULL) continue;
      if (is_recv_) {  // a receive can be cancelled and completed now
        MPI_Cancel(&r);
        MPI_Wait(&r, MPI_STATUS_IGNORE);
      } else {  // a send runs to completion in the background (see communicator.h)
        MPI_Request_free(&r);
      }
    }
  }

  absl::StatusOr<bool> Test() override {
    if (done_) return true;
    int flag = 0;
    SY_MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                             MPI_STATUSES_IGNORE));
    done_ = flag != 0;
    return done_;
  }

  absl::Status Wait(absl::Duration timeout) override {
    if (done_) return absl::OkStatus();
    SY_RETURN_IF_ERROR(WaitAll(requests_, absl::Now() + timeout,
                               [&] { return absl::StrCat("mpi ", what_, ": timed out"); }));
    done_ = true;
    return absl::OkStatus();
  }

 private:
  std::vector<MPI_Request> requests_;
  std::string what_;
  bool is_recv_;
  bool done_ = false;
};

class MpiCommunicator : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<Communicator>> Create() {
    SY_RETURN_IF_ERROR(EnsureMpi());
    auto comm = std::unique_ptr<MpiCommunicator>(new MpiCommunicator());
    SY_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm->collective_));
    SY_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm->p2p_));
    SY_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &comm->node_));
    for (MPI_Comm c : {comm->collective_, comm->p2p_, comm->node_}) MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
    SY_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &comm->rank_));
    SY_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &comm->size_));
    SY_MPI_CHECK(MPI_Comm_rank(comm->node_, &comm->local_rank_));
    SY_MPI_CHECK(MPI_Comm_size(comm->node_, &comm->local_size_));
    return comm;
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (MPI_Comm* c : {&collective_, &p2p_, &node_}) {
      if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
    }
  }

  absl::string_view backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  // Open MPI here is not CUDA-aware; device buffers go through the NCCL backend.
  bool Supports(MemoryKind kind) const override { return kind == MemoryKind::kHost; }

  // One MPI_Ialltoallw on every rank, whatever the sizes (the algorithm must not depend on a
  // rank's own counts: every rank has to enter the same collective). A peer whose count and
  // offset fit MPI's int uses MPI_BYTE directly; a larger one gets a datatype of its own: a
  // struct of 1 GiB blocks plus the remainder at a 64-bit displacement (count 1, offset 0).
  absl::Status AllToAllV(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                         void* recv, const int64_t* recv_counts, const int64_t* recv_offsets,
                         MemoryKind kind) override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, kind, "AllToAllV"));
    Layout out_layout, in_layout;
    absl::Status s = out_layout.Build(size_, send_counts, send_offsets);
    if (s.ok()) s = in_layout.Build(size_, recv_counts, recv_offsets);
    std::vector<MPI_Request> request(1);
    if (s.ok()) {
      s = MpiStatus(MPI_Ialltoallw(send, out_layout.counts.data(), out_layout.displs.data(), out_layout.types.data(),
                                   recv, in_layout.counts.data(), in_layout.displs.data(), in_layout.types.data(),
                                   collective_, request.data()),
                    "MPI_Ialltoallw");
    }
    if (s.ok()) s = WaitAll(request, absl::Now() + timeout(), [&] { return Pending("AllToAllV", recv_counts); });
    return guard_.Break(s);
  }

  absl::Status Barrier() override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, MemoryKind::kHost, "Barrier"));
    std::vector<MPI_Request> request(1);
    absl::Status s = MpiStatus(MPI_Ibarrier(collective_, request.data()), "MPI_Ibarrier");
    if (s.ok()) s = WaitAll(request, absl::Now() + timeout(), [&] { return Pending("Barrier", nullptr); });
    return guard_.Break(s);
  }

  absl::Status AllReduce(int64_t* values, int count, ReduceOp op) override { return AllReduceImpl(values, count, op); }
  absl::Status AllReduce(double* values, int count, ReduceOp op) override { return AllReduceImpl(values, count, op); }

  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, MemoryKind::kHost, "AllGather"));
    if (bytes > INT_MAX) return absl::InvalidArgumentError("mpi AllGather: more than 2 GiB per rank");
    std::vector<MPI_Request> request(1);
    absl::Status s = MpiStatus(MPI_Iallgather(send, static_cast<int>(bytes), MPI_BYTE, recv,
                                              static_cast<int>(bytes), MPI_BYTE, collective_, request.data()),
                               "MPI_Iallgather");
    if (s.ok()) s = WaitAll(request, absl::Now() + timeout(), [&] { return Pending("AllGather", nullptr); });
    return guard_.Break(s);
  }

  absl::StatusOr<std::unique_ptr<Request>> Isend(const void* buffer, int64_t bytes, int peer, int tag,
                                                MemoryKind kind) override {
    return PointToPoint(const_cast<void*>(buffer), bytes, peer, tag, kind, false);
  }
  absl::StatusOr<std::unique_ptr<Request>> Irecv(void* buffer, int64_t bytes, int peer, int tag,
                                                MemoryKind kind) override {
    return PointToPoint(buffer, bytes, peer, tag, kind, true);
  }

 private:
  MpiCommunicator() = default;

  static absl::Status MpiStatus(int rc, absl::string_view call) {
    if (rc == MPI_SUCCESS) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(call, " failed: ", MpiErrorString(rc)));
  }

  absl::StatusOr<std::unique_ptr<Request>> PointToPoint(void* buffer, int64_t bytes, int peer, int tag,
                                                        MemoryKind kind, bool recv) {
    const char* call = recv ? "Irecv" : "Isend";
    SY_RETURN_IF_ERROR(CheckPeer(*this, peer, call));
    SY_RETURN_IF_ERROR(CheckTag(tag, call));
    SY_RETURN_IF_ERROR(CheckKind(*this, kind, call));
    // Chunks of one message share (peer, tag); MPI keeps them in order.
    std::vector<MPI_Request> requests;
    auto* data = static_cast<char*>(buffer);
    const int64_t pieces = std::max<int64_t>(1, (bytes + kMaxChunk - 1) / kMaxChunk);
    for (int64_t i = 0; i < pieces; ++i) {
      const int64_t off = i * kMaxChunk;
      const int n = static_cast<int>(std::min(kMaxChunk, bytes - off));
      requests.emplace_back();
      const int rc = recv ? MPI_Irecv(data + off, n, MPI_BYTE, peer, tag, p2p_, &requests.back())
                          : MPI_Isend(data + off, n, MPI_BYTE, peer, tag, p2p_, &requests.back());
      SY_RETURN_IF_ERROR(MpiStatus(rc, recv ? "MPI_Irecv" : "MPI_Isend"));
    }
    return std::make_unique<MpiRequest>(std::move(requests),
                                        absl::StrCat(call, "(peer ", peer, ", tag ", tag, ", ", bytes, " bytes)"),
                                        recv);
  }

  std::string Pending(absl::string_view call, const int64_t* recv_counts) const {
    std::string peers;
    for (int p = 0; p < size_; ++p) {
      if (p != rank_ && (recv_counts == nullptr || recv_counts[p] > 0)) absl::StrAppend(&peers, peers.empty() ? "" : ",", p);
    }
    return absl::StrCat("mpi ", call, ": rank ", rank_, " timed out after ", absl::FormatDuration(timeout()),
                        " waiting on ranks {", peers, "}");
  }

  template <typename T>
  absl::Status AllReduceImpl(T* values, int count, ReduceOp op) {
    std::vector<T> all(static_cast<size_t>(count) * size_);
    SY_RETURN_IF_ERROR(AllGather(values, static_cast<int64_t>(count * sizeof(T)), all.data()));
    ReduceInRankOrder(all.data(), size_, count, op, values);
    return absl::OkStatus();
  }

  MPI_Comm collective_ = MPI_COMM_NULL, p2p_ = MPI_COMM_NULL, node_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  BrokenGuard guard_;
};

class MpiBootstrap : public Bootstrap {
 public:
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  absl::StatusOr<std::vector<std::string>> Exchange(const std::string& mine, absl::Duration timeout) override {
    // Lengths first, then the values (MPI_Iallgatherv), each polled against the deadline.
    const absl::Time deadline = absl::Now() + timeout;
    int len = static_cast<int>(mine.size());
    std::vector<int> lens(size_), displs(size_);
    std::vector<MPI_Request> request(1);
    SY_MPI_CHECK(MPI_Iallgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_, request.data()));
    SY_RETURN_IF_ERROR(WaitAll(request, deadline, [] { return std::string("mpi bootstrap: timed out"); }));
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[r] = total;
      total += lens[r];
    }
    std::string all(total, '\0');
    SY_MPI_CHECK(MPI_Iallgatherv(mine.data(), len, MPI_BYTE, all.data(), lens.data(), displs.data(),
                                 MPI_BYTE, comm_, request.data()));
    SY_RETURN_IF_ERROR(WaitAll(request, deadline, [] { return std::string("mpi bootstrap: timed out"); }));
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(displs[r], lens[r]));
    return out;
  }

  static absl::StatusOr<std::unique_ptr<Bootstrap>> Create() {
    SY_RETURN_IF_ERROR(EnsureMpi());
    auto b = std::make_unique<MpiBootstrap>();
    MPI_Comm node;
    SY_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &b->comm_));
    SY_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    SY_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &b->rank_));
    SY_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &b->size_));
    SY_MPI_CHECK(MPI_Comm_rank(node, &b->local_rank_));
    SY_MPI_CHECK(MPI_Comm_size(node, &b->local_size_));
    MPI_Comm_free(&node);
    return b;
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator() { return MpiCommunicator::Create(); }
absl::StatusOr<std::unique_ptr<Bootstrap>> CreateMpiBootstrap() { return MpiBootstrap::Create(); }

bool LaunchedByMpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

absl::Status MpiAlltoallvBaseline(const void* send, const int64_t* send_counts,
                                  const int64_t* send_offsets, void* recv,
                                  const int64_t* recv_counts, const int64_t* recv_offsets) {
  SY_RETURN_IF_ERROR(EnsureMpi());
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<int> sc(size), so(size), rc(size), ro(size);
  for (int p = 0; p < size; ++p) {
    if (send_counts[p] > INT_MAX || send_offsets[p] > INT_MAX || recv_counts[p] > INT_MAX ||
        recv_offsets[p] > INT_MAX) {
      return absl::InvalidArgumentError("MPI_Alltoallv baseline: beyond int counts");
    }
    sc[p] = static_cast<int>(send_counts[p]);
    so[p] = static_cast<int>(send_offsets[p]);
    rc[p] = static_cast<int>(recv_counts[p]);
    ro[p] = static_cast<int>(recv_offsets[p]);
  }
  SY_MPI_CHECK(MPI_Alltoallv(send, sc.data(), so.data(), MPI_BYTE, recv, rc.data(), ro.data(), MPI_BYTE,
                             MPI_COMM_WORLD));
  return absl::OkStatus();
}

void AbortMpiJob(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace switchyard::comm
