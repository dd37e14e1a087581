#include "placement/load.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "placement/placement.h"

namespace switchyard::placement {

int LoadMatrix::IndexOf(int layer_id) const {
  auto it = std::lower_bound(layer_ids.begin(), layer_ids.end(), layer_id);
  if (it == layer_ids.end() || *it != layer_id) return -1;
  return static_cast<int>(it - layer_ids.begin());
}

absl::Status LoadMatrix::Validate() const {
  if (layer_ids.empty()) return absl::InvalidArgumentError("load has no layers");
  if (layer_ids.size() != values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("load has ", layer_ids.size(),
                                                   " layer ids but ", values.size(), " rows"));
  }
  const size_t experts = values[0].size();
  if (experts == 0) return absl::InvalidArgumentError("load has no experts");
  if (experts > static_cast<size_t>(kMaxExperts)) {
    return absl::InvalidArgumentError(absl::StrCat("load has ", experts, " experts per layer, at most ", kMaxExperts, " are supported"));
  }
  if (layer_ids[0] < 0) return absl::InvalidArgumentError(absl::StrCat("load layer id ", layer_ids[0], " is negative"));
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0 && layer_ids[i] <= layer_ids[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat("load layer ids must ascend: ",
                                                     layer_ids[i - 1], " then ", layer_ids[i]));
    }
    if (values[i].size() != experts) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer_ids[i], " has ",
                                                     values[i].size(), " experts, layer ",
                                                     layer_ids[0], " has ", experts));
    }
    for (size_t e = 0; e < experts; ++e) {
      if (!(values[i][e] >= 0 && values[i][e] <= kMaxLoad)) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", layer_ids[i], " expert ", e,
                                                       ": load ", values[i][e],
                                                       " is not a number in [0, 2^53]"));
      }
    }
  }
  return absl::OkStatus();
}

std::vector<double> Probabilities(const std::vector<double>& v) {
  std::vector<double> out(v.size(), v.empty() ? 0.0 : 1.0 / v.size());
  double total = 0;
  for (double x : v) total += x;
  if (std::isfinite(total)) {
    if (total > 0) {
      for (size_t i = 0; i < v.size(); ++i) out[i] = v[i] / total;
    }
    return out;
  }
  double largest = 0;  // the sum overflowed: scale first
  for (double x : v) largest = std::max(largest, x);
  total = 0;
  for (double x : v) total += x / largest;
  for (size_t i = 0; i < v.size(); ++i) out[i] = v[i] / largest / total;
  return out;
}

}  // namespace switchyard::placement
