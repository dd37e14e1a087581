// Google Benchmark of the planners on the shared DeepSeek-V3 traces (58 layers x 256
// experts): from scratch and from the current placement, per policy and cluster shape.
// Run: build/tests/placement/planner_benchmark [--benchmark_filter=...]
// The traces are read from the source tree (data/traces).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "placement/io/load_csv.h"
#include "placement/planner.h"

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

}  // namespace
}  // namespace switchyard::placement

BENCHMARK_MAIN();
