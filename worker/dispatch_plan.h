// DispatchPlan: the host-side bookkeeping of one MoE layer step's exchanges (DESIGN.md
// section 4), the same on every device (worker/layer_device.h): from each pair's destination
// rank and slot, what goes where; from the peers' counts and metadata, how the received rows
// expand to pairs grouped by slot. It moves no rows: the device gathers them by the index
// arrays below, the communicator exchanges them by the layouts below.
//
//   pair p = t * k + j is token t's j-th choice (T tokens, top-k, R ranks).
//   Send:    a token goes once to each destination rank (dedup). In rank r's block, send row
//            i is token uniq_token[send_uniq_offsets[r] + i]; each pair sent to r carries its
//            slot and the index of its token's row in that block (send_meta, 2 x int32).
//            position[p] is the pair's row in the return trip (DispatchLayout's send order).
//   Counts:  count_pairs[2r], [2r + 1] = pairs and rows for rank r (exchanged with AllToAll).
//   Receive: rank r's block of pairs starts at recv_offsets[r] (recv_counts[r] pairs), of
//            rows at recv_uniq_offsets[r]; received pair i reads received row recv_row_of[i]
//            and goes to grouped row order[i] (GroupBySlot: by slot, stable in arrival order);
//            grouped row g reads received row grouped_row[g].
//
// Every count or index a peer sent is checked (Internal naming the peer) before it is used.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace switchyard::worker {

// Byte counts and offsets of one AllToAllV (per rank), from element counts and a unit size.
struct ExchangeLayout {
  std::vector<int64_t> send_counts, send_offsets, recv_counts, recv_offsets;
  int64_t sent_bytes() const;  // to every rank, this one included
};

class DispatchPlan {
 public:
  // Sender side, from dest_rank, slot: [tokens * top_k] (dest_rank in [0, ranks):
  // InvalidArgument otherwise). Fills everything up to count_pairs.
  absl::Status PlanSend(const int32_t* dest_rank, const int32_t* slot, int64_t tokens, int top_k, int ranks);
  // After the count exchange: recv_count_pairs [2 * ranks] from the peers.
  absl::Status PlanReceive(const int64_t* recv_count_pairs);
  // After the metadata exchange (recv_meta [2 * received_pairs()]): the expansion and the
  // grouping by slot of this rank's `num_slots` slots.
  absl::Status Expand(const int32_t* recv_meta, int num_slots);

  // The exchanges' layouts: dispatch rows, dispatch metadata, the return trip (rows back).
  // Each is kept in the plan (no allocation per step) until the next call of the same method.
  const ExchangeLayout& DispatchRows(size_t row_bytes);
  const ExchangeLayout& DispatchMeta();
  const ExchangeLayout& ReturnRows(size_t row_bytes);

  int64_t sent_rows() const { return send_uniq_; }  // distinct (token, destination rank)
  int64_t received_rows() const { return recv_uniq_; }
  int64_t received_pairs() const { return recv_pairs_; }

  // Send side.
  std::vector<int64_t> send_counts, send_offsets;            // pairs per destination rank
  std::vector<int64_t> send_uniq_counts, send_uniq_offsets;  // rows per destination rank
  std::vector<int32_t> position, send_pair, uniq_token, send_meta;
  std::vector<int64_t> count_pairs;
  // Receive side.
  std::vector<int64_t> recv_counts, recv_offsets, recv_uniq_counts, recv_uniq_offsets;
  std::vector<int32_t> recv_slot, recv_row_of, order, grouped_row;
  std::vector<int64_t> slot_counts, slot_offsets;

 private:
  // Fills `out` from per-rank element counts and offsets and the unit size.
  const ExchangeLayout& Layout(const std::vector<int64_t>& send_n, const std::vector<int64_t>& send_at,
                               const std::vector<int64_t>& recv_n, const std::vector<int64_t>& recv_at, size_t unit,
                               ExchangeLayout& out) const;
  ExchangeLayout rows_layout_, meta_layout_, return_layout_;
  int ranks_ = 0, top_k_ = 0;
  int64_t send_uniq_ = 0, recv_uniq_ = 0, recv_pairs_ = 0;
};

}  // namespace switchyard::worker
