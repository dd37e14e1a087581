#include <sched.h>
#include <ucp/api/ucp.h>
#include <ucs/config/global_opts.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/collectives_util.h"
#include "comm/ucx/factory.h"
#include "common/status.h"

// Wrap a UCS status into a Status naming the call (file and line).
#define SY_UCS_CHECK(expr)                                                                    \
  do {                                                                                        \
    if (const ucs_status_t sy_st_ = (expr); sy_st_ != UCS_OK) {                               \
      return ::absl::InternalError(::absl::StrCat(#expr, " failed at ", __FILE__, ":",        \
                                                  __LINE__, ": ", ucs_status_string(sy_st_))); \
    }                                                                                         \
  } while (false)

namespace switchyard::comm {
namespace {

constexpr int kRankBits = 24;  // tag = (sequence or user tag) << 24 | source rank
constexpr ucp_tag_t kFullMask = ~ucp_tag_t{0};

ucp_tag_t MakeTag(uint64_t high, int src) { return (high << kRankBits) | static_cast<ucp_tag_t>(src); }

// One UCP worker with an endpoint to every rank.
struct Worker {
  ucp_worker_h worker = nullptr;
  std::vector<ucp_ep_h> eps;
  std::mutex mu;  // serialises use between threads (worker is UCS_THREAD_MODE_SERIALIZED)
};

// The UCP context and its two workers, shared by the communicator and its Requests and
// released by whichever goes last.
struct Resources {
  ucp_context_h context = nullptr;
  Worker coll, p2p;
  std::shared_ptr<const std::atomic<bool>> cancel;  // Communicator::set_cancel
  std::atomic<bool> broken{false};                  // a call failed or was cancelled: peers may be gone

  bool cancelled() const { return cancel != nullptr && cancel->load(std::memory_order_relaxed); }

  ~Resources() {
    // Flush-mode close (the endpoints have no peer error handling, see Init); a peer that is
    // already gone must not keep us here, hence the deadline. Once a call failed or was
    // cancelled (a lost rank: the survivors build a new communicator) the endpoints are not
    // flushed at all: destroying the worker releases them without waiting for the dead.
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    for (Worker* w : {&coll, &p2p}) {
      if (w->worker == nullptr) continue;
      ucp_request_param_t param;
      param.op_attr_mask = 0;
      for (ucp_ep_h ep : w->eps) {
        if (ep == nullptr || broken) continue;
        ucs_status_ptr_t r = ucp_ep_close_nbx(ep, &param);
        if (r == nullptr || UCS_PTR_IS_ERR(r)) continue;
        while (ucp_request_check_status(r) == UCS_INPROGRESS && absl::Now() < deadline) {
          ucp_worker_progress(w->worker);
        }
        if (ucp_request_check_status(r) != UCS_INPROGRESS) ucp_request_free(r);
      }
      ucp_worker_destroy(w->worker);
    }
    if (context != nullptr) ucp_cleanup(context);
  }
};

// A pending UCP request: completes when UCX says so; cancelled (and freed) if abandoned.
class Pending {
 public:
  Pending() = default;
  Pending(ucs_status_ptr_t request, int peer) : request_(request), peer_(peer) {}
  Pending(Pending&& o) noexcept : request_(std::exchange(o.request_, nullptr)), peer_(o.peer_), status_(o.status_) {}
  Pending& operator=(Pending&& o) noexcept {
    std::swap(request_, o.request_);
    peer_ = o.peer_;
    status_ = o.status_;
    return *this;
  }
  ~Pending() { SY_CHECK(request_ == nullptr || UCS_PTR_IS_ERR(request_)); }

  int peer() const { return peer_; }
  // The UCS status once done; UCS_INPROGRESS while running.
  ucs_status_t Check() {
    if (request_ == nullptr) return status_;
    if (UCS_PTR_IS_ERR(request_)) {
      status_ = UCS_PTR_STATUS(request_);
      request_ = nullptr;
      return status_;
    }
    const ucs_status_t s = ucp_request_check_status(request_);
    if (s != UCS_INPROGRESS) {
      ucp_request_free(request_);
      request_ = nullptr;
      status_ = s;
    }
    return s;
  }
  // Cancels if running and waits (a bounded time) for UCX to release it. A send to a peer
  // that died may never finish cancelling: it is then abandoned to UCX, which frees it when
  // the worker is destroyed (the communicator is broken by then and goes next).
  void Cancel(ucp_worker_h worker) {
    if (request_ == nullptr || UCS_PTR_IS_ERR(request_)) {
      request_ = nullptr;
      return;
    }
    ucp_request_cancel(worker, request_);
    const absl::Time deadline = absl::Now() + absl::Milliseconds(200);
    while (ucp_request_check_status(request_) == UCS_INPROGRESS && absl::Now() < deadline) ucp_worker_progress(worker);
    if (ucp_request_check_status(request_) != UCS_INPROGRESS) ucp_request_free(request_);
    request_ = nullptr;
  }

 private:
  ucs_status_ptr_t request_ = nullptr;  // null: completed at once (or already freed)
  int peer_ = -1;
  ucs_status_t status_ = UCS_OK;
};

// How a thread waits for UCX without starving the peers it waits for when ranks share cores:
// spin (with sched_yield) while progress is recent, then sleep in growing steps (20 us up to
// 1 ms) so that a descheduled peer gets the CPU; any progress resets it.
class Backoff {
 public:
  void Progressed() { idle_ = 0; }
  void Idle() {
    if (++idle_ < 64) {
      sched_yield();
      return;
    }
    const int64_t us = std::min<int64_t>(1000, int64_t{20} << std::min(6, (idle_ - 64) / 16));
    std::this_thread::sleep_for(std::chrono::microseconds(us));
  }

 private:
  int idle_ = 0;
};

// Progresses the other worker of `res` if no thread is using it: point-to-point transfers
// (weight migration) advance whenever this rank waits on a collective, and collectives'
// protocol replies go out while a rank waits on a transfer. UCX only moves a request's bytes
// (rendezvous replies included) when its worker is progressed; a rank whose own transfers are
// done would otherwise leave a peer's sends pending forever.
void ProgressOther(Worker& other) {
  std::unique_lock<std::mutex> lock(other.mu, std::try_to_lock);
  if (lock.owns_lock()) ucp_worker_progress(other.worker);
}

absl::Status CancelledError(absl::string_view call) {
  return absl::AbortedError(absl::StrCat("ucx ", call, ": cancelled (the job is regrouping: a rank was lost)"));
}

// Progresses `w` until every pending op is done, the deadline, or res.cancel; cancels them
// all then. `other` (may be null) is progressed too while waiting (ProgressOther).
absl::Status Complete(Resources& res, Worker& w, std::vector<Pending>& ops, absl::Time deadline,
                      const std::function<std::string(const std::vector<int>&)>& timed_out,
                      Worker* other = nullptr) {
  int spins = 0;
  Backoff backoff;
  while (true) {
    bool running = false;
    for (Pending& op : ops) {
      const ucs_status_t s = op.Check();
      if (s == UCS_INPROGRESS) {
        running = true;
      } else if (s != UCS_OK) {
        for (Pending& other : ops) other.Cancel(w.worker);
        return absl::InternalError(absl::StrCat("ucx: operation with rank ", op.peer(),
                                                " failed: ", ucs_status_string(s)));
      }
    }
    if (!running) return absl::OkStatus();
    if (other != nullptr) ProgressOther(*other);
    if (ucp_worker_progress(w.worker) != 0) {
      backoff.Progressed();
      continue;
    }
    backoff.Idle();  // ranks may share cores: let the peer we wait for run
    if ((spins & 15) == 0 && res.cancelled()) {
      for (Pending& op : ops) op.Cancel(w.worker);
      return CancelledError("collective");
    }
    if ((++spins & 15) == 0 && absl::Now() >= deadline) {
      std::vector<int> peers;
      for (Pending& op : ops) {
        if (op.Check() == UCS_INPROGRESS) peers.push_back(op.peer());
      }
      for (Pending& op : ops) op.Cancel(w.worker);
      return absl::DeadlineExceededError(timed_out(peers));
    }
  }
}

ucs_status_ptr_t Send(Worker& w, int peer, const void* data, int64_t bytes, ucp_tag_t tag) {
  ucp_request_param_t param;
  param.op_attr_mask = 0;
  return ucp_tag_send_nbx(w.eps[peer], data, static_cast<size_t>(bytes), tag, &param);
}

ucs_status_ptr_t Recv(Worker& w, void* data, int64_t bytes, ucp_tag_t tag) {
  ucp_request_param_t param;
  param.op_attr_mask = 0;
  return ucp_tag_recv_nbx(w.worker, data, static_cast<size_t>(bytes), tag, kFullMask, &param);
}

class UcxRequest : public Request {
 public:
  UcxRequest(std::shared_ptr<Resources> res, ucs_status_ptr_t request, int peer, std::string what)
      : res_(std::move(res)), w_(&res_->p2p), op_(request, peer), what_(std::move(what)) {}
  ~UcxRequest() override {
    std::lock_guard<std::mutex> lock(w_->mu);
    op_.Cancel(w_->worker);
  }

  absl::StatusOr<bool> Test() override {
    ProgressOther(res_->coll);
    std::lock_guard<std::mutex> lock(w_->mu);
    while (ucp_worker_progress(w_->worker) != 0) {
    }
    return Done(op_.Check());
  }

  // The lock is dropped between rounds, so other threads' Tests and Waits progress too.
  absl::Status Wait(absl::Duration timeout) override {
    const absl::Time deadline = absl::Now() + timeout;
    Backoff backoff;
    for (int round = 0;; ++round) {
      ProgressOther(res_->coll);
      {
        std::lock_guard<std::mutex> lock(w_->mu);
        const unsigned progressed = ucp_worker_progress(w_->worker);
        SY_ASSIGN_OR_RETURN(const bool done, Done(op_.Check()));
        if (done) return absl::OkStatus();
        if (progressed != 0) {
          backoff.Progressed();
          continue;
        }
      }
      backoff.Idle();
      if ((round & 15) == 0 && res_->cancelled()) {
        res_->broken = true;
        return CancelledError(what_);
      }
      if ((round & 15) == 0 && absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat("ucx ", what_, ": timed out"));
      }
    }
  }

 private:
  absl::StatusOr<bool> Done(ucs_status_t s) {
    if (s == UCS_INPROGRESS) return false;
    if (s != UCS_OK) {
      res_->broken = true;  // a peer failed: closing must not wait for it
      return absl::InternalError(absl::StrCat("ucx ", what_, ": ", ucs_status_string(s)));
    }
    return true;
  }

  std::shared_ptr<Resources> res_;
  Worker* w_;
  Pending op_;
  std::string what_;
};

class UcxCommunicator : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(Bootstrap& bootstrap, const UcxOptions& options) {
    auto comm = std::unique_ptr<UcxCommunicator>(new UcxCommunicator(bootstrap, options));
    comm->set_timeout(options.timeout);  // the address exchange waits this long for its peers
    SY_RETURN_IF_ERROR(comm->Init(bootstrap));
    return comm;
  }

  absl::string_view backend() const override { return "ucx"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  bool Supports(MemoryKind kind) const override { return kind == MemoryKind::kHost; }

  absl::Status AllToAllV(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                         void* recv, const int64_t* recv_counts, const int64_t* recv_offsets,
                         MemoryKind kind) override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, kind, "AllToAllV"));
    const uint64_t seq = seq_++;
    const auto* in = static_cast<const char*>(send);
    auto* out = static_cast<char*>(recv);
    const absl::Time deadline = absl::Now() + timeout();
    Worker& w = res_->coll;
    std::lock_guard<std::mutex> lock(w.mu);
    std::vector<Pending> recvs, sends;
    for (int step = 1; step < size_; ++step) {
      const int from = (rank_ - step + size_) % size_;
      if (recv_counts[from] > 0) {
        recvs.emplace_back(Recv(w, out + recv_offsets[from], recv_counts[from], MakeTag(seq, from)), from);
      }
    }
    if (send_counts[rank_] != recv_counts[rank_]) {
      for (Pending& op : recvs) op.Cancel(w.worker);
      return guard_.Break(absl::InvalidArgumentError(absl::StrCat("ucx AllToAllV: rank ", rank_, " sends itself ",
                                                           send_counts[rank_], " bytes but expects ",
                                                           recv_counts[rank_])));
    }
    auto timed_out = [&](const std::vector<int>& peers) {
      return absl::StrCat("ucx AllToAllV: rank ", rank_, " timed out after ", absl::FormatDuration(timeout()),
                          " with ranks {", absl::StrJoin(peers, ","), "}");
    };
    for (int step = 1; step < size_; ++step) {
      const int to = (rank_ + step) % size_;
      if (send_counts[to] == 0) continue;
      // Keep at most send_window sends in flight.
      while (true) {
        int running = 0;
        for (Pending& op : sends) running += op.Check() == UCS_INPROGRESS;
        if (running < options_.send_window) break;
        ProgressOther(res_->p2p);
        if (ucp_worker_progress(w.worker) == 0) sched_yield();
        if (absl::Now() >= deadline || res_->cancelled()) {
          std::vector<Pending> all;
          for (auto* v : {&recvs, &sends}) for (Pending& op : *v) all.push_back(std::move(op));
          return Broke(Complete(*res_, w, all, deadline, timed_out));
        }
      }
      sends.emplace_back(Send(w, to, in + send_offsets[to], send_counts[to], MakeTag(seq, rank_)), to);
    }
    // The self part last: copied while the peers pull our data (rendezvous reads).
    if (send_counts[rank_] > 0) std::memmove(out + recv_offsets[rank_], in + send_offsets[rank_], send_counts[rank_]);
    for (Pending& op : sends) recvs.push_back(std::move(op));
    return Broke(Complete(*res_, w, recvs, deadline, timed_out, &res_->p2p));
  }

  absl::Status Barrier() override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, MemoryKind::kHost, "Barrier"));
    char token = 0;
    std::vector<char> all(size_);
    return Broke(Gather(&token, 1, all.data(), "Barrier"));
  }

  absl::Status AllReduce(int64_t* values, int count, ReduceOp op) override { return AllReduceImpl(values, count, op); }
  absl::Status AllReduce(double* values, int count, ReduceOp op) override { return AllReduceImpl(values, count, op); }

  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, MemoryKind::kHost, "AllGather"));
    return Broke(Gather(send, bytes, recv, "AllGather"));
  }

  void set_cancel(std::shared_ptr<const std::atomic<bool>> flag) override {
    Communicator::set_cancel(flag);
    res_->cancel = std::move(flag);
  }

  absl::StatusOr<std::unique_ptr<Request>> Isend(const void* buffer, int64_t bytes, int peer, int tag,
                                                MemoryKind kind) override {
    SY_RETURN_IF_ERROR(CheckPointToPoint(peer, tag, kind, "Isend"));
    std::lock_guard<std::mutex> lock(res_->p2p.mu);
    ucs_status_ptr_t r = Send(res_->p2p, peer, buffer, bytes, MakeTag(static_cast<uint64_t>(tag), rank_));
    return std::make_unique<UcxRequest>(res_, r, peer, absl::StrCat("Isend(peer ", peer, ", tag ", tag, ")"));
  }

  absl::StatusOr<std::unique_ptr<Request>> Irecv(void* buffer, int64_t bytes, int peer, int tag,
                                                MemoryKind kind) override {
    SY_RETURN_IF_ERROR(CheckPointToPoint(peer, tag, kind, "Irecv"));
    std::lock_guard<std::mutex> lock(res_->p2p.mu);
    ucs_status_ptr_t r = Recv(res_->p2p, buffer, bytes, MakeTag(static_cast<uint64_t>(tag), peer));
    return std::make_unique<UcxRequest>(res_, r, peer, absl::StrCat("Irecv(peer ", peer, ", tag ", tag, ")"));
  }

 private:
  UcxCommunicator(Bootstrap& b, const UcxOptions& options)
      : options_(options), rank_(b.rank()), size_(b.size()), local_rank_(b.local_rank()), local_size_(b.local_size()) {}

  absl::Status Init(Bootstrap& bootstrap) {
    if (size_ >= (1 << kRankBits)) return absl::InvalidArgumentError("ucx: too many ranks");
    ucp_config_t* config = nullptr;
    SY_UCS_CHECK(ucp_config_read(nullptr, nullptr, &config));
    // A job that survives lost peers would see UCX complain about them at every regroup
    // (endpoint timeouts while closing, requests left to a dead peer): expected there, and our
    // own messages say what happened.
    if (options_.survive_peer_loss && std::getenv("UCX_LOG_LEVEL") == nullptr) (void)ucs_global_opts_set_value("LOG_LEVEL", "fatal");
    if (options_.survive_peer_loss && std::getenv("UCX_TLS") == nullptr) {
      if (const ucs_status_t modified = ucp_config_modify(config, "TLS", "^cma"); modified != UCS_OK) {
        ucp_config_release(config);
        SY_UCS_CHECK(modified);
      }
    }
    ucp_params_t params;
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    params.features = UCP_FEATURE_TAG;
    params.mt_workers_shared = 1;
    res_ = std::make_shared<Resources>();
    const ucs_status_t init = ucp_init(&params, config, &res_->context);
    ucp_config_release(config);
    SY_UCS_CHECK(init);
    std::string mine;
    for (Worker* w : {&res_->coll, &res_->p2p}) {
      ucp_worker_params_t wp;
      wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
      wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
      SY_UCS_CHECK(ucp_worker_create(res_->context, &wp, &w->worker));
      ucp_address_t* address = nullptr;
      size_t length = 0;
      SY_UCS_CHECK(ucp_worker_get_address(w->worker, &address, &length));
      const uint32_t len32 = static_cast<uint32_t>(length);
      mine.append(reinterpret_cast<const char*>(&len32), 4);
      mine.append(reinterpret_cast<const char*>(address), length);
      ucp_worker_release_address(w->worker, address);
    }
    SY_ASSIGN_OR_RETURN(const std::vector<std::string> all, bootstrap.Exchange(mine, timeout()));
    for (int peer = 0; peer < size_; ++peer) {
      size_t at = 0;
      for (Worker* w : {&res_->coll, &res_->p2p}) {
        uint32_t len = 0;
        if (all[peer].size() < at + 4) return absl::InternalError(absl::StrCat("ucx: bad address from rank ", peer));
        std::memcpy(&len, all[peer].data() + at, 4);
        std::string address = all[peer].substr(at + 4, len);
        at += 4 + len;
        // No peer error handling: UCX 1.13 offers no shared-memory transport with it (they
        // have no peer failure handler), and a lost peer already ends in our deadlines.
        ucp_ep_params_t ep;
        ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
        ep.address = reinterpret_cast<const ucp_address_t*>(address.data());
        ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
        w->eps.push_back(nullptr);
        SY_UCS_CHECK(ucp_ep_create(w->worker, &ep, &w->eps.back()));
      }
    }
    return absl::OkStatus();
  }

  // guard_.Break, and a failed call marks the resources: their close does not wait for peers.
  absl::Status Broke(absl::Status s) {
    if (!s.ok()) res_->broken = true;
    return guard_.Break(std::move(s));
  }

  absl::Status CheckPointToPoint(int peer, int tag, MemoryKind kind, absl::string_view call) {
    SY_RETURN_IF_ERROR(CheckPeer(*this, peer, call));
    SY_RETURN_IF_ERROR(CheckTag(tag, call));
    return CheckKind(*this, kind, call);
  }

  // Every rank's `bytes` into recv in rank order.
  absl::Status Gather(const void* send, int64_t bytes, void* recv, absl::string_view call) {
    const uint64_t seq = seq_++;
    Worker& w = res_->coll;
    std::lock_guard<std::mutex> lock(w.mu);
    std::vector<Pending> ops;
    for (int step = 1; step < size_; ++step) {
      const int from = (rank_ - step + size_) % size_;
      ops.emplace_back(Recv(w, static_cast<char*>(recv) + from * bytes, bytes, MakeTag(seq, from)), from);
    }
    std::memcpy(static_cast<char*>(recv) + rank_ * bytes, send, bytes);
    for (int step = 1; step < size_; ++step) {
      const int to = (rank_ + step) % size_;
      ops.emplace_back(Send(w, to, send, bytes, MakeTag(seq, rank_)), to);
    }
    return Complete(
        *res_, w, ops, absl::Now() + timeout(),
        [&](const std::vector<int>& peers) {
          return absl::StrCat("ucx ", call, ": rank ", rank_, " timed out after ", absl::FormatDuration(timeout()),
                              " with ranks {", absl::StrJoin(peers, ","), "}");
        },
        &res_->p2p);
  }

  template <typename T>
  absl::Status AllReduceImpl(T* values, int count, ReduceOp op) {
    std::vector<T> all(static_cast<size_t>(count) * size_);
    SY_RETURN_IF_ERROR(AllGather(values, static_cast<int64_t>(count * sizeof(T)), all.data()));
    ReduceInRankOrder(all.data(), size_, count, op, values);
    return absl::OkStatus();
  }

  UcxOptions options_;
  int rank_, size_, local_rank_, local_size_;
  std::shared_ptr<Resources> res_;
  uint64_t seq_ = 0;
  BrokenGuard guard_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateUcxCommunicator(Bootstrap& bootstrap,
                                                                    const UcxOptions& options) {
  return UcxCommunicator::Create(bootstrap, options);
}

}  // namespace switchyard::comm
