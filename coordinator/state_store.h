// The coordinator's durable state (state.json, format switchyard.coordinator-state/v1): what
// a restarted coordinator must not forget (DESIGN.md section 8): the job's model shape, the
// committed placement and epoch, the target epoch in flight with its transfers, pins, drains
// and the rebalance policy. Load is not persisted: it is re-measured.
//
// Reading is typed and total: a file of the wrong shape (null, [], a string where a number
// belongs) or with impossible contents (a drained rank the cluster does not have, a pin of an
// expert the model does not have, a negative epoch, a transfer between unknown ranks) is
// refused with an error naming the file, the field and the value; the checks are the admin
// API's (placement::ValidateConstraints, ValidatePolicy).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "placement/placement.h"
#include "switchyard/control/v1/control.pb.h"
#include "switchyard/types/v1/types.pb.h"

namespace switchyard::coordinator {

inline constexpr absl::string_view kStateFormat = "switchyard.coordinator-state/v1";

struct PersistedState {
  std::string job_id;
  // The job: both set (by the first registration) or neither.
  std::optional<switchyard::types::v1::ModelShape> model;
  std::optional<placement::Placement> committed;
  int64_t committed_epoch = 0;
  // The epoch being migrated to (committed_epoch < target_epoch) and where its new replicas
  // come from.
  std::optional<placement::Placement> target;
  int64_t target_epoch = 0;
  std::vector<switchyard::control::v1::Transfer> transfers;
  int target_scratch_moves = -1;  // EPLB's moves for the same plan, -1 unknown
  uint64_t target_nonce = 0;
  bool replan_pending = false;
  std::vector<switchyard::types::v1::Pin> pins;
  std::vector<int> drained;
  std::optional<switchyard::types::v1::Policy> policy;
};

// The checks a state passes before it is written or restored (see the file comment).
absl::Status ValidateState(const PersistedState& state);

std::string StateToJson(const PersistedState& state);
// Parses and validates; errors name `file`.
absl::StatusOr<PersistedState> ParseState(absl::string_view text, absl::string_view file);

// `dir`/state.json: ReadState returns nullopt when there is none.
absl::StatusOr<std::optional<PersistedState>> ReadState(const std::string& dir);
absl::Status WriteState(const std::string& dir, const PersistedState& state);

}  // namespace switchyard::coordinator
