#include "worker/moe_layer.h"

#include <cmath>
#include <time.h>

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

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
    : MoeLayer(model, comm, weights, std::move(table), CreateCpuDevice(model, cpu_threads)) {}

MoeLayer::MoeLayer(const model::ModelConfig& model, comm::Communicator& comm, WeightStore& weights,
                   std::shared_ptr<const placement::RoutingTable> table, std::unique_ptr<LayerDevice> device)
    : model_(model),
      comm_(comm),
      weights_(weights),
      table_(std::move(table)),
      device_(std::move(device)),
      counters_(static_cast<int>(weights.layer_ids().size()), model.num_experts) {}

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

absl::StatusOr<int64_t> MoeLayer::Exchange(const void* send, void* recv, const ExchangeLayout& l, comm::MemoryKind kind) {
  SY_RETURN_IF_ERROR(Communicate([&] {
    return comm_.AllToAllV(send, l.send_counts.data(), l.send_offsets.data(), recv, l.recv_counts.data(),
                           l.recv_offsets.data(), kind);
  }));
  sent_bytes_.resize(comm_.size(), 0);
  for (int r = 0; r < comm_.size(); ++r) {
    if (r != comm_.rank()) sent_bytes_[r] += l.send_counts[r];
  }
  return l.sent_bytes();
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
  LayerDevice& dev = *device_;
  const comm::MemoryKind rows_kind = dev.memory();

  const double cpu_start = ThreadCpuSeconds();
  comm_cpu_ = 0;

  // 1. Gate. A non-finite logit is refused before any collective (this rank's peers then time
  // out in the next one).
  auto t0 = Clock::now();
  ids_.resize(pairs);
  SY_RETURN_IF_ERROR(dev.Gate(model_.Gating(weights_.router_bias(li)), router_logits, tokens, ids_.data()));
  times_.gate += Since(t0);

  // 2-3. Route, exchange counts, dispatch rows (one per (token, destination rank)) and each
  // pair's (slot, row index); the receiver expands the rows per pair (DispatchPlan).
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
  SY_RETURN_IF_ERROR(plan_.PlanSend(dest_rank_.data(), slot_.data(), tokens, k, R));
  recv_count_pairs_.resize(2 * R);
  SY_RETURN_IF_ERROR(Communicate(
      [&] { return comm_.AllToAll(plan_.count_pairs.data(), 2 * sizeof(int64_t), recv_count_pairs_.data()); }));
  SY_RETURN_IF_ERROR(plan_.PlanReceive(recv_count_pairs_.data()));
  SY_ASSIGN_OR_RETURN(float* send_rows, dev.RowBuffer(LayerDevice::kSendRows, plan_.sent_rows()));
  SY_ASSIGN_OR_RETURN(const int32_t* uniq_token, dev.IndexBuffer(LayerDevice::kUniqToken, plan_.uniq_token));
  SY_RETURN_IF_ERROR(dev.GatherRows(hidden, send_rows, uniq_token, plan_.sent_rows()));
  SY_ASSIGN_OR_RETURN(float* recv_rows, dev.RowBuffer(LayerDevice::kRecvRows, plan_.received_rows()));
  SY_ASSIGN_OR_RETURN(int64_t sent, Exchange(send_rows, recv_rows, plan_.DispatchRows(row_bytes), rows_kind));
  bytes_.dispatch_rows += sent;
  recv_meta_.resize(2 * plan_.received_pairs());
  SY_ASSIGN_OR_RETURN(sent, Exchange(plan_.send_meta.data(), recv_meta_.data(), plan_.DispatchMeta(), comm::MemoryKind::kHost));
  bytes_.dispatch_meta += sent;
  const int slots = weights_.num_slots(li);
  SY_RETURN_IF_ERROR(plan_.Expand(recv_meta_.data(), slots));
  times_.dispatch += Since(t0);

  // 4. Group received rows by slot (one gather straight from the deduplicated rows), grouped
  // FFN, back to arrival order.
  t0 = Clock::now();
  const int64_t recv_pairs = plan_.received_pairs();
  SY_ASSIGN_OR_RETURN(float* grouped, dev.RowBuffer(LayerDevice::kGrouped, recv_pairs));
  SY_ASSIGN_OR_RETURN(float* grouped_out, dev.RowBuffer(LayerDevice::kGroupedOut, recv_pairs));
  SY_ASSIGN_OR_RETURN(const int32_t* grouped_row, dev.IndexBuffer(LayerDevice::kGroupedRow, plan_.grouped_row));
  SY_RETURN_IF_ERROR(dev.GatherRows(recv_rows, grouped, grouped_row, recv_pairs));
  for (int s = 0; s < slots; ++s) counts.processed[weights_.slot_expert(li, s)] += plan_.slot_counts[s];
  SY_RETURN_IF_ERROR(dev.GroupedFfn(weights_, li, plan_.slot_offsets.data(), plan_.slot_counts.data(), grouped, grouped_out));
  SY_ASSIGN_OR_RETURN(float* back_rows, dev.RowBuffer(LayerDevice::kBackRows, recv_pairs));
  SY_ASSIGN_OR_RETURN(const int32_t* order, dev.IndexBuffer(LayerDevice::kOrder, plan_.order));
  SY_RETURN_IF_ERROR(dev.GatherRows(grouped_out, back_rows, order, recv_pairs));
  times_.ffn += Since(t0);

  // 5. Return trip, combine in k order, shared expert.
  t0 = Clock::now();
  SY_ASSIGN_OR_RETURN(float* returned, dev.RowBuffer(LayerDevice::kReturned, pairs));
  SY_ASSIGN_OR_RETURN(sent, Exchange(back_rows, returned, plan_.ReturnRows(row_bytes), rows_kind));
  bytes_.combine += sent;
  float* shared = nullptr;
  if (model_.shared_ffn > 0) {  // computed before `out` is written, as `out` may alias `hidden`
    SY_ASSIGN_OR_RETURN(shared, dev.RowBuffer(LayerDevice::kShared, tokens));
    SY_RETURN_IF_ERROR(dev.SharedExpert(weights_, li, hidden, tokens, shared));
  }
  SY_ASSIGN_OR_RETURN(const int32_t* position, dev.IndexBuffer(LayerDevice::kPosition, plan_.position));
  SY_RETURN_IF_ERROR(dev.Combine(returned, position, tokens, shared, out));
  times_.combine += Since(t0);
  times_.busy += ThreadCpuSeconds() - cpu_start - comm_cpu_;
  return absl::OkStatus();
}

}  // namespace switchyard::worker
