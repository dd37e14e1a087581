// `switchyard sim`: replays an expert-load trace on a simulated cluster with the coordinator's
// planner and rebalance policy, and prints what each policy gives (sim/simulator.h).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "common/file_util.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "model/model.h"
#include "nlohmann/json.hpp"
#include "placement/io/load_csv.h"
#include "placement/io/placement_json.h"
#include "sim/simulator.h"

ABSL_FLAG(std::string, model, "preset:deepseek-v3", "sim: the model, preset:NAME or a config.json (file or directory)");
ABSL_FLAG(double, scale, 1.0, "sim: scale the model's hidden and FFN sizes by this (0 < scale <= 1), as the worker's --scale");
ABSL_FLAG(std::string, trace, "", "sim: expert-load CSV (layer,expert,tokens, optionally with a step/workload column: one window each)");
ABSL_FLAG(int, steps, 1000, "sim: steps to simulate");
ABSL_FLAG(std::vector<std::string>, compare, {}, "sim: policies to run side by side on the same trace (static,eplb,incremental)");
ABSL_FLAG(std::string, hardware, "h200", "sim: hardware preset (h100, h200, cpu) or a JSON file of cost-model fields");
ABSL_FLAG(double, tokens_per_rank, 128, "sim: tokens each rank routes per step and layer");
ABSL_FLAG(int, window_steps, 0, "sim: steps per trace window (0: the trace's windows spread evenly over the steps)");
ABSL_FLAG(int, report_steps, 5, "sim: steps per load window the workers report to the coordinator (worker --window-steps)");
ABSL_FLAG(std::string, dispatch, "pairs", "sim: pairs (one row per token and expert, today's worker) or dedup (one per token and rank)");
ABSL_FLAG(std::vector<std::string>, sim_burst, {}, "sim: EXPERTS:SHARE@START..END over steps: a collapse burst on top of the trace (repeatable)");
ABSL_FLAG(std::vector<std::string>, lose_rank, {}, "sim: RANK@STEP: that rank is lost at the start of that step (one per run)");
ABSL_FLAG(std::string, start, "", "sim: a placement JSON (switchyard plan output) every policy starts from (default: EPLB on the first window)");
ABSL_FLAG(std::string, steps_out, "", "sim: write per-step, per-layer figures of every policy to this CSV");
ABSL_DECLARE_FLAG(int, ranks);
ABSL_DECLARE_FLAG(int, nodes);
ABSL_DECLARE_FLAG(int, slots_per_rank);
ABSL_DECLARE_FLAG(std::string, policy);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int, first_layers);
ABSL_DECLARE_FLAG(int, max_moves);

namespace switchyard::cli {
namespace {

absl::StatusOr<sim::RankLoss> ParseLoss(const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, '@');
  sim::RankLoss loss;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &loss.rank) || !absl::SimpleAtoi(parts[1], &loss.step)) {
    return absl::InvalidArgumentError(absl::StrCat("--lose-rank '", EchoValue(text), "': expected RANK@STEP (e.g. 3@200)"));
  }
  return loss;
}

absl::StatusOr<sim::Trace> ReadTrace(const std::string& path, int first_layers) {
  SY_ASSIGN_OR_RETURN(auto windows, placement::ReadLoadCsvWindows(path));
  sim::Trace trace;
  for (auto& [key, load] : windows) {
    if (first_layers > 0 && first_layers < load.num_layers()) {
      load.layer_ids.resize(first_layers);
      load.values.resize(first_layers);
    }
    trace.windows.push_back(std::move(load));
  }
  return trace;
}

std::string LayerRange(const std::vector<int>& ids) {
  // "3..60" for a contiguous run, else the list.
  bool contiguous = true;
  for (size_t i = 1; i < ids.size(); ++i) contiguous = contiguous && ids[i] == ids[i - 1] + 1;
  if (contiguous && ids.size() > 2) return absl::StrCat(ids.front(), "..", ids.back());
  return absl::StrJoin(ids, ",");
}

// A policy's summary for --json (its steps are streamed after it: StepJson).
nlohmann::json ToJson(const sim::PolicyResult& r) {
  nlohmann::json j;
  j["policy"] = r.policy;
  j["tokens_per_s"] = r.tokens_per_s;
  j["step_ms"] = {{"p50", r.step_p50 * 1e3}, {"p99", r.step_p99 * 1e3}, {"mean", r.step_mean * 1e3}};
  j["moved_replicas"] = r.moved_replicas;
  j["moved_bytes"] = r.moved_bytes;
  j["plans"] = r.plans;
  j["migrations"] = r.migrations;
  j["balancedness_mean"] = r.balancedness_mean;
  double gate = 0, dispatch = 0, ffn = 0, combine = 0, overhead = 0, stall = 0;
  for (const sim::StepRecord& s : r.steps) {
    gate += s.phases.gate;
    dispatch += s.phases.dispatch;
    ffn += s.phases.ffn;
    combine += s.phases.combine;
    overhead += s.phases.overhead;
    if (s.stall_seconds > 0) stall += s.seconds - s.phases.total();  // (else 0, not a rounding residue)
  }
  const double n = std::max<size_t>(1, r.steps.size()) / 1e3;
  // Mean per step; they add up to step_ms.mean (stall: a loss's stall and re-run step).
  j["phase_ms"] = {{"gate", gate / n},         {"dispatch", dispatch / n}, {"ffn", ffn / n},
                   {"combine", combine / n},   {"overhead", overhead / n}, {"stall", stall / n}};
  nlohmann::json rec = nlohmann::json::array();
  for (const sim::Recovery& x : r.recoveries) {
    rec.push_back({{"step", x.step}, {"event", x.event}, {"target", x.target},
                   {"steps", x.steps < 0 ? nlohmann::json(nullptr) : nlohmann::json(x.steps)},
                   {"seconds", x.steps < 0 ? nlohmann::json(nullptr) : nlohmann::json(x.seconds)}});
  }
  j["recoveries"] = rec;
  return j;
}

// One step of --json.
nlohmann::json StepJson(const sim::StepRecord& s) {
  return nlohmann::json({{"step", s.step},
                        {"epoch", s.epoch},
                        {"step_ms", s.seconds * 1e3},
                        {"phase_ms", {{"gate", s.phases.gate * 1e3}, {"dispatch", s.phases.dispatch * 1e3},
                                      {"ffn", s.phases.ffn * 1e3}, {"combine", s.phases.combine * 1e3},
                                      {"overhead", s.phases.overhead * 1e3}}},
                        {"balancedness_min", s.balancedness_min},
                        {"balancedness_mean", s.balancedness_mean},
                        {"critical_layer", s.critical_layer},
                        {"critical_rank", s.critical_rank},
                        {"dominant_phase", std::string(sim::PhaseName(s.dominant))},
                        {"intra_bytes", s.intra_bytes},
                        {"inter_bytes", s.inter_bytes},
                        {"migration_progress", s.migration_progress < 0 ? nlohmann::json(nullptr) : nlohmann::json(s.migration_progress)},
                        {"stall_ms", s.stall_seconds * 1e3}});
}

std::string StepsCsv(const std::vector<sim::PolicyResult>& results, const std::vector<int>& layer_ids) {
  std::string csv =
      "policy,step,epoch,step_ms,stall_ms,layer,gate_ms,dispatch_ms,ffn_ms,combine_ms,critical_rank,critical_ms,"
      "dominant_phase,balancedness,intra_bytes,inter_bytes,migration_progress\n";
  for (const sim::PolicyResult& r : results) {
    for (const sim::StepRecord& s : r.steps) {
      for (size_t l = 0; l < s.layers.size(); ++l) {
        const sim::LayerCost& c = s.layers[l];
        absl::StrAppendFormat(&csv, "%s,%d,%d,%.4f,%.4f,%d,%.4f,%.4f,%.4f,%.4f,%d,%.4f,%s,%.4f,%.0f,%.0f,%s\n", r.policy,
                              s.step, s.epoch, s.seconds * 1e3, s.stall_seconds * 1e3, layer_ids[l], c.gate * 1e3, c.dispatch * 1e3, c.ffn * 1e3,
                              c.combine * 1e3, c.critical_rank, c.critical_seconds * 1e3,
                              sim::PhaseName(c.dominant), c.balancedness, c.intra_bytes, c.inter_bytes,
                              s.migration_progress < 0 ? "" : absl::StrFormat("%.4f", s.migration_progress));
      }
    }
  }
  return csv;
}

absl::Status Sim() {
  sim::SimOptions o;
  if (absl::GetFlag(FLAGS_trace).empty()) return absl::InvalidArgumentError("--trace LOADS.csv is required");
  if (absl::GetFlag(FLAGS_ranks) < 1) return absl::InvalidArgumentError("--ranks R is required (>= 1)");
  if (absl::GetFlag(FLAGS_nodes) < 1) return absl::InvalidArgumentError("--nodes must be >= 1");
  if (absl::GetFlag(FLAGS_ranks) % absl::GetFlag(FLAGS_nodes) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--ranks ", absl::GetFlag(FLAGS_ranks), " is not divisible by --nodes ",
                                                   absl::GetFlag(FLAGS_nodes), " (every node holds the same ranks)"));
  }
  if (absl::GetFlag(FLAGS_first_layers) < 0) return absl::InvalidArgumentError("--first-layers must be >= 0");
  const std::string dispatch = absl::GetFlag(FLAGS_dispatch);
  if (dispatch != "pairs" && dispatch != "dedup") {
    return absl::InvalidArgumentError(absl::StrCat("--dispatch '", EchoValue(dispatch), "': use pairs or dedup"));
  }
  std::vector<std::string> policies = absl::GetFlag(FLAGS_compare);
  if (!policies.empty() && !absl::GetFlag(FLAGS_policy).empty()) {
    return absl::InvalidArgumentError("give --policy P or --compare P1,P2,..., not both");
  }
  if (policies.empty()) policies = {absl::GetFlag(FLAGS_policy).empty() ? "incremental" : absl::GetFlag(FLAGS_policy)};
  for (size_t i = 0; i < policies.size(); ++i) {
    SY_RETURN_IF_ERROR(sim::SimPolicy(policies[i]).status());
    if (std::find(policies.begin(), policies.begin() + i, policies[i]) != policies.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat("--compare names '", policies[i], "' twice"));
    }
  }
  const std::string steps_out = absl::GetFlag(FLAGS_steps_out);
  if (!steps_out.empty()) {
    std::error_code ec;
    if (std::filesystem::equivalent(steps_out, absl::GetFlag(FLAGS_trace), ec)) {
      return absl::InvalidArgumentError(absl::StrCat("--steps-out '", EchoValue(steps_out, 1024), "' is the trace itself"));
    }
  }

  SY_ASSIGN_OR_RETURN(o.model, model::LoadModel(absl::GetFlag(FLAGS_model)));
  if (absl::GetFlag(FLAGS_scale) != 1.0) {
    SY_ASSIGN_OR_RETURN(o.model, model::ScaleModel(o.model, absl::GetFlag(FLAGS_scale)));
  }
  SY_ASSIGN_OR_RETURN(o.hardware, sim::LoadHardware(absl::GetFlag(FLAGS_hardware)));
  o.ranks = absl::GetFlag(FLAGS_ranks);
  o.nodes = absl::GetFlag(FLAGS_nodes);
  o.slots_per_rank = absl::GetFlag(FLAGS_slots_per_rank);
  if (o.slots_per_rank == 0) o.slots_per_rank = (o.model.num_experts + o.ranks - 1) / o.ranks + 1;
  o.steps = absl::GetFlag(FLAGS_steps);
  o.tokens_per_rank = absl::GetFlag(FLAGS_tokens_per_rank);
  o.window_steps = absl::GetFlag(FLAGS_window_steps);
  o.report_steps = absl::GetFlag(FLAGS_report_steps);
  o.dedup = dispatch == "dedup";
  o.seed = absl::GetFlag(FLAGS_seed);
  if (absl::GetFlag(FLAGS_max_moves) < -1) {
    return absl::InvalidArgumentError(absl::StrCat("--max-moves ", absl::GetFlag(FLAGS_max_moves), ": use a count, or -1 or 0 for none"));
  }
  o.max_moves = std::max(0, absl::GetFlag(FLAGS_max_moves));
  o.keep_layers = !absl::GetFlag(FLAGS_steps_out).empty();
  for (const std::string& b : absl::GetFlag(FLAGS_sim_burst)) {
    SY_ASSIGN_OR_RETURN(placement::Burst burst, placement::ParseBurst(b));
    o.bursts.push_back(burst);
  }
  const std::vector<std::string> losses = absl::GetFlag(FLAGS_lose_rank);
  if (losses.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("--lose-rank given ", losses.size(), " times: one loss per run"));
  }
  if (!losses.empty()) {
    SY_ASSIGN_OR_RETURN(o.loss, ParseLoss(losses.front()));
  }
  SY_ASSIGN_OR_RETURN(const sim::Trace trace, ReadTrace(absl::GetFlag(FLAGS_trace), absl::GetFlag(FLAGS_first_layers)));
  std::optional<placement::Placement> start;
  if (!absl::GetFlag(FLAGS_start).empty()) {
    SY_ASSIGN_OR_RETURN(start, placement::ReadPlacementJson(absl::GetFlag(FLAGS_start)));
    o.start = &*start;
  }
  SY_RETURN_IF_ERROR(sim::ValidateSim(o, trace));

  const std::vector<int>& layers = trace.windows.front().layer_ids;
  const int W = static_cast<int>(trace.windows.size());
  auto plural = [](int64_t n) { return n == 1 ? "" : "s"; };
  const std::string what = absl::StrFormat(
      "%s, layers %s (%d of its %d MoE layers), %d rank%s on %d node%s x %d slot%s, %d step%s, hardware %s, %g tokens per "
      "rank, dispatch %s; trace %s: %d window%s, %s",
      o.model.name, LayerRange(layers), static_cast<int>(layers.size()), static_cast<int>(o.model.moe_layers.size()),
      o.ranks, plural(o.ranks), o.nodes, plural(o.nodes), o.slots_per_rank, plural(o.slots_per_rank), o.steps, plural(o.steps),
      EchoValue(o.hardware.name, 256), o.tokens_per_rank, dispatch, EchoValue(absl::GetFlag(FLAGS_trace), 1024), W, plural(W),
      o.window_steps > 0 ? absl::StrCat(o.window_steps, " step", plural(o.window_steps), " each") : "spread over the steps");

  std::vector<sim::PolicyResult> results;
  for (const std::string& p : policies) {
    SY_ASSIGN_OR_RETURN(sim::PolicyResult r, sim::Simulate(o, trace, p));
    results.push_back(std::move(r));
  }
  if (!absl::GetFlag(FLAGS_steps_out).empty()) {
    SY_RETURN_IF_ERROR(WriteFileAtomically(absl::GetFlag(FLAGS_steps_out), StepsCsv(results, layers)));
  }
  if (absl::GetFlag(FLAGS_json)) {
    // Streamed, one step at a time: a long run's document is never held whole.
    std::fputs("[", stdout);
    for (size_t i = 0; i < results.size(); ++i) {
      nlohmann::json j = ToJson(results[i]);
      j["simulated"] = what;
      j["layers"] = layers;
      std::string head = j.dump();
      head.pop_back();  // the closing brace: "steps" follows
      std::printf("%s%s,\"steps\":[", i ? "," : "", head.c_str());
      for (size_t k = 0; k < results[i].steps.size(); ++k) {
        std::printf("%s%s", k ? "," : "", StepJson(results[i].steps[k]).dump().c_str());
      }
      std::fputs("]}", stdout);
    }
    std::fputs("]\n", stdout);
    return absl::OkStatus();
  }
  std::printf("switchyard sim: %s\n\n", what.c_str());
  std::printf("| policy | tokens/s | step p50 ms | p99 ms | balancedness | plans | moved replicas | moved GiB | recovery steps |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const sim::PolicyResult& r : results) {
    // Each event's recovery; past kShownEvents a summary (a trace of many windows shifts at each).
    constexpr size_t kShownEvents = 8;
    std::vector<std::string> rec;
    int recovered = 0;
    for (const sim::Recovery& x : r.recoveries) {
      recovered += x.steps >= 0;
      if (rec.size() < kShownEvents) {
        rec.push_back(absl::StrCat("@", x.step, x.event == "loss" ? " (loss)" : "", ": ", x.steps < 0 ? "never" : absl::StrCat(x.steps)));
      }
    }
    if (r.recoveries.size() > kShownEvents) {
      rec.push_back(absl::StrCat("(", r.recoveries.size(), " events, ", recovered, " recovered; --json lists all)"));
    }
    std::printf("| %s | %.0f | %.3f | %.3f | %.3f | %d | %d | %.2f | %s |\n", r.policy.c_str(), r.tokens_per_s,
                r.step_p50 * 1e3, r.step_p99 * 1e3, r.balancedness_mean, r.plans, r.moved_replicas,
                r.moved_bytes / (1 << 30), rec.empty() ? "no shift" : absl::StrJoin(rec, " ").c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int RunSim(const std::vector<std::string>& args) {
  if (!args.empty()) {
    return ReportError("sim", absl::InvalidArgumentError(absl::StrCat("unexpected argument '", EchoValue(args[0]),
                                                                      "' (all options are flags: --trace, --ranks, ...)")));
  }
  absl::Status status = OnlyOwnFlags("sim");
  if (status.ok()) status = Sim();
  if (!status.ok()) return ReportError("sim", status);
  return 0;
}

}  // namespace switchyard::cli
