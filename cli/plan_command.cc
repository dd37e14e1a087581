// `switchyard plan`: reads an expert-load CSV, plans a placement with a policy (optionally
// from the current placement) and writes it as switchyard.placement/v1 JSON.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "cli/commands.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "placement/io/load_csv.h"
#include "placement/io/placement_json.h"
#include "placement/metrics.h"
#include "placement/planner.h"

ABSL_FLAG(std::string, loads, "", "plan: expert-load CSV (layer,expert,tokens [after step|workload])");
ABSL_FLAG(std::string, select, "", "plan: keep only the rows whose step/workload equals this");
ABSL_FLAG(int, ranks, 0, "plan, sim: number of ranks (R)");
ABSL_FLAG(int, nodes, 1, "plan, sim: number of nodes (must divide ranks)");
ABSL_FLAG(int, slots_per_rank, 0, "plan, sim: expert slots per rank per layer (S); R*S >= experts (sim: 0 = ceil(E/R) + 1)");
ABSL_FLAG(std::string, policy, "", "plan: placement policy: incremental (default) or eplb; sim: static, eplb or incremental (default)");
ABSL_FLAG(int, groups, 1, "plan: expert groups for eplb's hierarchical policy (DeepSeek-V3: 8)");
ABSL_FLAG(std::string, current, "", "plan: the placement in force (switchyard.placement/v1)");
ABSL_FLAG(int, max_moves, -1,
          "budget of moved replicas; plan: against --current (-1: none); rebalance: -1 or 0: the coordinator's policy; sim: per plan (-1 or 0: none)");
ABSL_FLAG(double, min_gain_per_move, 0.001,
          "plan: incremental: least gain per moved replica, as a fraction of mean rank load");
ABSL_FLAG(double, noise_z, 2.0,
          "plan: incremental: a move must also beat this many std devs of count noise");
ABSL_FLAG(std::string, out, "", "plan, trace synth, report: write the output (placement JSON, load CSV, HTML; report --format svg|png: a directory) here instead of stdout");
ABSL_FLAG(std::string, format, "json",
          "plan: json (placement on stdout, summary table on stderr) or table (table on stdout); report: html (default), svg or png");

namespace switchyard::cli {
namespace {

// --policy, empty when not given: the incremental planner.
std::string PlanPolicy() {
  const std::string policy = absl::GetFlag(FLAGS_policy);
  return policy.empty() ? std::string(placement::kDefaultPolicy) : policy;
}

using placement::LoadMatrix;
using placement::Placement;

struct PlanResult {
  Placement placement;
  placement::PlacementSummary summary;
  placement::PlacementScore score;
  std::optional<placement::PlacementScore> before;  // current (or contiguous) placement
  std::string before_name;
};

absl::StatusOr<PlanResult> Plan(const LoadMatrix& load, const placement::Topology& topo,
                                const std::optional<Placement>& current) {
  SY_ASSIGN_OR_RETURN(auto planner, placement::CreatePlanner(PlanPolicy()));
  placement::PlanRequest request{topo, load, current ? &*current : nullptr, {}, {}};
  request.options.max_moves = absl::GetFlag(FLAGS_max_moves);
  request.options.min_gain_per_move = absl::GetFlag(FLAGS_min_gain_per_move);
  request.options.noise_z = absl::GetFlag(FLAGS_noise_z);
  request.options.eplb_groups = absl::GetFlag(FLAGS_groups);

  const auto start = std::chrono::steady_clock::now();
  SY_ASSIGN_OR_RETURN(Placement planned, planner->Plan(request));
  const double plan_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  PlanResult result{std::move(planned), {}, {}, std::nullopt, ""};
  SY_ASSIGN_OR_RETURN(result.score, placement::ScorePlacement(result.placement, load));
  result.summary = {result.score.balancedness_mean, result.score.balancedness_min,
                    current ? placement::MovedReplicas(*current, result.placement)
                            : result.placement.TotalReplicas(),
                    plan_ms};
  if (current) {
    SY_ASSIGN_OR_RETURN(result.before, placement::ScorePlacement(*current, load));
    result.before_name = "current";
  } else if (auto contiguous = placement::ContiguousPlacement(topo, load.num_experts(),
                                                              load.layer_ids);
             contiguous.ok()) {
    SY_ASSIGN_OR_RETURN(result.before, placement::ScorePlacement(*contiguous, load));
    result.before_name = "contiguous";
  }
  return result;
}

std::string Table(const PlanResult& r, const LoadMatrix& load, const placement::Topology& topo,
                  bool all_layers) {
  std::string out = absl::StrFormat(
      "policy %s: %d layers x %d experts on %d ranks x %d slots (%d node%s)\n",
      PlanPolicy(), load.num_layers(), load.num_experts(), topo.ranks(),
      topo.slots_per_rank(), topo.nodes(), topo.nodes() > 1 ? "s" : "");
  absl::StrAppendFormat(&out, "  balancedness    mean %.4f  min %.4f", r.score.balancedness_mean,
                        r.score.balancedness_min);
  if (r.before) {
    absl::StrAppendFormat(&out, "   (%s placement: mean %.4f  min %.4f)", r.before_name,
                          r.before->balancedness_mean, r.before->balancedness_min);
  }
  absl::StrAppendFormat(&out, "\n  moved replicas  %d of %d%s\n  plan time       %.2f ms\n",
                        r.summary.moved_replicas, r.placement.TotalReplicas(),
                        r.before_name == "current" ? "" : " (no --current: all are new)",
                        r.summary.plan_ms);
  // Layers, worst first.
  std::vector<int> order(load.num_layers());
  for (int i = 0; i < load.num_layers(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return r.score.per_layer[a] < r.score.per_layer[b];
  });
  const int shown = all_layers ? load.num_layers() : std::min(5, load.num_layers());
  absl::StrAppendFormat(&out, "  %s:\n    layer  balancedness  %s  hottest expert (x mean)  its replicas\n",
                        all_layers ? "layers, worst first" : "worst layers",
                        r.before ? absl::StrFormat("%-10s", r.before_name) : "");
  for (int k = 0; k < shown; ++k) {
    const int i = order[k];
    const auto& row = load.values[i];
    const int hot = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
    double total = 0;
    for (double x : row) total += x;
    int replicas = 0;
    for (const auto& slots : r.placement.layers[i].ranks) {
      for (const auto& rep : slots) replicas += rep.expert == hot;
    }
    absl::StrAppendFormat(&out, "    %5d  %12.4f  %s  %6d (%5.1fx)         %d\n",
                          load.layer_ids[i], r.score.per_layer[i],
                          r.before ? absl::StrFormat("%-10.4f", r.before->per_layer[i]) : "", hot,
                          total > 0 ? row[hot] * load.num_experts() / total : 0.0, replicas);
  }
  return out;
}

}  // namespace

std::vector<absl::string_view> CommandFlags(absl::string_view command) {
  if (command == "plan") {
    return {"loads", "select", "ranks", "nodes", "slots_per_rank", "policy", "groups", "current", "max_moves",
            "min_gain_per_move", "noise_z", "out", "format"};
  }
  if (command == "sim") {
    return {"model", "scale", "trace", "steps", "compare", "hardware", "tokens_per_rank", "window_steps", "report_steps",
            "dispatch", "sim_burst", "lose_rank", "steps_out", "ranks", "nodes", "slots_per_rank", "policy", "json",
            "seed", "first_layers", "max_moves", "start"};
  }
  if (command == "report") return {"out", "format"};
  if (command == "trace synth") return {"profile", "drift_to", "windows", "tokens", "top_k", "burst", "first_layers", "seed", "out"};
  if (command == "bench plan" || command == "bench shares") return {"json", "traces_dir"};
  if (command == "bench kernels") return {"json", "bench_threads", "ffn_rows"};
  if (command == "bench a2a") return {"json", "backend", "rendezvous_dir"};
  if (IsAdminCommand(std::string(command))) {
    return {"coordinator", "token_file", "tls_ca", "dry_run", "layer", "expert", "rank", "follow", "remove",
            "timeout_s", "wait", "wait_timeout_s", "json", "max_moves"};
  }
  return {};
}

absl::Status OnlyOwnFlags(absl::string_view command) {
  // Every subcommand's flags live in one registry; a flag of another command (trace synth's
  // --burst given to sim) would otherwise be accepted and ignored.
  const std::vector<absl::string_view> own = CommandFlags(command);
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::StrContains(flag->Filename(), "cli/") || std::find(own.begin(), own.end(), name) != own.end()) continue;
    if (flag->CurrentValue() == flag->DefaultValue()) continue;
    std::string dashed(name);
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    std::string hint;
    for (absl::string_view mine : own) {
      if (absl::EndsWith(mine, absl::StrCat("_", name))) hint = absl::StrCat(" (did you mean --", absl::StrReplaceAll(mine, {{"_", "-"}}), "?)");
    }
    return absl::InvalidArgumentError(absl::StrCat("--", dashed, " is not a flag of switchyard ", command, hint,
                                                   "; 'switchyard ", command, " --help' lists them"));
  }
  return absl::OkStatus();
}

int ReportError(absl::string_view command, const absl::Status& status) {
  // One line, whatever the message quotes (a path or value with a newline is escaped).
  std::fprintf(stderr, "switchyard %s: %s\n", std::string(command).c_str(),
               EchoValue(status.message(), 8192).c_str());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kUnauthenticated:
      return kExitBadInput;
    default:
      return 1;
  }
}

int RunPlan(const std::vector<std::string>& args) {
  auto run = [&]() -> absl::Status {
    if (!args.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", EchoValue(args[0]), "'"));
    }
    SY_RETURN_IF_ERROR(OnlyOwnFlags("plan"));
    const std::string format = absl::GetFlag(FLAGS_format);
    if (format != "json" && format != "table") {
      return absl::InvalidArgumentError(
          absl::StrCat("--format '", format, "': use json or table"));
    }
    if (absl::GetFlag(FLAGS_loads).empty()) {
      return absl::InvalidArgumentError("--loads FILE.csv is required");
    }
    if (absl::GetFlag(FLAGS_ranks) <= 0 || absl::GetFlag(FLAGS_slots_per_rank) <= 0) {
      return absl::InvalidArgumentError("--ranks and --slots-per-rank are required (>= 1)");
    }
    SY_ASSIGN_OR_RETURN(auto topo, placement::Topology::Create(absl::GetFlag(FLAGS_ranks),
                                                               absl::GetFlag(FLAGS_nodes),
                                                               absl::GetFlag(FLAGS_slots_per_rank)));
    placement::LoadCsvOptions csv;
    if (!absl::GetFlag(FLAGS_select).empty()) csv.select = absl::GetFlag(FLAGS_select);
    SY_ASSIGN_OR_RETURN(LoadMatrix load, placement::ReadLoadCsv(absl::GetFlag(FLAGS_loads), csv));
    std::optional<Placement> current;
    if (!absl::GetFlag(FLAGS_current).empty()) {
      SY_ASSIGN_OR_RETURN(current, placement::ReadPlacementJson(absl::GetFlag(FLAGS_current)));
    }
    SY_ASSIGN_OR_RETURN(PlanResult result, Plan(load, topo, current));
    const std::string json =
        placement::PlacementToJson(result.placement, PlanPolicy(), result.summary);
    const std::string table = Table(result, load, topo, format == "table");
    if (!absl::GetFlag(FLAGS_out).empty()) {
      SY_RETURN_IF_ERROR(WriteFileAtomically(absl::GetFlag(FLAGS_out), json));
    }
    if (format == "table") {
      std::fputs(table.c_str(), stdout);
    } else {
      if (absl::GetFlag(FLAGS_out).empty()) std::fputs(json.c_str(), stdout);
      std::fputs(table.c_str(), stderr);
    }
    return absl::OkStatus();
  };
  if (absl::Status status = run(); !status.ok()) return ReportError("plan", status);
  return 0;
}

}  // namespace switchyard::cli
