#include "worker/migration.h"

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/env.h"
#include "common/log.h"
#include "common/hash.h"
#include "common/status.h"
#include "placement/routing.h"
#include "rpc/convert.h"

namespace switchyard::worker {
namespace {

constexpr size_t kWindow = 4;  // messages in flight per direction
constexpr int kTagBits = 20;   // tag = attempt (9 bits) << 20 | transfer index

double CpuSeconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// FNV-1a over x's 8 bytes, least significant first.
void Mix(uint64_t& h, uint64_t x) {
  unsigned char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(x >> (8 * i));
  h = Fnv1a(bytes, sizeof bytes, h);
}

}  // namespace

// ---- The transfer thread ---------------------------------------------------------------------

PostNext ChoosePost(const PostQueue& recv, const PostQueue& send, size_t window, int64_t credit) {
  const bool recv_open = !recv.empty && recv.in_flight < window;
  const bool send_open = !send.empty && send.in_flight < window;
  const bool recv_first = !recv.empty && (send.empty || recv.order < send.order);
  const bool take_recv = recv_first ? recv_open : recv_open && !send_open;
  if (!take_recv && !send_open) return PostNext::kNone;
  if (credit < (take_recv ? recv.bytes : send.bytes)) return PostNext::kNone;
  return take_recv ? PostNext::kRecv : PostNext::kSend;
}

struct EpochManager::Job {
  struct Piece {
    int peer;
    int tag;
    char* data;
    int64_t bytes;
    int64_t order;  // the cluster-wide order (ChoosePost): transfer index << 32 | chunk
  };
  std::vector<Piece> sends, recvs;                    // each in ascending `order`
  std::vector<std::shared_ptr<ExpertBuffer>> keep;    // source slots, alive until the job ends
  std::map<std::pair<int, int>, std::shared_ptr<ExpertBuffer>> staging;  // (layer id, expert) -> received
  int64_t rank_bytes = 0;
  std::atomic<bool> done{false}, failed{false};
  std::atomic<int64_t> completed{0};  // pieces sent or received
  std::mutex mu;
  std::string error;
};

class EpochManager::TransferThread {
 public:
  TransferThread(comm::Communicator& comm, int64_t credit_cap) : comm_(comm), cap_(credit_cap) {
    // Test hook (multi-process tests of the stall timeout): $SWITCHYARD_TEST_HOLD_TRANSFERS
    // names a rank whose transfer thread posts nothing, as a hung peer would.
    if (auto hold = GetSetting(Setting::kTestHoldTransfers)) hold_ = std::atoi(hold->c_str()) == comm.rank();
    thread_ = std::thread([this] { Loop(); });
    if (pthread_getcpuclockid(thread_.native_handle(), &cpu_clock_) != 0) cpu_clock_ = -1;
  }
  ~TransferThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }

  // A job starts with one step's budget: credit saved up while idle would double the bytes
  // moved in its first step.
  void Run(std::shared_ptr<Job> job, int64_t first_credit) {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = std::move(job);
    credit_ = first_credit;
    cv_.notify_all();
  }
  // Returns once the thread no longer touches the current job (its requests cancelled).
  void Cancel() {
    std::unique_lock<std::mutex> lock(mu_);
    cancel_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !busy_; });
    job_.reset();
    cancel_ = false;
  }
  void Grant(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    credit_ = std::min(cap_, credit_ + bytes);
    cv_.notify_all();
  }
  double TakeCpuSeconds() {
    if (cpu_clock_ == static_cast<clockid_t>(-1)) return 0;
    const double now = CpuSeconds(cpu_clock_);
    const double delta = now - last_cpu_;
    last_cpu_ = now;
    return delta;
  }

 private:
  using Inflight = std::vector<std::unique_ptr<comm::Request>>;

  void Loop() {
    while (true) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || (job_ && !cancel_); });
        if (stop_) return;
        job = job_;
        busy_ = true;
      }
      Execute(*job);
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
      if (job_ == job) job_.reset();
      cv_.notify_all();
    }
  }

  void Fail(Job& job, const std::string& why) {
    std::lock_guard<std::mutex> lock(job.mu);
    job.error = why;
    job.failed = true;
  }

  // Tests what is in flight, posts what the credit allows in the cluster-wide order of pieces
  // (receives and sends in separate windows), until done, failed or cancelled.
  void Execute(Job& job) {
    Inflight sends, recvs;
    size_t next_send = 0, next_recv = 0;
    // Polling costs CPU the ranks' steps need (they share cores): the wait between polls
    // doubles while nothing moves, from 100 us up to 2 ms.
    auto pause = std::chrono::microseconds(100);
    while (true) {
      // Completions first, so that the windows ChoosePost sees hold no finished message (a
      // full window would send its credit to a later piece of the other direction).
      bool progressed = false;
      for (Inflight* list : {&recvs, &sends}) {
        for (size_t i = 0; i < list->size();) {
          auto done = (*list)[i]->Test();
          if (!done.ok()) return Fail(job, absl::StrCat("weight transfer: ", done.status().message()));
          if (*done) {
            list->erase(list->begin() + static_cast<std::ptrdiff_t>(i));
            job.completed.fetch_add(1, std::memory_order_relaxed);
            progressed = true;
          } else {
            ++i;
          }
        }
      }
      std::vector<Job::Piece> post_recv, post_send;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (stop_ || cancel_) return;  // in-flight requests are cancelled as they go out of scope
        if (hold_) {
          cv_.wait_for(lock, std::chrono::milliseconds(10));
          continue;
        }
        auto queue = [](const std::vector<Job::Piece>& pieces, size_t next, size_t in_flight) {
          return next < pieces.size() ? PostQueue{false, pieces[next].order, pieces[next].bytes, in_flight}
                                      : PostQueue{true, 0, 0, in_flight};
        };
        while (true) {
          const PostNext next = ChoosePost(queue(job.recvs, next_recv, recvs.size() + post_recv.size()),
                                           queue(job.sends, next_send, sends.size() + post_send.size()), kWindow, credit_);
          if (next == PostNext::kNone) break;
          const Job::Piece& p = next == PostNext::kRecv ? job.recvs[next_recv++] : job.sends[next_send++];
          credit_ -= p.bytes;
          (next == PostNext::kRecv ? post_recv : post_send).push_back(p);
        }
      }
      progressed = progressed || !post_recv.empty() || !post_send.empty();
      for (const Job::Piece& p : post_recv) {
        auto r = comm_.Irecv(p.data, p.bytes, p.peer, p.tag);
        if (!r.ok()) return Fail(job, absl::StrCat("receiving from rank ", p.peer, ": ", r.status().message()));
        recvs.push_back(*std::move(r));
      }
      for (const Job::Piece& p : post_send) {
        auto r = comm_.Isend(p.data, p.bytes, p.peer, p.tag);
        if (!r.ok()) return Fail(job, absl::StrCat("sending to rank ", p.peer, ": ", r.status().message()));
        sends.push_back(*std::move(r));
      }
      if (next_recv == job.recvs.size() && next_send == job.sends.size() && recvs.empty() && sends.empty()) {
        job.done = true;
        return;
      }
      // Stalls are judged cluster-wide at step boundaries (EpochManager::Decide): a posted
      // receive may wait many steps for a sender's budget without anything being wrong.
      if (progressed) {
        pause = std::chrono::microseconds(100);
      } else {  // a new grant wakes us early
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, pause);
        pause = std::min<std::chrono::microseconds>(2 * pause, std::chrono::milliseconds(2));
      }
    }
  }

  comm::Communicator& comm_;
  const int64_t cap_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Job> job_;
  bool stop_ = false, cancel_ = false, busy_ = false;
  bool hold_ = false;  // test hook: never post (see the constructor)
  int64_t credit_ = 0;
  std::thread thread_;
  clockid_t cpu_clock_ = static_cast<clockid_t>(-1);
  double last_cpu_ = 0;
};

// ---- EpochManager -------------------------------------------------------------------------

EpochManager::EpochManager(comm::Communicator& comm, WeightStore& store, MoeLayer& layer, placement::Placement start,
                           int64_t epoch, MigrationOptions options)
    : comm_(comm), store_(store), layer_(layer), placement_(std::move(start)), epoch_(epoch), options_(options) {
  options_.bytes_per_step = std::max<int64_t>(1, options_.bytes_per_step);
  options_.chunk_bytes = std::clamp<int64_t>(options_.chunk_bytes, 1, options_.bytes_per_step);
  transfer_ = std::make_unique<TransferThread>(comm_, 2 * options_.bytes_per_step);
}

EpochManager::~EpochManager() {
  if (transfer_) transfer_->Cancel();
}

uint64_t EpochManager::HashOf(const control::Orders& orders) const {
  uint64_t h = kFnvOffsetBasis;
  Mix(h, static_cast<uint64_t>(orders.placement().epoch()));
  Mix(h, static_cast<uint64_t>(orders.base_epoch()));
  Mix(h, orders.nonce());
  for (const auto& layer : orders.placement().layers()) {
    Mix(h, static_cast<uint64_t>(layer.layer()));
    for (const auto& rank : layer.ranks()) {
      Mix(h, 0xffff);
      for (const auto& r : rank.replicas()) {
        uint64_t share_bits;
        const double share = r.share();
        std::memcpy(&share_bits, &share, sizeof share);
        Mix(h, static_cast<uint64_t>(r.expert()));
        Mix(h, share_bits);
      }
    }
  }
  for (const control::Transfer& t : orders.transfers()) {
    Mix(h, static_cast<uint64_t>(t.layer()) << 32 | static_cast<uint32_t>(t.expert()));
    Mix(h, static_cast<uint64_t>(t.from()) << 32 | static_cast<uint32_t>(t.to()));
  }
  return h & ((uint64_t{1} << 52) - 1);
}

absl::StatusOr<placement::Placement> ValidateOrders(const control::Orders& orders, const placement::Placement& current,
                                                    const std::vector<int>& layer_ids) {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  auto target = rpc::FromProto(orders.placement());
  if (!target.ok()) return bad(target.status().message());
  if (!(target->topology == current.topology) || target->num_experts != current.num_experts) {
    return bad("the placement is for another cluster shape");
  }
  for (int layer_id : layer_ids) {
    if (target->FindLayer(layer_id) == nullptr) return bad("no layer ", layer_id);
    if (current.FindLayer(layer_id) == nullptr) return bad("the placement in force has no layer ", layer_id);
  }
  const int R = current.topology.ranks();
  std::map<std::tuple<int, int, int>, int> incoming;  // (layer, expert, to) -> transfers
  for (const control::Transfer& t : orders.transfers()) {
    // Only layers this rank runs: the weight store has slots for no other.
    const bool runs = std::find(layer_ids.begin(), layer_ids.end(), t.layer()) != layer_ids.end();
    if (!runs || t.from() < 0 || t.from() >= R || t.to() < 0 || t.to() >= R || t.expert() < 0 ||
        t.expert() >= current.num_experts) {
      return bad("transfer of layer ", t.layer(), " expert ", t.expert(), " ", t.from(), "->", t.to(),
                 runs ? " is out of range" : ": this job does not run that layer");
    }
    const placement::LayerPlacement& now = *current.FindLayer(t.layer());
    auto holds = [&](const placement::LayerPlacement& l, int rank) {
      return std::any_of(l.ranks[rank].begin(), l.ranks[rank].end(), [&](const placement::Replica& r) { return r.expert == t.expert(); });
    };
    if (!holds(now, t.from()) || holds(now, t.to()) || !holds(*target->FindLayer(t.layer()), t.to())) {
      return bad("transfer of layer ", t.layer(), " expert ", t.expert(), " ", t.from(), "->", t.to(), " does not match the placements");
    }
    // One staging buffer per (layer, expert) on the receiver: a second transfer would replace
    // it while the first one's receives still write into it.
    if (++incoming[{t.layer(), t.expert(), t.to()}] > 1) {
      return bad("layer ", t.layer(), " expert ", t.expert(), " has more than one transfer to rank ", t.to());
    }
  }
  for (int layer_id : layer_ids) {
    const placement::LayerPlacement& next = *target->FindLayer(layer_id);
    const placement::LayerPlacement& now = *current.FindLayer(layer_id);
    for (int r = 0; r < R; ++r) {
      for (const placement::Replica& rep : next.ranks[r]) {
        const bool had = std::any_of(now.ranks[r].begin(), now.ranks[r].end(),
                                     [&](const placement::Replica& x) { return x.expert == rep.expert; });
        if (!had && incoming[{layer_id, rep.expert, r}] == 0) {
          return bad("layer ", layer_id, " expert ", rep.expert, " appears on rank ", r, " with no transfer");
        }
      }
    }
  }
  return *std::move(target);
}

void EpochManager::Offer(const control::Orders& orders) {
  if (!orders.has_placement()) return;
  const int64_t epoch = orders.placement().epoch();
  highest_seen_ = std::max(highest_seen_, epoch);
  auto drop = [&](const std::string& why) {  // once: the same orders are not checked again
    refused_.push_back(HashOf(orders));
    LogWarning("rank ", comm_.rank(), ": orders for epoch ", epoch, " refused: ", why);
    MigrationRecord record;
    record.epoch = epoch;
    record.error = why;
    if (on_update_) on_update_({"refused", record, 0, 0, placement_});
  };
  if (active_ || epoch != epoch_ + 1 || orders.base_epoch() != epoch_) return;  // busy, stale, or for a later base
  const uint64_t hash = HashOf(orders);
  if (std::find(refused_.begin(), refused_.end(), hash) != refused_.end()) return;  // aborted or ignored before
  if (offer_ && offer_hash_ == hash) return;
  if (absl::Status valid = ValidateOrders(orders, placement_, store_.layer_ids()).status(); !valid.ok()) {
    return drop(std::string(valid.message()));
  }
  offer_ = orders;
  offer_hash_ = hash;
}

void EpochManager::GrantBudget() { transfer_->Grant(options_.bytes_per_step); }

StepVote EpochManager::Vote() const {
  StepVote v;
  v.epoch = static_cast<double>(epoch_);
  if (active_) {
    v.ready = active_->job->done && !active_->job->failed ? 1 : 0;
    v.failed = active_->job->failed ? 1 : 0;
    v.completed = static_cast<double>(active_->job->completed.load(std::memory_order_relaxed));
    v.pieces = static_cast<double>(active_->job->sends.size() + active_->job->recvs.size());
    v.stalled = active_->rounds_unchanged >= 2 && absl::Now() - active_->last_change > options_.timeout ? 1 : 0;
  } else if (offer_ && offer_->placement().epoch() == epoch_ + 1) {
    v.offer_epoch = static_cast<double>(offer_->placement().epoch());
    v.offer_hash = static_cast<double>(offer_hash_);
  }
  return v;
}

absl::Status EpochManager::Decide(int64_t next_step, const std::vector<StepVote>& votes) {
  for (size_t r = 0; r < votes.size(); ++r) {
    if (votes[r].epoch != static_cast<double>(epoch_)) {
      return absl::InternalError(absl::StrCat("epoch disagreement before step ", next_step, ": rank ", comm_.rank(), " runs epoch ",
                                              epoch_, ", rank ", r, " runs ", static_cast<int64_t>(votes[r].epoch)));
    }
  }
  if (active_) {
    std::vector<std::string> failed;
    bool all_ready = true;
    for (size_t r = 0; r < votes.size(); ++r) {
      if (votes[r].failed != 0) failed.push_back(absl::StrCat(r));
      all_ready = all_ready && votes[r].ready != 0;
    }
    // Stall timeout: the cluster's count of completed transfers is what every rank saw in these
    // votes, so all ranks agree on whether it moved. Any movement resets every rank's clock;
    // otherwise a rank that saw none for the timeout (and two rounds) votes stalled, and all
    // abort at this step. A slow migration that keeps moving bytes never stalls.
    double completed = 0, pieces = 0;
    bool stalled = false;
    for (const StepVote& v : votes) {
      completed += v.completed;
      pieces += v.pieces;
      stalled = stalled || v.stalled != 0;
    }
    if (comm_.rank() == 0 && on_update_ && absl::Now() - active_->last_progress >= absl::Milliseconds(500)) {
      active_->last_progress = absl::Now();
      const double fraction = pieces > 0 ? std::min(1.0, completed / pieces) : 0;
      MigrationUpdate update{"progress", active_->record, active_->job->rank_bytes, absl::ToDoubleSeconds(absl::Now() - active_->started),
                             placement_};
      update.done_bytes = static_cast<int64_t>(fraction * static_cast<double>(active_->record.bytes));
      on_update_(update);
    }
    if (completed != active_->last_completed) {
      active_->last_completed = completed;
      active_->last_change = absl::Now();
      active_->rounds_unchanged = 0;
    } else {
      ++active_->rounds_unchanged;
      if (stalled && failed.empty()) {
        Abort(next_step, absl::StrCat("weight transfer stalled: no rank completed a transfer for ",
                                      absl::FormatDuration(options_.timeout), " (",
                                      static_cast<int64_t>(completed), " transfers done)"));
        return absl::OkStatus();
      }
    }
    if (!failed.empty()) {
      std::string why;
      {
        std::lock_guard<std::mutex> lock(active_->job->mu);
        why = active_->job->error;
      }
      Abort(next_step, why.empty() ? absl::StrCat("rank ", absl::StrJoin(failed, ", "), " could not move its bytes") : why);
      return absl::OkStatus();
    }
    if (all_ready) return Commit(next_step);
    return absl::OkStatus();
  }
  const StepVote& first = votes.front();
  if (first.offer_epoch == 0) return absl::OkStatus();
  for (const StepVote& v : votes) {
    if (v.offer_epoch != first.offer_epoch || v.offer_hash != first.offer_hash) return absl::OkStatus();
  }
  return Start(next_step);
}

absl::Status EpochManager::Start(int64_t next_step) {
  SY_CHECK(offer_.has_value());
  Active a;
  a.orders = *std::move(offer_);
  offer_.reset();
  SY_ASSIGN_OR_RETURN(a.target, rpc::FromProto(a.orders.placement()));
  const int me = comm_.rank();
  const int64_t bytes = static_cast<int64_t>(store_.expert_bytes());
  auto job = std::make_shared<Job>();
  const int attempt = attempts_++ & ((1 << (29 - kTagBits)) - 1);
  const std::vector<int>& layer_ids = store_.layer_ids();
  for (int i = 0; i < a.orders.transfers_size(); ++i) {
    const control::Transfer& t = a.orders.transfers(i);
    if (t.from() != me && t.to() != me) continue;
    const int tag = attempt << kTagBits | (i & ((1 << kTagBits) - 1));
    char* data = nullptr;
    if (t.to() == me) {
      SY_ASSIGN_OR_RETURN(std::shared_ptr<ExpertBuffer> buffer, ExpertBuffer::Create(static_cast<size_t>(bytes)));
      data = static_cast<char*>(buffer->data());
      job->staging[{t.layer(), t.expert()}] = std::move(buffer);
    } else {
      const auto li = std::find(layer_ids.begin(), layer_ids.end(), t.layer()) - layer_ids.begin();
      for (int s = 0; s < store_.num_slots(static_cast<int>(li)) && data == nullptr; ++s) {
        if (store_.slot_expert(static_cast<int>(li), s) == t.expert()) {
          job->keep.push_back(store_.slot_buffer(static_cast<int>(li), s));
          data = static_cast<char*>(job->keep.back()->data());
        }
      }
      if (data == nullptr) {  // Offer checked the placement; the store must agree with it
        return absl::InternalError(absl::StrCat("rank ", me, " has no slot with layer ", t.layer(), " expert ", t.expert()));
      }
    }
    for (int64_t off = 0, chunk = 0; off < bytes; off += options_.chunk_bytes, ++chunk) {
      const Job::Piece p{t.to() == me ? t.from() : t.to(), tag, data + off, std::min(options_.chunk_bytes, bytes - off),
                         (int64_t{i} << 32) + chunk};
      (t.to() == me ? job->recvs : job->sends).push_back(p);
    }
    job->rank_bytes += bytes;
  }
  a.record.epoch = a.orders.placement().epoch();
  a.record.start_step = next_step;
  a.record.moved_replicas = a.orders.transfers_size();
  a.record.bytes = static_cast<int64_t>(a.orders.transfers_size()) * bytes;
  a.record.scratch_moved_replicas = a.orders.scratch_moved_replicas();
  a.job = job;
  a.started = absl::Now();
  active_ = std::move(a);
  transfer_->Run(job, options_.bytes_per_step);
  if (on_update_) on_update_({"started", active_->record, job->rank_bytes, 0, placement_});
  return absl::OkStatus();
}

absl::Status EpochManager::Commit(int64_t next_step) {
  Active& a = *active_;
  const int me = comm_.rank();
  const std::vector<int>& layer_ids = store_.layer_ids();
  for (int li = 0; li < static_cast<int>(layer_ids.size()); ++li) {
    std::map<int, std::shared_ptr<ExpertBuffer>> have;
    for (int s = 0; s < store_.num_slots(li); ++s) have[store_.slot_expert(li, s)] = store_.slot_buffer(li, s);
    std::vector<int> experts;
    std::vector<std::shared_ptr<ExpertBuffer>> buffers;
    for (const placement::Replica& rep : a.target.FindLayer(layer_ids[li])->ranks[me]) {
      std::shared_ptr<ExpertBuffer> buffer = have.count(rep.expert) ? have[rep.expert] : a.job->staging[{layer_ids[li], rep.expert}];
      if (!buffer) {
        return absl::InternalError(absl::StrCat("epoch ", a.record.epoch, ": rank ", me, " has no bytes for layer ",
                                                layer_ids[li], " expert ", rep.expert));
      }
      experts.push_back(rep.expert);
      buffers.push_back(std::move(buffer));
    }
    store_.SetSlots(li, std::move(experts), std::move(buffers));  // the old slots go with `have`
  }
  SY_ASSIGN_OR_RETURN(placement::RoutingTable table, placement::RoutingTable::Build(a.target, a.record.epoch));
  layer_.SetRoutingTable(std::make_shared<placement::RoutingTable>(std::move(table)));
  placement_ = a.target;
  epoch_ = a.record.epoch;
  offer_.reset();
  a.record.commit_step = next_step;
  records_.push_back(a.record);
  const MigrationUpdate update{"committed", a.record, a.job->rank_bytes, absl::ToDoubleSeconds(absl::Now() - a.started), placement_};
  active_.reset();
  if (on_update_) on_update_(update);
  return absl::OkStatus();
}

void EpochManager::Abort(int64_t next_step, const std::string& why) {
  transfer_->Cancel();
  Active& a = *active_;
  a.record.error = why;
  a.record.abort_step = next_step;
  records_.push_back(a.record);
  refused_.push_back(HashOf(a.orders));
  const MigrationUpdate update{"aborted", a.record, a.job->rank_bytes, absl::ToDoubleSeconds(absl::Now() - a.started), placement_};
  active_.reset();  // the staging buffers go; epoch_ stays
  offer_.reset();
  LogWarning("rank ", comm_.rank(), ": migration to epoch ", update.record.epoch, " aborted before step ", next_step, ": ", why);
  if (on_update_) on_update_(update);
}

double EpochManager::TakeTransferCpuSeconds() { return transfer_->TakeCpuSeconds(); }

}  // namespace switchyard::worker
