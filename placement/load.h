// Expert load: how many tokens each logical expert of each MoE layer received in a window
// (raw counts or a smoothed estimate of them; the planners' noise test assumes count units).
#pragma once

#include <vector>

#include "absl/status/status.h"

namespace switchyard::placement {

// The largest load a LoadMatrix may hold: 2^53, the largest count a double holds exactly.
// Sums of up to 2^16 experts of it cannot overflow, so every metric over a valid load is finite.
inline constexpr double kMaxLoad = 9007199254740992.0;

struct LoadMatrix {
  // Model layer id of each row, strictly ascending (e.g. 3..60 for DeepSeek-V3).
  std::vector<int> layer_ids;
  // values[i][e]: load of expert e in layer layer_ids[i]; every row has num_experts() entries.
  std::vector<std::vector<double>> values;

  int num_layers() const { return static_cast<int>(layer_ids.size()); }
  int num_experts() const { return values.empty() ? 0 : static_cast<int>(values[0].size()); }
  // Row index of a model layer id, or -1.
  int IndexOf(int layer_id) const;

  // OK when rows and ids agree, ids ascend, rows are equally long and non-empty, and every
  // value is in [0, kMaxLoad] (NaN and infinities are not).
  absl::Status Validate() const;
};

// One row as probabilities: v / sum(v) (when that sum overflows, after dividing by the
// largest entry); uniform when the row has no load (all zero).
std::vector<double> Probabilities(const std::vector<double>& v);

}  // namespace switchyard::placement
