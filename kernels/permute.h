// Permute, unpermute and combine: moving token rows between the layout of the tokens and the
// layout of the all-to-all, and summing each token's expert outputs.
//
// One step of a MoE layer on a rank with T tokens, top-k:
//   pair p = t * k + j is token t's j-th choice; its destination rank is dest_rank[p].
//   DispatchLayout: send row n of the dispatch buffer holds pair send_pair[n]; rows are
//     grouped by destination rank (rank r's rows start at offsets[r], counts[r] of them),
//     pairs of one rank in ascending pair order. position[p] is the inverse.
//   The receiver groups its rows by slot (GroupBySlot), runs the FFN, gathers results back
//   to arrival order; the reverse all-to-all returns them in send-row order.
//   Combine: out[t] = sum over j of weight[t, j] * rows[position[t * k + j]], added in
//     j order (k order), so the bits do not depend on where experts ran.
// All functions are pure CPU loops over caller-owned buffers; counts and offsets come out of
// the same pass as the positions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cpu_isa.h"

namespace switchyard::kernels {

// Counts per destination rank and the send order. dest_rank[p] in [0, num_ranks) for every
// pair (InvalidArgument naming the pair otherwise). counts/offsets: [num_ranks];
// position, send_pair: [pairs].
absl::Status DispatchLayout(const int32_t* dest_rank, int64_t pairs, int num_ranks,
                            int64_t* counts, int64_t* offsets, int32_t* position,
                            int32_t* send_pair);

// Rows grouped by slot, stable in arrival order: row i goes to grouped row order[i]; slot s's
// rows start at slot_offsets[s] (slot_counts[s] of them). slot[i] in [0, num_slots).
absl::Status GroupBySlot(const int32_t* slot, int64_t rows, int num_slots, int64_t* slot_counts,
                         int64_t* slot_offsets, int32_t* order);

// `threads` (>= 1) below: OpenMP threads share the rows (tokens for Combine) when the call
// moves at least kParallelBytes; each row is written whole by one thread, so the results do
// not depend on the thread count.
inline constexpr int64_t kParallelBytes = int64_t{1} << 20;

// dst row i = src row index[i]; rows of `row_bytes` bytes. With `divisor` > 1 the source row
// is index[i] / divisor (dispatch: send row n = token send_pair[n] / k).
void GatherRows(const void* src, void* dst, const int32_t* index, int64_t rows, size_t row_bytes,
                int32_t divisor = 1, int threads = 1);

// dst row index[i] = src row i.
void ScatterRows(const void* src, void* dst, const int32_t* index, int64_t rows, size_t row_bytes,
                 int threads = 1);

// out[t, :] = sum_j weights[t, j] * rows[position[t * k + j], :] in j order, for T tokens of
// `hidden` floats (each term multiplied, then added, both rounded: the same bits on every
// ISA path). Overwrites out. `isa`: the CPU path (one this CPU lacks: the best it has).
void Combine(const float* rows, const int32_t* position, const float* weights, int64_t tokens,
             int top_k, int64_t hidden, float* out, int threads = 1, CpuIsa isa = BestCpuIsa());

}  // namespace switchyard::kernels
