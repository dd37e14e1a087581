// A Prometheus histogram: cumulative bucket counts over fixed upper bounds, sum and count.
// Not thread-safe (the coordinator's lock guards it).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace switchyard::coordinator {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size(), 0) {}

  // Non-finite or negative observations are dropped (they come from the network).
  void Observe(double x) {
    if (!std::isfinite(x) || x < 0) return;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      if (x <= bounds_[i]) ++counts_[i];
    }
    sum_ += x;
    ++count_;
  }

  // The exposition of `name` (HELP, TYPE, _bucket{le=...} cumulative, +Inf, _sum, _count).
  void Append(std::string& out, const char* name, const char* help) const {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " histogram\n");
    for (size_t i = 0; i < bounds_.size(); ++i) {
      absl::StrAppendFormat(&out, "%s_bucket{le=\"%g\"} %d\n", name, bounds_[i], counts_[i]);
    }
    absl::StrAppendFormat(&out, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %.6f\n%s_count %d\n", name, count_, name, sum_, name, count_);
  }
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;
  double sum_ = 0;
  int64_t count_ = 0;
};

}  // namespace switchyard::coordinator
