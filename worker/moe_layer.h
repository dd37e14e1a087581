// MoeLayer: one rank's part of the distributed MoE layers (DESIGN.md section 4), usable as a
// library by a host framework: Forward(layer, hidden, router_logits) -> output.
//
//   gate -> route each (token, expert) pair to one replica -> exchange pair and row counts
//   (AllToAll) -> dispatch one row per (token, destination rank) and each pair's (slot, row)
//   (AllToAllV; the receiver expands the rows per pair) -> group received rows by slot, grouped FFN ->
//   return trip (AllToAllV) -> combine each token's k outputs in k order -> add the shared
//   expert -> count.
//
// Routing has two modes (ShareMode). kEpoch: each pair draws its replica by the shares the
// epoch was planned with (RoutingTable). kStep: the ranks all-gather their per-expert pair
// counts (E int32 per rank), every rank solves the same split of each expert's pairs over its
// replicas that minimises the most loaded rank (placement/step_shares.h) and routes its pairs
// by it, local replicas first. Outputs are the same bits in both modes.
//
// Dropless: every pair is computed exactly once. Output identity: a token's output bits do not
// depend on the placement, the rank count or the backend (the FFN is row-invariant, combine
// sums in k order, replicas hold identical bytes).
//
// Devices: the rows live where the layer's LayerDevice keeps them (worker/layer_device.h: host
// memory, or a CUDA GPU's); the bookkeeping (DispatchPlan) is the same host code on both.
// Rows are exchanged in the device's memory kind; the small exchanges (counts, metadata) in
// host memory.
//
// Threads: Forward and the counters belong to the step thread. Every rank calls Forward for
// the same layers in the same order (it runs collectives).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "comm/communicator.h"
#include "placement/routing.h"
#include "placement/step_shares.h"
#include "model/model.h"
#include "worker/dispatch_plan.h"
#include "worker/layer_device.h"
#include "worker/weights.h"

namespace switchyard::worker {

// Per-(layer, expert) token counts of a window.
struct LayerCounts {
  std::vector<int64_t> chosen;     // pairs this rank's gate sent to each expert
  std::vector<int64_t> processed;  // pairs this rank computed for each expert
};

class LoadCounters {
 public:
  LoadCounters(int layers, int experts);
  LayerCounts& layer(int layer_index) { return layers_[layer_index]; }
  const std::vector<LayerCounts>& layers() const { return layers_; }
  // The counts since the last Reset, and a new window.
  std::vector<LayerCounts> TakeWindow();
  void Reset();

 private:
  int experts_;
  std::vector<LayerCounts> layers_;
};

// Seconds spent per phase (wall clock, communication included), accumulated over Forward
// calls; and the split that ranks sharing cores need: `busy` is this thread's CPU time
// outside communication calls (gate, routing, permute, FFN, combine), `comm` the wall time
// inside them (transfer plus waiting for peers).
struct PhaseTimes {
  double gate = 0, dispatch = 0, ffn = 0, combine = 0;
  double busy = 0, comm = 0;
};

// CPU seconds of the calling thread.
double ThreadCpuSeconds();

// How a layer splits an expert's pairs over its replicas (worker --shares).
enum class ShareMode { kEpoch, kStep };
const char* ShareModeName(ShareMode mode);  // "epoch", "step"


class MoeLayer {
 public:
  // `table` must place exactly the experts `weights` holds on this rank (same slots). The
  // grouped FFN runs on `cpu_threads` threads (>= 1) with the CPU path kernels::BestCpuIsa();
  // neither changes any output bit.
  MoeLayer(const model::ModelConfig& model, comm::Communicator& comm, WeightStore& weights,
           std::shared_ptr<const placement::RoutingTable> table, int cpu_threads = 1);
  // The same on `device` (CreateLayerDevice). The communicator must support the device's
  // memory kind for the rows and host memory for the counts.
  MoeLayer(const model::ModelConfig& model, comm::Communicator& comm, WeightStore& weights,
           std::shared_ptr<const placement::RoutingTable> table, std::unique_ptr<LayerDevice> device);

  // hidden, out: [tokens, hidden] fp32; router_logits: [tokens, num_experts], finite
  // (InvalidArgument naming the first bad one otherwise); all three in the device's memory.
  // `out` may alias `hidden`. `draw_key` makes the replica choices of this call
  // deterministic (callers pass e.g. the step number).
  absl::Status Forward(int layer_id, const float* hidden, const float* router_logits, int64_t tokens,
                       float* out, uint64_t draw_key = 0);

  // The routing table of the next Forward calls (an epoch switch, at a step boundary).
  void SetRoutingTable(std::shared_ptr<const placement::RoutingTable> table) {
    table_ = std::move(table);
    step_solvers_.clear();
  }
  // Every rank must use the same mode (Forward's collectives differ).
  void set_share_mode(ShareMode mode) { share_mode_ = mode; }
  ShareMode share_mode() const { return share_mode_; }
  const placement::RoutingTable& routing_table() const { return *table_; }

  // Bytes this rank sent to each rank (itself: 0) in Forward's all-to-alls since the last call.
  std::vector<int64_t> TakeSentBytes();
  // What Forward's exchanges carried from this rank (to every rank, itself included) since
  // construction: dispatch rows (one per (token, destination rank)), dispatch metadata (slot
  // and row index per pair, 8 bytes), combine rows (one per pair this rank computed).
  struct ExchangeBytes {
    int64_t dispatch_rows = 0, dispatch_meta = 0, combine = 0;
  };
  const ExchangeBytes& exchange_bytes() const { return bytes_; }
  LayerDevice& device() { return *device_; }
  LoadCounters& counters() { return counters_; }
  const PhaseTimes& times() const { return times_; }
  void ResetTimes() { times_ = {}; }

 private:
  model::ModelConfig model_;
  comm::Communicator& comm_;
  WeightStore& weights_;
  std::shared_ptr<const placement::RoutingTable> table_;
  std::unique_ptr<LayerDevice> device_;
  LoadCounters counters_;
  PhaseTimes times_;
  double comm_cpu_ = 0;  // CPU time inside communication calls of the current Forward

  // Runs one communication call, accounting its wall time to times_.comm.
  template <typename Call>
  absl::Status Communicate(Call&& call);
  // One AllToAllV of `layout` (kind: where the buffers are), its bytes added to sent_bytes_;
  // returns the bytes this rank sent (to every rank, itself included).
  absl::StatusOr<int64_t> Exchange(const void* send, void* recv, const ExchangeLayout& layout, comm::MemoryKind kind);
  // kStep routing of ids_ into dest_rank_ and slot_ (collective: the count all-gather of
  // local_counts_, this step's pairs per expert).
  absl::Status RouteByStepShares(int layer_index);

  ShareMode share_mode_ = ShareMode::kEpoch;
  std::vector<std::unique_ptr<placement::StepShareSolver>> step_solvers_;  // per layer index, for table_
  std::vector<int32_t> local_counts_, all_counts_;
  std::vector<int64_t> expert_counts_, quota_, routes_;
  std::vector<size_t> cursor_;

  // Host buffers reused across calls: each pair's expert, destination and slot; the plan; the
  // received metadata.
  std::vector<int32_t> ids_, dest_rank_, slot_, recv_meta_;
  std::vector<int64_t> recv_count_pairs_;
  DispatchPlan plan_;
  std::vector<int64_t> sent_bytes_;  // per destination rank, since TakeSentBytes
  ExchangeBytes bytes_;
};

}  // namespace switchyard::worker
