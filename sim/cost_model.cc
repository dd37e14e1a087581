#include "sim/cost_model.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/json_reader.h"
#include "common/status.h"

namespace switchyard::sim {
namespace {

// The GPU presets share their links: NVLink 4 (450 GB/s per direction per GPU; all-to-all
// kernels sustain about 0.75 of it) and one 400 Gb/s InfiniBand NIC per GPU (50 GB/s; DeepEP
// reports 43-58 GB/s of RDMA bandwidth in its internode kernels). Compute: bf16 dense peak
// 989 TFLOP/s, of which grouped GEMMs sustain about 0.65.
Hardware GpuBase(std::string name, double hbm_bytes_per_s) {
  Hardware hw;
  hw.name = std::move(name);
  hw.flops = 0.65 * 989e12;
  hw.memory_bandwidth = 0.9 * hbm_bytes_per_s;
  hw.intra_bandwidth = 0.75 * 450e9;
  hw.intra_latency = 10e-6;
  hw.inter_bandwidth = 45e9;
  hw.inter_latency = 20e-6;
  hw.per_peer = 0.05e-6;
  hw.layer_overhead = 30e-6;
  hw.activation_bytes = 2;  // bf16 rows
  hw.weight_bytes = 2;      // bf16 experts
  hw.migration_bytes_per_step = 512 << 20;  // about 12 ms of one NIC per step
  hw.reload_bandwidth = 2e9;
  return hw;
}

// One rank per core of this project's CPU data plane on the development machine (AMD EPYC,
// AVX-512; `scripts/bench_worker.sh`'s `bench kernels` figures of 2026-11-30): the grouped
// SwiGLU FFN at OpenBLAS sgemm's 125 GFLOP/s per core, memcpy 17.4 GB/s per core, the UCX
// all-to-all within a node about 4 GB/s per rank with ~60 us per phase and ~15 us per peer
// (`bench a2a`, 4 ranks), fp32 rows and weights (the worker's default), the worker's 4 MiB
// migration budget per step. Between nodes: 10 Gb/s Ethernet over TCP.
Hardware Cpu() {
  Hardware hw;
  hw.name = "cpu";
  hw.flops = 125e9;
  hw.memory_bandwidth = 17.4e9;
  hw.intra_bandwidth = 4e9;
  hw.intra_latency = 60e-6;
  hw.inter_bandwidth = 1.1e9;
  hw.inter_latency = 100e-6;
  hw.per_peer = 15e-6;
  hw.layer_overhead = 200e-6;
  hw.activation_bytes = 4;
  hw.weight_bytes = 4;
  hw.migration_bytes_per_step = 4 << 20;
  hw.reload_bandwidth = 1e9;
  return hw;
}

// The fields of Hardware as a table, for JSON files and validation, with the range each must
// lie in (wide enough for any real machine, narrow enough that every result stays finite).
struct Field {
  const char* key;
  double Hardware::*member;
  double lo, hi;
};
constexpr Field kFields[] = {
    {"flops", &Hardware::flops, 1e6, 1e18},
    {"memory_bandwidth", &Hardware::memory_bandwidth, 1e3, 1e15},
    {"intra_bandwidth", &Hardware::intra_bandwidth, 1e3, 1e15},
    {"intra_latency", &Hardware::intra_latency, 0, 10},
    {"inter_bandwidth", &Hardware::inter_bandwidth, 1e3, 1e15},
    {"inter_latency", &Hardware::inter_latency, 0, 10},
    {"per_peer", &Hardware::per_peer, 0, 1},
    {"layer_overhead", &Hardware::layer_overhead, 0, 10},
    {"activation_bytes", &Hardware::activation_bytes, 0.125, 16},
    {"weight_bytes", &Hardware::weight_bytes, 0.125, 16},
    {"migration_bytes_per_step", &Hardware::migration_bytes_per_step, 4096, 1e15},
    {"detect_seconds", &Hardware::detect_seconds, 0, 3600},
    {"regroup_seconds", &Hardware::regroup_seconds, 0, 3600},
    {"reload_bandwidth", &Hardware::reload_bandwidth, 1e3, 1e15},
};

}  // namespace

std::vector<std::string> HardwarePresetNames() { return {"h100", "h200", "cpu"}; }

absl::StatusOr<Hardware> PresetHardware(absl::string_view name) {
  if (name == "h100") return GpuBase("h100", 3.35e12);
  if (name == "h200") return GpuBase("h200", 4.8e12);
  if (name == "cpu") return Cpu();
  return absl::InvalidArgumentError(absl::StrCat("unknown hardware preset '", EchoValue(name), "' (presets: ",
                                                 absl::StrJoin(HardwarePresetNames(), ", "),
                                                 ", or a JSON file of the cost model's fields)"));
}

absl::Status ValidateHardware(const Hardware& hw) {
  for (const Field& f : kFields) {
    const double v = hw.*f.member;
    if (!(v >= f.lo && v <= f.hi)) {
      return absl::InvalidArgumentError(absl::StrCat("hardware '", EchoValue(hw.name), "': ", f.key, " = ", v,
                                                     " must be in [", f.lo, ", ", f.hi, "]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Hardware> LoadHardware(const std::string& spec) {
  if (!absl::StrContains(spec, '/') && !absl::EndsWith(spec, ".json")) return PresetHardware(spec);
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(spec));
  SY_ASSIGN_OR_RETURN(const Json j, ParseJson(text, spec));
  const JsonReader reader(spec);
  SY_RETURN_IF_ERROR(reader.Object(j, "$"));
  // The base: the named preset, else the default (h200); the other keys override it.
  SY_ASSIGN_OR_RETURN(const std::string preset, reader.StringFieldOr(j, "preset", "$", "h200"));
  auto base = PresetHardware(preset);
  if (!base.ok()) return reader.Error("$.preset", base.status().message());
  Hardware hw = *std::move(base);
  SY_ASSIGN_OR_RETURN(hw.name, reader.StringFieldOr(j, "name", "$", spec));
  for (const auto& [key, value] : j.items()) {
    if (key == "preset" || key == "name") continue;
    const Field* field = std::find_if(std::begin(kFields), std::end(kFields), [&](const Field& f) { return key == f.key; });
    if (field == std::end(kFields)) {
      std::vector<std::string> keys;
      for (const Field& f : kFields) keys.push_back(f.key);
      return reader.Error(JsonPath("$", key), absl::StrCat("unknown key (keys: preset, name, ", absl::StrJoin(keys, ", "), ")"));
    }
    SY_ASSIGN_OR_RETURN(hw.*(field->member), reader.Number(value, JsonPath("$", key), field->lo, field->hi));
  }
  return hw;
}

ModelShape ShapeOf(const model::ModelConfig& m) {
  ModelShape s;
  s.num_experts = m.num_experts;
  s.top_k = m.top_k;
  s.hidden = m.hidden;
  s.expert_ffn = m.expert_ffn;
  s.matrices = kernels::IsGated(m.activation) ? 3 : 2;
  return s;
}

Cluster Cluster::Contiguous(int ranks, int nodes) {
  Cluster c;
  c.num_nodes = nodes;
  c.node_of.resize(ranks);
  for (int r = 0; r < ranks; ++r) c.node_of[r] = r / (ranks / nodes);
  return c;
}

absl::string_view PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kGate: return "gate";
    case Phase::kDispatch: return "dispatch";
    case Phase::kFfn: return "ffn";
    case Phase::kCombine: return "combine";
    case Phase::kOverhead: return "overhead";
  }
  return "?";
}

LayerCost CostLayer(const Hardware& hw, const ModelShape& shape, const Cluster& cluster, const LayerInputs& in,
                    bool dedup) {
  CostScratch scratch;
  return CostLayer(hw, shape, cluster, in, dedup, scratch);
}

LayerCost CostLayer(const Hardware& hw, const ModelShape& shape, const Cluster& cluster, const LayerInputs& in,
                    bool dedup, CostScratch& scratch) {
  const int R = cluster.ranks(), N = cluster.num_nodes, E = shape.num_experts;
  const double H = static_cast<double>(shape.hidden), k = shape.top_k;
  std::vector<double>& node_ranks = scratch.node_ranks;
  node_ranks.assign(N, 0);
  for (int r = 0; r < R; ++r) node_ranks[cluster.node_of[r]] += 1;

  // Replicas per expert, one entry per rank (a rank holding an expert twice serves it as one).
  auto& holders = scratch.holders;
  holders.resize(E);
  for (auto& h : holders) h.clear();
  for (int r = 0; r < R && r < static_cast<int>(in.layer->ranks.size()); ++r) {
    for (const placement::Replica& rep : in.layer->ranks[r]) {
      auto& h = holders[rep.expert];
      if (!h.empty() && h.back().first == r) {
        h.back().second += rep.share;
      } else {
        h.emplace_back(r, rep.share);
      }
    }
  }

  // Pairs per rank: received (all, from own rank's sources, from its node, from other nodes)
  // and sent (to its node, to other nodes), in units of pairs.
  std::vector<double>&received = scratch.received, &in_intra = scratch.in_intra, &in_inter = scratch.in_inter,
                     &out_intra = scratch.out_intra, &out_inter = scratch.out_inter;
  for (std::vector<double>* v : {&received, &in_intra, &in_inter, &out_intra, &out_inter}) v->assign(R, 0);
  std::vector<int>& active = scratch.active;
  active.assign(R, 0);
  std::vector<double>&node_intra_base = scratch.node_intra_base, &capacity = scratch.capacity,
                     &local_units = scratch.local_units,
                     &served_fraction = scratch.served_fraction;  // of a source's non-local unit, served within its node
  for (std::vector<double>* v : {&node_intra_base, &capacity, &local_units, &served_fraction}) v->assign(N, 0);
  std::vector<int>& touched = scratch.touched;
  touched.clear();
  std::vector<char>& seen = scratch.seen;
  seen.assign(N, 0);
  double units_total = 0;  // pairs one source sends over all experts
  for (int e = 0; e < E; ++e) {
    const double c = in.expert_pairs[e];
    const double u = c / R;  // each source's pairs of expert e
    units_total += u;
    if (holders[e].empty()) continue;
    touched.clear();
    for (const auto& [r, share] : holders[e]) {
      const int n = cluster.node_of[r];
      if (!seen[n]) {
        seen[n] = 1;
        touched.push_back(n);
      }
      const double a = share * R;  // units this replica absorbs
      capacity[n] += a;
      local_units[n] += std::min(a, 1.0);
    }
    for (int n : touched) {
      const double served = std::min(capacity[n], node_ranks[n]);
      served_fraction[n] = node_ranks[n] > local_units[n] ? (served - local_units[n]) / (node_ranks[n] - local_units[n]) : 0;
      node_intra_base[n] += u * served_fraction[n];
    }
    for (const auto& [r, share] : holders[e]) {
      const int n = cluster.node_of[r];
      const double a = share * R, local = std::min(a, 1.0);
      received[r] += a * u;
      if (a * u > 0) ++active[r];
      const double remote = a - local, remote_capacity = capacity[n] - local_units[n];
      const double intra = remote_capacity > 0 ? (std::min(capacity[n], node_ranks[n]) - local_units[n]) * remote / remote_capacity : 0;
      in_intra[r] += intra * u;
      in_inter[r] += std::max(0.0, remote - intra) * u;
      // Its own sources' unit is served locally: less to send.
      out_intra[r] -= local * u * served_fraction[n];
      out_inter[r] -= local * u * (1 - served_fraction[n]);
    }
    for (int n : touched) {
      capacity[n] = local_units[n] = served_fraction[n] = 0;
      seen[n] = 0;
    }
  }
  for (int r = 0; r < R; ++r) {
    const int n = cluster.node_of[r];
    out_intra[r] = std::max(0.0, out_intra[r] + node_intra_base[n]);
    out_inter[r] = std::max(0.0, out_inter[r] + units_total - node_intra_base[n]);
  }

  // Dedup: the rows a rank receives are the tokens with at least one pair for it. A remote
  // source's token sends each of its k pairs to rank r with probability q (its share of the
  // source's pairs), independently: 1 - (1 - q)^k rows per token.
  std::vector<double>& row_factor = scratch.row_factor;
  row_factor.assign(R, 1.0);
  double rows_in_total = 0, pairs_in_total = 0;
  if (dedup && R > 1 && in.tokens_per_rank > 0) {
    const double sources = R - 1;
    for (int r = 0; r < R; ++r) {
      const double pairs = in_intra[r] + in_inter[r];
      if (pairs <= 0) continue;
      const double q = std::min(1.0, pairs / sources / (in.tokens_per_rank * k));
      const double rows = sources * in.tokens_per_rank * (1 - std::pow(1 - q, k));
      row_factor[r] = std::min(1.0, rows / pairs);
      rows_in_total += rows;
      pairs_in_total += pairs;
    }
  }
  const double out_factor = pairs_in_total > 0 ? rows_in_total / pairs_in_total : 1.0;

  const double row_bytes = H * hw.activation_bytes;
  const double expert_bytes = shape.ExpertBytes(hw.weight_bytes);
  const double flops_per_pair = 2 * H * static_cast<double>(shape.expert_ffn) * shape.matrices;
  int active_ranks = 0;
  for (int r = 0; r < R; ++r) active_ranks += received[r] > 0;
  auto exchange = [&](double intra_in, double intra_out, double inter_in, double inter_out, double peers) {
    const double bi = std::max(intra_in, intra_out), be = std::max(inter_in, inter_out);
    const double ti = bi > 0 ? bi / hw.intra_bandwidth + hw.intra_latency : 0;
    const double te = be > 0 ? be / hw.inter_bandwidth + hw.inter_latency : 0;
    return std::max(ti, te) + hw.per_peer * peers;
  };

  LayerCost cost;
  // The router logits come with the hidden states (the router GEMM is the caller's): the gate
  // reads them (fp32) and writes k ids and weights per token.
  cost.gate = in.tokens_per_rank * (4.0 * E + 8.0 * k) / hw.memory_bandwidth;
  // Permute gathers each pair's row into the send buffer (read + write); combine reads each
  // pair's returned row and writes one row per token.
  const double permute = in.tokens_per_rank * 2 * k * row_bytes / hw.memory_bandwidth;
  const double reduce = in.tokens_per_rank * (k + 1) * row_bytes / hw.memory_bandwidth;
  cost.overhead = hw.layer_overhead;
  double max_received = 0, sum_received = 0, worst = -1;
  for (int r = 0; r < R; ++r) {
    const double peers = std::max(0, active_ranks - (received[r] > 0 ? 1 : 0));
    const double mig_intra = in.migration_intra.empty() ? 0 : in.migration_intra[r];
    const double mig_inter = in.migration_inter.empty() ? 0 : in.migration_inter[r];
    const double dispatch = exchange(in_intra[r] * row_factor[r] * row_bytes + mig_intra, out_intra[r] * out_factor * row_bytes + mig_intra,
                                     in_inter[r] * row_factor[r] * row_bytes + mig_inter, out_inter[r] * out_factor * row_bytes + mig_inter,
                                     peers) + permute;
    const double combine = exchange(out_intra[r] * row_bytes, in_intra[r] * row_bytes, out_inter[r] * row_bytes,
                                    in_inter[r] * row_bytes, peers) + reduce;
    const double ffn = std::max(received[r] * flops_per_pair / hw.flops,
                                (active[r] * expert_bytes + received[r] * 2 * row_bytes) / hw.memory_bandwidth);
    cost.dispatch = std::max(cost.dispatch, dispatch);
    cost.combine = std::max(cost.combine, combine);
    cost.ffn = std::max(cost.ffn, ffn);
    if (dispatch + ffn + combine > worst) {
      worst = dispatch + ffn + combine;
      cost.critical_rank = r;
    }
    cost.intra_bytes += (in_intra[r] * row_factor[r] + in_intra[r]) * row_bytes + mig_intra;
    cost.inter_bytes += (in_inter[r] * row_factor[r] + in_inter[r]) * row_bytes + mig_inter;
    max_received = std::max(max_received, received[r]);
    sum_received += received[r];
  }
  cost.critical_seconds = cost.gate + worst + cost.overhead;
  cost.pairs = sum_received;
  cost.balancedness = max_received > 0 ? sum_received / R / max_received : 1.0;
  const double phases[] = {cost.gate, cost.dispatch, cost.ffn, cost.combine, cost.overhead};
  cost.dominant = static_cast<Phase>(std::max_element(std::begin(phases), std::end(phases)) - std::begin(phases));
  return cost;
}

}  // namespace switchyard::sim
