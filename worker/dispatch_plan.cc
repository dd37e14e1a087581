#include "worker/dispatch_plan.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/permute.h"

namespace switchyard::worker {

int64_t ExchangeLayout::sent_bytes() const {
  int64_t total = 0;
  for (int64_t b : send_counts) total += b;
  return total;
}

absl::Status DispatchPlan::PlanSend(const int32_t* dest_rank, const int32_t* slot, int64_t tokens, int top_k, int ranks) {
  const int64_t pairs = tokens * top_k;
  ranks_ = ranks;
  top_k_ = top_k;
  for (std::vector<int64_t>* v : {&send_counts, &send_offsets, &send_uniq_counts, &send_uniq_offsets}) v->resize(ranks);
  position.resize(pairs);
  send_pair.resize(pairs);
  SY_RETURN_IF_ERROR(kernels::DispatchLayout(dest_rank, pairs, ranks, send_counts.data(), send_offsets.data(),
                                             position.data(), send_pair.data()));
  // In a block the pairs ascend (DispatchLayout is stable), so a token's pairs are adjacent.
  uniq_token.clear();
  send_meta.resize(2 * pairs);
  count_pairs.resize(2 * ranks);
  for (int r = 0; r < ranks; ++r) {
    const int64_t first = static_cast<int64_t>(uniq_token.size());
    int32_t last = -1;
    for (int64_t n = send_offsets[r]; n < send_offsets[r] + send_counts[r]; ++n) {
      const int32_t t = send_pair[n] / top_k;
      if (t != last) uniq_token.push_back(t), last = t;
      send_meta[2 * n] = slot[send_pair[n]];
      send_meta[2 * n + 1] = static_cast<int32_t>(static_cast<int64_t>(uniq_token.size()) - 1 - first);
    }
    send_uniq_offsets[r] = first;
    send_uniq_counts[r] = static_cast<int64_t>(uniq_token.size()) - first;
    count_pairs[2 * r] = send_counts[r];
    count_pairs[2 * r + 1] = send_uniq_counts[r];
  }
  send_uniq_ = static_cast<int64_t>(uniq_token.size());
  return absl::OkStatus();
}

absl::Status DispatchPlan::PlanReceive(const int64_t* recv_count_pairs) {
  for (std::vector<int64_t>* v : {&recv_counts, &recv_offsets, &recv_uniq_counts, &recv_uniq_offsets}) v->resize(ranks_);
  recv_pairs_ = recv_uniq_ = 0;
  for (int r = 0; r < ranks_; ++r) {
    const int64_t n = recv_count_pairs[2 * r], rows = recv_count_pairs[2 * r + 1];
    // A peer's rows are distinct tokens of its own, each used by 1..k of the pairs.
    if (n < 0 || rows < 0 || rows > n || n > INT32_MAX - recv_pairs_ || n > rows * top_k_) {
      return absl::InternalError(absl::StrCat("MoeLayer dispatch: rank ", r, " announced ", n, " pairs in ", rows, " rows"));
    }
    recv_counts[r] = n;
    recv_uniq_counts[r] = rows;
    recv_offsets[r] = recv_pairs_;
    recv_uniq_offsets[r] = recv_uniq_;
    recv_pairs_ += n;
    recv_uniq_ += rows;
  }
  return absl::OkStatus();
}

absl::Status DispatchPlan::Expand(const int32_t* recv_meta, int num_slots) {
  recv_slot.resize(recv_pairs_);
  recv_row_of.resize(recv_pairs_);
  for (int r = 0; r < ranks_; ++r) {
    for (int64_t i = recv_offsets[r]; i < recv_offsets[r] + recv_counts[r]; ++i) {
      const int32_t slot = recv_meta[2 * i], row = recv_meta[2 * i + 1];
      if (slot < 0 || slot >= num_slots) {
        return absl::InternalError(absl::StrCat("MoeLayer dispatch: rank ", r, " sent slot ", slot, " of ", num_slots));
      }
      if (row < 0 || row >= recv_uniq_counts[r]) {
        return absl::InternalError(absl::StrCat("MoeLayer dispatch: rank ", r, " sent row index ", row, " of ", recv_uniq_counts[r]));
      }
      recv_slot[i] = slot;
      recv_row_of[i] = static_cast<int32_t>(recv_uniq_offsets[r] + row);
    }
  }
  slot_counts.resize(num_slots);
  slot_offsets.resize(num_slots);
  order.resize(recv_pairs_);
  SY_RETURN_IF_ERROR(kernels::GroupBySlot(recv_slot.data(), recv_pairs_, num_slots, slot_counts.data(),
                                          slot_offsets.data(), order.data()));
  grouped_row.resize(recv_pairs_);
  for (int64_t i = 0; i < recv_pairs_; ++i) grouped_row[order[i]] = recv_row_of[i];
  return absl::OkStatus();
}

const ExchangeLayout& DispatchPlan::Layout(const std::vector<int64_t>& send_n, const std::vector<int64_t>& send_at,
                                           const std::vector<int64_t>& recv_n, const std::vector<int64_t>& recv_at,
                                           size_t unit, ExchangeLayout& l) const {
  for (std::vector<int64_t>* v : {&l.send_counts, &l.send_offsets, &l.recv_counts, &l.recv_offsets}) v->resize(ranks_);
  const auto u = static_cast<int64_t>(unit);
  for (int r = 0; r < ranks_; ++r) {
    l.send_counts[r] = send_n[r] * u;
    l.send_offsets[r] = send_at[r] * u;
    l.recv_counts[r] = recv_n[r] * u;
    l.recv_offsets[r] = recv_at[r] * u;
  }
  return l;
}

const ExchangeLayout& DispatchPlan::DispatchRows(size_t row_bytes) {
  return Layout(send_uniq_counts, send_uniq_offsets, recv_uniq_counts, recv_uniq_offsets, row_bytes, rows_layout_);
}

const ExchangeLayout& DispatchPlan::DispatchMeta() {
  return Layout(send_counts, send_offsets, recv_counts, recv_offsets, 2 * sizeof(int32_t), meta_layout_);
}

const ExchangeLayout& DispatchPlan::ReturnRows(size_t row_bytes) {
  // What was received goes back.
  return Layout(recv_counts, recv_offsets, send_counts, send_offsets, row_bytes, return_layout_);
}

}  // namespace switchyard::worker
