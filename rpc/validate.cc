#include "rpc/validate.h"

#include "absl/strings/str_cat.h"
#include "common/json_reader.h"
#include "placement/placement.h"

namespace switchyard::rpc {

namespace types = switchyard::types::v1;

absl::Status ValidateModelShape(const types::ModelShape& m) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("model shape '", EchoValue(m.name()), "': ", what));
  };
  if (m.name().size() > 256) return bad(absl::StrCat("name of ", m.name().size(), " bytes (at most 256)"));
  if (m.num_experts() < 1 || m.num_experts() > placement::kMaxExperts) {
    return bad(absl::StrCat("num_experts ", m.num_experts(), " must be in 1..", placement::kMaxExperts));
  }
  if (m.top_k() < 1 || m.top_k() > m.num_experts()) {
    return bad(absl::StrCat("top_k ", m.top_k(), " must be in 1..", m.num_experts()));
  }
  if (m.hidden() < 1 || m.expert_ffn() < 1) return bad("hidden and expert_ffn must be >= 1");
  if (m.expert_bytes() < 0) return bad(absl::StrCat("expert_bytes ", m.expert_bytes(), " < 0"));
  if (m.moe_layers_size() == 0) return bad("no MoE layers");
  for (int i = 0; i < m.moe_layers_size(); ++i) {
    const int layer = m.moe_layers(i);
    if (layer < 0 || layer > 65535) return bad(absl::StrCat("MoE layer ", layer, " out of range 0..65535"));
    if (i > 0 && layer <= m.moe_layers(i - 1)) return bad("MoE layer ids must ascend without repeats");
  }
  return absl::OkStatus();
}

absl::Status ValidatePin(const types::Pin& pin) {
  if (pin.layer() < placement::kAllLayers) {
    return absl::InvalidArgumentError(absl::StrCat("pin layer ", pin.layer(), ": must be -1 (every layer) or a layer id >= 0"));
  }
  if (pin.expert() < 0) return absl::InvalidArgumentError(absl::StrCat("pin expert ", pin.expert(), ": must be >= 0"));
  if (pin.rank() < 0) return absl::InvalidArgumentError(absl::StrCat("pin rank ", pin.rank(), ": must be >= 0"));
  return absl::OkStatus();
}

absl::Status ValidateRankArgument(int rank) {
  if (rank < 0) return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ": must be >= 0"));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int>> SelectedLayer(bool all_layers, int layer) {
  if (all_layers || layer == placement::kAllLayers) return std::optional<int>();
  if (layer < 0) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": must be -1 (every layer) or a layer id >= 0"));
  }
  return std::optional<int>(layer);
}

}  // namespace switchyard::rpc
