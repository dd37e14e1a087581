// Checks of API messages that need no cluster state, shared by the coordinator (on every
// request it receives and every state it restores) and by clients (before they send): each
// returns InvalidArgument naming the field and the (length-capped) value.
//
// What needs the job (a rank below the world size, a layer the model runs, counts a window
// could hold) is the coordinator's to check on top of these.
#pragma once

#include <optional>

#include "absl/status/statusor.h"
#include "switchyard/admin/v1/admin.pb.h"
#include "switchyard/control/v1/control.pb.h"
#include "switchyard/types/v1/types.pb.h"

namespace switchyard::rpc {

// num_experts in 1..placement::kMaxExperts, top_k in 1..num_experts, sizes >= 1, MoE layer
// ids ascending in 0..65535, expert_bytes >= 0, name at most 256 bytes.
absl::Status ValidateModelShape(const switchyard::types::v1::ModelShape& model);

// layer -1 (every layer) or >= 0, expert >= 0, rank >= 0.
absl::Status ValidatePin(const switchyard::types::v1::Pin& pin);

// A rank named by a request: >= 0.
absl::Status ValidateRankArgument(int rank);

// The layer a GetPlacement/GetLoad request selects: nullopt for every layer (all_layers, or
// layer -1), the layer id for layer >= 0; InvalidArgument for any other negative layer.
absl::StatusOr<std::optional<int>> SelectedLayer(bool all_layers, int layer);

}  // namespace switchyard::rpc
