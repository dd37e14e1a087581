#include "kernels/permute.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/permute_internal.h"

namespace switchyard::kernels {

absl::Status DispatchLayout(const int32_t* dest_rank, int64_t pairs, int num_ranks,
                            int64_t* counts, int64_t* offsets, int32_t* position,
                            int32_t* send_pair) {
  for (int r = 0; r < num_ranks; ++r) counts[r] = 0;
  for (int64_t p = 0; p < pairs; ++p) {
    const int32_t r = dest_rank[p];
    if (r < 0 || r >= num_ranks) {
      return absl::InvalidArgumentError(absl::StrCat("dispatch: pair ", p, " goes to rank ", r,
                                                     ", out of range (", num_ranks, " ranks)"));
    }
    ++counts[r];
  }
  int64_t next = 0;
  for (int r = 0; r < num_ranks; ++r) {
    offsets[r] = next;
    next += counts[r];
  }
  // Second pass: stable placement, reusing offsets as cursors, then restoring them.
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t n = offsets[dest_rank[p]]++;
    position[p] = static_cast<int32_t>(n);
    send_pair[n] = static_cast<int32_t>(p);
  }
  for (int r = 0; r < num_ranks; ++r) offsets[r] -= counts[r];
  return absl::OkStatus();
}

absl::Status GroupBySlot(const int32_t* slot, int64_t rows, int num_slots, int64_t* slot_counts,
                         int64_t* slot_offsets, int32_t* order) {
  for (int s = 0; s < num_slots; ++s) slot_counts[s] = 0;
  for (int64_t i = 0; i < rows; ++i) {
    if (slot[i] < 0 || slot[i] >= num_slots) {
      return absl::InvalidArgumentError(absl::StrCat("row ", i, " names slot ", slot[i],
                                                     ", out of range (", num_slots, " slots)"));
    }
    ++slot_counts[slot[i]];
  }
  int64_t next = 0;
  for (int s = 0; s < num_slots; ++s) {
    slot_offsets[s] = next;
    next += slot_counts[s];
  }
  for (int64_t i = 0; i < rows; ++i) order[i] = static_cast<int32_t>(slot_offsets[slot[i]]++);
  for (int s = 0; s < num_slots; ++s) slot_offsets[s] -= slot_counts[s];
  return absl::OkStatus();
}

namespace {

// Rows on `threads` threads when the call moves at least kParallelBytes, in chunks of about
// an eighth of a thread's share.
template <typename Body>
void ForRows(int64_t n, int64_t bytes, int threads, const Body& body) {
  internal::ParallelFor(bytes < kParallelBytes ? 1 : threads, n, std::max<int64_t>(1, n / (8 * std::max(threads, 1))), body);
}

}  // namespace

void GatherRows(const void* src, void* dst, const int32_t* index, int64_t rows, size_t row_bytes,
                int32_t divisor, int threads) {
  const auto* in = static_cast<const char*>(src);
  auto* out = static_cast<char*>(dst);
  ForRows(rows, rows * static_cast<int64_t>(row_bytes), threads, [&](int64_t i) {
    std::memcpy(out + i * row_bytes, in + static_cast<int64_t>(index[i] / divisor) * row_bytes, row_bytes);
  });
}

void ScatterRows(const void* src, void* dst, const int32_t* index, int64_t rows, size_t row_bytes, int threads) {
  const auto* in = static_cast<const char*>(src);
  auto* out = static_cast<char*>(dst);
  ForRows(rows, rows * static_cast<int64_t>(row_bytes), threads, [&](int64_t i) {
    std::memcpy(out + static_cast<int64_t>(index[i]) * row_bytes, in + i * row_bytes, row_bytes);
  });
}

void Combine(const float* rows, const int32_t* position, const float* weights, int64_t tokens,
             int top_k, int64_t hidden, float* out, int threads, CpuIsa isa) {
  const internal::CombineTokenFn combine = internal::CombineTokenFor(CpuSupports(isa) ? isa : BestCpuIsa());
  const int64_t bytes = tokens * top_k * hidden * static_cast<int64_t>(sizeof(float));
  ForRows(tokens, bytes, threads, [&](int64_t t) {
    combine(rows, position + t * top_k, weights + t * top_k, top_k, hidden, out + t * hidden);
  });
}

}  // namespace switchyard::kernels
