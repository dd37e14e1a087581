// `switchyard bench <what>`: dispatch to the project's benchmarks.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cli/bench_a2a.h"
#include "cli/bench_kernels.h"
#include "cli/bench_plan.h"
#include "cli/bench_shares.h"
#include "cli/commands.h"
#include "common/flags.h"

namespace switchyard::cli {

int RunBench(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fprintf(stderr, "switchyard bench: name a benchmark: plan, kernels, a2a, shares\n");
    return kExitBadInput;
  }
  absl::Status status;
  if (args[0] == "plan") {
    status = RunPlanBenchmark();
  } else if (args[0] == "kernels") {
    status = RunKernelsBenchmark();
  } else if (args[0] == "a2a") {
    status = RunAllToAllBenchmark();
  } else if (args[0] == "shares") {
    status = RunSharesBenchmark();
  } else {
    status = absl::InvalidArgumentError(
        absl::StrCat("unknown benchmark '", args[0], "' (choose one of: plan, kernels, a2a, shares)"));
  }
  if (!status.ok()) return ReportError("bench", status);
  return 0;
}

}  // namespace switchyard::cli
