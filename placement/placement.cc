#include "placement/placement.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace switchyard::placement {

const LayerPlacement* Placement::FindLayer(int layer_id) const {
  for (const auto& layer : layers) {
    if (layer.layer_id == layer_id) return &layer;
  }
  return nullptr;
}

int Placement::TotalReplicas() const {
  int n = 0;
  for (const auto& layer : layers) {
    for (const auto& rank : layer.ranks) n += static_cast<int>(rank.size());
  }
  return n;
}

bool Constraints::IsDrained(int rank) const {
  return std::find(drained_ranks.begin(), drained_ranks.end(), rank) != drained_ranks.end();
}

bool Constraints::IsPinned(int layer_id, int expert, int rank) const {
  for (const Pin& pin : pins) {
    if (pin.expert == expert && pin.rank == rank &&
        (pin.layer_id == kAllLayers || pin.layer_id == layer_id)) {
      return true;
    }
  }
  return false;
}

absl::Status ValidateConstraints(const Constraints& constraints, const Topology& topology,
                                 int num_experts, const std::vector<int>& layer_ids) {
  std::vector<bool> drained(topology.ranks(), false);
  for (int r : constraints.drained_ranks) {
    if (r < 0 || r >= topology.ranks()) {
      return absl::InvalidArgumentError(
          absl::StrCat("drained rank ", r, " out of range (cluster has ", topology.ranks(),
                       " ranks)"));
    }
    drained[r] = true;
  }
  const int active = static_cast<int>(std::count(drained.begin(), drained.end(), false));
  if (active * topology.slots_per_rank() < num_experts) {
    return absl::FailedPreconditionError(absl::StrCat(
        active, " undrained ranks x ", topology.slots_per_rank(), " slots = ",
        active * topology.slots_per_rank(), " slots cannot hold ", num_experts, " experts"));
  }
  for (const Pin& pin : constraints.pins) {
    if (pin.expert < 0 || pin.expert >= num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("pinned expert ", pin.expert,
                                                     " out of range (model has ", num_experts,
                                                     " experts)"));
    }
    if (pin.rank < 0 || pin.rank >= topology.ranks()) {
      return absl::InvalidArgumentError(absl::StrCat("pin of expert ", pin.expert, " to rank ",
                                                     pin.rank, ": rank out of range (cluster has ",
                                                     topology.ranks(), " ranks)"));
    }
    if (pin.layer_id != kAllLayers &&
        std::find(layer_ids.begin(), layer_ids.end(), pin.layer_id) == layer_ids.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("pin of expert ", pin.expert, " names unknown layer ", pin.layer_id));
    }
    if (drained[pin.rank]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "expert ", pin.expert, " is pinned to rank ", pin.rank, ", which is drained"));
    }
  }
  // Pins per (layer, rank) must fit in the rank's slots.
  for (int layer_id : layer_ids) {
    for (int r = 0; r < topology.ranks(); ++r) {
      std::vector<int> experts;
      for (const Pin& pin : constraints.pins) {
        if (pin.rank == r && (pin.layer_id == kAllLayers || pin.layer_id == layer_id)) {
          experts.push_back(pin.expert);
        }
      }
      std::sort(experts.begin(), experts.end());
      experts.erase(std::unique(experts.begin(), experts.end()), experts.end());
      if (static_cast<int>(experts.size()) > topology.slots_per_rank()) {
        return absl::FailedPreconditionError(
            absl::StrCat("layer ", layer_id, ": ", experts.size(), " experts pinned to rank ", r,
                         ", which has ", topology.slots_per_rank(), " slots"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePlacement(const Placement& placement, const Constraints& constraints) {
  const Topology& topo = placement.topology;
  const int E = placement.num_experts;
  if (E < 1 || E > kMaxExperts) {
    return absl::InvalidArgumentError(absl::StrCat("placement has ", E, " experts, must be 1..", kMaxExperts));
  }
  for (const LayerPlacement& layer : placement.layers) {
    const std::string where = absl::StrCat("layer ", layer.layer_id);
    if (static_cast<int>(layer.ranks.size()) != topo.ranks()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": lists ", layer.ranks.size(),
                                                     " ranks, topology has ", topo.ranks()));
    }
    std::vector<int> replicas(E, 0);
    std::vector<double> share_sum(E, 0.0);
    for (int r = 0; r < topo.ranks(); ++r) {
      const auto& slots = layer.ranks[r];
      if (static_cast<int>(slots.size()) > topo.slots_per_rank()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": rank ", r, " holds ",
                                                       slots.size(), " replicas but has ",
                                                       topo.slots_per_rank(), " slots"));
      }
      if (!slots.empty() && constraints.IsDrained(r)) {
        return absl::FailedPreconditionError(
            absl::StrCat(where, ": rank ", r, " is drained but holds ", slots.size(), " replicas"));
      }
      for (const Replica& rep : slots) {
        if (rep.expert < 0 || rep.expert >= E) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": rank ", r, " holds expert ",
                                                         rep.expert, ", out of range (model has ",
                                                         E, " experts)"));
        }
        if (!std::isfinite(rep.share) || rep.share < 0) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": rank ", r, " expert ",
                                                         rep.expert, " has share ", rep.share,
                                                         " (must be >= 0)"));
        }
        ++replicas[rep.expert];
        share_sum[rep.expert] += rep.share;
      }
    }
    for (int e = 0; e < E; ++e) {
      if (replicas[e] == 0) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": expert ", e, " has no replica"));
      }
      if (std::abs(share_sum[e] - 1.0) > 1e-6) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": shares of expert ", e,
                                                       " sum to ", share_sum[e], ", not 1"));
      }
    }
    for (const Pin& pin : constraints.pins) {
      if (pin.layer_id != kAllLayers && pin.layer_id != layer.layer_id) continue;
      if (pin.rank < 0 || pin.rank >= topo.ranks()) continue;  // ValidateConstraints reports it
      const auto& slots = layer.ranks[pin.rank];
      if (std::none_of(slots.begin(), slots.end(),
                       [&](const Replica& rep) { return rep.expert == pin.expert; })) {
        return absl::FailedPreconditionError(absl::StrCat(where, ": expert ", pin.expert,
                                                          " is pinned to rank ", pin.rank,
                                                          " but has no replica there"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Placement> ContiguousPlacement(const Topology& topology, int num_experts,
                                              const std::vector<int>& layer_ids) {
  const int R = topology.ranks();
  const int per_rank = (num_experts + R - 1) / R;
  if (per_rank > topology.slots_per_rank()) {
    return absl::InvalidArgumentError(absl::StrCat(
        num_experts, " experts on ", R, " ranks need ", per_rank, " slots per rank, have ",
        topology.slots_per_rank()));
  }
  Placement placement{topology, num_experts, {}};
  for (int layer_id : layer_ids) {
    LayerPlacement layer{layer_id, std::vector<std::vector<Replica>>(R)};
    for (int e = 0; e < num_experts; ++e) {
      layer.ranks[static_cast<int64_t>(e) * R / num_experts].push_back({e, 1.0});
    }
    placement.layers.push_back(std::move(layer));
  }
  return placement;
}

}  // namespace switchyard::placement
