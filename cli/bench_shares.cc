#include "cli/bench_shares.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "cli/bench_report.h"
#include "common/status.h"
#include "placement/io/load_csv.h"
#include "placement/planner.h"
#include "placement/routing.h"
#include "placement/step_shares.h"

namespace switchyard::cli {
namespace {

constexpr int kRanks = 32, kSlots = 9, kLayers = 8, kSteps = 120, kBurstBegin = 40, kBurstEnd = 80;
constexpr int kTokensPerRank = 256, kTopK = 8, kBurstExperts = 3;
constexpr double kBurstShare = 0.35;

// The value a fraction q of the samples reach or exceed (q = 0.99: the 1st percentile).
double Reached(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>((1 - q) * static_cast<double>(v.size()));
  return v[std::min(i, v.size() - 1)];
}

double Balance(const std::vector<int64_t>& loads) {
  int64_t sum = 0, max = 0;
  for (int64_t x : loads) {
    sum += x;
    max = std::max(max, x);
  }
  return max > 0 ? static_cast<double>(sum) / static_cast<double>(loads.size()) / static_cast<double>(max) : 1.0;
}

struct Samples {
  std::vector<double> epoch, step, epoch_burst, step_burst;
  double solve_us = 0;
  int solves = 0;
};

absl::Status Profile(const std::string& profile, BenchReport& report) {
  SY_ASSIGN_OR_RETURN(placement::LoadMatrix trace,
                      placement::ReadLoadCsv(absl::StrCat(TracesDir(), "/deepseek_v3_sglang_", profile, ".csv")));
  const std::string file = absl::StrCat(TracesDir(), "/deepseek_v3_sglang_", profile, ".csv");
  if (trace.values.size() < static_cast<size_t>(kLayers)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", trace.values.size(), " layers, the benchmark needs ", kLayers));
  }
  trace.layer_ids.resize(kLayers);
  trace.values.resize(kLayers);
  for (int li = 0; li < kLayers; ++li) {
    double total = 0;
    for (double x : trace.values[li]) total += x;
    if (trace.values[li].size() < 16 || !(total > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": layer ", trace.layer_ids[li], " has ", trace.values[li].size(),
                                                     " experts and ", total, " tokens; the benchmark needs >= 16 experts and "
                                                     "some load"));
    }
  }
  SY_ASSIGN_OR_RETURN(const placement::Topology topo, placement::Topology::Create(kRanks, 1, kSlots));
  SY_ASSIGN_OR_RETURN(auto eplb, placement::CreatePlanner("eplb"));
  const int E = static_cast<int>(trace.values[0].size());
  // The burst's experts: 3 of each layer's coldest half. The burst's load: theirs at 35%.
  placement::LoadMatrix burst_load = trace;
  std::vector<std::vector<int>> burst(kLayers);
  for (int li = 0; li < kLayers; ++li) {
    std::vector<int> order(E);
    for (int e = 0; e < E; ++e) order[e] = e;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return trace.values[li][a] < trace.values[li][b]; });
    for (int i = 0; i < kBurstExperts; ++i) burst[li].push_back(order[(i * 37 + 11) % (E / 2)]);
    double total = 0;
    for (double x : trace.values[li]) total += x;
    for (double& x : burst_load.values[li]) x *= (1 - kBurstShare);
    for (int e : burst[li]) burst_load.values[li][e] += total * kBurstShare / kBurstExperts;
  }
  // The replicas in force: planned on the phase's load (the burst's after the rebalancer's
  // re-plan); both modes route over the same ones.
  SY_ASSIGN_OR_RETURN(const placement::Placement normal_placed, eplb->Plan({topo, trace, nullptr, {}, {}}));
  SY_ASSIGN_OR_RETURN(const placement::Placement burst_placed, eplb->Plan({topo, burst_load, nullptr, {}, {}}));
  SY_ASSIGN_OR_RETURN(const placement::RoutingTable normal_table, placement::RoutingTable::Build(normal_placed, 0));
  SY_ASSIGN_OR_RETURN(const placement::RoutingTable burst_table, placement::RoutingTable::Build(burst_placed, 1));
  std::mt19937_64 rng(42);
  Samples s;
  for (int li = 0; li < kLayers; ++li) {
    const placement::StepShareSolver normal_solver(normal_placed.layers[li], topo, E);
    const placement::StepShareSolver burst_solver(burst_placed.layers[li], topo, E);
    std::discrete_distribution<int> draw_normal(trace.values[li].begin(), trace.values[li].end());
    std::discrete_distribution<int> draw_burst(burst_load.values[li].begin(), burst_load.values[li].end());
    std::vector<int32_t> source_counts(static_cast<size_t>(kRanks) * E);
    std::vector<int64_t> counts(E), epoch_loads(kRanks), step_loads;
    for (int step = 0; step < kSteps; ++step) {
      const bool in_burst = step >= kBurstBegin && step < kBurstEnd;
      auto& draw = in_burst ? draw_burst : draw_normal;
      const placement::RoutingTable& table = in_burst ? burst_table : normal_table;
      const placement::StepShareSolver& solver = in_burst ? burst_solver : normal_solver;
      std::fill(source_counts.begin(), source_counts.end(), 0);
      std::fill(counts.begin(), counts.end(), 0);
      std::fill(epoch_loads.begin(), epoch_loads.end(), 0);
      for (int src = 0; src < kRanks; ++src) {
        for (int p = 0; p < kTokensPerRank * kTopK; ++p) {
          const int e = draw(rng);
          ++source_counts[static_cast<size_t>(src) * E + e];
          ++counts[e];
          const placement::ReplicaLocation where =
              table.Route(li, e, src, placement::PairDraw(step, li, src, static_cast<uint64_t>(p)));
          ++epoch_loads[where.rank];
        }
      }
      std::vector<int64_t> quota(solver.num_replicas());
      const auto start = std::chrono::steady_clock::now();
      SY_RETURN_IF_ERROR(solver.Solve(counts, absl::MakeSpan(quota)));
      s.solve_us += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
      ++s.solves;
      step_loads = solver.RankLoads(quota);
      s.epoch.push_back(Balance(epoch_loads));
      s.step.push_back(Balance(step_loads));
      if (in_burst) {
        s.epoch_burst.push_back(s.epoch.back());
        s.step_burst.push_back(s.step.back());
      }
    }
  }
  auto add = [&](const std::string& name, const std::vector<double>& step, const std::vector<double>& epoch, double q,
                 double target) {
    const double achieved = Reached(step, q), baseline = Reached(epoch, q);
    report.Add({{"name", absl::StrCat("shares/", profile, "/", name)},
                {"achieved", achieved},
                {"unit", "balancedness"},
                {"baseline", baseline},
                {"baseline_name", "epoch shares"},
                {"ratio", achieved / baseline},
                {"target", absl::StrCat(">= ", target)},
                {"met", achieved >= target}});
  };
  add("p50", s.step, s.epoch, 0.5, 0.97);
  add("p99", s.step, s.epoch, 0.99, 0.93);
  add("burst_p50", s.step_burst, s.epoch_burst, 0.5, 0.97);
  add("burst_p99", s.step_burst, s.epoch_burst, 0.99, 0.93);
  const double us = s.solve_us / std::max(1, s.solves);
  report.Add({{"name", absl::StrCat("shares/", profile, "/solve_32x9")},
              {"achieved", us},
              {"unit", "us per layer"},
              {"target", "<= 100"},
              {"met", us <= 100}});
  return absl::OkStatus();
}

}  // namespace

absl::Status RunSharesBenchmark() {
  BenchReport report;
  for (const char* profile : {"decode_in1000out1000", "prefill_in1024"}) SY_RETURN_IF_ERROR(Profile(profile, report));
  report.Print(false);
  return absl::OkStatus();
}

}  // namespace switchyard::cli
