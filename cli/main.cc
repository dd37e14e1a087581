// `switchyard`: the command-line tool. Offline tools (plan, bench) run locally; admin
// commands talk to a coordinator over gRPC.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "common/env.h"
#include "common/log.h"
#include "common/flags.h"
#include "common/json_reader.h"
#include "switchyard/config.h"

namespace {

constexpr char kUsage[] =
    "usage: switchyard <command> [flags]\n"
    "\n"
    "commands:\n"
    "  plan    place experts from an expert-load trace (CSV) and print the placement (JSON)\n"
    "  bench   run a benchmark: bench plan | bench kernels | bench a2a (under mpirun) | bench shares\n"
    "  trace synth  write sampled load windows (bursts: --burst K:SHARE@A..B, drift) as a CSV\n"
    "  sim     replay a load trace on a simulated cluster (--ranks, --nodes, --hardware) under\n"
    "          each rebalance policy (--compare static,eplb,incremental): step time, balance, moves\n"
    "  report  a worker run's report (--report JSON) as HTML plots (--out report.html), or\n"
    "          the plots alone (--format svg|png --out DIR)\n"
    "  env     the environment variables Switchyard reads, and their values here\n"
    "  version print the version\n"
    "\n"
    "admin commands (a coordinator: --coordinator HOST:PORT or $SWITCHYARD_COORDINATOR):\n"
    "  status              the cluster: workers, health, epochs, step, balancedness\n"
    "  placement [--layer L]  the committed placement\n"
    "  load [--layer L]    smoothed and last-window load per expert\n"
    "  rebalance [--dry-run] [--max-moves M] [--wait]  plan (and publish) a better placement;\n"
    "                      --wait follows its migration with a progress bar until it commits or aborts\n"
    "  pin|unpin --expert E --rank R [--layer L]  keep an expert on a rank\n"
    "  drain|undrain RANK [--wait]  empty a rank (or let it hold experts again)\n"
    "  policy [key=value ...]  show or change the rebalance policy\n"
    "  events [--follow]   the event log (joins, losses, plans, constraint changes)\n"
    "  --json prints JSON; --token-file F sends the bearer token; --tls-ca F talks TLS.\n"
    "\n"
    "'switchyard <command> --help' lists the flags.\n";

}  // namespace

int main(int argc, char** argv) {
  switchyard::SetLogPrefix("switchyard");
  auto parsed = switchyard::ParseFlags(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "switchyard: %s\n", std::string(parsed.status().message()).c_str());
    return switchyard::kExitBadInput;
  }
  std::vector<std::string>& args = parsed->positional;
  if (args.empty()) {
    std::fputs(kUsage, parsed->help ? stdout : stderr);
    return parsed->help ? 0 : switchyard::kExitBadInput;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (parsed->help) {
    // The command's own flags ("bench kernels", "trace synth": the sub-command's).
    std::string name = command;
    if ((command == "bench" || command == "trace") && !args.empty()) name += " " + args[0];
    if (command == "trace" && args.empty()) name = "trace synth";
    const std::vector<absl::string_view> own = switchyard::cli::CommandFlags(name);
    if (!own.empty()) {
      std::printf("switchyard %s flags:\n%s", name.c_str(), switchyard::FlagsHelpFor(own).c_str());
    } else if (command == "bench") {
      std::printf("switchyard bench: 'switchyard bench plan|kernels|a2a|shares --help' lists a benchmark's flags\n");
    } else {
      std::printf("switchyard %s: no flags (or an unknown command)\n", name.c_str());
    }
    return 0;
  }
  if (command == "plan") return switchyard::cli::RunPlan(args);
  if (command == "bench") return switchyard::cli::RunBench(args);
  if (command == "trace") return switchyard::cli::RunTrace(args);
  if (command == "sim") return switchyard::cli::RunSim(args);
  if (command == "report") return switchyard::cli::RunReport(args);
  if (switchyard::cli::IsAdminCommand(command)) return switchyard::cli::RunAdmin(command, args);
  if (command == "env") {
    for (const switchyard::SettingInfo& s : switchyard::Settings()) {
      const auto value = switchyard::GetSetting(s.setting);
      std::printf("%-32s %s\n  %s\n", s.name, value ? ("= " + *value).c_str() : "(unset)", s.help);
    }
    return 0;
  }
  if (command == "version") {
    std::printf("switchyard %s\n", SWITCHYARD_VERSION);
    return 0;
  }
  std::fprintf(stderr, "switchyard: unknown command '%s'\n%s", switchyard::EchoValue(command).c_str(), kUsage);
  return switchyard::kExitBadInput;
}
