// Rendezvous of workers started without a launcher (issue "survive a lost rank", first part):
// N plain processes with the same job key and world size Join; once all N have, each gets a
// rank, ranks assigned node by node (sorted by node name, then instance id) so that each
// node's ranks are consecutive, as placement's topology needs. Exchange then all-gathers one
// value per rank per round: the comm::Bootstrap of cluster/coordinator_bootstrap.h.
//
// Bounded: at most kMaxJobs jobs of at most kMaxRanks ranks, values of at most kMaxValueBytes,
// kMaxRounds rounds; a job nobody touched for kIdleExpiry is forgotten. Thread-safe; the waits
// are long polls that end when the answer is complete or `wait` has passed.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "switchyard/control/v1/control.pb.h"

namespace switchyard::coordinator {

class Rendezvous {
 public:
  static constexpr int kMaxJobs = 64;
  static constexpr int kMaxRounds = 1024;
  static constexpr size_t kMaxValueBytes = 1 << 20;
  static constexpr size_t kMaxKeyBytes = 256;
  static constexpr absl::Duration kIdleExpiry = absl::Minutes(10);

  // InvalidArgument for a bad request (sizes, keys); FailedPrecondition when the job has
  // another world size or is full (every rank joined, this instance is not one of them).
  absl::StatusOr<switchyard::control::v1::JoinResponse> Join(const switchyard::control::v1::JoinRequest& request, absl::Duration wait);
  // FailedPrecondition for an instance that did not join or a job not yet complete.
  absl::StatusOr<switchyard::control::v1::ExchangeResponse> Exchange(const switchyard::control::v1::ExchangeRequest& request, absl::Duration wait);
  // Ends the waits (shutdown).
  void Stop();

 private:
  struct Job {
    int world_size = 0;
    std::map<std::string, std::string> joined;  // instance -> node name
    std::vector<std::string> ranks;             // instances by rank, once complete
    std::vector<std::string> nodes;             // node name of each rank
    std::map<int, std::vector<std::optional<std::string>>> rounds;
    absl::Time touched;
  };
  switchyard::control::v1::JoinResponse Answer(const Job& job, const std::string& instance) const;
  void ExpireLocked(absl::Time now);

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Job> jobs_;
  bool stopping_ = false;
};

}  // namespace switchyard::coordinator
