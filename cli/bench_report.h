// Benchmark results as `switchyard bench ... --json` prints them: a list of objects, one per
// case, {"name", "achieved", "unit", "bound", "ratio", ...}. Extra fields per benchmark.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace switchyard::cli {

class BenchReport {
 public:
  // Adds a case; `fields` may add keys (baseline, target, met, ...).
  void Add(nlohmann::json fields) { cases_.push_back(std::move(fields)); }
  // Prints JSON (--json) or an aligned table of the cases.
  void Print(bool json) const;

 private:
  std::vector<nlohmann::json> cases_;
};

// Directory of the expert-load traces: --traces_dir, else $SWITCHYARD_TRACES, else the
// copy in the source tree (data/traces).
std::string TracesDir();

}  // namespace switchyard::cli
