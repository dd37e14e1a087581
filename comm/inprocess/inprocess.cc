#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "comm/collectives_util.h"
#include "comm/inprocess/factory.h"
#include "common/status.h"

namespace switchyard::comm {
namespace {

// Two channels keep the step thread's collectives and the transfer thread's messages apart.
enum Channel { kCollective = 0, kPointToPoint = 1 };

// Mailboxes shared by the ranks of one world: (channel, src, dst, tag) -> queued messages.
class Fabric {
 public:
  void Post(int channel, int src, int dst, int64_t tag, const void* data, int64_t bytes) {
    std::string message(static_cast<const char*>(data), static_cast<size_t>(bytes));
    {
      std::lock_guard<std::mutex> lock(mu_);
      boxes_[{channel, src, dst, tag}].push_back(std::move(message));
    }
    cv_.notify_all();
  }

  // Takes the next message into `buffer` if there is one. Ok(false) when none yet.
  absl::StatusOr<bool> TryTake(int channel, int src, int dst, int64_t tag, void* buffer,
                               int64_t bytes, absl::string_view call) {
    std::lock_guard<std::mutex> lock(mu_);
    return TakeLocked(channel, src, dst, tag, buffer, bytes, call);
  }

  // Waits for the next message until `deadline`.
  absl::Status Take(int channel, int src, int dst, int64_t tag, void* buffer, int64_t bytes,
                    absl::Time deadline, absl::string_view call) {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      SY_ASSIGN_OR_RETURN(const bool taken, TakeLocked(channel, src, dst, tag, buffer, bytes, call));
      if (taken) return absl::OkStatus();
      if (cv_.wait_until(lock, absl::ToChronoTime(deadline)) == std::cv_status::timeout &&
          absl::Now() >= deadline) {
        SY_ASSIGN_OR_RETURN(const bool last, TakeLocked(channel, src, dst, tag, buffer, bytes, call));
        if (last) return absl::OkStatus();
        return absl::DeadlineExceededError(
            absl::StrCat("inprocess ", call, ": rank ", dst, " timed out waiting for rank ", src));
      }
    }
  }

 private:
  absl::StatusOr<bool> TakeLocked(int channel, int src, int dst, int64_t tag, void* buffer,
                                  int64_t bytes, absl::string_view call) {
    auto it = boxes_.find({channel, src, dst, tag});
    if (it == boxes_.end() || it->second.empty()) return false;
    std::string& message = it->second.front();
    if (static_cast<int64_t>(message.size()) != bytes) {
      return absl::InvalidArgumentError(absl::StrCat("inprocess ", call, ": rank ", src,
                                                     " sent ", message.size(), " bytes, rank ",
                                                     dst, " expected ", bytes));
    }
    if (bytes > 0) std::memcpy(buffer, message.data(), static_cast<size_t>(bytes));
    it->second.pop_front();
    return true;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::tuple<int, int, int, int64_t>, std::deque<std::string>> boxes_;
};

class InProcessRequest : public Request {
 public:
  // A send: the message is already posted (buffered), so it is complete.
  InProcessRequest() : done_(true) {}
  // A receive.
  InProcessRequest(std::shared_ptr<Fabric> fabric, int src, int dst, int tag, void* buffer, int64_t bytes)
      : fabric_(std::move(fabric)), src_(src), dst_(dst), tag_(tag), buffer_(buffer), bytes_(bytes) {}

  absl::StatusOr<bool> Test() override {
    if (done_) return status_.ok() ? absl::StatusOr<bool>(true) : status_;
    auto taken = fabric_->TryTake(kPointToPoint, src_, dst_, tag_, buffer_, bytes_, "Irecv");
    if (!taken.ok()) {
      done_ = true;
      status_ = taken.status();
      return status_;
    }
    done_ = *taken;
    return done_;
  }

  absl::Status Wait(absl::Duration timeout) override {
    if (done_) return status_;
    absl::Status s = fabric_->Take(kPointToPoint, src_, dst_, tag_, buffer_, bytes_,
                                   absl::Now() + timeout, absl::StrCat("Irecv(tag ", tag_, ")"));
    if (absl::IsDeadlineExceeded(s)) return s;  // still pending
    done_ = true;
    status_ = s;
    return s;
  }

 private:
  std::shared_ptr<Fabric> fabric_;
  int src_ = 0, dst_ = 0, tag_ = 0;
  void* buffer_ = nullptr;
  int64_t bytes_ = 0;
  bool done_ = false;
  absl::Status status_;
};

class InProcessCommunicator : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<Fabric> fabric, int rank, int size, int per_node)
      : fabric_(std::move(fabric)), rank_(rank), size_(size), per_node_(per_node) {}

  absl::string_view backend() const override { return "inprocess"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return rank_ % per_node_; }
  int local_size() const override { return std::min(per_node_, size_ - rank_ / per_node_ * per_node_); }
  bool Supports(MemoryKind kind) const override { return kind == MemoryKind::kHost; }

  absl::Status AllToAll(const void* send, int64_t bytes_per_peer, void* recv, MemoryKind kind) override {
    const FixedCounts counts(size_, bytes_per_peer);
    return AllToAllV(send, counts.counts(), counts.offsets(), recv, counts.counts(),
                     counts.offsets(), kind);
  }

  absl::Status AllToAllV(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                         void* recv, const int64_t* recv_counts, const int64_t* recv_offsets,
                         MemoryKind kind) override {
    SY_RETURN_IF_ERROR(StartCollective(kind, "AllToAllV"));
    const int64_t seq = seq_++;
    const auto* in = static_cast<const char*>(send);
    auto* out = static_cast<char*>(recv);
    // Post in pairwise-shift order (rank + 1, rank + 2, ...), the schedule real backends use.
    for (int s = 0; s < size_; ++s) {
      const int peer = (rank_ + s) % size_;
      if (peer == rank_) {
        if (send_counts[peer] != recv_counts[peer]) {
          return Break(absl::InvalidArgumentError(absl::StrCat(
              "inprocess AllToAllV: rank ", rank_, " sends itself ", send_counts[peer],
              " bytes but expects ", recv_counts[peer])));
        }
        if (send_counts[peer] > 0) std::memmove(out + recv_offsets[peer], in + send_offsets[peer], send_counts[peer]);
      } else if (send_counts[peer] > 0) {
        fabric_->Post(kCollective, rank_, peer, seq, in + send_offsets[peer], send_counts[peer]);
      }
    }
    const absl::Time deadline = absl::Now() + timeout();
    for (int s = 1; s < size_; ++s) {
      const int peer = (rank_ - s + size_) % size_;
      if (recv_counts[peer] == 0) continue;
      absl::Status got = fabric_->Take(kCollective, peer, rank_, seq, out + recv_offsets[peer],
                                       recv_counts[peer], deadline, "AllToAllV");
      if (!got.ok()) return Break(got);
    }
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    SY_RETURN_IF_ERROR(StartCollective(MemoryKind::kHost, "Barrier"));
    return Break(Gather(nullptr, 0, nullptr, "Barrier"));
  }

  absl::Status AllReduce(int64_t* values, int count, ReduceOp op) override {
    return AllReduceImpl(values, count, op);
  }
  absl::Status AllReduce(double* values, int count, ReduceOp op) override {
    return AllReduceImpl(values, count, op);
  }

  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override {
    SY_RETURN_IF_ERROR(StartCollective(MemoryKind::kHost, "AllGather"));
    return Break(Gather(send, bytes, recv, "AllGather"));
  }

  absl::StatusOr<std::unique_ptr<Request>> Isend(const void* buffer, int64_t bytes, int peer,
                                                int tag, MemoryKind kind) override {
    SY_RETURN_IF_ERROR(CheckPointToPoint(peer, tag, kind, "Isend"));
    fabric_->Post(kPointToPoint, rank_, peer, tag, buffer, bytes);
    return std::make_unique<InProcessRequest>();
  }

  absl::StatusOr<std::unique_ptr<Request>> Irecv(void* buffer, int64_t bytes, int peer, int tag,
                                                MemoryKind kind) override {
    SY_RETURN_IF_ERROR(CheckPointToPoint(peer, tag, kind, "Irecv"));
    return std::make_unique<InProcessRequest>(fabric_, peer, rank_, tag, buffer, bytes);
  }

 private:
  absl::Status CheckPointToPoint(int peer, int tag, MemoryKind kind, absl::string_view call) {
    SY_RETURN_IF_ERROR(CheckPeer(*this, peer, call));
    SY_RETURN_IF_ERROR(CheckTag(tag, call));
    return CheckKind(*this, kind, call);
  }

  absl::Status StartCollective(MemoryKind kind, absl::string_view call) {
    if (!broken_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("inprocess ", call,
                                                        ": communicator broken by an earlier error: ",
                                                        broken_.message()));
    }
    return CheckKind(*this, kind, call);
  }

  absl::Status Break(absl::Status s) {
    if (!s.ok() && broken_.ok()) broken_ = s;
    return s;
  }

  // Every rank's `bytes` into recv (rank order); null buffers for a pure barrier.
  absl::Status Gather(const void* send, int64_t bytes, void* recv, absl::string_view call) {
    const int64_t seq = seq_++;
    for (int s = 1; s < size_; ++s) fabric_->Post(kCollective, rank_, (rank_ + s) % size_, seq, send, bytes);
    if (recv != nullptr) std::memcpy(static_cast<char*>(recv) + rank_ * bytes, send, bytes);
    const absl::Time deadline = absl::Now() + timeout();
    for (int s = 1; s < size_; ++s) {
      const int peer = (rank_ - s + size_) % size_;
      char* at = recv != nullptr ? static_cast<char*>(recv) + peer * bytes : nullptr;
      SY_RETURN_IF_ERROR(fabric_->Take(kCollective, peer, rank_, seq, at, bytes, deadline, call));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status AllReduceImpl(T* values, int count, ReduceOp op) {
    SY_RETURN_IF_ERROR(StartCollective(MemoryKind::kHost, "AllReduce"));
    std::vector<T> all(static_cast<size_t>(count) * size_);
    SY_RETURN_IF_ERROR(Break(Gather(values, count * sizeof(T), all.data(), "AllReduce")));
    ReduceInRankOrder(all.data(), size_, count, op, values);
    return absl::OkStatus();
  }

  std::shared_ptr<Fabric> fabric_;
  int rank_, size_, per_node_;
  int64_t seq_ = 0;
  absl::Status broken_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> CreateInProcessWorld(int size, int ranks_per_node) {
  auto fabric = std::make_shared<Fabric>();
  const int per_node = ranks_per_node > 0 ? ranks_per_node : size;
  std::vector<std::unique_ptr<Communicator>> world;
  for (int r = 0; r < size; ++r) {
    world.push_back(std::make_unique<InProcessCommunicator>(fabric, r, size, per_node));
  }
  return world;
}

}  // namespace switchyard::comm
