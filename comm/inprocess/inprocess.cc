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
// Point-to-point receives match messages in the order they were posted, as MPI and UCX
// match them, whatever order they are tested in: each receive holds a ticket in its
// mailbox's queue and takes a message only at the queue's front.
class Fabric {
 public:
  using Key = std::tuple<int, int, int, int64_t>;

  void Post(int channel, int src, int dst, int64_t tag, const void* data, int64_t bytes) {
    std::string message(static_cast<const char*>(data), static_cast<size_t>(bytes));
    {
      std::lock_guard<std::mutex> lock(mu_);
      boxes_[{channel, src, dst, tag}].push_back(std::move(message));
    }
    cv_.notify_all();
  }

  // A posted receive's place in line.
  uint64_t Enqueue(const Key& key) {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t ticket = ++tickets_;
    waiting_[key].push_back(ticket);
    return ticket;
  }

  // Removes a receive that will never complete (cancelled), so later ones can match.
  void Withdraw(const Key& key, uint64_t ticket) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = waiting_.find(key);
      if (it == waiting_.end()) return;
      std::erase(it->second, ticket);
      if (it->second.empty()) waiting_.erase(it);
    }
    cv_.notify_all();
  }

  // Takes the next message into `buffer` if there is one (and, with a ticket, if this
  // receive is first in line). Ok(false) when none yet.
  absl::StatusOr<bool> TryTake(const Key& key, uint64_t ticket, void* buffer, int64_t bytes,
                               absl::string_view call) {
    std::lock_guard<std::mutex> lock(mu_);
    return TakeLocked(key, ticket, buffer, bytes, call);
  }

  // Waits for the next message until `deadline`.
  absl::Status Take(const Key& key, uint64_t ticket, void* buffer, int64_t bytes, absl::Time deadline,
                    absl::string_view call) {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      SY_ASSIGN_OR_RETURN(const bool taken, TakeLocked(key, ticket, buffer, bytes, call));
      if (taken) return absl::OkStatus();
      if (cv_.wait_until(lock, absl::ToChronoTime(deadline)) == std::cv_status::timeout &&
          absl::Now() >= deadline) {
        SY_ASSIGN_OR_RETURN(const bool last, TakeLocked(key, ticket, buffer, bytes, call));
        if (last) return absl::OkStatus();
        return absl::DeadlineExceededError(absl::StrCat("inprocess ", call, ": rank ", std::get<2>(key),
                                                        " timed out waiting for rank ", std::get<1>(key)));
      }
    }
  }

 private:
  absl::StatusOr<bool> TakeLocked(const Key& key, uint64_t ticket, void* buffer, int64_t bytes,
                                  absl::string_view call) {
    auto it = boxes_.find(key);
    if (it == boxes_.end() || it->second.empty()) return false;
    auto line = waiting_.end();
    if (ticket != 0) {
      line = waiting_.find(key);
      if (line == waiting_.end() || line->second.front() != ticket) return false;  // an earlier receive first
    }
    std::string& message = it->second.front();
    if (static_cast<int64_t>(message.size()) != bytes) {
      return absl::InvalidArgumentError(absl::StrCat("inprocess ", call, ": rank ", std::get<1>(key), " sent ",
                                                     message.size(), " bytes, rank ", std::get<2>(key),
                                                     " expected ", bytes));
    }
    if (bytes > 0) std::memcpy(buffer, message.data(), static_cast<size_t>(bytes));
    it->second.pop_front();
    if (line != waiting_.end()) {
      line->second.pop_front();
      if (line->second.empty()) waiting_.erase(line);
      cv_.notify_all();  // the next receive in line may now match
    }
    return true;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, std::deque<std::string>> boxes_;
  std::map<Key, std::deque<uint64_t>> waiting_;  // posted, unmatched receives by ticket
  uint64_t tickets_ = 0;
};

class InProcessRequest : public Request {
 public:
  // A send: the message is already posted (buffered), so it is complete.
  InProcessRequest() : done_(true) {}
  // A receive, in line from now on.
  InProcessRequest(std::shared_ptr<Fabric> fabric, int src, int dst, int tag, void* buffer, int64_t bytes)
      : fabric_(std::move(fabric)), key_{kPointToPoint, src, dst, tag}, ticket_(fabric_->Enqueue(key_)),
        buffer_(buffer), bytes_(bytes) {}
  ~InProcessRequest() override {
    if (!done_) fabric_->Withdraw(key_, ticket_);  // cancelled
  }

  absl::StatusOr<bool> Test() override {
    if (done_) return status_.ok() ? absl::StatusOr<bool>(true) : status_;
    auto taken = fabric_->TryTake(key_, ticket_, buffer_, bytes_, "Irecv");
    if (!taken.ok()) return Finish(taken.status());
    done_ = *taken;
    return done_;
  }

  absl::Status Wait(absl::Duration timeout) override {
    if (done_) return status_;
    absl::Status s = fabric_->Take(key_, ticket_, buffer_, bytes_, absl::Now() + timeout,
                                   absl::StrCat("Irecv(tag ", std::get<3>(key_), ")"));
    if (absl::IsDeadlineExceeded(s)) return s;  // still pending
    return Finish(s);
  }

 private:
  absl::Status Finish(absl::Status s) {
    if (!s.ok()) fabric_->Withdraw(key_, ticket_);  // failed: out of line
    done_ = true;
    status_ = s;
    return s;
  }

  std::shared_ptr<Fabric> fabric_;
  Fabric::Key key_{};
  uint64_t ticket_ = 0;
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

  absl::Status AllToAllV(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                         void* recv, const int64_t* recv_counts, const int64_t* recv_offsets,
                         MemoryKind kind) override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, kind, "AllToAllV"));
    const int64_t seq = seq_++;
    const auto* in = static_cast<const char*>(send);
    auto* out = static_cast<char*>(recv);
    // Post in pairwise-shift order (rank + 1, rank + 2, ...), the schedule real backends use.
    for (int s = 0; s < size_; ++s) {
      const int peer = (rank_ + s) % size_;
      if (peer == rank_) {
        if (send_counts[peer] != recv_counts[peer]) {
          return guard_.Break(absl::InvalidArgumentError(absl::StrCat(
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
      absl::Status got = fabric_->Take({kCollective, peer, rank_, seq}, 0, out + recv_offsets[peer],
                                       recv_counts[peer], deadline, "AllToAllV");
      if (!got.ok()) return guard_.Break(got);
    }
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, MemoryKind::kHost, "Barrier"));
    return guard_.Break(Gather(nullptr, 0, nullptr, "Barrier"));
  }

  absl::Status AllReduce(int64_t* values, int count, ReduceOp op) override {
    return AllReduceImpl(values, count, op);
  }
  absl::Status AllReduce(double* values, int count, ReduceOp op) override {
    return AllReduceImpl(values, count, op);
  }

  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override {
    SY_RETURN_IF_ERROR(guard_.Start(*this, MemoryKind::kHost, "AllGather"));
    return guard_.Break(Gather(send, bytes, recv, "AllGather"));
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

  // Every rank's `bytes` into recv (rank order); null buffers for a pure barrier.
  absl::Status Gather(const void* send, int64_t bytes, void* recv, absl::string_view call) {
    const int64_t seq = seq_++;
    for (int s = 1; s < size_; ++s) fabric_->Post(kCollective, rank_, (rank_ + s) % size_, seq, send, bytes);
    if (recv != nullptr) std::memcpy(static_cast<char*>(recv) + rank_ * bytes, send, bytes);
    const absl::Time deadline = absl::Now() + timeout();
    for (int s = 1; s < size_; ++s) {
      const int peer = (rank_ - s + size_) % size_;
      char* at = recv != nullptr ? static_cast<char*>(recv) + peer * bytes : nullptr;
      SY_RETURN_IF_ERROR(fabric_->Take({kCollective, peer, rank_, seq}, 0, at, bytes, deadline, call));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status AllReduceImpl(T* values, int count, ReduceOp op) {
    SY_RETURN_IF_ERROR(guard_.Start(*this, MemoryKind::kHost, "AllReduce"));
    std::vector<T> all(static_cast<size_t>(count) * size_);
    SY_RETURN_IF_ERROR(guard_.Break(Gather(values, count * sizeof(T), all.data(), "AllReduce")));
    ReduceInRankOrder(all.data(), size_, count, op, values);
    return absl::OkStatus();
  }

  std::shared_ptr<Fabric> fabric_;
  int rank_, size_, per_node_;
  int64_t seq_ = 0;
  BrokenGuard guard_;
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
