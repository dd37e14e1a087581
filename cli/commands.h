// Subcommands of the `switchyard` CLI. Each returns the process exit code: 0 on success,
// kExitBadInput (2) when the user's input is wrong (after one line on stderr naming the
// problem), 1 on an internal failure.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace switchyard::cli {

// `switchyard plan`: place experts from an expert-load trace (placement/).
int RunPlan(const std::vector<std::string>& args);

// `switchyard trace synth`: sampled load windows with bursts and drift, as a per-step CSV.
int RunTrace(const std::vector<std::string>& args);

// `switchyard sim`: replay a load trace on a simulated cluster under each rebalance policy.
int RunSim(const std::vector<std::string>& args);

// `switchyard report RUN.json`: a worker report's plots as HTML, SVG or PNG.
int RunReport(const std::vector<std::string>& args);

// `switchyard bench <what>`: project benchmarks; `what` is args[0].
int RunBench(const std::vector<std::string>& args);

// Admin subcommands over gRPC (status, placement, load, rebalance, pin, unpin, drain,
// undrain, policy, events).
bool IsAdminCommand(const std::string& command);
int RunAdmin(const std::string& command, const std::vector<std::string>& args);

// The flags `command` reads (names with underscores): "plan", "sim", "report", "trace synth",
// "bench plan|kernels|a2a|shares", or an admin command. Empty for an unknown command.
std::vector<absl::string_view> CommandFlags(absl::string_view command);

// InvalidArgument naming the first flag set on the command line (differing from its default)
// that is not one of CommandFlags(command): another subcommand's flag would otherwise be
// accepted and ignored.
absl::Status OnlyOwnFlags(absl::string_view command);

// Prints `message` as "switchyard <command>: <message>" on stderr and returns the exit code
// for the status' kind (2 for bad input, 1 otherwise).
int ReportError(absl::string_view command, const absl::Status& status);

}  // namespace switchyard::cli
