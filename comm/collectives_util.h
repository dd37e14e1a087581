// Pieces the backends share to build collectives from messages.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/communicator.h"

namespace switchyard::comm {

// The state every backend keeps for "a collective failed": the ranks may then be at
// different points of the collective sequence, so every later collective is refused.
class BrokenGuard {
 public:
  // OK to start collective `call` with `kind` memory on `comm`: FailedPrecondition once
  // broken, InvalidArgument for a memory kind the backend does not take.
  absl::Status Start(const Communicator& comm, MemoryKind kind, absl::string_view call) const {
    if (!broken_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(comm.backend(), " ", call,
                                                        ": communicator broken by an earlier error: ",
                                                        broken_.message()));
    }
    return CheckKind(comm, kind, call);
  }
  // Passes `s` through; the first error breaks the communicator.
  absl::Status Break(absl::Status s) {
    if (!s.ok() && broken_.ok()) broken_ = s;
    return s;
  }
  bool broken() const { return !broken_.ok(); }

 private:
  absl::Status broken_;
};

// out[i] = op over ranks 0..size-1 (in that order) of all[r * count + i]: every rank gets the
// same bits whatever the backend's message order.
template <typename T>
void ReduceInRankOrder(const T* all, int size, int count, ReduceOp op, T* out) {
  for (int i = 0; i < count; ++i) {
    T acc = all[i];
    for (int r = 1; r < size; ++r) {
      const T v = all[static_cast<int64_t>(r) * count + i];
      acc = op == ReduceOp::kSum ? acc + v : std::max(acc, v);
    }
    out[i] = acc;
  }
}

}  // namespace switchyard::comm
