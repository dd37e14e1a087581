// Expert-load traces in CSV, as in ../shared/traces and as `switchyard plan --loads` reads.
//
// Header: `layer,expert,tokens`, optionally preceded by a `step` or `workload` column. With a
// selector, only rows whose step/workload equals it are kept; rows are then summed per
// (layer, expert). Layers are whatever ids appear (ascending in the result); every layer must
// list experts 0..E-1 with the same E. Tokens are numbers >= 0.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/load.h"

namespace switchyard::placement {

struct LoadCsvOptions {
  std::optional<std::string> select;  // keep rows whose step/workload equals this
};

// Errors name the file, the line and the problem ("trace.csv line 17: expert 300 ...").
absl::StatusOr<LoadMatrix> ParseLoadCsv(absl::string_view text, absl::string_view file_name,
                                        const LoadCsvOptions& options = {});
absl::StatusOr<LoadMatrix> ReadLoadCsv(const std::string& path,
                                       const LoadCsvOptions& options = {});

// Every window of a per-step (or per-workload) trace, keyed by its step/workload value in
// first-seen order; a trace without such a column is one window with key "". Every window
// must have the same layers and experts (the error names the window).
absl::StatusOr<std::vector<std::pair<std::string, LoadMatrix>>> ParseLoadCsvWindows(absl::string_view text,
                                                                                   absl::string_view file_name);
absl::StatusOr<std::vector<std::pair<std::string, LoadMatrix>>> ReadLoadCsvWindows(const std::string& path);

// Values of the step/workload column in first-seen order (empty if the file has none).
absl::StatusOr<std::vector<std::string>> ReadLoadCsvKeys(const std::string& path);

}  // namespace switchyard::placement
