#include "rpc/convert.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/json_reader.h"
#include "common/status.h"

namespace switchyard::rpc {

namespace types = switchyard::types::v1;

std::string MessageToJsonText(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

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

absl::Status ApplyPolicySettings(const std::vector<std::string>& settings, types::Policy& p) {
  for (const std::string& kv : settings) {
    const std::vector<std::string> parts = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (parts.size() != 2) return absl::InvalidArgumentError(absl::StrCat("policy setting '", EchoValue(kv), "': use key=value"));
    const std::string& key = parts[0];
    const std::string& value = parts[1];
    double d = 0;
    int i = 0;
    bool b = false;
    auto number = [&]() -> absl::Status {
      if (!absl::SimpleAtod(value, &d)) return absl::InvalidArgumentError(absl::StrCat("policy ", key, "='", EchoValue(value), "': not a number"));
      return absl::OkStatus();
    };
    auto integer = [&]() -> absl::Status {
      if (!absl::SimpleAtoi(value, &i)) return absl::InvalidArgumentError(absl::StrCat("policy ", key, "='", EchoValue(value), "': not an integer"));
      return absl::OkStatus();
    };
    if (key == "auto_rebalance") {
      if (!absl::SimpleAtob(value, &b)) return absl::InvalidArgumentError(absl::StrCat("policy auto_rebalance='", EchoValue(value), "': true or false"));
      p.set_auto_rebalance(b);
    } else if (key == "min_gain") {
      SY_RETURN_IF_ERROR(number());
      p.set_min_gain(d);
    } else if (key == "hysteresis_windows") {
      SY_RETURN_IF_ERROR(integer());
      p.set_hysteresis_windows(i);
    } else if (key == "cooldown_windows") {
      SY_RETURN_IF_ERROR(integer());
      p.set_cooldown_windows(i);
    } else if (key == "max_moves") {
      SY_RETURN_IF_ERROR(integer());
      p.set_max_moves(i);
    } else if (key == "min_gain_per_move") {
      SY_RETURN_IF_ERROR(number());
      p.set_min_gain_per_move(d);
    } else if (key == "noise_z") {
      SY_RETURN_IF_ERROR(number());
      p.set_noise_z(d);
    } else if (key == "smoothing") {
      SY_RETURN_IF_ERROR(number());
      p.set_smoothing(d);
    } else if (key == "planner") {
      p.set_planner(value);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown policy key '", EchoValue(key),
          "' (auto_rebalance, min_gain, hysteresis_windows, cooldown_windows, max_moves, min_gain_per_move, noise_z, smoothing, planner)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace switchyard::rpc
