// Conversions between placement/ values and the types.v1 messages, shared by the coordinator
// and the workers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "absl/status/statusor.h"
#include "placement/placement.h"
#include "switchyard/types/v1/types.pb.h"

namespace switchyard::rpc {

// A message as protobuf JSON with every field printed (defaults too): state files, events.
std::string MessageToJsonText(const google::protobuf::Message& message);

switchyard::types::v1::Placement ToProto(const placement::Placement& placement, int64_t epoch);
// Checks what it reads (ValidatePlacement): a peer's placement is input like any other.
absl::StatusOr<placement::Placement> FromProto(const switchyard::types::v1::Placement& placement);

// Applies "key=value" settings (auto_rebalance, min_gain, hysteresis_windows, ...) to
// `policy` (CLI `policy`, `--policy` flags); InvalidArgument naming a malformed setting.
// Ranges are the coordinator's to check (ValidatePolicy).
absl::Status ApplyPolicySettings(const std::vector<std::string>& settings, switchyard::types::v1::Policy& policy);

}  // namespace switchyard::rpc
