// `switchyard trace synth`: windows of sampled expert load, optionally with expert-collapse
// bursts and drift, written as a per-step load CSV (`step,layer,expert,tokens`) that
// `switchyard plan --select`, `--workload trace:` and the planner benchmarks read.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "common/file_util.h"
#include "common/status.h"
#include "placement/io/load_csv.h"
#include "placement/scenario.h"

ABSL_FLAG(std::string, profile, "", "trace synth: the expert-load CSV whose per-layer shape the windows follow (FILE or FILE:KEY)");
ABSL_FLAG(std::string, drift_to, "", "trace synth: a second load CSV (FILE or FILE:KEY): the windows blend into it linearly");
ABSL_FLAG(int, windows, 50, "trace synth: number of windows (steps of the CSV)");
ABSL_FLAG(int64_t, tokens, 8192, "trace synth: tokens per window and layer");
ABSL_FLAG(int, top_k, 8, "trace synth: experts each token picks (distinct)");
ABSL_FLAG(std::vector<std::string>, burst, {}, "trace synth: EXPERTS:SHARE@START..END, repeatable (comma-separated): a collapse burst");
ABSL_FLAG(int, first_layers, 0, "trace synth, sim: keep only the first N layers of the profile or trace (0: all)");
ABSL_FLAG(uint64_t, seed, 1, "trace synth, sim: seed of the draws and of the hot experts");
ABSL_DECLARE_FLAG(std::string, out);

namespace switchyard::cli {
namespace {

absl::StatusOr<placement::LoadMatrix> ReadProfile(const std::string& spec, int first_layers) {
  placement::LoadCsvOptions csv;
  std::string path = spec;
  // FILE:KEY selects one step/workload of a per-step trace (a colon after the last slash).
  if (const size_t colon = spec.rfind(':'); colon != std::string::npos && colon > spec.rfind('/')) {
    path = spec.substr(0, colon);
    csv.select = spec.substr(colon + 1);
  }
  SY_ASSIGN_OR_RETURN(placement::LoadMatrix load, placement::ReadLoadCsv(path, csv));
  if (first_layers > 0 && first_layers < load.num_layers()) {
    load.layer_ids.resize(first_layers);
    load.values.resize(first_layers);
  }
  return load;
}

absl::Status Synth() {
  if (absl::GetFlag(FLAGS_profile).empty()) return absl::InvalidArgumentError("--profile FILE.csv is required");
  if (absl::GetFlag(FLAGS_first_layers) < 0) return absl::InvalidArgumentError("--first-layers must be >= 0");
  if (absl::GetFlag(FLAGS_windows) < 1 || absl::GetFlag(FLAGS_windows) > 100000) {
    return absl::InvalidArgumentError("--windows must be in 1..100000");
  }
  if (absl::GetFlag(FLAGS_tokens) < 1 || absl::GetFlag(FLAGS_tokens) > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError("--tokens must be in 1..16777216");
  }
  SY_ASSIGN_OR_RETURN(const placement::LoadMatrix profile,
                      ReadProfile(absl::GetFlag(FLAGS_profile), absl::GetFlag(FLAGS_first_layers)));
  placement::LoadMatrix drift_to;
  if (!absl::GetFlag(FLAGS_drift_to).empty()) {
    SY_ASSIGN_OR_RETURN(drift_to, ReadProfile(absl::GetFlag(FLAGS_drift_to), absl::GetFlag(FLAGS_first_layers)));
  }
  placement::WindowSpec spec;
  spec.windows = absl::GetFlag(FLAGS_windows);
  spec.tokens = absl::GetFlag(FLAGS_tokens);
  spec.top_k = absl::GetFlag(FLAGS_top_k);
  spec.seed = absl::GetFlag(FLAGS_seed);
  for (const std::string& b : absl::GetFlag(FLAGS_burst)) {
    SY_ASSIGN_OR_RETURN(placement::Burst burst, placement::ParseBurst(b));
    spec.bursts.push_back(burst);
  }
  SY_ASSIGN_OR_RETURN(const auto windows, placement::SampleWindows(profile, drift_to, spec));
  std::string csv = "step,layer,expert,tokens\n";
  for (size_t w = 0; w < windows.size(); ++w) {
    for (int l = 0; l < windows[w].num_layers(); ++l) {
      for (int e = 0; e < windows[w].num_experts(); ++e) {
        absl::StrAppend(&csv, w, ",", windows[w].layer_ids[l], ",", e, ",",
                        static_cast<int64_t>(windows[w].values[l][e]), "\n");
      }
    }
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fputs(csv.c_str(), stdout);
  } else {
    SY_RETURN_IF_ERROR(WriteFileAtomically(out, csv));
    std::fprintf(stderr, "switchyard trace synth: %zu windows x %d layers x %d experts -> %s\n", windows.size(),
                 profile.num_layers(), profile.num_experts(), out.c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int RunTrace(const std::vector<std::string>& args) {
  if (args.size() != 1 || args[0] != "synth") {
    return ReportError("trace", absl::InvalidArgumentError("usage: switchyard trace synth --profile FILE.csv [flags]"));
  }
  absl::Status status = OnlyOwnFlags("trace synth");
  if (status.ok()) status = Synth();
  if (!status.ok()) return ReportError("trace synth", status);
  return 0;
}

}  // namespace switchyard::cli
