// `switchyard bench <what>`: dispatch to the project's benchmarks.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cli/bench_a2a.h"
#include "cli/bench_kernels.h"
#include "cli/bench_plan.h"
#include "cli/bench_shares.h"
#include "cli/commands.h"
#include "common/flags.h"
#include "common/json_reader.h"

namespace switchyard::cli {

int RunBench(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fprintf(stderr, "switchyard bench: name a benchmark: plan, kernels, a2a, shares\n");
    return kExitBadInput;
  }
  const std::string name = absl::StrCat("bench ", args[0]);
  absl::Status status;
  if (CommandFlags(name).empty()) {
    status = absl::InvalidArgumentError(
        absl::StrCat("unknown benchmark '", EchoValue(args[0]), "' (choose one of: plan, kernels, a2a, shares)"));
  } else if (status = OnlyOwnFlags(name); status.ok()) {
    if (args[0] == "plan") status = RunPlanBenchmark();
    if (args[0] == "kernels") status = RunKernelsBenchmark();
    if (args[0] == "a2a") status = RunAllToAllBenchmark();
    if (args[0] == "shares") status = RunSharesBenchmark();
  }
  if (!status.ok()) return ReportError("bench", status);
  return 0;
}

}  // namespace switchyard::cli
