// Benchmark results as `switchyard bench ... --json` prints them: a list of objects, one per
// case, {"name", "achieved", "unit", "bound", "ratio", ...}. Extra fields per benchmark.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace switchyard::cli {

class BenchReport {
 public:
  // Adds a case; `fields` may add keys (baseline, target, met, ...). Every case also names the
  // machine's CPU model ("cpu"), since figures only compare on the same CPU.
  void Add(nlohmann::json fields);
  // Prints JSON (--json) or an aligned table of the cases.
  void Print(bool json) const;

 private:
  std::vector<nlohmann::json> cases_;
};

// The CPU model as /proc/cpuinfo names it ("model name", or the Arm "CPU part"), or "unknown".
std::string CpuModelName();

// Directory of the expert-load traces: --traces_dir, else $SWITCHYARD_TRACES, else the
// copy in the source tree (data/traces).
std::string TracesDir();

}  // namespace switchyard::cli
