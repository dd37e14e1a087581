#include "coordinator/dashboard.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "common/svg_plot.h"
#include "nlohmann/json.hpp"

namespace switchyard::coordinator {
namespace {

HttpResponse Json(const std::string& body) { return {200, "application/json", body}; }
HttpResponse Svg(std::string body) { return {200, "image/svg+xml", std::move(body)}; }
HttpResponse Error(int status, const std::string& message) { return {status, "text/plain; charset=utf-8", message + "\n"}; }

template <typename Message>
std::string ProtoJson(const Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

// %XX and '+' of a URL query component decoded (a malformed escape stays as is).
std::string UrlDecode(absl::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    int hi = -1, lo = -1;
    if (in[i] == '%' && i + 2 < in.size()) {
      auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
      hi = hex(in[i + 1]), lo = hex(in[i + 2]);
    }
    if (hi >= 0 && lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += in[i] == '+' ? ' ' : in[i];
    }
  }
  return out;
}

// The query's parameters, decoded; repeated keys: the last wins.
std::map<std::string, std::string> Params(absl::string_view query) {
  std::map<std::string, std::string> out;
  for (absl::string_view part : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    const size_t eq = part.find('=');
    out[UrlDecode(part.substr(0, eq))] = eq == absl::string_view::npos ? "" : UrlDecode(part.substr(eq + 1));
  }
  return out;
}

// ?layer=L: a model layer id of the job, or nullopt when absent; an error response when bad.
absl::StatusOr<std::optional<int>> LayerParam(Coordinator& core, const std::map<std::string, std::string>& params) {
  const auto it = params.find("layer");
  if (it == params.end() || it->second.empty()) return std::optional<int>();
  int layer = 0;
  if (!absl::SimpleAtoi(it->second, &layer)) {
    return absl::InvalidArgumentError(absl::StrCat("layer: '", EchoValue(it->second, 64), "' is not a layer id (an integer)"));
  }
  const std::vector<int> layers = core.Layers();
  if (layers.empty()) return absl::FailedPreconditionError("no job yet: no worker has registered");
  if (std::find(layers.begin(), layers.end(), layer) == layers.end()) {
    return absl::NotFoundError(absl::StrCat("layer ", layer, " is not one of the job's MoE layers"));
  }
  return std::optional<int>(layer);
}

HttpResponse FromStatus(const absl::Status& s) {
  return Error(absl::IsNotFound(s) || absl::IsFailedPrecondition(s) ? 404 : 400, std::string(s.message()));
}

// The load of each (rank, expert) in one layer: the expert's smoothed pairs per step times the
// share its replica on that rank serves.
struct RankExpertLoad {
  int layer = 0, ranks = 0, experts = 0;
  std::vector<double> values;  // [rank][expert]
  double balancedness = 0;
  int64_t windows = 0;
};

absl::StatusOr<RankExpertLoad> LoadOf(Coordinator& core, int layer) {
  SY_ASSIGN_OR_RETURN(const types::Placement placement, core.GetPlacement(layer));
  SY_ASSIGN_OR_RETURN(const admin::GetLoadResponse load, core.GetLoad(layer));
  if (placement.layers_size() != 1 || load.layers_size() != 1) return absl::NotFoundError(absl::StrCat("no load of layer ", layer));
  const types::LayerPlacement& lp = placement.layers(0);
  const admin::LayerLoad& ll = load.layers(0);
  RankExpertLoad out{layer, lp.ranks_size(), placement.experts(), {}, ll.balancedness(), load.windows()};
  out.values.assign(static_cast<size_t>(out.ranks) * out.experts, 0.0);
  for (int r = 0; r < lp.ranks_size(); ++r) {
    for (const types::Replica& rep : lp.ranks(r).replicas()) {
      if (rep.expert() >= 0 && rep.expert() < out.experts && rep.expert() < ll.smoothed_size()) {
        out.values[static_cast<size_t>(r) * out.experts + rep.expert()] += ll.smoothed(rep.expert()) * rep.share();
      }
    }
  }
  return out;
}

std::vector<std::string> RankNames(Coordinator& core, int ranks) {
  std::vector<std::string> names(ranks);
  for (int r = 0; r < ranks; ++r) names[r] = absl::StrCat("rank ", r);
  const admin::ClusterStatus status = core.Status();
  for (const admin::WorkerStatus& w : status.workers()) {
    if (w.rank() >= 0 && w.rank() < ranks && !w.node_name().empty()) names[w.rank()] = absl::StrCat(w.rank(), " ", w.node_name());
  }
  return names;
}

std::string BalanceSvg(Coordinator& core, std::optional<int> layer) {
  const std::vector<Coordinator::BalanceSample> history = core.BalanceHistory();
  const std::vector<int> layers = core.Layers();
  plot::LineChart chart{"balancedness", "Measured balancedness per load window (mean / max pairs per rank)", "load window",
                        "balancedness", {}, 0, 1, false};
  plot::Series worst{"worst layer", {}, {}}, mean{"mean over layers", {}, {}}, one{"", {}, {}};
  int index = -1;
  if (layer) {
    index = static_cast<int>(std::find(layers.begin(), layers.end(), *layer) - layers.begin());
    one.name = absl::StrCat("layer ", *layer);
  }
  for (const auto& s : history) {
    if (s.per_layer.empty()) continue;
    double sum = 0, min = INFINITY;
    for (double v : s.per_layer) sum += v, min = std::min(min, v);
    worst.x.push_back(static_cast<double>(s.window));
    worst.y.push_back(min);
    mean.x.push_back(static_cast<double>(s.window));
    mean.y.push_back(sum / static_cast<double>(s.per_layer.size()));
    if (index >= 0 && index < static_cast<int>(s.per_layer.size())) {
      one.x.push_back(static_cast<double>(s.window));
      one.y.push_back(s.per_layer[index]);
    }
  }
  chart.series = {worst, mean};
  if (layer) chart.series.push_back(one);
  return plot::LineChartSvg(chart);
}

std::string MigrationsSvg(Coordinator& core) {
  const std::vector<Coordinator::MigrationSpan> spans = core.MigrationHistory();
  plot::Timeline t{"migrations", "Epochs published, their migrations and outcome", "seconds since the first shown", {}};
  const int64_t origin = spans.empty() ? 0 : spans.front().published_ms;
  const int64_t now = absl::ToUnixMillis(absl::Now());
  for (const auto& m : spans) {
    plot::Span s;
    s.state = m.state;
    s.start = static_cast<double>(m.published_ms - origin) / 1e3;
    s.end = static_cast<double>((m.ended_ms >= 0 ? m.ended_ms : now) - origin) / 1e3;
    if (m.state == "in_flight") s.progress = m.bytes > 0 ? static_cast<double>(m.done_bytes) / static_cast<double>(m.bytes) : 0;
    s.label = absl::StrFormat("epoch %d %s: %d replicas, %.1f MiB%s", m.epoch, m.state, m.moved_replicas, m.bytes / 1048576.0,
                              m.state == "committed" ? absl::StrFormat(", %.1f s", m.seconds) : m.error.empty() ? "" : " (" + m.error + ")");
    t.spans.push_back(std::move(s));
  }
  return plot::TimelineSvg(t);
}

}  // namespace

HttpResponse ServeDashboard(Coordinator& core, absl::string_view path, absl::string_view query) {
  const std::map<std::string, std::string> params = Params(query);
  if (path == "/" || path == "/index.html") return {200, "text/html; charset=utf-8", std::string(DashboardPage())};
  if (path == "/api/status") return Json(ProtoJson(core.Status()));
  if (path == "/api/events") {
    int64_t after = 0;
    if (auto it = params.find("after"); it != params.end() && (!absl::SimpleAtoi(it->second, &after) || after < 0)) {
      return Error(400, absl::StrCat("after: '", EchoValue(it->second, 64), "' is not a sequence number >= 0"));
    }
    nlohmann::json list = nlohmann::json::array();
    for (const admin::Event& e : core.WaitEvents(after, absl::ZeroDuration())) list.push_back(nlohmann::json::parse(ProtoJson(e)));
    return Json(list.dump());
  }
  if (path == "/api/migrations") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& m : core.MigrationHistory()) {
      list.push_back({{"epoch", m.epoch}, {"state", m.state}, {"published_unix_ms", m.published_ms}, {"started_unix_ms", m.started_ms},
                      {"ended_unix_ms", m.ended_ms}, {"moved_replicas", m.moved_replicas}, {"bytes", m.bytes},
                      {"done_bytes", m.done_bytes}, {"seconds", m.seconds}, {"why", m.why}, {"error", m.error}});
    }
    return Json(list.dump());
  }
  if (path == "/api/balancedness") {
    nlohmann::json samples = nlohmann::json::array();
    for (const auto& s : core.BalanceHistory()) samples.push_back({{"window", s.window}, {"unix_ms", s.unix_ms}, {"values", s.per_layer}});
    return Json(nlohmann::json{{"layers", core.Layers()}, {"samples", samples}}.dump());
  }
  if (path == "/api/plot/migrations.svg") return Svg(MigrationsSvg(core));
  absl::StatusOr<std::optional<int>> layer = LayerParam(core, params);
  if (!layer.ok()) return FromStatus(layer.status());
  if (path == "/api/plot/balancedness.svg") return Svg(BalanceSvg(core, *layer));
  if (path == "/api/placement") {
    absl::StatusOr<types::Placement> p = core.GetPlacement(*layer);
    if (!p.ok()) return FromStatus(p.status());
    return Json(ProtoJson(*p));
  }
  if (path == "/api/load" || path == "/api/plot/heatmap.svg") {
    if (!*layer) return Error(400, "layer: required (?layer=L, a MoE layer id)");
    absl::StatusOr<RankExpertLoad> load = LoadOf(core, **layer);
    if (!load.ok()) return FromStatus(load.status());
    if (path == "/api/load") {
      nlohmann::json rows = nlohmann::json::array();
      for (int r = 0; r < load->ranks; ++r) {
        rows.push_back(std::vector<double>(load->values.begin() + static_cast<size_t>(r) * load->experts,
                                           load->values.begin() + static_cast<size_t>(r + 1) * load->experts));
      }
      return Json(nlohmann::json{{"layer", load->layer}, {"ranks", load->ranks}, {"experts", load->experts},
                                 {"windows", load->windows}, {"balancedness", load->balancedness}, {"rank_expert", rows}}
                      .dump());
    }
    plot::Heatmap h{"heatmap", absl::StrFormat("Layer %d: smoothed pairs per step of each expert on each rank", load->layer), "rank",
                    "expert", load->ranks, load->experts, load->values, RankNames(core, load->ranks), "pairs/step"};
    return Svg(plot::HeatmapSvg(h));
  }
  return Error(404, absl::StrCat("not found: ", EchoValue(path, 128),
                                 " (the dashboard is at /, the metrics at /metrics, the API under /api: docs/coordinator.md)"));
}

}  // namespace switchyard::coordinator
