// Bootstrap: the rendezvous a backend uses to find its peers before it can talk (UCX worker
// addresses, the NCCL unique id). Implemented over MPI (comm/mpi), over a shared directory
// and over the coordinator (cluster/).
//
// Exchange() is collective: every rank calls it with its own value, in the same order, and
// gets every rank's value (rank q's at index q). Values may differ in length. Fails with
// DeadlineExceeded naming the missing ranks after `timeout`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchyard::comm {

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  virtual absl::StatusOr<std::vector<std::string>> Exchange(const std::string& mine,
                                                            absl::Duration timeout) = 0;
};

}  // namespace switchyard::comm
