// `switchyard report RUN.json`: a worker run's report (switchyard-worker --report) as a
// self-contained HTML page of plots (inline SVG, no scripts, nothing fetched), or the plots
// alone as SVG or PNG files. The charts are common/svg_plot.h's, the same the coordinator's
// dashboard draws.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "common/file_util.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "common/svg_plot.h"
#include "placement/io/placement_json.h"

ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(std::string, format);

extern char** environ;

namespace switchyard::cli {
namespace {

struct Migration {
  int64_t epoch = 0, start_step = 0, commit_step = -1, abort_step = -1, bytes = 0;
  int moved_replicas = 0;
  std::string error;
};

// What the plots need from a report, read and checked (errors name the file and JSON path).
struct Run {
  std::string model, workload, isa, checksum;
  int ranks = 0, steps = 0;
  double tokens_per_s = 0, step_p50 = 0, step_p99 = 0;
  std::vector<int> layer_ids;
  std::vector<std::vector<double>> expert_tokens;  // [layer][expert]
  std::vector<double> layer_balancedness;
  std::vector<std::vector<double>> balance_by_step;  // [layer][step] (may be empty)
  std::vector<std::pair<double, double>> worst_by_step;
  std::vector<std::vector<double>> rank_phases;    // [rank][gate, dispatch, ffn, combine]
  std::vector<double> critical_ms;
  std::vector<Migration> migrations;
  std::optional<placement::Placement> final_placement;
};

absl::StatusOr<std::vector<double>> Numbers(const JsonReader& rd, const Json& array, absl::string_view path) {
  SY_RETURN_IF_ERROR(rd.Array(array, path));
  std::vector<double> out;
  out.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    SY_ASSIGN_OR_RETURN(out.emplace_back(), rd.Number(array[i], JsonPath(path, i)));
  }
  return out;
}

absl::StatusOr<Run> ReadRun(const std::string& path) {
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  SY_ASSIGN_OR_RETURN(const Json j, ParseJson(text, path));
  const JsonReader rd(path);
  SY_RETURN_IF_ERROR(rd.Object(j, "$"));
  Run run;
  SY_ASSIGN_OR_RETURN(run.model, rd.StringFieldOr(j, "model", "$", "?"));
  SY_ASSIGN_OR_RETURN(run.workload, rd.StringFieldOr(j, "workload", "$", ""));
  SY_ASSIGN_OR_RETURN(run.isa, rd.StringFieldOr(j, "isa", "$", ""));
  SY_ASSIGN_OR_RETURN(run.checksum, rd.StringFieldOr(j, "output_checksum", "$", ""));
  SY_ASSIGN_OR_RETURN(const int64_t ranks, rd.IntField(j, "ranks", "$", 1, 1 << 20));
  SY_ASSIGN_OR_RETURN(const int64_t steps, rd.IntField(j, "steps", "$", 0, 1 << 30));
  run.ranks = static_cast<int>(ranks), run.steps = static_cast<int>(steps);
  SY_ASSIGN_OR_RETURN(run.tokens_per_s, rd.NumberFieldOr(j, "tokens_per_s", "$", 0, 0, 1e18));
  SY_ASSIGN_OR_RETURN(const Json* step_ms, rd.Optional(j, "step_ms", "$"));
  if (step_ms != nullptr) {
    SY_ASSIGN_OR_RETURN(run.step_p50, rd.NumberFieldOr(*step_ms, "p50", "$.step_ms", 0));
    SY_ASSIGN_OR_RETURN(run.step_p99, rd.NumberFieldOr(*step_ms, "p99", "$.step_ms", 0));
  }
  SY_ASSIGN_OR_RETURN(const Json* layers, rd.ArrayField(j, "layers", "$"));
  for (size_t i = 0; i < layers->size(); ++i) {
    const std::string lp = JsonPath("$.layers", i);
    const Json& l = (*layers)[i];
    SY_ASSIGN_OR_RETURN(run.layer_ids.emplace_back(), rd.IntField(l, "layer", lp, 0, 1 << 20));
    SY_ASSIGN_OR_RETURN(run.layer_balancedness.emplace_back(), rd.NumberFieldOr(l, "balancedness", lp, NAN, 0, 1));
    SY_ASSIGN_OR_RETURN(const Json* tokens, rd.ArrayField(l, "expert_tokens", lp));
    SY_ASSIGN_OR_RETURN(run.expert_tokens.emplace_back(), Numbers(rd, *tokens, JsonPath(lp, "expert_tokens")));
    SY_ASSIGN_OR_RETURN(const Json* by_step, rd.ArrayFieldOr(l, "balancedness_by_step", lp));
    run.balance_by_step.emplace_back();
    if (by_step != nullptr) {
      SY_ASSIGN_OR_RETURN(run.balance_by_step.back(), Numbers(rd, *by_step, JsonPath(lp, "balancedness_by_step")));
    }
  }
  SY_ASSIGN_OR_RETURN(const Json* worst, rd.ArrayFieldOr(j, "worst_balancedness_by_step", "$"));
  if (worst != nullptr) {
    for (size_t i = 0; i < worst->size(); ++i) {
      SY_ASSIGN_OR_RETURN(const std::vector<double> pair, Numbers(rd, (*worst)[i], JsonPath("$.worst_balancedness_by_step", i)));
      if (pair.size() != 2) return rd.Error(JsonPath("$.worst_balancedness_by_step", i), "expected [step, value]");
      run.worst_by_step.emplace_back(pair[0], pair[1]);
    }
  }
  SY_ASSIGN_OR_RETURN(const Json* phases, rd.ArrayFieldOr(j, "rank_phase_ms", "$"));
  if (phases != nullptr) {
    for (size_t r = 0; r < phases->size(); ++r) {
      const std::string rp = JsonPath("$.rank_phase_ms", r);
      auto& row = run.rank_phases.emplace_back();
      for (const char* name : {"gate", "dispatch", "ffn", "combine"}) {
        SY_ASSIGN_OR_RETURN(row.emplace_back(), rd.NumberFieldOr((*phases)[r], name, rp, 0, 0, 1e12));
      }
    }
  }
  SY_ASSIGN_OR_RETURN(const Json* critical, rd.Optional(j, "critical_path", "$"));
  if (critical != nullptr) {
    SY_ASSIGN_OR_RETURN(const Json* by_step, rd.ArrayFieldOr(*critical, "by_step_ms", "$.critical_path"));
  if (by_step != nullptr) {
      SY_ASSIGN_OR_RETURN(run.critical_ms, Numbers(rd, *by_step, "$.critical_path.by_step_ms"));
    }
  }
  SY_ASSIGN_OR_RETURN(const Json* migrations, rd.ArrayFieldOr(j, "migrations", "$"));
  if (migrations != nullptr) {
    for (size_t i = 0; i < migrations->size(); ++i) {
      const std::string mp = JsonPath("$.migrations", i);
      const Json& m = (*migrations)[i];
      Migration& x = run.migrations.emplace_back();
      SY_ASSIGN_OR_RETURN(x.epoch, rd.IntField(m, "epoch", mp, 0, INT64_MAX));
      SY_ASSIGN_OR_RETURN(x.start_step, rd.IntField(m, "start_step", mp, -1, INT64_MAX));
      SY_ASSIGN_OR_RETURN(x.commit_step, rd.IntFieldOr(m, "commit_step", mp, -1, -1, INT64_MAX));
      SY_ASSIGN_OR_RETURN(x.abort_step, rd.IntFieldOr(m, "abort_step", mp, -1, -1, INT64_MAX));
      SY_ASSIGN_OR_RETURN(x.bytes, rd.IntFieldOr(m, "bytes", mp, 0, 0, INT64_MAX));
      SY_ASSIGN_OR_RETURN(const int64_t moved, rd.IntFieldOr(m, "moved_replicas", mp, 0, 0, 1 << 30));
      x.moved_replicas = static_cast<int>(moved);
      SY_ASSIGN_OR_RETURN(x.error, rd.StringFieldOr(m, "error", mp, ""));
    }
  }
  SY_ASSIGN_OR_RETURN(const Json* final_placement, rd.Optional(j, "final_placement", "$"));
  if (final_placement != nullptr) {
    auto parsed = placement::ParsePlacementJson(final_placement->dump(), absl::StrCat(path, " $.final_placement"));
    if (!parsed.ok()) return parsed.status();
    run.final_placement = *std::move(parsed);
  }
  for (size_t li = 0; li < run.layer_ids.size(); ++li) {
    if (std::count(run.layer_ids.begin(), run.layer_ids.end(), run.layer_ids[li]) > 1) {
      return rd.Error(JsonPath("$.layers", li), absl::StrCat("layer ", run.layer_ids[li], " is listed twice"));
    }
    if (run.final_placement && run.expert_tokens[li].size() != static_cast<size_t>(run.final_placement->num_experts)) {
      return rd.Error(JsonPath(JsonPath("$.layers", li), "expert_tokens"),
                      absl::StrCat("has ", run.expert_tokens[li].size(), " experts, the final placement places ",
                                   run.final_placement->num_experts));
    }
  }
  return run;
}

// The charts of a run, by file stem.
std::vector<std::pair<std::string, std::string>> Charts(const Run& run) {
  std::vector<std::pair<std::string, std::string>> out;
  // Load per (rank, expert) of each layer: the run's expert tokens split by the final shares.
  if (run.final_placement) {
    for (size_t li = 0; li < run.layer_ids.size(); ++li) {
      const placement::LayerPlacement* lp = run.final_placement->FindLayer(run.layer_ids[li]);
      if (lp == nullptr) continue;
      const int R = static_cast<int>(lp->ranks.size()), E = static_cast<int>(run.expert_tokens[li].size());
      plot::Heatmap h{absl::StrCat("heatmap_layer", run.layer_ids[li]),
                      absl::StrFormat("Layer %d: pairs of each expert on each rank (whole run, final placement's shares)",
                                      run.layer_ids[li]),
                      "rank", "expert", R, E, std::vector<double>(static_cast<size_t>(R) * E, 0.0), {}, "pairs"};
      for (int r = 0; r < R; ++r) {
        for (const placement::Replica& rep : lp->ranks[r]) {
          if (rep.expert >= 0 && rep.expert < E) h.values[static_cast<size_t>(r) * E + rep.expert] += run.expert_tokens[li][rep.expert] * rep.share;
        }
      }
      out.emplace_back(h.id, plot::HeatmapSvg(h));
    }
  }
  // Balancedness per step: the worst layer, and each layer when few.
  plot::LineChart balance{"balancedness", "Balancedness per step (mean / max pairs per rank)", "step", "balancedness", {}, 0, 1, false};
  plot::Series worst{"worst layer", {}, {}};
  for (const auto& [step, value] : run.worst_by_step) worst.x.push_back(step), worst.y.push_back(value);
  balance.series.push_back(worst);
  if (run.layer_ids.size() <= 8) {
    for (size_t li = 0; li < run.layer_ids.size(); ++li) {
      if (run.balance_by_step[li].empty()) continue;
      plot::Series s{absl::StrCat("layer ", run.layer_ids[li]), {}, run.balance_by_step[li]};
      // The per-layer values are the steps this run counted, in order: the same steps as worst_by_step.
      for (size_t i = 0; i < s.y.size(); ++i) s.x.push_back(i < run.worst_by_step.size() ? run.worst_by_step[i].first : i);
      balance.series.push_back(std::move(s));
    }
  }
  out.emplace_back(balance.id, plot::LineChartSvg(balance));
  if (!run.rank_phases.empty()) {
    plot::StackedBars bars{"phases", "Time per step in each phase, per rank (waiting for peers included)", "ms per step",
                           {"gate", "dispatch", "ffn", "combine"}, {}, run.rank_phases};
    for (size_t r = 0; r < run.rank_phases.size(); ++r) bars.bar_names.push_back(absl::StrCat("rank ", r));
    out.emplace_back(bars.id, plot::StackedBarsSvg(bars));
  }
  if (!run.critical_ms.empty()) {
    plot::LineChart critical{"critical_path", "Critical path per step (busiest rank's compute + least communication + migration work)",
                             "step", "ms", {}, 0, 1, true};
    plot::Series s{"critical path", {}, run.critical_ms};
    for (size_t i = 0; i < s.y.size(); ++i) s.x.push_back(i < run.worst_by_step.size() ? run.worst_by_step[i].first : i);
    critical.series.push_back(std::move(s));
    out.emplace_back(critical.id, plot::LineChartSvg(critical));
  }
  plot::Timeline t{"migrations", "Migrations: steps from start to the switch (or the abort)", "step", {}};
  for (const Migration& m : run.migrations) {
    plot::Span s;
    s.state = m.commit_step >= 0 ? "committed" : m.abort_step >= 0 ? "aborted" : "in_flight";
    s.start = static_cast<double>(m.start_step);
    s.end = static_cast<double>(m.commit_step >= 0 ? m.commit_step : m.abort_step >= 0 ? m.abort_step : run.steps);
    s.label = absl::StrFormat("epoch %d %s: %d replicas, %.1f MiB%s", m.epoch, s.state, m.moved_replicas, m.bytes / 1048576.0,
                              m.error.empty() ? "" : " (" + m.error + ")");
    t.spans.push_back(std::move(s));
  }
  out.emplace_back(t.id, plot::TimelineSvg(t));
  return out;
}

std::string Html(const Run& run, const std::string& source, const std::vector<std::pair<std::string, std::string>>& charts) {
  int committed = 0, aborted = 0;
  for (const Migration& m : run.migrations) (m.commit_step >= 0 ? committed : aborted) += m.commit_step >= 0 || m.abort_step >= 0;
  double worst = 1;
  for (double b : run.layer_balancedness) worst = std::min(worst, std::isfinite(b) ? b : 1.0);
  auto row = [](const std::string& k, const std::string& v) {
    return absl::StrCat("<tr><th>", plot::EscapeXml(k), "</th><td>", plot::EscapeXml(v), "</td></tr>\n");
  };
  std::string out = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Switchyard run: ", plot::EscapeXml(run.model),
      "</title>\n<style>body{font-family:sans-serif;margin:16px;color:#222;background:#fafafa}"
      "section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;margin-bottom:12px}"
      "th{text-align:left;padding-right:16px;font-weight:normal;color:#555}td{font-family:monospace}</style></head>\n<body>\n"
      "<h1>Switchyard run report</h1>\n<section><table>\n");
  out += row("report", source);
  out += row("model", run.model);
  out += row("workload", run.workload);
  out += row("ranks x steps", absl::StrCat(run.ranks, " x ", run.steps));
  out += row("tokens/s", absl::StrFormat("%.0f", run.tokens_per_s));
  out += row("step ms p50 / p99", absl::StrFormat("%.2f / %.2f", run.step_p50, run.step_p99));
  out += row("worst-layer balancedness (whole run)", absl::StrFormat("%.3f", worst));
  out += row("migrations", absl::StrCat(run.migrations.size(), " (", committed, " committed, ", aborted, " aborted)"));
  out += row("CPU path", run.isa);
  out += row("output checksum", run.checksum);
  out += "</table></section>\n";
  for (const auto& [id, svg] : charts) absl::StrAppend(&out, "<section id=\"plot-", id, "\">\n", svg, "</section>\n");
  out += "</body></html>\n";
  return out;
}

bool OnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':', absl::SkipEmpty())) {
    if (::access(absl::StrCat(dir, "/", program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// Runs argv (no shell), output discarded; its exit status (-1 when it could not start).
int RunProgram(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return -1;
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// An absolute path as a file:// URL's path: bytes other than unreserved ones and '/' escaped.
std::string FileUrlPath(const std::string& path) {
  std::string out;
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

// SVG file -> PNG with the first converter on PATH that succeeds: rsvg-convert, ImageMagick,
// headless Chromium.
absl::Status ToPng(const std::string& svg_path, const std::string& svg, const std::string& png_path) {
  int height = 600;
  if (const size_t at = svg.find(" height=\""); at != std::string::npos) height = std::atoi(svg.c_str() + at + 9);
  const std::vector<std::vector<std::string>> converters = {
      {"rsvg-convert", "-o", png_path, svg_path},
      {"convert", svg_path, png_path},
      {"chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
       absl::StrCat("--window-size=960,", std::clamp(height, 100, 16384)), absl::StrCat("--screenshot=", png_path),
       absl::StrCat("file://", FileUrlPath(svg_path))}};
  std::vector<std::string> tried;
  for (const auto& argv : converters) {
    if (!OnPath(argv[0])) continue;
    struct stat st;
    if (RunProgram(argv) == 0 && ::stat(png_path.c_str(), &st) == 0 && st.st_size > 0) return absl::OkStatus();
    tried.push_back(argv[0]);
  }
  if (tried.empty()) {
    return absl::FailedPreconditionError(
        "--format png needs an SVG converter on PATH: rsvg-convert (librsvg2-bin), convert (imagemagick) or chromium; "
        "--format svg writes the plots without one");
  }
  return absl::InternalError(absl::StrCat("converting ", svg_path, " to PNG failed with ", absl::StrJoin(tried, ", ")));
}

}  // namespace

int RunReport(const std::vector<std::string>& args) {
  auto run = [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(OnlyOwnFlags("report"));
    if (args.size() != 1) {
      return absl::InvalidArgumentError(args.empty() ? "usage: switchyard report RUN.json [--out FILE|DIR] [--format html|svg|png]"
                                                     : absl::StrCat("unexpected argument '", EchoValue(args[1]), "'"));
    }
    std::string format = absl::GetFlag(FLAGS_format);
    if (format == "json") format = "html";  // plan's default: not given
    if (format != "html" && format != "svg" && format != "png") {
      return absl::InvalidArgumentError(absl::StrCat("--format '", EchoValue(format), "': use html (default), svg or png"));
    }
    const std::string out = absl::GetFlag(FLAGS_out);
    SY_ASSIGN_OR_RETURN(const Run report, ReadRun(args[0]));
    const auto charts = Charts(report);
    if (format == "html") {
      const std::string html = Html(report, args[0], charts);
      if (out.empty() || out == "-") {
        std::fwrite(html.data(), 1, html.size(), stdout);
        return absl::OkStatus();
      }
      SY_RETURN_IF_ERROR(WriteFileAtomically(out, html));
      std::fprintf(stderr, "switchyard report: wrote %s (%zu plots)\n", out.c_str(), charts.size());
      return absl::OkStatus();
    }
    if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--format ", format, " writes one file per plot: give --out DIR"));
    if (::mkdir(out.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::InvalidArgumentError(absl::StrCat("cannot create directory ", out, ": ", std::strerror(errno)));
    }
    for (const auto& [id, svg] : charts) {
      const std::string svg_path = absl::StrCat(out, "/", id, ".svg");
      SY_RETURN_IF_ERROR(WriteFileAtomically(svg_path, svg));
      if (format == "png") {
        char resolved[PATH_MAX];
        const std::string absolute = ::realpath(svg_path.c_str(), resolved) != nullptr ? resolved : svg_path;
        const absl::Status converted = ToPng(absolute, svg, absl::StrCat(out, "/", id, ".png"));
        ::unlink(svg_path.c_str());  // the PNG is the output (or nothing is)
        SY_RETURN_IF_ERROR(converted);
      }
      std::printf("%s/%s.%s\n", out.c_str(), id.c_str(), format.c_str());
    }
    return absl::OkStatus();
  };
  if (absl::Status status = run(); !status.ok()) return ReportError("report", status);
  return 0;
}

}  // namespace switchyard::cli
