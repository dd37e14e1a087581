#include "placement/eplb.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace switchyard::placement {
namespace {

struct Packing {
  std::vector<int> pack;     // pack index of each item
  std::vector<int> in_pack;  // position of the item inside its pack
};

// eplb.py balanced_packing: n items into m packs of exactly n/m items each; items by weight
// descending (stable: lower index first), each onto the lightest pack with room (lowest index
// on ties).
Packing BalancedPacking(const std::vector<double>& weight, int num_packs) {
  const int n = static_cast<int>(weight.size());
  const int per_pack = n / num_packs;
  Packing out{std::vector<int>(n), std::vector<int>(n)};
  if (per_pack == 1) {
    std::iota(out.pack.begin(), out.pack.end(), 0);
    std::fill(out.in_pack.begin(), out.in_pack.end(), 0);
    return out;
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return weight[a] > weight[b]; });
  std::vector<double> pack_weight(num_packs, 0.0);
  std::vector<int> pack_items(num_packs, 0);
  for (int item : order) {
    int best = -1;
    for (int p = 0; p < num_packs; ++p) {
      if (pack_items[p] < per_pack && (best < 0 || pack_weight[p] < pack_weight[best])) best = p;
    }
    out.pack[item] = best;
    out.in_pack[item] = pack_items[best]++;
    pack_weight[best] += weight[item];
  }
  return out;
}

struct Replication {
  std::vector<int> phy2log;  // logical expert of each physical replica
  std::vector<int> count;    // replicas per logical expert
};

// eplb.py replicate_experts: each extra replica goes to the expert with the highest load per
// replica (first index on ties). A max-heap of (load / replicas, -expert) picks the same
// expert as a scan of every expert per replica (the same quotients, the same tie order).
Replication ReplicateExperts(const std::vector<double>& weight, int num_physical) {
  const int num_log = static_cast<int>(weight.size());
  Replication out{std::vector<int>(num_physical), std::vector<int>(num_log, 1)};
  std::iota(out.phy2log.begin(), out.phy2log.begin() + num_log, 0);
  std::vector<std::pair<double, int>> heap;
  heap.reserve(num_log);
  for (int e = 0; e < num_log; ++e) heap.emplace_back(weight[e] / out.count[e], -e);
  std::make_heap(heap.begin(), heap.end());
  for (int i = num_log; i < num_physical; ++i) {
    std::pop_heap(heap.begin(), heap.end());
    const int best = -heap.back().second;
    out.phy2log[i] = best;
    ++out.count[best];
    heap.back() = {weight[best] / out.count[best], -best};
    std::push_heap(heap.begin(), heap.end());
  }
  return out;
}

std::vector<int> Inverse(const std::vector<int>& perm) {
  std::vector<int> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[perm[i]] = static_cast<int>(i);
  return inv;
}

bool Holds(const std::vector<Replica>& slots, int expert) {
  return std::any_of(slots.begin(), slots.end(), [&](const Replica& r) { return r.expert == expert; });
}

// Pins EPLB does not know about. An unmet pin (expert e on rank r) takes, in order:
//   1. a replica of e from a rank not pinned to keep it, exchanged with an unpinned replica
//      on r (replica counts unchanged);
//   2. else (every replica of e is pinned where it is) a redundant, unpinned replica, first
//      exchanged onto r if it sits elsewhere, then replaced by e (one more replica of e).
// Shares are then reset to 1 / replicas, as EPLB assigns them.
absl::Status HonourPins(LayerPlacement& layer, const Constraints& constraints) {
  const int R = static_cast<int>(layer.ranks.size());
  auto pinned = [&](int e, int r) { return constraints.IsPinned(layer.layer_id, e, r); };
  auto count = [&](int e) {
    int n = 0;
    for (const auto& slots : layer.ranks) n += static_cast<int>(std::count_if(
        slots.begin(), slots.end(), [&](const Replica& rep) { return rep.expert == e; }));
    return n;
  };
  // An unpinned replica on `r` that may go to rank `src` (which must not already hold it).
  auto movable_on = [&](int r, int src) -> Replica* {
    for (Replica& rep : layer.ranks[r]) {
      if (!pinned(rep.expert, r) && !Holds(layer.ranks[src], rep.expert)) return &rep;
    }
    return nullptr;
  };
  for (const Pin& pin : constraints.pins) {
    if (pin.layer_id != kAllLayers && pin.layer_id != layer.layer_id) continue;
    auto& dst = layer.ranks[pin.rank];
    if (Holds(dst, pin.expert)) continue;
    bool done = false;
    for (int src = 0; src < R && !done; ++src) {  // 1. exchange a replica of the expert in
      if (src == pin.rank || pinned(pin.expert, src)) continue;
      for (Replica& from : layer.ranks[src]) {
        if (from.expert != pin.expert) continue;
        if (Replica* to = movable_on(pin.rank, src)) {
          std::swap(from, *to);
          done = true;
        }
        break;
      }
    }
    for (int src = 0; src < R && !done; ++src) {  // 2. turn a redundant replica into it
      for (Replica& spare : layer.ranks[src]) {
        if (pinned(spare.expert, src) || count(spare.expert) < 2) continue;
        if (src == pin.rank) {
          spare = {pin.expert, 0.0};
          done = true;
        } else if (!Holds(dst, spare.expert)) {
          if (Replica* to = movable_on(pin.rank, src)) {
            std::swap(spare, *to);
            *to = {pin.expert, 0.0};
            done = true;
          }
        }
        if (done) break;
      }
    }
    if (!done) {
      return absl::FailedPreconditionError(absl::StrCat(
          "eplb: layer ", layer.layer_id, ": cannot honour the pin of expert ", pin.expert,
          " to rank ", pin.rank, " (no replica can make room)"));
    }
  }
  if (!constraints.pins.empty()) {
    std::map<int, int> counts;
    for (const auto& slots : layer.ranks) {
      for (const Replica& rep : slots) ++counts[rep.expert];
    }
    for (auto& slots : layer.ranks) {
      for (Replica& rep : slots) rep.share = 1.0 / counts[rep.expert];
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<int> EplbPhysicalToLogical(const std::vector<double>& weight, int num_physical,
                                       int num_groups, int num_nodes, int num_gpus) {
  const int num_log = static_cast<int>(weight.size());
  if (num_groups % num_nodes != 0) {  // rebalance_experts: fall back to the global policy
    num_groups = 1;
    num_nodes = 1;
  }
  const int group_size = num_log / num_groups;
  const int groups_per_node = num_groups / num_nodes;
  const int phy_per_gpu = num_physical / num_gpus;
  const int log_per_node = num_log / num_nodes;
  const int phy_per_node = num_physical / num_nodes;

  // Step 1: pack expert groups onto nodes; mlog = logical ids renumbered node by node.
  std::vector<double> group_tokens(num_groups, 0.0);
  for (int e = 0; e < num_log; ++e) group_tokens[e / group_size] += weight[e];
  const Packing groups = BalancedPacking(group_tokens, num_nodes);
  std::vector<int> log2mlog(num_log);
  for (int e = 0; e < num_log; ++e) {
    const int g = e / group_size;
    log2mlog[e] = (groups.pack[g] * groups_per_node + groups.in_pack[g]) * group_size +
                  e % group_size;
  }
  const std::vector<int> mlog2log = Inverse(log2mlog);

  std::vector<int> phy2log(num_physical);
  for (int node = 0; node < num_nodes; ++node) {
    // Step 2: replicate within the node.
    std::vector<double> mlog_tokens(log_per_node);
    for (int i = 0; i < log_per_node; ++i) {
      mlog_tokens[i] = weight[mlog2log[node * log_per_node + i]];
    }
    const Replication rep = ReplicateExperts(mlog_tokens, phy_per_node);
    // Step 3: pack the node's replicas onto its GPUs.
    std::vector<double> phy_tokens(phy_per_node);
    for (int p = 0; p < phy_per_node; ++p) {
      phy_tokens[p] = mlog_tokens[rep.phy2log[p]] / rep.count[rep.phy2log[p]];
    }
    const Packing packs = BalancedPacking(phy_tokens, num_gpus / num_nodes);
    for (int p = 0; p < phy_per_node; ++p) {
      const int pphy = packs.pack[p] * phy_per_gpu + packs.in_pack[p];
      phy2log[node * phy_per_node + pphy] = mlog2log[node * log_per_node + rep.phy2log[p]];
    }
  }
  return phy2log;
}

absl::StatusOr<Placement> EplbPlanner::Plan(const PlanRequest& request) const {
  SY_RETURN_IF_ERROR(ValidateRequest(request));
  const Topology& topo = request.topology;
  const Constraints& constraints = request.constraints;
  const int E = request.load.num_experts();
  const int S = topo.slots_per_rank();

  std::vector<int> active;  // undrained ranks, ascending
  for (int r = 0; r < topo.ranks(); ++r) {
    if (!constraints.IsDrained(r)) active.push_back(r);
  }
  const bool all_active = static_cast<int>(active.size()) == topo.ranks();
  int groups = request.options.eplb_groups;
  int nodes = topo.nodes();
  if (groups < 1) {
    return absl::InvalidArgumentError(absl::StrCat("eplb groups must be >= 1, got ", groups));
  }
  if (!all_active) {
    groups = 1;
    nodes = 1;
  }
  if (groups % nodes == 0 && E % groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "eplb: ", groups, " expert groups do not divide ", E, " experts"));
  }
  const int num_gpus = static_cast<int>(active.size());
  const int num_physical = num_gpus * S;

  Placement placement{topo, E, {}};
  for (int i = 0; i < request.load.num_layers(); ++i) {
    const std::vector<int> phy2log =
        EplbPhysicalToLogical(request.load.values[i], num_physical, groups, nodes, num_gpus);
    std::vector<int> count(E, 0);
    for (int e : phy2log) ++count[e];
    LayerPlacement layer{request.load.layer_ids[i], std::vector<std::vector<Replica>>(topo.ranks())};
    for (int p = 0; p < num_physical; ++p) {
      layer.ranks[active[p / S]].push_back({phy2log[p], 1.0 / count[phy2log[p]]});
    }
    SY_RETURN_IF_ERROR(HonourPins(layer, constraints));
    placement.layers.push_back(std::move(layer));
  }
  return placement;
}

}  // namespace switchyard::placement
