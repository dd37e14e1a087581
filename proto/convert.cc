#include "proto/convert.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace switchyard::rpc {

namespace types = switchyard::types::v1;

types::Placement ToProto(const placement::Placement& p, int64_t epoch) {
  types::Placement out;
  out.set_epoch(epoch);
  out.set_ranks(p.topology.ranks());
  out.set_nodes(p.topology.nodes());
  out.set_slots_per_rank(p.topology.slots_per_rank());
  out.set_experts(p.num_experts);
  for (const placement::LayerPlacement& layer : p.layers) {
    types::LayerPlacement* l = out.add_layers();
    l->set_layer(layer.layer_id);
    for (const auto& slots : layer.ranks) {
      types::RankSlots* r = l->add_ranks();
      for (const placement::Replica& rep : slots) {
        types::Replica* x = r->add_replicas();
        x->set_expert(rep.expert);
        x->set_share(rep.share);
      }
    }
  }
  return out;
}

absl::StatusOr<placement::Placement> FromProto(const types::Placement& in) {
  SY_ASSIGN_OR_RETURN(const placement::Topology topo,
                      placement::Topology::Create(in.ranks(), in.nodes(), in.slots_per_rank()));
  placement::Placement p{topo, in.experts(), {}};
  for (const types::LayerPlacement& l : in.layers()) {
    if (l.ranks_size() != in.ranks()) {
      return absl::InvalidArgumentError(absl::StrCat("placement layer ", l.layer(), " lists ", l.ranks_size(),
                                                     " ranks, expected ", in.ranks()));
    }
    placement::LayerPlacement layer{l.layer(), std::vector<std::vector<placement::Replica>>(in.ranks())};
    for (int r = 0; r < l.ranks_size(); ++r) {
      for (const types::Replica& x : l.ranks(r).replicas()) layer.ranks[r].push_back({x.expert(), x.share()});
    }
    p.layers.push_back(std::move(layer));
  }
  SY_RETURN_IF_ERROR(placement::ValidatePlacement(p));
  return p;
}

}  // namespace switchyard::rpc
