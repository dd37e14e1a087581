// The rebalance policy (types.v1.Policy): its defaults and the ranges each setting must lie
// in. Pure: shared by the coordinator, its state store, and the CLI's checks.
#pragma once

#include "absl/status/status.h"
#include "switchyard/types/v1/types.pb.h"

namespace switchyard::coordinator {

switchyard::types::v1::Policy DefaultPolicy();
// InvalidArgument naming the first setting out of range.
absl::Status ValidatePolicy(const switchyard::types::v1::Policy& policy);

}  // namespace switchyard::coordinator
