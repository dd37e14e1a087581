// Pieces the backends share to build collectives from messages.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "comm/communicator.h"

namespace switchyard::comm {

// Counts and offsets of a fixed-size all-to-all, for backends that run it as AllToAllV.
class FixedCounts {
 public:
  FixedCounts(int size, int64_t bytes_per_peer) : counts_(size, bytes_per_peer), offsets_(size) {
    for (int p = 0; p < size; ++p) offsets_[p] = p * bytes_per_peer;
  }
  const int64_t* counts() const { return counts_.data(); }
  const int64_t* offsets() const { return offsets_.data(); }

 private:
  std::vector<int64_t> counts_, offsets_;
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
