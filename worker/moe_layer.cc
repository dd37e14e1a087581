#include "worker/moe_layer.h"

#include <cmath>
#include <time.h>

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/gating.h"
#include "kernels/permute.h"

namespace switchyard::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

template <typename Call>
absl::Status MoeLayer::Communicate(Call&& call) {
  const auto wall0 = Clock::now();
  const double cpu0 = ThreadCpuSeconds();
  absl::Status s = call();
  comm_cpu_ += ThreadCpuSeconds() - cpu0;
  times_.comm += Since(wall0);
  return s;
}

LoadCounters::LoadCounters(int layers, int experts) : experts_(experts), layers_(layers) { Reset(); }

void LoadCounters::Reset() {
  for (LayerCounts& l : layers_) {
    l.chosen.assign(experts_, 0);
    l.processed.assign(experts_, 0);
  }
}

std::vector<LayerCounts> LoadCounters::TakeWindow() {
  std::vector<LayerCounts> window = layers_;
  Reset();
  return window;
}

MoeLayer::MoeLayer(const model::ModelConfig& model, comm::Communicator& comm, WeightStore& weights,
                   std::shared_ptr<const placement::RoutingTable> table, int cpu_threads)
    : model_(model),
      comm_(comm),
      weights_(weights),
      table_(std::move(table)),
      counters_(static_cast<int>(weights.layer_ids().size()), model.num_experts),
      ffn_ws_(kernels::BestCpuIsa(), cpu_threads) {}

const char* ShareModeName(ShareMode mode) { return mode == ShareMode::kStep ? "step" : "epoch"; }

absl::Status MoeLayer::RouteByStepShares(int li) {
  const int R = comm_.size(), me = comm_.rank(), E = model_.num_experts;
  const int64_t pairs = static_cast<int64_t>(ids_.size());
  if (step_solvers_.size() != static_cast<size_t>(table_->num_layers())) step_solvers_.resize(table_->num_layers());
  if (!step_solvers_[li]) {
    const placement::Placement& p = table_->placement();
    step_solvers_[li] = std::make_unique<placement::StepShareSolver>(p.layers[li], p.topology, p.num_experts);
  }
  const placement::StepShareSolver& solver = *step_solvers_[li];
  // Every rank's pairs per expert (this rank's: local_counts_, from Forward), then the same
  // quotas and routes everywhere.
  all_counts_.resize(static_cast<size_t>(R) * E);
  SY_RETURN_IF_ERROR(Communicate(
      [&] { return comm_.AllGather(local_counts_.data(), static_cast<int64_t>(E) * sizeof(int32_t), all_counts_.data()); }));
  expert_counts_.assign(E, 0);
  for (int r = 0; r < R; ++r) {
    const int32_t* row = &all_counts_[static_cast<size_t>(r) * E];
    for (int e = 0; e < E; ++e) expert_counts_[e] += row[e];
  }
  quota_.resize(solver.num_replicas());
  routes_.resize(solver.num_replicas());
  SY_RETURN_IF_ERROR(solver.Solve(expert_counts_, absl::MakeSpan(quota_)));
  SY_RETURN_IF_ERROR(solver.Transport(all_counts_, quota_, me, absl::MakeSpan(routes_)));
  // This rank's pairs of each expert, in pair order, fill its routes replica by replica.
  cursor_.assign(E, 0);
  for (int64_t p = 0; p < pairs; ++p) {
    const int e = ids_[p];
    const std::vector<int>& replicas = solver.replicas_of(e);
    size_t& c = cursor_[e];
    while (routes_[replicas[c]] == 0) ++c;  // routes of e sum to this rank's pairs of e
    const int j = replicas[c];
    --routes_[j];
    dest_rank_[p] = solver.replica_rank(j);
    slot_[p] = solver.replica_slot(j);
  }
  return absl::OkStatus();
}

int64_t MoeLayer::CountSent(const std::vector<int64_t>& bytes) {
  sent_bytes_.resize(comm_.size(), 0);
  int64_t total = 0;
  for (int r = 0; r < comm_.size(); ++r) {
    if (r != comm_.rank()) sent_bytes_[r] += bytes[r];
    total += bytes[r];
  }
  return total;
}

std::vector<int64_t> MoeLayer::TakeSentBytes() {
  std::vector<int64_t> out(comm_.size(), 0);
  if (!sent_bytes_.empty()) out.swap(sent_bytes_);
  sent_bytes_.assign(comm_.size(), 0);
  return out;
}

absl::Status MoeLayer::Forward(int layer_id, const float* hidden, const float* router_logits, int64_t tokens,
                               float* out, uint64_t draw_key) {
  const int li = table_->LayerIndex(layer_id);
  if (li < 0 || li >= static_cast<int>(weights_.layer_ids().size()) || weights_.layer_ids()[li] != layer_id) {
    return absl::InvalidArgumentError(absl::StrCat("MoeLayer: layer ", layer_id, " is not one this rank runs"));
  }
  const int k = model_.top_k, R = comm_.size(), me = comm_.rank();
  const int64_t H = model_.hidden, pairs = tokens * k;
  const size_t row_bytes = static_cast<size_t>(H) * sizeof(float);

  const double cpu_start = ThreadCpuSeconds();
  comm_cpu_ = 0;

  // 1. Gate. A NaN or infinite logit would pick experts by garbage scores, silently: refused
  // here, before any collective (this rank's peers then time out in the next one).
  auto t0 = Clock::now();
  const int E = model_.num_experts;
  for (int64_t i = 0; i < tokens * E; ++i) {
    if (!std::isfinite(router_logits[i])) {
      return absl::InvalidArgumentError(absl::StrCat("MoeLayer: router_logits[", i / E, ", ", i % E, "] is ", router_logits[i],
                                                     " (logits must be finite)"));
    }
  }
  ids_.resize(pairs);
  weights_buf_.resize(pairs);
  SY_RETURN_IF_ERROR(kernels::GateCpu(model_.Gating(weights_.router_bias(li)), router_logits, tokens, ids_.data(),
                                      weights_buf_.data(), ffn_ws_.isa()));
  times_.gate += Since(t0);

  // 2-3. Route, exchange counts, dispatch rows and slot ids.
  t0 = Clock::now();
  dest_rank_.resize(pairs);
  slot_.resize(pairs);
  LayerCounts& counts = counters_.layer(li);
  local_counts_.assign(model_.num_experts, 0);  // this step's pairs per expert
  for (int64_t p = 0; p < pairs; ++p) ++local_counts_[ids_[p]];
  for (int e = 0; e < model_.num_experts; ++e) counts.chosen[e] += local_counts_[e];
  if (share_mode_ == ShareMode::kStep) {
    SY_RETURN_IF_ERROR(RouteByStepShares(li));
  } else {
    for (int64_t p = 0; p < pairs; ++p) {
      const placement::ReplicaLocation where = table_->Route(
          li, ids_[p], me,
          placement::PairDraw(draw_key, static_cast<uint64_t>(layer_id), static_cast<uint64_t>(me), static_cast<uint64_t>(p)));
      dest_rank_[p] = where.rank;
      slot_[p] = where.slot;
    }
  }
  send_counts_.resize(R);
  send_offsets_.resize(R);
  recv_counts_.resize(R);
  recv_offsets_.resize(R);
  for (std::vector<int64_t>* v : {&send_uniq_counts_, &send_uniq_offsets_, &recv_uniq_counts_, &recv_uniq_offsets_}) v->resize(R);
  count_pairs_.resize(2 * R);
  recv_count_pairs_.resize(2 * R);
  position_.resize(pairs);
  send_pair_.resize(pairs);
  SY_RETURN_IF_ERROR(kernels::DispatchLayout(dest_rank_.data(), pairs, R, send_counts_.data(), send_offsets_.data(),
                                             position_.data(), send_pair_.data()));
  // Dedup: a token goes once to each destination rank; each pair carries its slot and the
  // index of its token's row in that rank's block. In a block the pairs ascend (DispatchLayout
  // is stable), so a token's pairs are adjacent. The receiver expands the rows back to one per
  // pair: everything after (grouping, FFN, return trip, combine) sees what it saw before.
  const int threads = ffn_ws_.threads();
  uniq_token_.clear();
  send_meta_.resize(2 * pairs);
  for (int r = 0; r < R; ++r) {
    const int64_t first = static_cast<int64_t>(uniq_token_.size());
    int32_t last = -1;
    for (int64_t n = send_offsets_[r]; n < send_offsets_[r] + send_counts_[r]; ++n) {
      const int32_t t = send_pair_[n] / k;
      if (t != last) uniq_token_.push_back(t), last = t;
      send_meta_[2 * n] = slot_[send_pair_[n]];
      send_meta_[2 * n + 1] = static_cast<int32_t>(static_cast<int64_t>(uniq_token_.size()) - 1 - first);
    }
    count_pairs_[2 * r] = send_counts_[r];
    count_pairs_[2 * r + 1] = static_cast<int64_t>(uniq_token_.size()) - first;
  }
  SY_RETURN_IF_ERROR(Communicate([&] { return comm_.AllToAll(count_pairs_.data(), 2 * sizeof(int64_t), recv_count_pairs_.data()); }));
  int64_t recv_rows = 0, recv_uniq = 0, send_uniq = 0;
  for (int r = 0; r < R; ++r) {
    send_uniq_counts_[r] = count_pairs_[2 * r + 1];
    send_uniq_offsets_[r] = send_uniq;
    send_uniq += send_uniq_counts_[r];
    recv_counts_[r] = recv_count_pairs_[2 * r];
    recv_uniq_counts_[r] = recv_count_pairs_[2 * r + 1];
    if (recv_counts_[r] < 0 || recv_uniq_counts_[r] < 0 || recv_uniq_counts_[r] > recv_counts_[r]) {
      return absl::InternalError(absl::StrCat("MoeLayer dispatch: rank ", r, " announced ", recv_counts_[r], " pairs in ",
                                              recv_uniq_counts_[r], " rows"));
    }
    recv_offsets_[r] = recv_rows;
    recv_uniq_offsets_[r] = recv_uniq;
    recv_rows += recv_counts_[r];
    recv_uniq += recv_uniq_counts_[r];
  }
  send_rows_.resize(send_uniq * H);
  kernels::GatherRows(hidden, send_rows_.data(), uniq_token_.data(), send_uniq, row_bytes, 1, threads);
  recv_uniq_rows_.resize(recv_uniq * H);
  recv_meta_.resize(2 * recv_rows);
  // Byte counts and offsets of each exchange, from per-rank element counts and the unit size.
  std::vector<int64_t>& sb = byte_counts_[0];
  std::vector<int64_t>& so = byte_offsets_[0];
  std::vector<int64_t>& rb = byte_counts_[1];
  std::vector<int64_t>& ro = byte_offsets_[1];
  for (std::vector<int64_t>* v : {&sb, &so, &rb, &ro}) v->resize(R);
  auto scale = [&](const std::vector<int64_t>& send_n, const std::vector<int64_t>& send_at, const std::vector<int64_t>& recv_n,
                   const std::vector<int64_t>& recv_at, size_t unit) {
    for (int r = 0; r < R; ++r) {
      sb[r] = send_n[r] * static_cast<int64_t>(unit);
      so[r] = send_at[r] * static_cast<int64_t>(unit);
      rb[r] = recv_n[r] * static_cast<int64_t>(unit);
      ro[r] = recv_at[r] * static_cast<int64_t>(unit);
    }
  };
  scale(send_uniq_counts_, send_uniq_offsets_, recv_uniq_counts_, recv_uniq_offsets_, row_bytes);
  SY_RETURN_IF_ERROR(Communicate(
      [&] { return comm_.AllToAllV(send_rows_.data(), sb.data(), so.data(), recv_uniq_rows_.data(), rb.data(), ro.data()); }));
  bytes_.dispatch_rows += CountSent(sb);
  scale(send_counts_, send_offsets_, recv_counts_, recv_offsets_, 2 * sizeof(int32_t));
  SY_RETURN_IF_ERROR(Communicate(
      [&] { return comm_.AllToAllV(send_meta_.data(), sb.data(), so.data(), recv_meta_.data(), rb.data(), ro.data()); }));
  bytes_.dispatch_meta += CountSent(sb);
  // Expand: pair i of rank r's block uses row recv_uniq_offsets_[r] + its index (checked: the
  // index comes from a peer).
  recv_slot_.resize(recv_rows);
  recv_row_of_.resize(recv_rows);
  for (int r = 0; r < R; ++r) {
    for (int64_t i = recv_offsets_[r]; i < recv_offsets_[r] + recv_counts_[r]; ++i) {
      const int32_t row = recv_meta_[2 * i + 1];
      if (row < 0 || row >= recv_uniq_counts_[r]) {
        return absl::InternalError(absl::StrCat("MoeLayer dispatch: rank ", r, " sent row index ", row, " of ", recv_uniq_counts_[r]));
      }
      recv_slot_[i] = recv_meta_[2 * i];
      recv_row_of_[i] = static_cast<int32_t>(recv_uniq_offsets_[r] + row);
    }
  }
  times_.dispatch += Since(t0);

  // 4. Group received rows by slot, grouped FFN, back to arrival order.
  t0 = Clock::now();
  const int slots = weights_.num_slots(li);
  slot_counts_.resize(slots);
  slot_offsets_.resize(slots);
  order_.resize(recv_rows);
  SY_RETURN_IF_ERROR(kernels::GroupBySlot(recv_slot_.data(), recv_rows, slots, slot_counts_.data(),
                                          slot_offsets_.data(), order_.data()));
  grouped_.resize(recv_rows * H);
  grouped_out_.resize(recv_rows * H);
  // Received pair i goes to grouped row order_[i] and reads received row recv_row_of_[i]: one
  // gather straight from the deduplicated rows (no per-pair copy in between).
  grouped_row_.resize(recv_rows);
  for (int64_t i = 0; i < recv_rows; ++i) grouped_row_[order_[i]] = recv_row_of_[i];
  kernels::GatherRows(recv_uniq_rows_.data(), grouped_.data(), grouped_row_.data(), recv_rows, row_bytes, 1, threads);
  slot_weights_.resize(slots);
  for (int s = 0; s < slots; ++s) {
    slot_weights_[s] = weights_.slot_weights(li, s);
    counts.processed[weights_.slot_expert(li, s)] += slot_counts_[s];
  }
  SY_RETURN_IF_ERROR(kernels::GroupedFfnCpu(model_.ExpertShape(), slot_weights_.data(), slot_offsets_.data(),
                                            slot_counts_.data(), slots, grouped_.data(), grouped_out_.data(), ffn_ws_));
  back_rows_.resize(recv_rows * H);
  kernels::GatherRows(grouped_out_.data(), back_rows_.data(), order_.data(), recv_rows, row_bytes, 1, threads);
  times_.ffn += Since(t0);

  // 5. Return trip, combine in k order, shared expert.
  t0 = Clock::now();
  returned_.resize(pairs * H);
  scale(recv_counts_, recv_offsets_, send_counts_, send_offsets_, row_bytes);  // what was received goes back
  SY_RETURN_IF_ERROR(Communicate(
      [&] { return comm_.AllToAllV(back_rows_.data(), sb.data(), so.data(), returned_.data(), rb.data(), ro.data()); }));
  bytes_.combine += CountSent(sb);
  const bool shared = model_.shared_ffn > 0;
  if (shared) {  // computed before `out` is written, as `out` may alias `hidden`
    shared_out_.resize(tokens * H);
    const void* w = weights_.shared_weights(li);
    const int64_t zero = 0;
    SY_RETURN_IF_ERROR(kernels::GroupedFfnCpu(model_.SharedShape(), &w, &zero, &tokens, 1, hidden, shared_out_.data(), ffn_ws_));
    if (const float* gate = weights_.shared_gate(li); gate != nullptr) {  // Qwen: x sigmoid(hidden . gate) per token
      shared_scale_.resize(tokens);
      SY_RETURN_IF_ERROR(kernels::SharedExpertGateCpu(hidden, gate, tokens, H, shared_scale_.data()));
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t i = 0; i < H; ++i) shared_out_[t * H + i] *= shared_scale_[t];
      }
    }
  }
  kernels::Combine(returned_.data(), position_.data(), weights_buf_.data(), tokens, k, H, out, threads, ffn_ws_.isa());
  if (shared) {
    for (int64_t i = 0; i < tokens * H; ++i) out[i] = out[i] + shared_out_[i];
  }
  times_.combine += Since(t0);
  times_.busy += ThreadCpuSeconds() - cpu_start - comm_cpu_;
  return absl::OkStatus();
}

}  // namespace switchyard::worker
