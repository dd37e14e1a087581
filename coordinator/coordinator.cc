#include "coordinator/coordinator.h"

#include <google/protobuf/util/json_util.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/ascii.h"
#include "common/file_util.h"
#include "common/status.h"
#include "coordinator/state_store.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "rpc/validate.h"
#include "rpc/convert.h"
#include "placement/metrics.h"
#include "placement/planner.h"

namespace switchyard::coordinator {

using rpc::FromProto;
using rpc::ToProto;

namespace {

constexpr int64_t kMaxCount = int64_t{1} << 40;  // a report claiming more is hostile
constexpr size_t kMaxNameBytes = 256;  // host, backend, job id

std::string NewId() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x", rd(), rd());
}

}  // namespace

Coordinator::Coordinator(const CoordinatorOptions& options)
    : options_(options), id_(NewId()), policy_(DefaultPolicy()), rendezvous_(options.clock) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(const CoordinatorOptions& options) {
  auto c = std::unique_ptr<Coordinator>(new Coordinator(options));
  if (!options.state_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.state_dir, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("--state-dir ", options.state_dir, ": ", ec.message()));
    const std::string lock_path = options.state_dir + "/lock";
    c->state_lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->state_lock_fd_ < 0) {
      return absl::InvalidArgumentError(absl::StrCat("--state-dir ", options.state_dir, ": cannot open ", lock_path, ": ",
                                                     std::strerror(errno)));
    }
    if (flock(c->state_lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      char holder[32] = {};
      (void)!pread(c->state_lock_fd_, holder, sizeof holder - 1, 0);
      return absl::InvalidArgumentError(absl::StrCat("--state-dir ", options.state_dir,
                                                     " is in use by another coordinator (pid ",
                                                     absl::StripAsciiWhitespace(holder), "): stop it, or use another directory"));
    }
    const std::string pid = absl::StrCat(getpid(), "\n");
    if (ftruncate(c->state_lock_fd_, 0) != 0 || pwrite(c->state_lock_fd_, pid.data(), pid.size(), 0) < 0) {
      LogWarning("coordinator: cannot write its pid to ", lock_path);
    }
    std::lock_guard<std::mutex> lock(c->mu_);
    SY_RETURN_IF_ERROR(c->RestoreLocked());
  }
  return c;
}

Coordinator::~Coordinator() {
  if (state_lock_fd_ >= 0) close(state_lock_fd_);  // releases the flock
}

// ---- Persistence ---------------------------------------------------------------------------

PersistedState Coordinator::StateLocked() const {
  PersistedState s;
  s.job_id = job_id_;
  s.model = model_;
  s.committed = committed_;
  s.committed_epoch = committed_epoch_;
  s.target = target_;
  s.target_epoch = target_epoch_;
  s.transfers = transfers_;
  s.target_scratch_moves = target_scratch_moves_;
  s.target_nonce = target_nonce_;
  s.replan_pending = replan_pending_;
  s.pins = pins_;
  s.drained = drained_;
  s.policy = policy_;
  return s;
}

absl::Status Coordinator::PersistLocked() {
  if (options_.state_dir.empty()) return absl::OkStatus();
  return WriteState(options_.state_dir, StateLocked());
}

absl::Status Coordinator::RestoreLocked() {
  SY_ASSIGN_OR_RETURN(std::optional<PersistedState> restored, ReadState(options_.state_dir));
  if (!restored) return absl::OkStatus();
  PersistedState& s = *restored;
  job_id_ = s.job_id;
  model_ = s.model;
  if (model_) load_.Reset(model_->moe_layers_size(), model_->num_experts());  // load is not persisted: it is re-measured
  committed_ = std::move(s.committed);
  committed_epoch_ = s.committed_epoch;
  target_ = std::move(s.target);
  target_epoch_ = s.target_epoch;
  transfers_ = std::move(s.transfers);
  target_scratch_moves_ = s.target_scratch_moves;
  target_nonce_ = s.target_nonce;
  replan_pending_ = s.replan_pending;
  pins_ = std::move(s.pins);
  drained_ = std::move(s.drained);
  if (s.policy) policy_ = *s.policy;
  EventLocked("restored", absl::StrCat("state restored from ", options_.state_dir, "/state.json: epoch ", committed_epoch_,
                                       target_ ? absl::StrCat(", target epoch ", target_epoch_) : "", ", ",
                                       pins_.size(), " pins, ", drained_.size(), " drained ranks"));
  return absl::OkStatus();
}

// ---- Events ----------------------------------------------------------------------------------

void Coordinator::EventLocked(const std::string& kind, const std::string& message, int rank, int64_t epoch) {
  events_.Add(kind, message, rank, epoch, Now());
  if (kind == "report_rejected" || kind == "worker_lost") LogWarning("coordinator: ", kind, ": ", message);
  state_cv_.notify_all();  // long polls wait for publications
}

std::vector<admin::Event> Coordinator::WaitEvents(int64_t after_seq, absl::Duration timeout) {
  return events_.Wait(after_seq, timeout);
}

void Coordinator::StopWaiters() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    state_cv_.notify_all();
  }
  events_.Stop();
}

// ---- Control API -----------------------------------------------------------------------------

absl::Status Coordinator::RequireJobLocked() const {
  if (!model_ || !committed_) return absl::FailedPreconditionError("no job yet: no worker has registered");
  return absl::OkStatus();
}

absl::StatusOr<control::RegisterResponse> Coordinator::Register(const control::RegisterRequest& r) {
  std::lock_guard<std::mutex> lock(mu_);
  if (r.world_size() < 1 || r.world_size() > placement::kMaxRanks || r.rank() < 0 || r.rank() >= r.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("register: rank ", r.rank(), " of world size ", r.world_size()));
  }
  if (r.host().size() > kMaxNameBytes || r.node_name().size() > kMaxNameBytes || r.backend().size() > kMaxNameBytes ||
      r.job_id().size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("register: host, node name, backend and job id must be at most ", kMaxNameBytes, " bytes"));
  }
  if (!r.shares().empty() && r.shares() != "epoch" && r.shares() != "step") {
    return absl::InvalidArgumentError(absl::StrCat("register: shares '", EchoValue(r.shares()), "': epoch or step"));
  }
  if (r.tokens_per_step() < 0 || r.tokens_per_step() > kMaxCount || r.step() < 0 || r.step() > kMaxCount) {
    return absl::InvalidArgumentError(absl::StrCat("register: tokens_per_step ", r.tokens_per_step(), " and step ", r.step(),
                                                   " must be in 0..2^40"));
  }
  if (absl::Status model = rpc::ValidateModelShape(r.model()); !model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("register: ", model.message()));
  }
  if (r.placement().epoch() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("register: placement epoch ", r.placement().epoch(), " is negative"));
  }
  auto converted = FromProto(r.placement());
  if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat("register: ", converted.status().message()));
  placement::Placement p = *std::move(converted);
  if (p.topology.ranks() != r.world_size() || p.num_experts != r.model().num_experts()) {
    return absl::InvalidArgumentError("register: placement does not match the world size or the model");
  }
  if (r.node() != p.topology.NodeOf(r.rank())) {
    return absl::InvalidArgumentError(absl::StrCat("register: rank ", r.rank(), " says node ", r.node(), ", its placement's ",
                                                   p.topology.nodes(), " node blocks put it on node ", p.topology.NodeOf(r.rank())));
  }
  std::vector<int> layers(r.model().moe_layers().begin(), r.model().moe_layers().end());
  for (int layer : layers) {
    if (p.FindLayer(layer) == nullptr) return absl::InvalidArgumentError(absl::StrCat("register: placement has no layer ", layer));
  }
  if (r.job_key().size() > kMaxNameBytes || r.instance().size() > kMaxNameBytes || r.generation() < 0 ||
      r.members_size() > r.world_size() || r.job_world_size() < 0 || r.job_world_size() > placement::kMaxRanks) {
    return absl::InvalidArgumentError("register: job key, instance, generation or members out of range");
  }
  const bool joined_job = !r.job_key().empty() && model_ && job_id_ == r.job_id();
  if (joined_job && r.generation() < generation_) {
    return absl::FailedPreconditionError(absl::StrCat("register: generation ", r.generation(), " of job ", EchoValue(r.job_id()),
                                                      " is over: the job regrouped (generation ", generation_, ")"));
  }
  // Members of a joined job that regrouped (a rank lost, a newcomer, a removal): the job goes
  // on under the placement they agreed, on the new ranks.
  const bool regrouped = joined_job && committed_ && r.generation() > generation_ &&
                         model_->num_experts() == r.model().num_experts() &&
                         std::equal(model_->moe_layers().begin(), model_->moe_layers().end(), layers.begin(), layers.end());
  if (regrouped && r.members_size() != r.world_size()) {
    return absl::InvalidArgumentError("register: a regrouped worker must list its generation's members");
  }
  const bool same_job = !regrouped && model_ && job_id_ == r.job_id() && committed_ &&
                        committed_->topology == p.topology && model_->num_experts() == r.model().num_experts() &&
                        std::equal(model_->moe_layers().begin(), model_->moe_layers().end(), layers.begin(), layers.end());
  // A job that asked Resume and registers with the committed placement itself continues it.
  const bool resumed = !same_job && r.resumed() && model_ && committed_ && r.placement().epoch() == committed_epoch_ &&
                       p == *committed_ &&
                       model_->name() == r.model().name() && model_->expert_bytes() == r.model().expert_bytes() &&
                       std::equal(model_->moe_layers().begin(), model_->moe_layers().end(), layers.begin(), layers.end());
  // Everything a registration may change, put back if its state cannot be written (the
  // worker retries; nothing is left half-changed). Its events wait for the write too.
  const struct {
    std::string job_id;
    std::optional<types::ModelShape> model;
    std::optional<placement::Placement> committed;
    int64_t committed_epoch;
    std::optional<placement::Placement> target;
    bool target_started;
    decltype(transfers_) transfers;
    Membership members;
    LoadAggregator load;
    decltype(step_balance_) step_balance;
    AutoRebalanceState auto_state;
    decltype(pins_) pins;
    decltype(drained_) drained;
    std::string job_key;
    int64_t generation;
    decltype(balance_history_) balance_history;
    decltype(migrations_) migrations;
  } old{job_id_, model_,   committed_, committed_epoch_, target_, target_started_, transfers_,
        members_, load_,   step_balance_, auto_,          pins_,   drained_, job_key_, generation_,
        balance_history_, migrations_};
  std::vector<std::tuple<std::string, std::string, int, int64_t>> events;
  auto note = [&](const std::string& kind, const std::string& message, int rank = -1, int64_t epoch = -1) {
    events.emplace_back(kind, message, rank, epoch);
  };
  if (regrouped) {
    // Constraints follow their worker to its new rank; those of workers that left are dropped.
    std::vector<int> new_rank_of(committed_->topology.ranks(), -1);
    for (int q = 0; q < r.members_size(); ++q) {
      const int before = r.members(q).previous_rank();
      if (before >= 0 && before < static_cast<int>(new_rank_of.size())) new_rank_of[before] = q;
    }
    std::vector<types::Pin> pins;
    std::vector<int> drained;
    int dropped = 0;
    for (types::Pin pin : pins_) {
      if (pin.rank() >= 0 && pin.rank() < static_cast<int>(new_rank_of.size()) && new_rank_of[pin.rank()] >= 0) {
        pin.set_rank(new_rank_of[pin.rank()]);
        pins.push_back(pin);
      } else {
        ++dropped;
      }
    }
    for (int d : drained_) {
      if (d >= 0 && d < static_cast<int>(new_rank_of.size()) && new_rank_of[d] >= 0) drained.push_back(new_rank_of[d]);
      else ++dropped;
    }
    // Experts whose every replica sat on ranks that left: the workers loaded them again.
    int replaced = 0;
    for (const placement::LayerPlacement& l : committed_->layers) {
      std::vector<bool> kept(committed_->num_experts, false);
      for (int before = 0; before < static_cast<int>(l.ranks.size()); ++before) {
        if (new_rank_of[before] < 0) continue;
        for (const placement::Replica& x : l.ranks[before]) kept[x.expert] = true;
      }
      replaced += static_cast<int>(std::count(kept.begin(), kept.end(), false));
    }
    const int before_ranks = committed_->topology.ranks();
    int newcomers = 0;
    for (const control::JobMember& m : r.members()) newcomers += m.previous_rank() < 0;
    if (target_) {
      note("migration_dropped", absl::StrCat("epoch ", target_epoch_, " was in flight when the job regrouped"), -1, target_epoch_);
    }
    committed_ = p;
    committed_epoch_ = r.placement().epoch();
    target_.reset();
    target_started_ = false;
    transfers_.clear();
    members_.Clear();
    step_balance_.clear();
    auto_ = {};
    pins_ = std::move(pins);
    drained_ = std::move(drained);
    generation_ = r.generation();
    note("membership_changed",
         absl::StrCat("generation ", generation_, ": ", r.world_size(), " ranks (", before_ranks, " before; ",
                      before_ranks + newcomers - r.world_size(), " left, ", newcomers, " joined), epoch ", committed_epoch_),
         -1, committed_epoch_);
    if (replaced > 0) {
      note("experts_replaced", absl::StrCat(replaced, " experts had no replica left; loaded again from the weight source on the survivors"),
           -1, committed_epoch_);
    }
    if (dropped > 0) note("constraints_dropped", absl::StrCat(dropped, " pins or drains named ranks that left the job"));
    ++regroups_total_;
  } else if (resumed) {
    job_id_ = r.job_id();
    model_ = r.model();
    if (target_) {
      note("migration_dropped",
           absl::StrCat("epoch ", target_epoch_, " was in flight for the previous job; the job resumes epoch ",
                        committed_epoch_),
           -1, target_epoch_);
    }
    target_.reset();
    target_started_ = false;
    transfers_.clear();
    members_.Clear();
    load_.Reset(static_cast<int>(layers.size()), r.model().num_experts());
    step_balance_.clear();
    ClearJobHistoryLocked();
    auto_ = {};
    note("job_resumed",
         absl::StrCat("job ", EchoValue(r.job_id()), ": ", r.model().name(), ", ", r.world_size(), " ranks, resumes epoch ",
                      committed_epoch_),
         -1, committed_epoch_);
  } else if (!same_job) {
    // A new job (or the first): its placement is the committed one. Constraints and policy
    // survive when they still make sense for it. The replaced job's state stays on disk in
    // state.replaced.json (a job resubmitted on the wrong state directory loses nothing).
    const bool had_job = model_.has_value();
    if (had_job && !options_.state_dir.empty()) {
      if (absl::Status kept = WriteFileAtomically(options_.state_dir + "/state.replaced.json", StateToJson(StateLocked()));
          !kept.ok()) {
        return absl::UnavailableError(absl::StrCat("register: cannot keep the replaced job's state: ", kept.message()));
      }
    }
    model_ = r.model();
    job_id_ = r.job_id();
    job_key_ = r.job_key();
    generation_ = r.generation();
    committed_ = p;
    committed_epoch_ = r.placement().epoch();
    target_.reset();
    transfers_.clear();
    members_.Clear();
    load_.Reset(static_cast<int>(layers.size()), r.model().num_experts());
    step_balance_.clear();
    ClearJobHistoryLocked();
    auto_ = {};
    if (!placement::ValidateConstraints(ConstraintsLocked(), p.topology, p.num_experts, layers).ok()) {
      pins_.clear();
      drained_.clear();
      note("constraints_cleared", "pins and drains did not fit the new job and were dropped");
    }
    note(had_job ? "job_replaced" : "job_started",
         absl::StrCat("job ", EchoValue(r.job_id()), ": ", r.model().name(), ", ", r.world_size(), " ranks, ", layers.size(),
                      " MoE layers, epoch ", committed_epoch_,
                      had_job && !options_.state_dir.empty()
                          ? absl::StrCat("; the replaced job's state is in ", options_.state_dir, "/state.replaced.json")
                          : ""));
  } else if (r.placement().epoch() > committed_epoch_) {
    if (target_ && r.placement().epoch() == target_epoch_) {
      ObserveWorkerEpochLocked(target_epoch_, r.rank());
    } else {
      // The workers switched to an epoch this coordinator never published (it lost its
      // state): the workers are the truth.
      committed_ = p;
      committed_epoch_ = r.placement().epoch();
      target_.reset();
      transfers_.clear();
      note("epoch_committed", absl::StrCat("workers run epoch ", committed_epoch_, " (adopted from rank ", r.rank(), ")"),
           r.rank(), committed_epoch_);
    }
  }
  if (!r.job_key().empty()) {  // a restarted coordinator learns the joined job from its members
    rendezvous_.Adopt(r.job_key(), r.job_id(), std::max(r.job_world_size(), r.world_size()), r.generation(),
                      std::vector<control::JobMember>(r.members().begin(), r.members().end()));
    rendezvous_.Touch(r.job_key(), r.instance());
  }
  const bool rejoin = members_.Join(r, Now());
  std::string joined_as;
  if (!r.job_key().empty() && r.rank() < r.members_size()) {  // a joined job's member: which worker it is
    const control::JobMember& m = r.members(r.rank());
    joined_as = absl::StrCat(" (token stream ", m.origin(), ", generation ", r.generation(),
                             m.previous_rank() >= 0 ? absl::StrCat(", was rank ", m.previous_rank()) : r.generation() > 0 ? ", new" : "", ")");
  }
  note(rejoin ? "worker_rejoined" : "worker_joined",
       absl::StrCat("rank ", r.rank(), joined_as, " on node ", EchoValue(r.node_name().empty() ? r.host() : r.node_name()), " (",
                    r.node(), ", host ", EchoValue(r.host()), ", ", r.backend(), ")"),
       r.rank(), r.placement().epoch());
  if (absl::Status persisted = PersistLocked(); !persisted.ok()) {  // nothing half-changed: the worker retries
    job_id_ = old.job_id;
    model_ = old.model;
    committed_ = old.committed;
    committed_epoch_ = old.committed_epoch;
    target_ = old.target;
    target_started_ = old.target_started;
    transfers_ = old.transfers;
    members_ = old.members;
    load_ = old.load;
    step_balance_ = old.step_balance;
    balance_history_ = old.balance_history;
    migrations_ = old.migrations;
    auto_ = old.auto_state;
    pins_ = old.pins;
    drained_ = old.drained;
    job_key_ = old.job_key;
    generation_ = old.generation;
    regroups_total_ -= regrouped ? 1 : 0;
    return persisted;
  }
  for (const auto& [kind, message, rank, epoch] : events) EventLocked(kind, message, rank, epoch);
  control::RegisterResponse out;
  out.set_coordinator_id(id_);
  out.set_committed_epoch(committed_epoch_);
  return out;
}

absl::StatusOr<control::HeartbeatResponse> Coordinator::Heartbeat(const control::HeartbeatRequest& r) {
  std::lock_guard<std::mutex> lock(mu_);
  control::HeartbeatResponse out;
  if (!r.job_key().empty()) {  // a joined job's member: is its membership changing?
    rendezvous_.Touch(r.job_key(), r.instance());
    const RegroupSignal signal = rendezvous_.Signal(r.job_key(), r.instance());
    out.set_regroup_generation(signal.generation);
    out.set_regroup_now(signal.now);
    out.set_regroup_reason(signal.reason);
    out.set_removed(signal.removed);
  }
  WorkerState* known = members_.Find(r.rank());
  if (known == nullptr || known->info.instance() != r.instance()) {
    out.set_registered(false);
    return out;
  }
  WorkerState& w = *known;
  SY_RETURN_IF_ERROR(members_.CheckProgress("heartbeat", w, r.step(), r.epoch(), LatestEpochLocked()));
  w.last_heartbeat = Now();
  w.step = std::max(w.step, r.step());
  w.epoch = r.epoch();
  if (!w.healthy) {
    w.healthy = true;
    EventLocked("worker_recovered", absl::StrCat("rank ", r.rank(), " is back"), r.rank());
  }
  ObserveWorkerEpochLocked(r.epoch(), r.rank());
  out.set_registered(true);
  return out;
}

void Coordinator::ObserveWorkerEpochLocked(int64_t epoch, int rank, const std::string& how) {
  if (!target_ || epoch < target_epoch_) return;
  if (MigrationSpan* span = CurrentSpanLocked(); span != nullptr) {
    span->state = "committed";
    span->ended_ms = absl::ToUnixMillis(Now());
    span->done_bytes = span->bytes;
  }
  committed_ = std::move(*target_);
  committed_epoch_ = target_epoch_;
  target_.reset();
  transfers_.clear();
  target_started_ = false;
  ++migrations_committed_;
  OnMigrationCommitted(auto_);
  EventLocked("epoch_committed",
              absl::StrCat("epoch ", committed_epoch_, " committed", how.empty() ? absl::StrCat(" (seen at rank ", rank, ")") : how),
              rank, committed_epoch_);
  if (replan_pending_) {
    replan_pending_ = false;
    auto plan = PlanLocked(ConstraintsLocked(), kNoMoveLimit);
    if (!plan.ok()) {
      EventLocked("plan_failed", absl::StrCat("deferred re-plan: ", plan.status().message()));
    } else if (plan->moved_replicas() > 0 || !(FromProto(plan->placement()).value() == *committed_)) {
      if (PublishLocked(*plan, "constraints changed during the last migration").ok()) return;
      replan_pending_ = true;  // try again at the next commit
    }
  }
  (void)PersistLocked();
}

// target_epoch_ outlives its target: ranks may still report an epoch that was aborted.
int64_t Coordinator::LatestEpochLocked() const { return std::max(target_epoch_, committed_epoch_); }

absl::Status Coordinator::ValidateReportLocked(const control::LoadReport& r) const {
  const WorkerState* known = members_.Find(r.rank());
  if (known == nullptr) return absl::FailedPreconditionError(absl::StrCat("load report from unregistered rank ", r.rank()));
  const WorkerState& w = *known;
  if (r.first_step() < 0 || r.end_step() <= r.first_step()) {
    return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), ": bad window [", r.first_step(), ", ",
                                                   r.end_step(), ")"));
  }
  SY_RETURN_IF_ERROR(members_.CheckProgress("load report", w, r.end_step(), r.epoch(), LatestEpochLocked()));
  if (r.first_step() < w.reported_until) {
    return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), ": window [", r.first_step(), ", ",
                                                   r.end_step(), ") repeats steps already reported (up to ", w.reported_until, ")"));
  }
  // Counts a window could hold: a token picks an expert at most once, top_k experts in all;
  // a rank computes at most every rank's tokens for an expert.
  const double steps = static_cast<double>(r.end_step() - r.first_step());
  const int64_t tokens = w.info.tokens_per_step();
  const double max_chosen = tokens > 0 ? steps * static_cast<double>(tokens) : static_cast<double>(kMaxCount);
  const double max_chosen_total = tokens > 0 ? max_chosen * model_->top_k() : static_cast<double>(kMaxCount);
  const int64_t widest = members_.WidestTokensPerStep();
  const double max_processed =
      tokens > 0 ? steps * static_cast<double>(widest) * committed_->topology.ranks() : static_cast<double>(kMaxCount);
  const int E = model_->num_experts();
  if (r.layers_size() != model_->moe_layers_size()) {
    return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), ": ", r.layers_size(), " layers, the job has ",
                                                   model_->moe_layers_size()));
  }
  for (int i = 0; i < r.layers_size(); ++i) {
    const types::LayerCounts& l = r.layers(i);
    if (l.layer() != model_->moe_layers(i)) {
      return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), ": layer ", l.layer(), " where ",
                                                     model_->moe_layers(i), " was expected"));
    }
    if (l.chosen_size() != E || l.processed_size() != E) {
      return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), " layer ", l.layer(), ": ",
                                                     l.chosen_size(), "/", l.processed_size(), " counts for ", E, " experts"));
    }
    double chosen_total = 0;
    for (int e = 0; e < E; ++e) {
      if (l.chosen(e) < 0 || l.processed(e) < 0 || l.chosen(e) > kMaxCount || l.processed(e) > kMaxCount ||
          static_cast<double>(l.chosen(e)) > max_chosen || static_cast<double>(l.processed(e)) > max_processed) {
        return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), " layer ", l.layer(), " expert ", e,
                                                       ": counts ", l.chosen(e), " chosen / ", l.processed(e),
                                                       " processed are more than ", steps, " steps of ", tokens > 0 ? tokens : 0,
                                                       " tokens could give"));
      }
      chosen_total += static_cast<double>(l.chosen(e));
    }
    const double p50 = l.step_balancedness_p50(), p99 = l.step_balancedness_p99();
    for (double b : {p50, p99}) {
      if (!(b >= 0 && b <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), " layer ", l.layer(),
                                                       ": step balancedness ", absl::StrFormat("%.17g", b), " is not in [0, 1]"));
      }
    }
    if ((p50 > 0) != (p99 > 0) || p99 > p50) {  // 0 and 0: not measured
      return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), " layer ", l.layer(),
                                                     ": step balancedness p50 ", absl::StrFormat("%.17g", p50), " and p99 ",
                                                     absl::StrFormat("%.17g", p99),
                                                     ": both measured (> 0) with p99 <= p50, or both 0"));
    }
    if (chosen_total > max_chosen_total) {
      return absl::InvalidArgumentError(absl::StrCat("load report of rank ", r.rank(), " layer ", l.layer(), ": ", chosen_total,
                                                     " pairs chosen, more than ", steps, " steps x ", tokens, " tokens x top-",
                                                     model_->top_k()));
    }
  }
  return absl::OkStatus();
}

absl::Status Coordinator::ReportLoad(const control::LoadReport& r) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(RequireJobLocked());
  if (absl::Status valid = ValidateReportLocked(r); !valid.ok()) {
    // An unregistered rank (e.g. after a coordinator restart) registers and sends it again:
    // not a rejection.
    if (!absl::IsFailedPrecondition(valid)) {
      ++reports_rejected_;
      EventLocked("report_rejected", std::string(valid.message()), r.rank());
    }
    return valid;
  }
  WorkerState& w = *members_.Find(r.rank());
  w.last_report = Now();
  w.step = std::max(w.step, r.end_step());
  w.reported_until = r.end_step();
  load_.Add(r);
  if (r.rank() == 0) {  // every rank sees the same step times: count them once
    for (double ms : r.step_ms()) step_seconds_.Observe(ms / 1e3);
  }
  alltoall_bytes_intra_node_ += r.alltoall_bytes_intra_node();
  alltoall_bytes_inter_node_ += r.alltoall_bytes_inter_node();
  step_balance_.resize(r.layers_size(), {0, 0});
  for (int i = 0; i < r.layers_size(); ++i) {  // every rank measures the same: the latest wins
    step_balance_[i] = {r.layers(i).step_balancedness_p50(), r.layers(i).step_balancedness_p99()};
  }
  CompleteWindowsLocked();
  return absl::OkStatus();
}

void Coordinator::CompleteWindowsLocked() {
  const int ranks = committed_->topology.ranks();
  // Balancedness is over the ranks that compute: those holding experts in the committed
  // placement. A drain takes effect when its epoch commits, not when it is asked for.
  int active = 0;
  for (int r = 0; r < ranks; ++r) {
    for (const placement::LayerPlacement& l : committed_->layers) {
      if (!l.ranks[r].empty()) {
        ++active;
        break;
      }
    }
  }
  const int completed = load_.CompleteReady(ranks, std::max(1, active), policy_.smoothing(), [&](int rank) {
    return members_.Gone(rank);
  });
  if (completed > 0 && model_) {
    BalanceSample sample{load_.windows(), absl::ToUnixMillis(Now()), {}};
    for (int i = 0; i < model_->moe_layers_size(); ++i) sample.per_layer.push_back(load_.layer(i).balancedness);
    balance_history_.push_back(std::move(sample));
    while (balance_history_.size() > kHistoryWindows) balance_history_.pop_front();
  }
  for (int i = 0; i < completed; ++i) EvaluateAutoRebalanceLocked();
}

void Coordinator::ClearJobHistoryLocked() {
  balance_history_.clear();  // a new job starts without the old one's figures
  migrations_.clear();
}

Coordinator::MigrationSpan* Coordinator::CurrentSpanLocked() {
  if (!target_ || migrations_.empty() || migrations_.back().epoch != target_epoch_ || migrations_.back().state != "in_flight") {
    return nullptr;
  }
  return &migrations_.back();
}

std::vector<Coordinator::BalanceSample> Coordinator::BalanceHistory() {
  std::lock_guard<std::mutex> lock(mu_);
  return {balance_history_.begin(), balance_history_.end()};
}

std::vector<Coordinator::MigrationSpan> Coordinator::MigrationHistory() {
  std::lock_guard<std::mutex> lock(mu_);
  return {migrations_.begin(), migrations_.end()};
}

std::vector<int> Coordinator::Layers() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!model_) return {};
  return {model_->moe_layers().begin(), model_->moe_layers().end()};
}

absl::StatusOr<control::Orders> Coordinator::PollOrders(const control::PollOrdersRequest& r) {
  std::unique_lock<std::mutex> lock(mu_);
  control::Orders out;
  if (members_.Find(r.rank()) == nullptr) return absl::FailedPreconditionError(absl::StrCat("rank ", r.rank(), " is not registered"));
  if (r.epoch() < 0) return absl::InvalidArgumentError(absl::StrCat("poll orders: epoch ", r.epoch(), " is negative"));
  if (r.wait_ms() < 0 || r.wait_ms() > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("poll orders: wait_ms ", r.wait_ms(), " must be in [0, 1000]"));
  }
  // Long poll: every publication is an event, which wakes this wait.
  state_cv_.wait_for(lock, std::chrono::milliseconds(r.wait_ms()),
                      [&] { return stopping_ || (target_ && r.epoch() < target_epoch_); });
  if (target_ && r.epoch() < target_epoch_) {
    *out.mutable_placement() = ToProto(*target_, target_epoch_);
    out.set_base_epoch(committed_epoch_);
    out.set_scratch_moved_replicas(target_scratch_moves_);
    out.set_nonce(target_nonce_);
    for (const control::Transfer& t : transfers_) *out.add_transfers() = t;
  }
  return out;
}

absl::Status Coordinator::ReportMigration(const control::MigrationReport& r) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerState* worker = members_.Find(r.rank());
  if (worker == nullptr) return absl::FailedPreconditionError(absl::StrCat("rank ", r.rank(), " is not registered"));
  if (r.phase() != "started" && r.phase() != "committed" && r.phase() != "aborted" && r.phase() != "refused" &&
      r.phase() != "progress") {
    return absl::InvalidArgumentError(absl::StrCat("migration report of rank ", r.rank(), ": unknown phase '", EchoValue(r.phase()), "'"));
  }
  if (r.epoch() < 1 || r.bytes() < 0 || r.rank_bytes() < 0 || r.moved_replicas() < 0 || !(r.seconds() >= 0 && r.seconds() < 1e9) ||
      r.done_bytes() < 0 || r.done_bytes() > r.bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("migration report of rank ", r.rank(), ": negative, zero or non-finite values"));
  }
  SY_RETURN_IF_ERROR(members_.CheckProgress("migration report", *worker, r.step(), r.epoch(), LatestEpochLocked()));
  const bool current = target_ && r.epoch() == target_epoch_;
  MigrationSpan* span = current ? CurrentSpanLocked() : nullptr;
  if (r.phase() == "progress") {
    if (span != nullptr) {
      span->bytes = r.bytes();
      span->done_bytes = std::max(span->done_bytes, r.done_bytes());
    }
    return absl::OkStatus();
  }
  if (r.phase() == "started") {
    if (span != nullptr && span->started_ms < 0) {
      span->started_ms = absl::ToUnixMillis(Now());
      span->bytes = r.bytes();
      span->moved_replicas = r.moved_replicas();
    }
    if (current && !target_started_) {
      target_started_ = true;
      EventLocked("migration_started", absl::StrFormat("epoch %d: %d replicas, %d bytes, moving from step %d", r.epoch(),
                                                       r.moved_replicas(), r.bytes(), r.step()),
                  r.rank(), r.epoch());
    }
    return absl::OkStatus();
  }
  if (r.phase() == "committed") {
    worker->epoch = std::max(worker->epoch, r.epoch());
    if (current) {
      migration_bytes_total_ += r.bytes();
      last_migration_seconds_ = r.seconds();
      migration_seconds_.Observe(r.seconds());
      if (span != nullptr) span->seconds = r.seconds(), span->bytes = r.bytes(), span->done_bytes = r.bytes();
      // By link class: each transfer moves one replica (bytes / replicas) within a node or across.
      const int per_node = committed_ ? committed_->topology.ranks() / std::max(1, committed_->topology.nodes()) : 1;
      const int64_t per_replica = r.moved_replicas() > 0 ? r.bytes() / r.moved_replicas() : 0;
      for (const control::Transfer& t : transfers_) {
        (t.from() / per_node == t.to() / per_node ? migration_bytes_intra_node_ : migration_bytes_inter_node_) += per_replica;
      }
      ObserveWorkerEpochLocked(r.epoch(), r.rank(),
                               absl::StrFormat(" at step %d: %d replicas, %d bytes moved in %.2f s", r.step(),
                                               r.moved_replicas(), r.bytes(), r.seconds()));
    }
    return absl::OkStatus();
  }
  if (!current) return absl::OkStatus();  // another rank's report of the same abort came first
  if (span != nullptr) {
    span->state = r.phase() == "refused" ? "refused" : "aborted";
    span->ended_ms = absl::ToUnixMillis(Now());
    span->error = r.error();
  }
  target_.reset();
  transfers_.clear();
  target_started_ = false;
  ++migrations_failed_;
  // Back off: the same plan would likely fail the same way. Each failure in a row doubles the
  // automatic rebalancer's wait (up to 64x the cooldown) and halves the moves it may plan.
  OnMigrationFailed(policy_, auto_, r.moved_replicas());
  const std::string backoff = absl::StrFormat("; next automatic plan in %d windows, at most %d moved replicas",
                                              auto_.cooldown, BackoffMoveLimitLocked());
  EventLocked("migration_failed",
              r.phase() == "refused"
                  ? absl::StrFormat("epoch %d refused by rank %d, the cluster stays on epoch %d: %s%s", r.epoch(), r.rank(),
                                    committed_epoch_, EchoValue(r.error(), 512), backoff)
                  : absl::StrFormat("epoch %d aborted at step %d, the cluster stays on epoch %d: %s%s", r.epoch(), r.step(),
                                    committed_epoch_, EchoValue(r.error(), 512), backoff),
              r.rank(), r.epoch());
  if (replan_pending_) {  // pins and drains still have to happen
    replan_pending_ = false;
    auto plan = PlanLocked(ConstraintsLocked(), kNoMoveLimit);
    if (plan.ok() && PublishLocked(*plan, "constraints, after a failed migration").ok()) return absl::OkStatus();
    replan_pending_ = true;
  }
  return PersistLocked();
}

absl::Status Coordinator::Leave(const control::LeaveRequest& r) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerState* known = members_.Find(r.rank());
  if (known == nullptr) return absl::FailedPreconditionError(absl::StrCat("rank ", r.rank(), " is not registered"));
  WorkerState& w = *known;
  SY_RETURN_IF_ERROR(members_.CheckProgress("leave", w, r.step(), r.epoch(), LatestEpochLocked()));
  w.left = true;
  w.step = std::max(w.step, r.step());
  w.epoch = r.epoch();
  if (!w.info.job_key().empty()) rendezvous_.Leave(w.info.job_key(), w.info.instance());
  ObserveWorkerEpochLocked(r.epoch(), r.rank());
  EventLocked("worker_left", absl::StrCat("rank ", r.rank(), " finished after ", r.step(), " steps at epoch ", r.epoch()),
              r.rank(), r.epoch());
  if (MigrationSpan* span = CurrentSpanLocked(); span != nullptr) {
    bool all_left = true;
    for (const auto& [rank, worker] : members_.workers()) all_left = all_left && worker.left;
    if (all_left) {  // the job ended before the switch: the migration will not finish
      span->state = "abandoned";
      span->ended_ms = absl::ToUnixMillis(Now());
      span->error = "every rank left before the switch";
    }
  }
  CompleteWindowsLocked();
  return absl::OkStatus();
}

absl::Status Coordinator::Checkpoint(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.state_dir.empty()) return absl::OkStatus();
  if (absl::Status written = PersistLocked(); !written.ok()) {
    EventLocked("checkpoint_failed", absl::StrCat(why, ": ", written.message()));
    return written;
  }
  EventLocked("checkpoint", absl::StrCat("state written to ", options_.state_dir, "/state.json: ", why, " (epoch ",
                                         committed_epoch_, ")"));
  return absl::OkStatus();
}

absl::StatusOr<control::ResumeResponse> Coordinator::Resume(const control::ResumeRequest& r) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status model = rpc::ValidateModelShape(r.model()); !model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("resume: ", model.message()));
  }
  control::ResumeResponse out;
  auto differs = [&](absl::string_view what, auto theirs, auto ours) {
    out.set_reason(absl::StrCat("the coordinator's placement (epoch ", committed_epoch_, ") is for ", what, " ", ours,
                                ", the job has ", theirs));
    return out;
  };
  if (!model_ || !committed_) {
    out.set_reason("the coordinator holds no placement yet");
    return out;
  }
  const placement::Topology& t = committed_->topology;
  if (r.model().name() != model_->name()) return differs("model", r.model().name(), model_->name());
  if (r.model().num_experts() != model_->num_experts()) return differs("experts", r.model().num_experts(), model_->num_experts());
  if (r.model().expert_bytes() != model_->expert_bytes()) {
    return differs("expert bytes", r.model().expert_bytes(), model_->expert_bytes());
  }
  if (!std::equal(r.model().moe_layers().begin(), r.model().moe_layers().end(), model_->moe_layers().begin(),
                  model_->moe_layers().end())) {
    return differs("MoE layers", absl::StrJoin(r.model().moe_layers(), ","), absl::StrJoin(model_->moe_layers(), ","));
  }
  if (r.world_size() != t.ranks()) return differs("ranks", r.world_size(), t.ranks());
  if (r.nodes() != t.nodes()) return differs("nodes", r.nodes(), t.nodes());
  if (r.slots_per_rank() != t.slots_per_rank()) return differs("slots per rank", r.slots_per_rank(), t.slots_per_rank());
  out.set_found(true);
  *out.mutable_placement() = rpc::ToProto(*committed_, committed_epoch_);
  return out;
}

// ---- Planning --------------------------------------------------------------------------------

placement::Constraints Coordinator::ConstraintsLocked() const {
  placement::Constraints c;
  for (const types::Pin& p : pins_) c.pins.push_back({p.layer(), p.expert(), p.rank()});
  c.drained_ranks = drained_;
  return c;
}

admin::ConstraintsResponse Coordinator::ConstraintsResponseLocked() const {
  admin::ConstraintsResponse out;
  for (const types::Pin& p : pins_) *out.add_pins() = p;
  for (int r : drained_) out.add_drained_ranks(r);
  return out;
}

std::string Coordinator::SharesLocked() const {
  std::string shares;
  for (const auto& [rank, w] : members_.workers()) {
    const std::string& mine = w.info.shares().empty() ? "epoch" : w.info.shares();
    if (shares.empty()) shares = mine;
    if (shares != mine) return "mixed";
  }
  return shares;
}

placement::LoadMatrix Coordinator::PlanningLoadLocked() const {
  // Per-step shares balance each step within the replicas in force: plan replicas for the
  // experts whose load moves most (mean + one standard deviation between windows).
  const double spread = SharesLocked() == "step" ? 1.0 : 0.0;
  return load_.PlanningLoad(std::vector<int>(model_->moe_layers().begin(), model_->moe_layers().end()), policy_.smoothing(),
                            spread);
}

absl::StatusOr<admin::RebalanceResponse> Coordinator::PlanLocked(const placement::Constraints& constraints, int max_moves) {
  SY_RETURN_IF_ERROR(RequireJobLocked());
  const placement::LoadMatrix load = PlanningLoadLocked();
  SY_ASSIGN_OR_RETURN(placement::Placement planned, PlanWithPolicy(policy_, *committed_, load, constraints, max_moves));
  return DescribePlanLocked(planned, load, constraints);
}

absl::StatusOr<admin::RebalanceResponse> Coordinator::DescribePlanLocked(const placement::Placement& planned,
                                                                         const placement::LoadMatrix& load,
                                                                         const placement::Constraints& constraints) const {
  admin::RebalanceResponse out;
  *out.mutable_placement() = ToProto(planned, committed_epoch_ + 1);
  out.set_moved_replicas(placement::MovedReplicas(*committed_, planned));
  SY_ASSIGN_OR_RETURN(const placement::PlacementScore before, placement::ScorePlacement(*committed_, load, constraints));
  SY_ASSIGN_OR_RETURN(const placement::PlacementScore after, placement::ScorePlacement(planned, load, constraints));
  out.set_balancedness_before(before.balancedness_mean);
  out.set_balancedness_after(after.balancedness_mean);
  out.set_worst_before(before.balancedness_min);
  out.set_worst_after(after.balancedness_min);
  out.set_target_epoch(committed_epoch_ + 1);
  // The peer's way for comparison: EPLB from scratch under the same load and constraints.
  placement::PlanRequest scratch{committed_->topology, load, nullptr, constraints, {}};
  auto eplb = placement::CreatePlanner("eplb");
  auto from_scratch = eplb.ok() ? (*eplb)->Plan(scratch) : absl::StatusOr<placement::Placement>(eplb.status());
  out.set_scratch_moved_replicas(from_scratch.ok() ? placement::MovedReplicas(*committed_, *from_scratch) : -1);
  return out;
}

absl::Status Coordinator::PublishLocked(const admin::RebalanceResponse& plan, const std::string& why) {
  placement::Placement next = *FromProto(plan.placement());
  const auto old_transfers = transfers_;
  // Where each new replica comes from: a rank holding the expert now, on the same node first.
  transfers_.clear();
  for (const placement::Transfer& t : placement::PlanTransfers(*committed_, next)) {
    control::Transfer& x = transfers_.emplace_back();
    x.set_layer(t.layer_id);
    x.set_expert(t.expert);
    x.set_from(t.from);
    x.set_to(t.to);
  }
  target_ = next;
  target_epoch_ = plan.target_epoch();
  target_scratch_moves_ = plan.scratch_moved_replicas();
  target_started_ = false;
  std::random_device rd;
  target_nonce_ = (uint64_t{rd()} << 32) | rd();
  if (absl::Status persisted = PersistLocked(); !persisted.ok()) {
    target_.reset();
    transfers_ = old_transfers;
    return persisted;
  }
  ++plans_published_;
  moved_replicas_total_ += plan.moved_replicas();
  if (!migrations_.empty() && migrations_.back().state == "in_flight") {  // replaced before it finished
    migrations_.back().state = "aborted";
    migrations_.back().ended_ms = absl::ToUnixMillis(Now());
    migrations_.back().error = "replaced by a newer plan";
  }
  MigrationSpan& span = migrations_.emplace_back();
  span.epoch = target_epoch_;
  span.state = "in_flight";
  span.published_ms = absl::ToUnixMillis(Now());
  span.moved_replicas = plan.moved_replicas();
  span.why = why;
  while (migrations_.size() > kHistoryMigrations) migrations_.pop_front();
  EventLocked("plan_published",
              absl::StrFormat("epoch %d (%s): %d moved replicas, worst-layer balancedness %.3f -> %.3f", target_epoch_, why,
                              plan.moved_replicas(), plan.worst_before(), plan.worst_after()),
              -1, target_epoch_);
  return absl::OkStatus();
}

int Coordinator::BackoffMoveLimitLocked() const { return BackoffMoveLimit(policy_, auto_); }

void Coordinator::EvaluateAutoRebalanceLocked() {
  if (!model_ || !committed_) return;
  const placement::LoadMatrix load = PlanningLoadLocked();
  const placement::Constraints constraints = ConstraintsLocked();
  auto window = AutoRebalanceWindow(policy_, auto_, *committed_, load, constraints, MigrationInFlightLocked());
  if (!window.ok()) {
    EventLocked("plan_failed", std::string(window.status().message()));
    return;
  }
  if (!window->has_value() || !(*window)->publish) return;
  auto plan = DescribePlanLocked((*window)->placement, load, constraints);
  if (!plan.ok()) {
    EventLocked("plan_failed", std::string(plan.status().message()));
    return;
  }
  const double gain = (*window)->gain;
  if (absl::Status s = PublishLocked(*plan, absl::StrFormat("auto: predicted step time -%.1f%%", 100 * (1 - 1 / (1 + gain))));
      !s.ok()) {
    EventLocked("plan_failed", absl::StrCat("cannot persist the plan: ", s.message()));
  }
}

// ---- Admin API -------------------------------------------------------------------------------

admin::ClusterStatus Coordinator::Status() {
  std::lock_guard<std::mutex> lock(mu_);
  admin::ClusterStatus s;
  s.set_coordinator_id(id_);
  s.set_committed_epoch(committed_epoch_);
  s.set_target_epoch(target_ ? target_epoch_ : committed_epoch_);
  s.set_windows(load_.windows());
  if (committed_) {
    s.set_ranks(committed_->topology.ranks());
    s.set_nodes(committed_->topology.nodes());
  }
  if (model_) s.set_model(model_->name());
  s.set_shares(SharesLocked());
  admin::MigrationProgress* m = s.mutable_migration();  // always present: epoch 0 when none is in flight
  if (target_) {
    m->set_epoch(target_epoch_);
    m->set_started(target_started_);
    m->set_ranks(target_->topology.ranks());
    int committed = 0;
    for (const auto& [rank, w] : members_.workers()) committed += w.epoch >= target_epoch_ ? 1 : 0;
    m->set_ranks_committed(committed);
    if (const MigrationSpan* span = CurrentSpanLocked(); span != nullptr) {
      m->set_moved_replicas(span->moved_replicas);
      m->set_total_bytes(span->bytes);
      m->set_done_bytes(span->done_bytes);
      m->set_published_unix_ms(span->published_ms);
    } else if (committed_) {  // restored from the state directory: sizes and times not known here
      m->set_moved_replicas(placement::MovedReplicas(*committed_, *target_));
    }
  }
  int healthy = 0;
  int64_t step = 0;
  const absl::Time now = Now();
  for (const auto& [rank, w] : members_.workers()) {
    admin::WorkerStatus* ws = s.add_workers();
    ws->set_rank(rank);
    ws->set_host(w.info.host());
    ws->set_node(w.info.node());
    ws->set_node_name(w.info.node_name().empty() ? w.info.host() : w.info.node_name());
    ws->set_healthy(w.healthy);
    ws->set_step(w.step);
    ws->set_epoch(w.epoch);
    ws->set_seconds_since_heartbeat(absl::ToDoubleSeconds(now - w.last_heartbeat));
    ws->set_seconds_since_report(w.last_report == absl::InfinitePast() ? -1 : absl::ToDoubleSeconds(now - w.last_report));
    ws->set_drained(std::find(drained_.begin(), drained_.end(), rank) != drained_.end());
    ws->set_left(w.left);
    ws->set_origin(w.info.members_size() > rank ? w.info.members(rank).origin() : rank);
    healthy += w.healthy && !w.left;
    step = std::max(step, w.step);
  }
  s.set_registered(static_cast<int>(members_.workers().size()));
  s.set_generation(generation_);
  if (!job_key_.empty()) {
    for (const LostMember& m : rendezvous_.Lost(job_key_)) {
      admin::LostWorker* l = s.add_lost();
      l->set_rank(m.rank);
      l->set_generation(m.generation);
      l->set_node_name(m.node_name);
      l->set_reason(m.reason);
      l->set_origin(m.origin);
      l->set_seconds_ago(absl::ToDoubleSeconds(now - m.when));
    }
  }
  for (const types::Pin& p : pins_) *s.add_pins() = p;
  for (int r : drained_) s.add_drained_ranks(r);
  s.set_healthy(healthy);
  s.set_step(step);
  if (model_) {
    for (int i = 0; i < model_->moe_layers_size(); ++i) {
      s.add_layers(model_->moe_layers(i));
      s.add_layer_balancedness(load_.windows() > 0 ? load_.layer(i).balancedness : 0.0);
    }
  }
  return s;
}

absl::StatusOr<types::Placement> Coordinator::GetPlacement(std::optional<int> layer) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(RequireJobLocked());
  types::Placement p = ToProto(*committed_, committed_epoch_);
  if (layer) {
    if (committed_->FindLayer(*layer) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown layer ", *layer, " (the job runs layers ",
                                                     absl::StrJoin(model_->moe_layers(), ","), ")"));
    }
    auto* layers = p.mutable_layers();
    layers->erase(std::remove_if(layers->begin(), layers->end(), [&](const types::LayerPlacement& l) { return l.layer() != *layer; }),
                  layers->end());
  }
  return p;
}

absl::StatusOr<admin::GetLoadResponse> Coordinator::GetLoad(std::optional<int> layer) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(RequireJobLocked());
  if (layer && committed_->FindLayer(*layer) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown layer ", *layer, " (the job runs layers ",
                                                   absl::StrJoin(model_->moe_layers(), ","), ")"));
  }
  admin::GetLoadResponse out;
  out.set_windows(load_.windows());
  const placement::LoadMatrix load = PlanningLoadLocked();
  const auto score = placement::ScorePlacement(*committed_, load, ConstraintsLocked());
  for (int i = 0; i < model_->moe_layers_size(); ++i) {
    if (layer && model_->moe_layers(i) != *layer) continue;
    admin::LayerLoad* l = out.add_layers();
    l->set_layer(model_->moe_layers(i));
    for (double x : load_.layer(i).smoothed) l->add_smoothed(x);
    for (int64_t x : load_.layer(i).last_window) l->add_last_window(x);
    l->set_balancedness(load_.windows() > 0 ? load_.layer(i).balancedness : 0.0);
    l->set_predicted_balancedness(score.ok() ? score->per_layer[i] : 0.0);
  }
  return out;
}

absl::StatusOr<admin::RebalanceResponse> Coordinator::Rebalance(bool dry_run, int max_moves) {
  std::lock_guard<std::mutex> lock(mu_);
  if (max_moves < 0) return absl::InvalidArgumentError(absl::StrCat("max_moves ", max_moves, " must be >= 0"));
  SY_ASSIGN_OR_RETURN(admin::RebalanceResponse plan, PlanLocked(ConstraintsLocked(), max_moves));
  if (dry_run) return plan;
  if (MigrationInFlightLocked()) {
    return absl::FailedPreconditionError(absl::StrCat("epoch ", target_epoch_, " is still being migrated (",
                                                      transfers_.size(), " replicas); rebalance again once it commits"));
  }
  if (plan.moved_replicas() == 0 && FromProto(plan.placement()).value() == *committed_) {
    EventLocked("rebalance_skipped", "the plan equals the committed placement");
    return plan;
  }
  SY_RETURN_IF_ERROR(PublishLocked(plan, "admin"));
  plan.set_applied(true);
  return plan;
}

absl::StatusOr<admin::ConstraintsResponse> Coordinator::ChangeConstraintsLocked(placement::Constraints next,
                                                                               const std::string& what) {
  SY_RETURN_IF_ERROR(RequireJobLocked());
  SY_RETURN_IF_ERROR(placement::ValidateConstraints(next, committed_->topology, committed_->num_experts,
                                                    std::vector<int>(model_->moe_layers().begin(), model_->moe_layers().end())));
  // The forced moves are planned now: a change that cannot be honoured is refused whole.
  SY_ASSIGN_OR_RETURN(admin::RebalanceResponse plan, PlanLocked(next, kNoMoveLimit));
  const auto old_pins = pins_;
  const auto old_drained = drained_;
  const bool old_replan = replan_pending_;
  pins_.clear();
  for (const placement::Pin& p : next.pins) {
    types::Pin pin;
    pin.set_layer(p.layer_id);
    pin.set_expert(p.expert);
    pin.set_rank(p.rank);
    pins_.push_back(pin);
  }
  drained_ = next.drained_ranks;
  absl::Status done;
  std::string event = what;
  if (MigrationInFlightLocked()) {
    replan_pending_ = true;
    event = absl::StrCat(what, " (planned once epoch ", target_epoch_, " commits)");
    done = PersistLocked();
  } else if (plan.moved_replicas() > 0 || !(FromProto(plan.placement()).value() == *committed_)) {
    done = PublishLocked(plan, what);
  } else {
    done = PersistLocked();
  }
  if (!done.ok()) {  // nothing half-changed
    pins_ = old_pins;
    drained_ = old_drained;
    replan_pending_ = old_replan;
    return done;
  }
  EventLocked("constraints_changed", event);
  return ConstraintsResponseLocked();
}

absl::StatusOr<admin::ConstraintsResponse> Coordinator::Pin(const types::Pin& pin) {
  SY_RETURN_IF_ERROR(rpc::ValidatePin(pin));
  std::lock_guard<std::mutex> lock(mu_);
  placement::Constraints next = ConstraintsLocked();
  const placement::Pin p{pin.layer(), pin.expert(), pin.rank()};
  if (std::find(next.pins.begin(), next.pins.end(), p) != next.pins.end()) return ConstraintsResponseLocked();
  next.pins.push_back(p);
  return ChangeConstraintsLocked(next, absl::StrCat("pinned expert ", pin.expert(), " to rank ", pin.rank(),
                                                    pin.layer() < 0 ? " in every layer" : absl::StrCat(" in layer ", pin.layer())));
}

absl::StatusOr<admin::ConstraintsResponse> Coordinator::Unpin(const types::Pin& pin) {
  SY_RETURN_IF_ERROR(rpc::ValidatePin(pin));
  std::lock_guard<std::mutex> lock(mu_);
  placement::Constraints next = ConstraintsLocked();
  const placement::Pin p{pin.layer(), pin.expert(), pin.rank()};
  auto it = std::find(next.pins.begin(), next.pins.end(), p);
  if (it == next.pins.end()) {
    return absl::NotFoundError(absl::StrCat("no pin of expert ", pin.expert(), " to rank ", pin.rank(), " (layer ", pin.layer(), ")"));
  }
  next.pins.erase(it);
  return ChangeConstraintsLocked(next, absl::StrCat("unpinned expert ", pin.expert(), " from rank ", pin.rank()));
}

absl::StatusOr<admin::ConstraintsResponse> Coordinator::Drain(int rank, bool remove) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(RequireJobLocked());
  if (rank < 0 || rank >= committed_->topology.ranks()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown rank ", rank, " (the job has ", committed_->topology.ranks(), " ranks)"));
  }
  if (remove) {
    if (job_key_.empty()) {
      return absl::FailedPreconditionError(
          "drain --remove: the job was started by a launcher (mpirun, srun), which cannot lose a rank; only workers joined "
          "through the coordinator (--world-size) can be removed");
    }
    SY_RETURN_IF_ERROR(rendezvous_.Remove(job_key_, rank));
    EventLocked("worker_removing", absl::StrCat("rank ", rank, ": the others regroup without it after their step"), rank);
    return ConstraintsResponseLocked();
  }
  placement::Constraints next = ConstraintsLocked();
  if (next.IsDrained(rank)) return ConstraintsResponseLocked();
  next.drained_ranks.push_back(rank);
  return ChangeConstraintsLocked(next, absl::StrCat("drained rank ", rank));
}

absl::StatusOr<admin::ConstraintsResponse> Coordinator::Undrain(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(RequireJobLocked());
  if (rank < 0 || rank >= committed_->topology.ranks()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown rank ", rank, " (the job has ", committed_->topology.ranks(), " ranks)"));
  }
  placement::Constraints next = ConstraintsLocked();
  auto it = std::find(next.drained_ranks.begin(), next.drained_ranks.end(), rank);
  if (it == next.drained_ranks.end()) return absl::FailedPreconditionError(absl::StrCat("rank ", rank, " is not drained"));
  next.drained_ranks.erase(it);
  return ChangeConstraintsLocked(next, absl::StrCat("undrained rank ", rank));
}

types::Policy Coordinator::GetPolicy() {
  std::lock_guard<std::mutex> lock(mu_);
  return policy_;
}

absl::StatusOr<types::Policy> Coordinator::SetPolicy(const types::Policy& policy) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(ValidatePolicy(policy));
  const types::Policy old = policy_;
  policy_ = policy;
  if (absl::Status persisted = PersistLocked(); !persisted.ok()) {
    policy_ = old;
    return persisted;
  }
  auto_.streak = 0;
  EventLocked("policy_changed", rpc::MessageToJsonText(policy));
  return policy_;
}

void Coordinator::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = Now();
  // Ticks come every 200 ms: a longer gap in real time means this process was stopped or
  // starved, and the workers' silence over it is ours, not theirs.
  const auto real_now = std::chrono::steady_clock::now();
  const bool stalled = last_tick_.has_value() &&
                       real_now - *last_tick_ > absl::ToChronoMilliseconds(options_.heartbeat_timeout / 2);
  last_tick_ = real_now;
  if (stalled) {
    for (const auto& [rank, w] : members_.workers()) members_.Find(rank)->last_heartbeat = now;
    rendezvous_.Refresh();
    EventLocked("coordinator_stalled", "no tick for more than half the heartbeat timeout (this process was stopped or starved): "
                                       "the workers' silence over it is not counted");
    return;
  }
  // Members of a joined job that regroups pause their heartbeats while they join again: the
  // rendezvous judges them (Expire), not their silence here.
  for (const auto& [rank, w] : members_.workers()) {
    if (w.info.job_key().empty() || w.left || !w.healthy) continue;
    const int64_t generation = rendezvous_.Generation(w.info.job_key());
    if (generation > w.info.generation() || rendezvous_.Signal(w.info.job_key(), w.info.instance()).generation > 0) {
      members_.Find(rank)->last_heartbeat = now;
    }
  }
  const auto lost = members_.ExpireSilent(now, options_.heartbeat_timeout);
  for (const auto& [rank, silence] : lost) {
    const std::string why = absl::StrFormat("no heartbeat for %.1f s", absl::ToDoubleSeconds(silence));
    const WorkerState* w = members_.Find(rank);
    const bool joined = w != nullptr && !w->info.job_key().empty();
    EventLocked("worker_lost", absl::StrCat("rank ", rank, ": ", why, joined ? "; the others regroup without it" : ""), rank);
    ++workers_lost_total_;
    if (joined) rendezvous_.MarkLost(w->info.job_key(), w->info.instance(), w->info.generation(), why);
  }
  for (const LostMember& m : rendezvous_.Expire(options_.heartbeat_timeout)) {
    EventLocked("worker_lost", absl::StrCat("rank ", m.rank, " (job ", EchoValue(m.job_key), "): ", m.reason), m.rank);
    ++workers_lost_total_;
  }
  if (!lost.empty() && committed_) CompleteWindowsLocked();
}

std::string Coordinator::MetricsText() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  auto header = [&](const char* name, const char* help, const char* type = "gauge") {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  };
  auto scalar = [&](const char* name, const char* help, const char* type, auto value) {
    header(name, help, type);
    absl::StrAppend(&out, name, " ", value, "\n");
  };
  scalar("switchyard_committed_epoch", "Placement epoch all ranks run.", "gauge", committed_epoch_);
  scalar("switchyard_target_epoch", "Epoch being migrated to (= committed when idle).", "gauge",
         target_ ? target_epoch_ : committed_epoch_);
  scalar("switchyard_workers_registered", "Workers registered.", "gauge", members_.workers().size());
  scalar("switchyard_workers_lost_total", "Workers lost (no heartbeat, or gone from a regroup).", "counter", workers_lost_total_);
  scalar("switchyard_regroups_total", "Membership changes of a joined job (loss, join, removal) the workers completed.", "counter",
         regroups_total_);
  scalar("switchyard_membership_generation", "Membership generation of a joined job (0 when it formed).", "gauge", generation_);
  header("switchyard_worker_up", "1 if the worker's heartbeats arrive.");
  const absl::Time now = Now();
  for (const auto& [rank, w] : members_.workers()) absl::StrAppend(&out, "switchyard_worker_up{rank=\"", rank, "\"} ", w.healthy ? 1 : 0, "\n");
  header("switchyard_report_lag_seconds", "Seconds since the worker's last load report.");
  for (const auto& [rank, w] : members_.workers()) {
    if (w.last_report != absl::InfinitePast()) {
      absl::StrAppendFormat(&out, "switchyard_report_lag_seconds{rank=\"%d\"} %.3f\n", rank, absl::ToDoubleSeconds(now - w.last_report));
    }
  }
  header("switchyard_rank_load", "Pairs the rank computed in the last complete window, all layers.");
  for (const auto& [rank, load] : load_.rank_load()) absl::StrAppend(&out, "switchyard_rank_load{rank=\"", rank, "\"} ", load, "\n");
  header("switchyard_layer_balancedness", "Mean / max pairs per rank in the last window.");
  if (model_ && load_.windows() > 0) {
    for (int i = 0; i < model_->moe_layers_size(); ++i) {
      absl::StrAppendFormat(&out, "switchyard_layer_balancedness{layer=\"%d\"} %.6f\n", model_->moe_layers(i), load_.layer(i).balancedness);
    }
  }
  header("switchyard_step_balancedness",
         "Per-step balancedness (mean / max pairs per rank in one step) over the last reported window: quantile 0.5 the "
         "median, 0.01 the 1st percentile (99% of the steps are at least this balanced: the report's p99).",
         "summary");  // quantiles of a window's steps (a summary without _sum/_count, which promtool accepts)
  if (model_) {
    for (int i = 0; i < model_->moe_layers_size() && i < static_cast<int>(step_balance_.size()); ++i) {
      if (step_balance_[i].first <= 0) continue;
      absl::StrAppendFormat(&out, "switchyard_step_balancedness{layer=\"%d\",quantile=\"0.5\"} %.6g\n", model_->moe_layers(i),
                            step_balance_[i].first);
      absl::StrAppendFormat(&out, "switchyard_step_balancedness{layer=\"%d\",quantile=\"0.01\"} %.6g\n", model_->moe_layers(i),
                            step_balance_[i].second);
    }
  }
  scalar("switchyard_load_windows_total", "Complete load windows aggregated.", "counter", load_.windows());
  scalar("switchyard_reports_rejected_total", "Malformed or hostile load reports rejected.", "counter", reports_rejected_);
  scalar("switchyard_epochs_published_total", "Placement epochs published (migrations started by the coordinator).", "counter",
         plans_published_);
  scalar("switchyard_migrations_committed_total", "Migrations every rank switched to.", "counter", migrations_committed_);
  scalar("switchyard_migrations_failed_total", "Migrations aborted (the cluster stayed on its epoch).", "counter",
         migrations_failed_);
  scalar("switchyard_moved_replicas_total", "Replicas moved by published epochs.", "counter", moved_replicas_total_);
  scalar("switchyard_migration_bytes_total", "Expert weight bytes moved by committed migrations.", "counter",
         migration_bytes_total_);
  scalar("switchyard_last_migration_seconds", "Duration of the last committed migration (start to switch).", "gauge",
         absl::StrFormat("%.3f", last_migration_seconds_));
  step_seconds_.Append(out, "switchyard_step_seconds", "Wall time of a step (the slowest rank's), as the workers report it.");
  migration_seconds_.Append(out, "switchyard_migration_seconds", "Duration of committed migrations (start to switch).");
  header("switchyard_migration_link_bytes_total",
         "Expert weight bytes moved by committed migrations, by link class (intra_node: NVLink/shared memory; inter_node: "
         "the network).",
         "counter");
  absl::StrAppend(&out, "switchyard_migration_link_bytes_total{link=\"intra_node\"} ", migration_bytes_intra_node_, "\n",
                  "switchyard_migration_link_bytes_total{link=\"inter_node\"} ", migration_bytes_inter_node_, "\n");
  header("switchyard_alltoall_link_bytes_total",
         "Bytes the ranks sent in dispatch and combine all-to-alls, by link class (to ranks on their node, to other nodes).",
         "counter");
  absl::StrAppend(&out, "switchyard_alltoall_link_bytes_total{link=\"intra_node\"} ", alltoall_bytes_intra_node_, "\n",
                  "switchyard_alltoall_link_bytes_total{link=\"inter_node\"} ", alltoall_bytes_inter_node_, "\n");
  return out;
}

}  // namespace switchyard::coordinator
