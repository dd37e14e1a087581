// Rendezvous of workers started without a launcher (`switchyard-worker --world-size N`), and
// the membership of such a job over its life: generations.
//
// Formation (generation 0): N plain processes with the same job key and world size Join; once
// all N have, each gets a rank, ranks assigned node by node (sorted by node name, then
// instance id) so that each node's ranks are consecutive, as placement's topology needs. A
// member's origin (the token stream it serves) is its rank at formation.
//
// Regroups (generation g -> g+1), each started by one of:
//   - a loss: the coordinator saw no heartbeat from a member (MarkLost), or a member's peers
//     failed and it Joins again naming generation g. Members must abandon the step in flight
//     (Signal().now) and Join again;
//   - a newcomer: a fresh process Joins a formed job that has fewer live members than its
//     world size (a restarted worker, scale back out);
//   - a removal by the operator (Remove, `switchyard drain RANK --remove`).
// The newcomer and removal cases let members finish their step first. Generation g+1 forms
// once every member of g has joined again or is gone (lost or removed; a member not seen for
// the heartbeat timeout since the regroup began is lost, see Expire). Survivors keep their
// origin and order; a newcomer takes the lowest origin no survivor serves. A process that was
// lost or removed is refused from then on (it may start again as a new process).
//
// Exchange then all-gathers one value per rank per round within a generation: the
// comm::Bootstrap of cluster/coordinator_bootstrap.h.
//
// A coordinator that restarts during a regroup takes it over: a member's Join names its
// generation, the job id and that generation's members.
//
// Bounded: at most kMaxJobs jobs of at most kMaxRanks ranks, values of at most kMaxValueBytes,
// kMaxRounds rounds; a job nobody touched for kIdleExpiry is forgotten. Thread-safe; the waits
// are long polls that end when the answer is complete or `wait` has passed.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "switchyard/control/v1/control.pb.h"

namespace switchyard::coordinator {

// After a coordinator restart, the members of an adopted job get this on top of the silence
// timeout until they are first heard from: a worker retries an unreachable coordinator with a
// backoff of up to 2 s (ControlClientOptions::max_backoff) behind gRPC's reconnect backoff of
// up to 1 s, and a loaded machine adds its own delay.
inline constexpr absl::Duration kAdoptedGrace = absl::Seconds(4);

// What a member of a joined job should do about its membership (HeartbeatResponse).
struct RegroupSignal {
  int64_t generation = 0;  // the generation forming (0: none)
  bool now = false;        // a member was lost: abandon the step in flight
  bool removed = false;    // the operator removed this member: it leaves after its step
  std::string reason;
};

// A member a job regrouped without.
struct LostMember {
  std::string job_key, instance, node_name, reason;
  int rank = 0;             // in the generation it left
  int origin = 0;
  int64_t generation = 0;   // the generation formed without it (0 until formed)
  absl::Time when;
};

class Rendezvous {
 public:
  static constexpr int kMaxJobs = 64;
  static constexpr int kMaxRounds = 1024;
  static constexpr size_t kMaxValueBytes = 1 << 20;
  static constexpr size_t kMaxKeyBytes = 256;
  static constexpr size_t kMaxLostKept = 64;
  static constexpr absl::Duration kIdleExpiry = absl::Minutes(10);

  // `clock`: the time of regroups, sign-of-life and expiry (null: absl::Now).
  explicit Rendezvous(std::function<absl::Time()> clock = nullptr) : clock_(std::move(clock)) {}

  // InvalidArgument for a bad request (sizes, keys, an unknown generation); FailedPrecondition
  // when the job has another world size or fingerprint, finished, or this instance was lost;
  // ResourceExhausted when a running job has all its members (a newcomer may ask again: a
  // place frees up once a loss is detected).
  absl::StatusOr<switchyard::control::v1::JoinResponse> Join(const switchyard::control::v1::JoinRequest& request, absl::Duration wait);
  // FailedPrecondition for an instance that is not a member of the request's generation or a
  // generation that is over.
  absl::StatusOr<switchyard::control::v1::ExchangeResponse> Exchange(const switchyard::control::v1::ExchangeRequest& request, absl::Duration wait);

  // A member's sign of life (its heartbeat).
  void Touch(const std::string& job_key, const std::string& instance);
  // A member registered with the coordinator (its generation and members): a coordinator that
  // restarted learns the job this way and can then judge its members' silence (Expire). A
  // member not heard from since gets kAdoptedGrace on top of the timeout: its retries were
  // backing off while this coordinator was down.
  void Adopt(const std::string& job_key, const std::string& job_id, int world_size, int64_t generation,
             const std::vector<switchyard::control::v1::JobMember>& members);
  // The coordinator lost this member of `generation`: the others regroup without it (no-op
  // unless it is a member of the job's current generation that is not joining again).
  void MarkLost(const std::string& job_key, const std::string& instance, int64_t generation, const std::string& reason);
  // A member finished its run (Leave): no longer judged by its silence; the job takes no
  // newcomer from now on (its workers are leaving).
  void Leave(const std::string& job_key, const std::string& instance);
  // An operator retires the member at `rank`: the others regroup without it after their step.
  // NotFound for an unknown job or rank; FailedPrecondition if it is already leaving.
  absl::Status Remove(const std::string& job_key, int rank);
  RegroupSignal Signal(const std::string& job_key, const std::string& instance);
  // Members not seen (Touch, Join, Exchange) for `timeout` — since the regroup began, for one
  // under way — are lost (a formed job then regroups without them); returns those marked now.
  std::vector<LostMember> Expire(absl::Duration timeout);
  // The coordinator itself stalled (paused, starved): nobody's silence counts; every member
  // gets a full timeout again.
  void Refresh();
  // The job's generation (-1 before it formed or when unknown) and the members it lost, oldest first.
  int64_t Generation(const std::string& job_key);
  std::vector<LostMember> Lost(const std::string& job_key);
  // Ends the waits (shutdown).
  void Stop();

 private:
  using Member = switchyard::control::v1::JobMember;
  struct Job {
    int world_size = 0;
    std::string job_id;                     // random, set when generation 0 forms
    std::string fingerprint;                // what every member runs alike (JoinRequest.fingerprint)
    int64_t generation = -1;                // -1: generation 0 is forming
    std::vector<Member> members;            // the current generation's, by rank
    std::map<std::string, Member> joining;  // the next generation's so far, by instance
    bool forming = false;                   // a regroup is under way (formed jobs)
    bool forming_now = false;
    std::string forming_reason;
    absl::Time forming_since;
    std::set<std::string> gone;             // lost or removed instances: refused from now on
    std::set<std::string> removing;         // removal asked: left out of the next generation
    std::set<std::string> removed;          // removed by the operator (also in gone)
    std::set<std::string> finished;         // members that finished their run (Leave)
    bool ended = false;                     // every member finished or is gone: joins are refused
    std::map<std::string, absl::Time> seen;
    absl::Time since;                       // when this coordinator learned of the job
    std::set<std::string> heartbeating;     // members that sent heartbeats (Touch): judged by their silence
    std::set<std::string> unheard;          // adopted after a restart, not heard from since (kAdoptedGrace)
    std::map<int, std::vector<std::optional<std::string>>> rounds;  // of the current generation
    std::vector<LostMember> lost;
    absl::Time touched;
  };
  absl::Time Now() const { return clock_ ? clock_() : absl::Now(); }
  switchyard::control::v1::JoinResponse Answer(const Job& job, const std::string& instance) const;
  void ExpireLocked(absl::Time now);
  void StartRegroupLocked(Job& job, bool now, const std::string& reason);
  // Forms the next generation when every current member has joined again or is gone.
  void MaybeFormLocked(Job& job);
  void MarkGoneLocked(const std::string& key, Job& job, const std::string& instance, const std::string& reason);
  int MemberRank(const Job& job, const std::string& instance) const;

  std::function<absl::Time()> clock_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Job> jobs_;
  bool stopping_ = false;
};

}  // namespace switchyard::coordinator
