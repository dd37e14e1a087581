#include "coordinator/rendezvous.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "placement/topology.h"

namespace switchyard::coordinator {
namespace {

namespace control = switchyard::control::v1;

absl::Status CheckKey(absl::string_view what, const std::string& key) {
  if (key.empty() || key.size() > Rendezvous::kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", EchoValue(key), "': 1..", Rendezvous::kMaxKeyBytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

int Rendezvous::MemberRank(const Job& job, const std::string& instance) const {
  for (size_t r = 0; r < job.members.size(); ++r) {
    if (job.members[r].instance() == instance) return static_cast<int>(r);
  }
  return -1;
}

control::JoinResponse Rendezvous::Answer(const Job& job, const std::string& instance) const {
  control::JoinResponse out;
  out.set_world_size(job.world_size);
  const int rank = MemberRank(job, instance);
  if (job.generation < 0 || rank < 0) {
    out.set_joined(static_cast<int>(job.joining.size()));
    return out;
  }
  const int size = static_cast<int>(job.members.size());
  out.set_joined(size);
  out.set_complete(true);
  out.set_world_size(size);
  out.set_rank(rank);
  out.set_generation(job.generation);
  out.set_job_id(job.job_id);
  out.set_job_world_size(job.world_size);
  for (const Member& m : job.members) *out.add_members() = m;
  auto node_of = [&](int r) -> const std::string& { return job.members[r].node_name(); };
  int node = 0, first = 0;
  for (int r = 1; r <= rank; ++r) {
    if (node_of(r) != node_of(r - 1)) {
      ++node;
      first = r;
    }
  }
  int last = rank;
  while (last + 1 < size && node_of(last + 1) == node_of(rank)) ++last;
  int nodes = 1;
  for (int r = 1; r < size; ++r) nodes += node_of(r) != node_of(r - 1);
  // Equal blocks: every node holds size / nodes consecutive ranks.
  bool equal = size % nodes == 0;
  for (int r = 0; equal && r < size; ++r) equal = node_of(r) == node_of((r / (size / nodes)) * (size / nodes));
  out.set_ranks_per_node(equal ? size / nodes : 0);
  out.set_local_rank(rank - first);
  out.set_local_size(last - first + 1);
  out.set_node(node);
  out.set_nodes(nodes);
  return out;
}

void Rendezvous::ExpireLocked(absl::Time now) {
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    it = now - it->second.touched > kIdleExpiry ? jobs_.erase(it) : std::next(it);
  }
}

void Rendezvous::StartRegroupLocked(Job& job, bool now, const std::string& reason) {
  if (job.forming) {
    if (now && !job.forming_now) {  // a loss during a gentle regroup: members stop at once
      job.forming_now = true;
      job.forming_reason = reason;
    }
    return;
  }
  job.forming = true;
  job.forming_now = now;
  job.forming_reason = reason;
  job.forming_since = Now();
  cv_.notify_all();
}

void Rendezvous::MarkGoneLocked(const std::string& key, Job& job, const std::string& instance, const std::string& reason) {
  const int rank = MemberRank(job, instance);
  if (rank < 0 || job.gone.count(instance)) return;
  job.gone.insert(instance);
  job.joining.erase(instance);
  if (job.removing.erase(instance) > 0) {  // removed, then silent: one record, saying both
    for (LostMember& l : job.lost) {
      if (l.instance == instance && l.generation == 0) l.reason = absl::StrCat("removed by the operator, then ", reason);
    }
    return;
  }
  const Member& m = job.members[rank];
  job.lost.push_back({key, instance, m.node_name(), reason, rank, m.origin(), 0, Now()});
  if (job.lost.size() > kMaxLostKept) job.lost.erase(job.lost.begin());
}

void Rendezvous::MaybeFormLocked(Job& job) {
  if (!job.forming) return;
  for (const Member& m : job.members) {
    if (!job.joining.count(m.instance()) && !job.gone.count(m.instance()) && !job.removing.count(m.instance()) &&
        !job.finished.count(m.instance())) {
      return;
    }
  }
  if (job.joining.empty()) return;  // nobody left yet: wait for a newcomer
  const bool survivors = std::any_of(job.joining.begin(), job.joining.end(), [](const auto& j) { return j.second.previous_rank() >= 0; });
  if (!job.finished.empty() && !survivors) return;  // the job is ending: newcomers alone do not revive it
  // Survivors keep their origins; newcomers take the lowest free ones.
  std::set<int> used;
  for (const auto& [instance, m] : job.joining) {
    if (m.previous_rank() >= 0) used.insert(m.origin());
  }
  std::vector<Member> next;
  int free_origin = 0;
  for (const auto& [instance, m] : job.joining) {
    Member x = m;
    if (x.previous_rank() < 0) {
      while (used.count(free_origin)) ++free_origin;
      x.set_origin(free_origin);
      used.insert(free_origin);
    }
    next.push_back(x);
  }
  // Node by node; within a node by origin (survivors keep their relative order).
  std::sort(next.begin(), next.end(), [](const Member& a, const Member& b) {
    return std::make_tuple(a.node_name(), a.origin(), a.instance()) < std::make_tuple(b.node_name(), b.origin(), b.instance());
  });
  for (const std::string& instance : job.removing) {
    job.gone.insert(instance);
    job.removed.insert(instance);
  }
  job.removing.clear();
  job.members = std::move(next);
  ++job.generation;
  // Members of a regrouped job are workers with a control thread: judged by their silence
  // from now on (a newcomer that dies at once too), each with a full timeout to start.
  for (const Member& m : job.members) {
    job.heartbeating.insert(m.instance());
    job.seen[m.instance()] = Now();
    job.unheard.erase(m.instance());
  }
  for (LostMember& l : job.lost) {
    if (l.generation == 0) l.generation = job.generation;
  }
  job.joining.clear();
  job.rounds.clear();
  job.forming = false;
  job.forming_now = false;
  job.forming_reason.clear();
  cv_.notify_all();
}

absl::StatusOr<control::JoinResponse> Rendezvous::Join(const control::JoinRequest& r, absl::Duration wait) {
  SY_RETURN_IF_ERROR(CheckKey("join: job key", r.job_key()));
  SY_RETURN_IF_ERROR(CheckKey("join: instance", r.instance()));
  if (r.node_name().size() > kMaxKeyBytes) return absl::InvalidArgumentError("join: node name longer than 256 bytes");
  if (r.world_size() < 1 || r.world_size() > placement::kMaxRanks) {
    return absl::InvalidArgumentError(absl::StrCat("join: world size ", r.world_size(), ": 1..", placement::kMaxRanks));
  }
  if (r.generation() < 0) return absl::InvalidArgumentError(absl::StrCat("join: generation ", r.generation()));
  const int64_t asked = r.regroup() ? r.generation() : -1;  // the generation a member regroups from; -1: a new process
  if (r.members_size() > r.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("join: ", r.members_size(), " members for world size ", r.world_size()));
  }
  if (r.reason().size() > 1024 || r.job_id().size() > kMaxKeyBytes || r.fingerprint().size() > 4096) {
    return absl::InvalidArgumentError("join: reason, job id or fingerprint too long");
  }
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time now = Now();
  ExpireLocked(now);
  auto it = jobs_.find(r.job_key());
  if (it == jobs_.end()) {
    if (static_cast<int>(jobs_.size()) >= kMaxJobs) {
      return absl::ResourceExhaustedError(absl::StrCat("join: ", kMaxJobs, " jobs are already meeting here"));
    }
    Job fresh;
    fresh.world_size = r.world_size();
    fresh.since = now;
    if (asked >= 0) {
      // A member of a formed job this coordinator does not know (it restarted): take the
      // job over from what the member says.
      if (r.members_size() == 0 || r.job_id().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("join: generation ", asked, " of a job this coordinator does not know, without its members"));
      }
      fresh.generation = asked;
      fresh.job_id = r.job_id();
      fresh.members.assign(r.members().begin(), r.members().end());
      for (const Member& m : fresh.members) fresh.unheard.insert(m.instance());  // (kAdoptedGrace)
    }
    it = jobs_.emplace(r.job_key(), std::move(fresh)).first;
  }
  Job& job = it->second;
  job.touched = now;
  const std::string key = EchoValue(r.job_key());
  if (job.world_size != r.world_size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("join: job '", key, "' has world size ", job.world_size, ", this worker says ", r.world_size()));
  }
  if (job.fingerprint.empty()) job.fingerprint = r.fingerprint();
  if (!r.fingerprint().empty() && r.fingerprint() != job.fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat("join: job '", key, "' runs ", EchoValue(job.fingerprint, 1024), "; this worker runs ",
                                                      EchoValue(r.fingerprint(), 1024), ": start it with the job's flags"));
  }
  if (job.removed.count(r.instance()) || job.removing.count(r.instance())) {  // not an error: it leaves
    control::JoinResponse out;
    out.set_removed(true);
    return out;
  }
  if (job.gone.count(r.instance())) {
    return absl::FailedPreconditionError(absl::StrCat("join: this worker was lost by job '", key, "' (now at generation ",
                                                      job.generation, "); start it again to join as a new worker"));
  }
  job.seen[r.instance()] = now;
  job.unheard.erase(r.instance());
  {  // One instance is one process: the same id from another node is a second process.
    const int rank = MemberRank(job, r.instance());
    const std::string* node = rank >= 0 ? &job.members[rank].node_name() : nullptr;
    if (auto j = job.joining.find(r.instance()); j != job.joining.end()) node = &j->second.node_name();
    if (node != nullptr && !r.node_name().empty() && *node != r.node_name()) {
      return absl::FailedPreconditionError(absl::StrCat("join: instance '", EchoValue(r.instance()), "' already joined job '", key,
                                                        "' from node '", EchoValue(*node), "' (a duplicate worker id)"));
    }
  }
  if (job.generation < 0) {  // generation 0 is forming
    if (asked >= 0) return absl::InvalidArgumentError(absl::StrCat("join: job '", key, "' has not formed yet"));
    if (!job.joining.count(r.instance())) {
      if (static_cast<int>(job.joining.size()) >= job.world_size) {
        return absl::FailedPreconditionError(absl::StrCat("join: job '", key, "' is full: its ", job.world_size, " ranks have joined"));
      }
      Member m;
      m.set_instance(r.instance());
      m.set_node_name(r.node_name());
      m.set_previous_rank(-1);
      job.joining.emplace(r.instance(), m);
      if (static_cast<int>(job.joining.size()) == job.world_size) {
        // Ranks node by node: sorted by (node name, instance); origin = rank.
        std::vector<Member> order;
        for (const auto& [instance, m] : job.joining) order.push_back(m);
        std::sort(order.begin(), order.end(), [](const Member& a, const Member& b) {
          return std::tie(a.node_name(), a.instance()) < std::tie(b.node_name(), b.instance());
        });
        for (size_t i = 0; i < order.size(); ++i) order[i].set_origin(static_cast<int>(i));
        job.members = std::move(order);
        job.joining.clear();
        job.generation = 0;
        std::random_device rd;
        job.job_id = absl::StrFormat("%08x%08x", rd(), rd());
        cv_.notify_all();
      }
    }
  } else if (MemberRank(job, r.instance()) >= 0 && asked < job.generation) {
    // A retry of a join already answered: the answer below.
  } else if (asked >= 0) {
    const int rank = MemberRank(job, r.instance());
    if (asked > job.generation) {
      return absl::InvalidArgumentError(absl::StrCat("join: generation ", asked, " of job '", key, "' does not exist (it is at ",
                                                     job.generation, ")"));
    }
    if (rank < 0) {
      return absl::FailedPreconditionError(absl::StrCat("join: this worker is not a member of job '", key, "' (generation ",
                                                        job.generation, "): it was left out; start it again to join as a new worker"));
    }
    if (!job.joining.count(r.instance())) {
      Member m = job.members[rank];
      m.set_previous_rank(rank);
      m.set_node_name(r.node_name().empty() ? m.node_name() : r.node_name());
      job.joining.emplace(r.instance(), m);
      StartRegroupLocked(job, true, r.reason().empty() ? absl::StrCat("rank ", rank, " asked to regroup") : r.reason());
      MaybeFormLocked(job);
    }
  } else if (MemberRank(job, r.instance()) < 0 && !job.joining.count(r.instance())) {
    // A newcomer to a formed job: it takes the place of a member the job lost.
    if (!job.finished.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("join: job '", key,
                                                        "' finished: its workers ran their last step (give a new job its own --job-key)"));
    }
    int next = static_cast<int>(job.joining.size());
    for (const Member& m : job.members) {
      next += !job.joining.count(m.instance()) && !job.gone.count(m.instance()) && !job.removing.count(m.instance());
    }
    if (next >= job.world_size) {
      // ResourceExhausted: a place may free up (a member's loss not detected yet).
      return absl::ResourceExhaustedError(absl::StrCat("join: job '", key, "' is full: its ", job.world_size, " ranks are running"));
    }
    Member m;
    m.set_instance(r.instance());
    m.set_node_name(r.node_name());
    m.set_origin(-1);
    m.set_previous_rank(-1);
    job.joining.emplace(r.instance(), m);
    StartRegroupLocked(job, false, absl::StrCat("a new worker joins (on ", EchoValue(r.node_name()), ")"));
    MaybeFormLocked(job);
  }
  // Until this instance is a member of a generation newer than the one it asked from.
  cv_.wait_for(lock, absl::ToChronoMilliseconds(wait), [&] {
    return stopping_ || job.ended || job.gone.count(r.instance()) || (job.generation > asked && MemberRank(job, r.instance()) >= 0);
  });
  // `job` stays valid: jobs are erased only by ExpireLocked, after kIdleExpiry untouched.
  if (job.ended && job.joining.count(r.instance())) {  // a newcomer came too late: the job's workers are done
    job.joining.erase(r.instance());
    return absl::FailedPreconditionError(absl::StrCat("join: job '", key,
                                                      "' finished: its workers ran their last step (give a new job its own --job-key)"));
  }
  if (job.gone.count(r.instance())) {
    return absl::FailedPreconditionError(absl::StrCat("join: this worker was lost by job '", key, "' while it regrouped"));
  }
  if (job.joining.count(r.instance())) {  // waiting for the others
    control::JoinResponse out;
    out.set_world_size(job.world_size);
    out.set_joined(static_cast<int>(job.joining.size()));
    return out;
  }
  return Answer(job, r.instance());
}

absl::StatusOr<control::ExchangeResponse> Rendezvous::Exchange(const control::ExchangeRequest& r, absl::Duration wait) {
  SY_RETURN_IF_ERROR(CheckKey("exchange: job key", r.job_key()));
  if (r.round() < 0 || r.round() >= kMaxRounds) {
    return absl::InvalidArgumentError(absl::StrCat("exchange: round ", r.round(), ": 0..", kMaxRounds - 1));
  }
  if (r.value().size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("exchange: a value of ", r.value().size(), " bytes (at most ", kMaxValueBytes, ")"));
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(r.job_key());
  if (it == jobs_.end() || it->second.generation < 0) {
    return absl::FailedPreconditionError(absl::StrCat("exchange: job '", EchoValue(r.job_key()), "' has not met (Join first)"));
  }
  Job& job = it->second;
  if (r.generation() != job.generation) {
    return absl::FailedPreconditionError(absl::StrCat("exchange: generation ", r.generation(), " of job '", EchoValue(r.job_key()),
                                                      "' is over (it is at ", job.generation, ")"));
  }
  const int me = MemberRank(job, r.instance());
  if (me < 0) {
    return absl::FailedPreconditionError(absl::StrCat("exchange: '", EchoValue(r.instance()), "' is not a rank of job '",
                                                      EchoValue(r.job_key()), "'"));
  }
  job.touched = Now();
  job.seen[r.instance()] = job.touched;
  job.unheard.erase(r.instance());
  const int64_t generation = job.generation;
  std::vector<std::optional<std::string>>& round = job.rounds[r.round()];
  round.resize(job.members.size());
  std::optional<std::string>& mine = round[me];
  if (mine && *mine != r.value()) {
    return absl::FailedPreconditionError(absl::StrCat("exchange: round ", r.round(), " already has another value from this rank"));
  }
  if (!mine) {
    mine = r.value();
    cv_.notify_all();
  }
  auto complete = [&] {
    return job.generation == generation &&
           std::all_of(round.begin(), round.end(), [](const auto& v) { return v.has_value(); });
  };
  cv_.wait_for(lock, absl::ToChronoMilliseconds(wait), [&] { return stopping_ || complete() || job.generation != generation; });
  if (job.generation != generation) {
    return absl::FailedPreconditionError(absl::StrCat("exchange: generation ", generation, " of job '", EchoValue(r.job_key()),
                                                      "' ended while it exchanged"));
  }
  control::ExchangeResponse out;
  if (complete()) {
    out.set_complete(true);
    for (const auto& v : round) out.add_values(*v);
  }
  return out;
}

void Rendezvous::Touch(const std::string& job_key, const std::string& instance) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_key);
  if (it == jobs_.end()) return;
  it->second.seen[instance] = Now();
  it->second.unheard.erase(instance);
  it->second.heartbeating.insert(instance);
  it->second.touched = Now();
}

void Rendezvous::Leave(const std::string& job_key, const std::string& instance) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_key);
  if (it == jobs_.end() || it->second.generation < 0 || MemberRank(it->second, instance) < 0) return;
  Job& job = it->second;
  job.finished.insert(instance);
  MaybeFormLocked(job);
  job.ended = std::all_of(job.members.begin(), job.members.end(), [&](const Member& m) {
    return job.finished.count(m.instance()) || job.gone.count(m.instance()) || job.removing.count(m.instance());
  });
  cv_.notify_all();
}

void Rendezvous::MarkLost(const std::string& job_key, const std::string& instance, int64_t generation, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_key);
  if (it == jobs_.end() || it->second.generation != generation) return;  // a silence of an earlier generation
  Job& job = it->second;
  const int rank = MemberRank(job, instance);
  // A member that is joining again is alive (its control thread pauses while it regroups).
  if (rank < 0 || job.gone.count(instance) || job.joining.count(instance)) return;
  MarkGoneLocked(job_key, job, instance, reason);
  StartRegroupLocked(job, true, absl::StrCat("rank ", rank, " lost: ", reason));
  MaybeFormLocked(job);
  cv_.notify_all();
}

absl::Status Rendezvous::Remove(const std::string& job_key, int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_key);
  if (it == jobs_.end() || it->second.generation < 0) {
    return absl::NotFoundError(absl::StrCat("remove: no formed job '", EchoValue(job_key), "' joined here"));
  }
  Job& job = it->second;
  if (rank < 0 || rank >= static_cast<int>(job.members.size())) {
    return absl::NotFoundError(absl::StrCat("remove: rank ", rank, ": the job has ranks 0..", job.members.size() - 1));
  }
  const std::string& instance = job.members[rank].instance();
  if (job.ended || job.finished.count(instance)) {
    return absl::FailedPreconditionError(absl::StrCat("remove: rank ", rank, " finished its run (the job is ending)"));
  }
  if (job.gone.count(instance) || job.removing.count(instance)) {
    return absl::FailedPreconditionError(absl::StrCat("remove: rank ", rank, " is already leaving the job"));
  }
  int live = 0;
  for (const Member& m : job.members) {
    live += !job.gone.count(m.instance()) && !job.removing.count(m.instance()) && !job.finished.count(m.instance());
  }
  if (live <= 1) return absl::FailedPreconditionError(absl::StrCat("remove: rank ", rank, " is the job's last worker"));
  job.removing.insert(instance);
  job.joining.erase(instance);
  job.lost.push_back({job_key, instance, job.members[rank].node_name(), "removed by the operator", rank,
                      job.members[rank].origin(), 0, Now()});
  if (job.lost.size() > kMaxLostKept) job.lost.erase(job.lost.begin());
  StartRegroupLocked(job, false, absl::StrCat("rank ", rank, " removed by the operator"));
  MaybeFormLocked(job);
  cv_.notify_all();
  return absl::OkStatus();
}

RegroupSignal Rendezvous::Signal(const std::string& job_key, const std::string& instance) {
  std::lock_guard<std::mutex> lock(mu_);
  RegroupSignal out;
  auto it = jobs_.find(job_key);
  if (it == jobs_.end() || it->second.generation < 0) return out;
  const Job& job = it->second;
  out.removed = job.removing.count(instance) > 0;
  if (job.forming) {
    out.generation = job.generation + 1;
    out.now = job.forming_now;
    out.reason = job.forming_reason;
  }
  if (job.gone.count(instance)) {  // lost: its peers went on without it; it must stop at once
    out.generation = std::max(out.generation, job.generation + 1);
    out.now = true;
    out.reason = "this worker was lost: the job regrouped without it";
  }
  return out;
}

std::vector<LostMember> Rendezvous::Expire(absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LostMember> out;
  const absl::Time now = Now();
  for (auto& [key, job] : jobs_) {
    if (job.generation < 0) continue;
    std::vector<std::string> silent;
    for (const Member& m : job.members) {
      const std::string& instance = m.instance();
      // A member being removed still runs its last step: silent, it is lost (the others must
      // not wait for its step's end).
      if (job.joining.count(instance) || job.gone.count(instance) || job.finished.count(instance) ||
          (job.removing.count(instance) && !job.forming)) {
        continue;
      }
      // Outside a regroup only members that heartbeat are judged (bootstrap-only users of the
      // rendezvous, like the comm conformance suite, never talk to it again).
      if (!job.forming && !job.heartbeating.count(instance)) continue;
      auto seen = job.seen.find(instance);
      absl::Time last = seen == job.seen.end() ? job.since : seen->second;
      if (job.forming) last = std::max(last, job.forming_since);
      if (now - last > timeout + (job.unheard.count(instance) ? kAdoptedGrace : absl::ZeroDuration())) {
        silent.push_back(instance);
      }
    }
    for (const std::string& instance : silent) {
      MarkGoneLocked(key, job, instance,
                     absl::StrFormat("%s (no sign of life for %.1f s)", job.forming ? "did not rejoin the regroup" : "silent",
                                     absl::ToDoubleSeconds(timeout)));
      for (auto l = job.lost.rbegin(); l != job.lost.rend(); ++l) {  // its record (a removal's is older)
        if (l->instance == instance) {
          out.push_back(*l);
          break;
        }
      }
    }
    if (!silent.empty()) {
      StartRegroupLocked(job, true, absl::StrFormat("%d member(s) lost: no sign of life for %.1f s", silent.size(), absl::ToDoubleSeconds(timeout)));
      MaybeFormLocked(job);
      cv_.notify_all();
    }
  }
  return out;
}

void Rendezvous::Refresh() {
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = Now();
  for (auto& [key, job] : jobs_) {
    for (auto& [instance, seen] : job.seen) seen = now;
    if (job.forming) job.forming_since = std::max(job.forming_since, now);
    job.since = std::max(job.since, now);
  }
}

void Rendezvous::Adopt(const std::string& job_key, const std::string& job_id, int world_size, int64_t generation,
                       const std::vector<control::JobMember>& members) {
  if (job_key.empty() || job_key.size() > kMaxKeyBytes || members.empty() || generation < 0 || world_size < 1 ||
      static_cast<int>(members.size()) > world_size) {
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (jobs_.count(job_key) || static_cast<int>(jobs_.size()) >= kMaxJobs) return;  // known, or no room
  Job job;
  job.world_size = world_size;
  job.job_id = job_id;
  job.generation = generation;
  job.members = members;
  job.touched = job.since = Now();
  for (const Member& m : members) {  // each gets a full timeout (and kAdoptedGrace) to show up
    job.seen[m.instance()] = job.touched;
    job.heartbeating.insert(m.instance());
    job.unheard.insert(m.instance());
  }
  jobs_.emplace(job_key, std::move(job));
}

int64_t Rendezvous::Generation(const std::string& job_key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_key);
  return it == jobs_.end() ? -1 : it->second.generation;
}

std::vector<LostMember> Rendezvous::Lost(const std::string& job_key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_key);
  return it == jobs_.end() ? std::vector<LostMember>{} : it->second.lost;
}

void Rendezvous::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  cv_.notify_all();
}

}  // namespace switchyard::coordinator
