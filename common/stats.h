// Small statistics over samples, shared by the worker's report and the simulator's.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace switchyard {

// The q-quantile of `v` (0 <= q <= 1) by the nearest-rank method: the smallest value with at
// least q of the samples at or below it (q = 0: the minimum). 0 for no samples.
inline double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::ceil(q * v.size())) - (q > 0 ? 1 : 0);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace switchyard
