// The simulator's cost model (docs/sim.md): how long one MoE layer step takes on each rank of
// a cluster, from the placement in force and the pairs each expert receives.
//
// Pure functions of named parameters; no clock. Units: seconds, bytes, FLOPs, counts of
// (token, expert) pairs. Per layer and rank the phases are:
//   gate      reading the router logits (fp32; the router GEMM is the caller's, as in
//             MoeLayer) and writing k expert ids and weights per token, at `memory_bandwidth`;
//   dispatch  the all-to-all of routed rows: each source sends its pairs to the replicas the
//             routing table picks (shares first, then own rank, node, the rest: placement/
//             routing.h), aggregated per expert and node; rows cross NVLink within a node and
//             RDMA between nodes, which run concurrently, each costing bytes / bandwidth plus
//             its latency, plus `per_peer` per destination rank, plus the permute (each
//             pair's row gathered into the send buffer: 2 k rows per token at
//             `memory_bandwidth`). With dedup a token goes once to each destination rank (the
//             expected distinct ranks of its k pairs);
//   ffn       the rank's grouped GEMM as one roofline: max(FLOPs / flops, bytes / memory
//             bandwidth), FLOPs = pairs x 2 H I x matrices (3 for SwiGLU, 2 for ReLU^2), bytes =
//             the weights of every replica that receives a pair plus 2 H activation bytes per
//             pair;
//   combine   the return all-to-all: one row per pair, the dispatch's traffic reversed, plus
//             the weighted sum (k rows read and one written per token);
//   overhead  `layer_overhead` per layer (launches, the count exchange, synchronisation).
// Every all-to-all waits for its slowest rank, so a layer takes gate + max dispatch + max ffn +
// max combine + overhead. Migration bytes in flight on a rank share its links: they add to
// its dispatch time.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/model.h"
#include "placement/placement.h"

namespace switchyard::sim {

// One rank (a GPU, or a CPU socket) and its links. Bandwidths are what a rank sustains, each
// direction, not datasheet peaks.
struct Hardware {
  std::string name;
  double flops = 0;              // FLOP/s of the grouped expert GEMM (and the router GEMM)
  double memory_bandwidth = 0;   // bytes/s of weight and activation reads (HBM; DRAM on a CPU)
  double intra_bandwidth = 0;    // bytes/s to ranks on the same node (NVLink)
  double intra_latency = 0;      // s per all-to-all phase within a node
  double inter_bandwidth = 0;    // bytes/s to other nodes (RDMA NIC)
  double inter_latency = 0;      // s per all-to-all phase across nodes
  double per_peer = 0;           // s per destination rank a phase sends to (issue cost)
  double layer_overhead = 0;     // s per MoE layer
  double activation_bytes = 2;   // bytes per element of a dispatched or combined row
  double weight_bytes = 2;       // bytes per expert weight element (bf16 2, fp8 1, fp32 4)
  // Live migration (worker --migration-bytes-per-step): bytes a rank may move per step.
  double migration_bytes_per_step = 4 << 20;
  // A lost rank: the coordinator's heartbeat timeout, the regroup (new communicator,
  // agreement), and reading orphaned experts from the weight source.
  double detect_seconds = 2.0;
  double regroup_seconds = 0.5;
  double reload_bandwidth = 2e9;  // bytes/s per rank from the weight source
};

// "h100" (H100 SXM, NVLink 4, 400G InfiniBand), "h200" (same links, HBM3e), "cpu" (this
// project's CPU data plane, from `switchyard bench kernels` / `bench a2a` figures in
// docs/benchmarks.md). InvalidArgument listing the presets for another name.
absl::StatusOr<Hardware> PresetHardware(absl::string_view name);
std::vector<std::string> HardwarePresetNames();
// A preset name, or a JSON file of the fields above (a "preset" key starts from a preset and
// the other keys override it; unknown keys and values out of range are errors naming them).
absl::StatusOr<Hardware> LoadHardware(const std::string& spec);
// InvalidArgument naming the first field that is not finite and positive (latencies,
// overhead and per_peer may be 0).
absl::Status ValidateHardware(const Hardware& hw);

// What the cost model needs of a model.
struct ModelShape {
  int num_experts = 0;
  int top_k = 0;
  int64_t hidden = 0;
  int64_t expert_ffn = 0;
  int matrices = 3;  // weight matrices per expert: 3 (SwiGLU), 2 (ReLU^2)
  // Bytes of one expert's weights at `weight_bytes` per element.
  double ExpertBytes(double weight_bytes) const {
    return static_cast<double>(matrices) * hidden * expert_ffn * weight_bytes;
  }
};
ModelShape ShapeOf(const model::ModelConfig& model);

// Where ranks sit: node_of[r] for each rank (ranks of a node need not be contiguous after a
// loss).
struct Cluster {
  std::vector<int> node_of;
  int num_nodes = 1;
  int ranks() const { return static_cast<int>(node_of.size()); }
  static Cluster Contiguous(int ranks, int nodes);
};

enum class Phase { kGate, kDispatch, kFfn, kCombine, kOverhead };
absl::string_view PhaseName(Phase phase);

struct LayerCost {
  double gate = 0, dispatch = 0, ffn = 0, combine = 0, overhead = 0;  // s, the slowest rank each
  double total() const { return gate + dispatch + ffn + combine + overhead; }
  Phase dominant = Phase::kFfn;
  int critical_rank = 0;          // the rank with the most dispatch + ffn + combine time
  double critical_seconds = 0;    // that rank's gate + dispatch + ffn + combine + overhead
  double balancedness = 1;        // mean / max pairs received per rank
  double intra_bytes = 0;         // dispatch + combine bytes over NVLink (all ranks)
  double inter_bytes = 0;         // ... over RDMA
  double pairs = 0;
};

struct LayerInputs {
  const placement::LayerPlacement* layer = nullptr;
  std::span<const double> expert_pairs;  // [experts]: pairs each expert receives this step (all sources)
  double tokens_per_rank = 0;
  // [ranks]: migration bytes each rank moves during this layer, by link class (empty: none).
  std::span<const double> migration_intra, migration_inter;
};

// The cost of one layer step. `dedup`: dispatch sends a token once per destination rank.
// Sources are uniform: every rank holds tokens_per_rank tokens routed like the layer's mix.
LayerCost CostLayer(const Hardware& hw, const ModelShape& shape, const Cluster& cluster, const LayerInputs& in,
                    bool dedup);

// CostLayer's working memory, reused across calls (a simulation costs every layer of every
// step: thousands of ranks' buffers per call otherwise). Holds no state between calls.
struct CostScratch {
  std::vector<double> node_ranks, received, in_intra, in_inter, out_intra, out_inter, row_factor;
  std::vector<double> node_intra_base, capacity, local_units, served_fraction;
  std::vector<int> active, touched;
  std::vector<char> seen;
  std::vector<std::vector<std::pair<int, double>>> holders;  // per expert: (rank, share)
};
// The same, with the buffers of `scratch`.
LayerCost CostLayer(const Hardware& hw, const ModelShape& shape, const Cluster& cluster, const LayerInputs& in,
                    bool dedup, CostScratch& scratch);

}  // namespace switchyard::sim
