#include "cli/bench_report.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "common/env.h"
#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/ascii.h"

ABSL_FLAG(bool, json, false, "bench, sim: print results as JSON (a list of objects)");
ABSL_FLAG(std::string, traces_dir, "",
          "bench: directory of the expert-load traces (default: $SWITCHYARD_TRACES, then the "
          "source tree's data/traces)");

namespace switchyard::cli {

std::string CpuModelName() {
  static const std::string name = [] {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (absl::StartsWith(line, "model name") || absl::StartsWith(line, "CPU part")) {
        const size_t colon = line.find(':');
        if (colon != std::string::npos) return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
    return std::string("unknown");
  }();
  return name;
}

void BenchReport::Add(nlohmann::json fields) {
  if (!fields.contains("cpu")) fields["cpu"] = CpuModelName();
  cases_.push_back(std::move(fields));
}

void BenchReport::Print(bool json) const {
  if (json || absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", nlohmann::json(cases_).dump(1).c_str());
    return;
  }
  for (const auto& c : cases_) {
    std::string line = absl::StrFormat("%-52s", c.value("name", ""));
    for (const auto& [key, value] : c.items()) {
      if (key == "name") continue;
      if (value.is_number_float()) {
        line += absl::StrFormat("  %s=%.4g", key, value.get<double>());
      } else {
        line += absl::StrFormat("  %s=%s", key, value.is_string() ? value.get<std::string>() : value.dump());
      }
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string TracesDir() {
  if (std::string flag = absl::GetFlag(FLAGS_traces_dir); !flag.empty()) return flag;
  if (auto env = GetSetting(Setting::kTraces)) return *env;
  return std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces";
}

}  // namespace switchyard::cli
