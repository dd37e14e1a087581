// Google Benchmark of the planners on the shared DeepSeek-V3 traces (58 layers x 256
// experts): from scratch and from the current placement, per policy and cluster shape; and of
// the per-step share solver (placement/step_shares.h) on one layer's step counts.
// Run: build/tests/placement/planner_benchmark [--benchmark_filter=...]
// The traces are read from the source tree (data/traces).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <string>

#include "placement/io/load_csv.h"
#include "placement/planner.h"
#include "placement/step_shares.h"

namespace switchyard::placement {
namespace {

std::string TracePath(const std::string& profile) {
  return std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_" + profile + ".csv";
}

const LoadMatrix& Trace(const std::string& profile) {
  static auto* cache = new std::map<std::string, LoadMatrix>();
  auto it = cache->find(profile);
  if (it == cache->end()) {
    auto load = ReadLoadCsv(TracePath(profile));
    if (!load.ok()) {
      std::fprintf(stderr, "%s\n", std::string(load.status().message()).c_str());
      std::exit(1);
    }
    it = cache->emplace(profile, *std::move(load)).first;
  }
  return it->second;
}

// Args: ranks, slots per rank, from_current (0/1).
void BM_Plan(benchmark::State& state, const char* policy) {
  const auto topo = *Topology::Create(static_cast<int>(state.range(0)), 1,
                                      static_cast<int>(state.range(1)));
  const bool from_current = state.range(2) != 0;
  const LoadMatrix& load = Trace("decode_in1000out1000");
  auto planner = *CreatePlanner(policy);
  std::optional<Placement> current;
  if (from_current) {
    auto base = *CreatePlanner("incremental");
    current = *base->Plan({topo, Trace("prefill_in1024"), nullptr, {}, {}});
  }
  const PlanRequest request{topo, load, current ? &*current : nullptr, {}, {}};
  for (auto _ : state) {
    auto placement = planner->Plan(request);
    if (!placement.ok()) state.SkipWithError(std::string(placement.status().message()).c_str());
    benchmark::DoNotOptimize(placement);
  }
}

BENCHMARK_CAPTURE(BM_Plan, incremental, "incremental")
    ->Args({64, 5, 0})
    ->Args({64, 5, 1})
    ->Args({32, 9, 0})
    ->Args({32, 9, 1})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Plan, eplb, "eplb")->Args({64, 5, 0})->Args({32, 9, 0})->Unit(benchmark::kMillisecond);

// Args: ranks, slots per rank, tokens per rank per step. One layer of an EPLB placement
// planned on the decode trace; 16 steps of counts drawn around its load (Poisson, top-8), with
// a burst (3 experts at 35% of the pairs) in every other step. Solve and every rank's
// Transport are what a rank computes per layer per step; only Solve is timed here, Transport
// for one source in BM_StepRoutes.
struct StepCase {
  Topology topo;
  LayerPlacement layer;
  std::vector<std::vector<int64_t>> counts;
};

const StepCase& MakeStepCase(int ranks, int slots, int64_t tokens_per_rank) {
  static auto* cache = new std::map<std::tuple<int, int, int64_t>, StepCase>();
  const auto key = std::make_tuple(ranks, slots, tokens_per_rank);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  const LoadMatrix& trace = Trace("decode_in1000out1000");
  const LoadMatrix one{{trace.layer_ids[0]}, {trace.values[0]}};
  const auto topo = *Topology::Create(ranks, 1, slots);
  const Placement p = *(*CreatePlanner("eplb"))->Plan({topo, one, nullptr, {}, {}});
  StepCase c{topo, p.layers[0], {}};
  const int E = static_cast<int>(one.values[0].size());
  double total = 0;
  for (double x : one.values[0]) total += x;
  const double pairs = static_cast<double>(ranks) * static_cast<double>(tokens_per_rank) * 8;
  std::mt19937_64 rng(1);
  for (int step = 0; step < 16; ++step) {
    std::vector<int64_t> counts(E);
    for (int e = 0; e < E; ++e) {
      double mean = pairs * one.values[0][e] / total;
      if (step % 2 == 1) mean = e < 3 ? pairs * 0.35 / 3 : mean * 0.65;
      counts[e] = std::poisson_distribution<int64_t>(std::max(mean, 1e-9))(rng);
    }
    c.counts.push_back(std::move(counts));
  }
  return cache->emplace(key, std::move(c)).first->second;
}

void BM_StepShares(benchmark::State& state) {
  const StepCase& c = MakeStepCase(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)), state.range(2));
  const StepShareSolver solver(c.layer, c.topo, static_cast<int>(c.counts[0].size()));
  std::vector<int64_t> quota(solver.num_replicas());
  size_t step = 0;
  for (auto _ : state) {
    const absl::Status solved = solver.Solve(c.counts[step++ % c.counts.size()], absl::MakeSpan(quota));
    if (!solved.ok()) state.SkipWithError(std::string(solved.message()).c_str());
    benchmark::DoNotOptimize(quota.data());
  }
  state.counters["replicas"] = solver.num_replicas();
}
BENCHMARK(BM_StepShares)->Args({32, 9, 256})->Args({4096, 2, 256})->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace switchyard::placement

BENCHMARK_MAIN();
