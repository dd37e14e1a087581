#include "coordinator/rendezvous.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "placement/topology.h"

namespace switchyard::coordinator {
namespace {

absl::Status CheckKey(absl::string_view what, const std::string& key) {
  if (key.empty() || key.size() > Rendezvous::kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", EchoValue(key), "': 1..", Rendezvous::kMaxKeyBytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

switchyard::control::v1::JoinResponse Rendezvous::Answer(const Job& job, const std::string& instance) const {
  switchyard::control::v1::JoinResponse out;
  out.set_joined(static_cast<int>(job.joined.size()));
  out.set_world_size(job.world_size);
  if (job.ranks.empty()) return out;
  out.set_complete(true);
  const int rank = static_cast<int>(std::find(job.ranks.begin(), job.ranks.end(), instance) - job.ranks.begin());
  out.set_rank(rank);
  int node = 0, first = 0;
  for (int r = 1; r <= rank; ++r) {
    if (job.nodes[r] != job.nodes[r - 1]) {
      ++node;
      first = r;
    }
  }
  int last = rank;
  while (last + 1 < job.world_size && job.nodes[last + 1] == job.nodes[rank]) ++last;
  int nodes = 1;
  for (int r = 1; r < job.world_size; ++r) nodes += job.nodes[r] != job.nodes[r - 1];
  // Equal blocks: every node holds world_size / nodes consecutive ranks.
  bool equal = job.world_size % nodes == 0;
  for (int r = 0; equal && r < job.world_size; ++r) {
    equal = job.nodes[r] == job.nodes[(r / (job.world_size / nodes)) * (job.world_size / nodes)];
  }
  out.set_ranks_per_node(equal ? job.world_size / nodes : 0);
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

absl::StatusOr<switchyard::control::v1::JoinResponse> Rendezvous::Join(const switchyard::control::v1::JoinRequest& r, absl::Duration wait) {
  SY_RETURN_IF_ERROR(CheckKey("join: job key", r.job_key()));
  SY_RETURN_IF_ERROR(CheckKey("join: instance", r.instance()));
  if (r.node_name().size() > kMaxKeyBytes) return absl::InvalidArgumentError("join: node name longer than 256 bytes");
  if (r.world_size() < 1 || r.world_size() > placement::kMaxRanks) {
    return absl::InvalidArgumentError(absl::StrCat("join: world size ", r.world_size(), ": 1..", placement::kMaxRanks));
  }
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time now = absl::Now();
  ExpireLocked(now);
  auto it = jobs_.find(r.job_key());
  if (it == jobs_.end()) {
    if (static_cast<int>(jobs_.size()) >= kMaxJobs) {
      return absl::ResourceExhaustedError(absl::StrCat("join: ", kMaxJobs, " jobs are already meeting here"));
    }
    it = jobs_.emplace(r.job_key(), Job{}).first;
    it->second.world_size = r.world_size();
  }
  Job& job = it->second;
  job.touched = now;
  if (job.world_size != r.world_size()) {
    return absl::FailedPreconditionError(absl::StrCat("join: job '", EchoValue(r.job_key()), "' has world size ", job.world_size,
                                                      ", this worker says ", r.world_size()));
  }
  if (!job.joined.count(r.instance())) {
    if (static_cast<int>(job.joined.size()) >= job.world_size) {
      return absl::FailedPreconditionError(absl::StrCat("join: job '", EchoValue(r.job_key()), "' is full: its ",
                                                        job.world_size, " ranks have joined"));
    }
    job.joined.emplace(r.instance(), r.node_name());
    if (static_cast<int>(job.joined.size()) == job.world_size) {
      // Ranks node by node: sorted by (node name, instance).
      std::vector<std::pair<std::string, std::string>> order;
      for (const auto& [instance, node] : job.joined) order.push_back({node, instance});
      std::sort(order.begin(), order.end());
      for (const auto& [node, instance] : order) {
        job.ranks.push_back(instance);
        job.nodes.push_back(node);
      }
      cv_.notify_all();
    }
  }
  cv_.wait_for(lock, absl::ToChronoMilliseconds(wait), [&] { return stopping_ || !job.ranks.empty(); });
  // `job` stays valid: jobs are erased only by ExpireLocked, after kIdleExpiry untouched.
  return Answer(job, r.instance());
}

absl::StatusOr<switchyard::control::v1::ExchangeResponse> Rendezvous::Exchange(const switchyard::control::v1::ExchangeRequest& r, absl::Duration wait) {
  SY_RETURN_IF_ERROR(CheckKey("exchange: job key", r.job_key()));
  if (r.round() < 0 || r.round() >= kMaxRounds) {
    return absl::InvalidArgumentError(absl::StrCat("exchange: round ", r.round(), ": 0..", kMaxRounds - 1));
  }
  if (r.value().size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("exchange: a value of ", r.value().size(), " bytes (at most ", kMaxValueBytes, ")"));
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(r.job_key());
  if (it == jobs_.end() || it->second.ranks.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("exchange: job '", EchoValue(r.job_key()), "' has not met (Join first)"));
  }
  Job& job = it->second;
  const auto me = std::find(job.ranks.begin(), job.ranks.end(), r.instance());
  if (me == job.ranks.end()) {
    return absl::FailedPreconditionError(absl::StrCat("exchange: '", EchoValue(r.instance()), "' is not a rank of job '",
                                                      EchoValue(r.job_key()), "'"));
  }
  job.touched = absl::Now();
  std::vector<std::optional<std::string>>& round = job.rounds[r.round()];
  round.resize(job.world_size);
  std::optional<std::string>& mine = round[me - job.ranks.begin()];
  if (mine && *mine != r.value()) {
    return absl::FailedPreconditionError(absl::StrCat("exchange: round ", r.round(), " already has another value from this rank"));
  }
  if (!mine) {
    mine = r.value();
    cv_.notify_all();
  }
  auto complete = [&] { return std::all_of(round.begin(), round.end(), [](const auto& v) { return v.has_value(); }); };
  cv_.wait_for(lock, absl::ToChronoMilliseconds(wait), [&] { return stopping_ || complete(); });
  switchyard::control::v1::ExchangeResponse out;
  if (complete()) {
    out.set_complete(true);
    for (const auto& v : round) out.add_values(*v);
  }
  return out;
}

void Rendezvous::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  cv_.notify_all();
}

}  // namespace switchyard::coordinator
