#include "worker/driver.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace switchyard::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::ceil(q * v.size())) - (q > 0 ? 1 : 0);
  return v[std::min(i, v.size() - 1)];
}

// Balancedness of pairs processed per rank, for each layer.
absl::StatusOr<std::vector<double>> MeasuredBalance(comm::Communicator& comm, const std::vector<LayerCounts>& window) {
  const int L = static_cast<int>(window.size()), R = comm.size();
  std::vector<int64_t> mine(L), all(static_cast<size_t>(L) * R);
  for (int l = 0; l < L; ++l) {
    for (int64_t x : window[l].processed) mine[l] += x;
  }
  SY_RETURN_IF_ERROR(comm.AllGather(mine.data(), L * sizeof(int64_t), all.data()));
  std::vector<double> out(L, 1.0);
  for (int l = 0; l < L; ++l) {
    double sum = 0, max = 0;
    for (int r = 0; r < R; ++r) {
      const double x = static_cast<double>(all[static_cast<size_t>(r) * L + l]);
      sum += x;
      max = std::max(max, x);
    }
    out[l] = max > 0 ? sum / R / max : 1.0;
  }
  return out;
}

void AddCounts(const std::vector<LayerCounts>& from, std::vector<LayerCounts>& to) {
  if (to.empty()) to = from;
  else {
    for (size_t l = 0; l < from.size(); ++l) {
      for (size_t e = 0; e < from[l].chosen.size(); ++e) {
        to[l].chosen[e] += from[l].chosen[e];
        to[l].processed[e] += from[l].processed[e];
      }
    }
  }
}

}  // namespace

uint64_t Fnv1a(const void* data, size_t bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

uint64_t TokenHash(uint64_t step, uint64_t global_token, const float* hidden, int64_t width) {
  uint64_t h = Fnv1a(hidden, static_cast<size_t>(width) * sizeof(float));
  h ^= (step * 0x9e3779b97f4a7c15ULL) ^ (global_token * 0xc2b2ae3d27d4eb4fULL);
  h = (h ^ (h >> 31)) * 0x7fb5d329728ea185ULL;
  return h ^ (h >> 27);
}

Driver::Driver(const ModelConfig& model, comm::Communicator& comm, const Workload& workload, WeightStore& weights,
               std::shared_ptr<const placement::RoutingTable> table, DriverOptions options)
    : model_(model),
      comm_(comm),
      workload_(workload),
      weights_(weights),
      options_(std::move(options)),
      layer_(model, comm, weights, std::move(table)) {}

absl::StatusOr<RunReport> Driver::Run() {
  const int R = comm_.size(), me = comm_.rank();
  const int64_t T = options_.tokens_per_rank, H = model_.hidden;
  const std::vector<int>& layers = weights_.layer_ids();
  const int L = static_cast<int>(layers.size());
  std::vector<float> h(T * H), out(T * H), logits(T * model_.num_experts);
  std::vector<double> step_ms;
  uint64_t checksum = 0;
  // Counts of the whole run, of the current log window and of the current load window.
  std::vector<LayerCounts> whole, log_window, load_window;
  int64_t load_window_start = 0;
  std::vector<double> window_ms;
  layer_.counters().Reset();
  layer_.ResetTimes();
  for (int step = 0; step < options_.steps; ++step) {
    const auto start = Clock::now();
    workload_.Hidden(step, me * T, T, h.data());
    for (int li = 0; li < L; ++li) {
      workload_.Logits(step, li, me * T, T, logits.data());
      SY_RETURN_IF_ERROR(layer_.Forward(layers[li], h.data(), logits.data(), T, out.data(), static_cast<uint64_t>(step)));
      for (int64_t i = 0; i < T * H; ++i) h[i] = h[i] + out[i];
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    for (int64_t t = 0; t < T; ++t) checksum += TokenHash(step, static_cast<uint64_t>(me * T + t), &h[t * H], H);
    SY_RETURN_IF_ERROR(comm_.AllReduce(&ms, 1, comm::ReduceOp::kMax));  // the step waits for the slowest rank
    step_ms.push_back(ms);
    window_ms.push_back(ms);
    const std::vector<LayerCounts> counts = layer_.counters().TakeWindow();
    AddCounts(counts, whole);
    AddCounts(counts, log_window);
    AddCounts(counts, load_window);
    if (options_.window_steps > 0 && (step + 1 - load_window_start) == options_.window_steps) {
      if (options_.on_window) options_.on_window({load_window_start, step + 1, 0, std::move(load_window)});
      load_window.clear();
      load_window_start = step + 1;
    }
    if (options_.on_step) options_.on_step(step + 1, 0);
    const bool log_now = options_.log_every > 0 && ((step + 1) % options_.log_every == 0 || step + 1 == options_.steps);
    if (log_now) {
      SY_ASSIGN_OR_RETURN(const std::vector<double> balance, MeasuredBalance(comm_, log_window));
      log_window.clear();
      if (me == 0 && options_.log) {
        double total_ms = 0;
        for (double x : window_ms) total_ms += x;
        options_.log(absl::StrFormat(
            "step %4d  tokens/s %9.0f  step ms p50 %7.2f p99 %7.2f  worst-layer balancedness %.3f", step + 1,
            R * T * window_ms.size() / (total_ms / 1e3), Percentile(window_ms, 0.5), Percentile(window_ms, 0.99),
            *std::min_element(balance.begin(), balance.end())));
      }
      window_ms.clear();
    }
  }

  RunReport report;
  report.ranks = R;
  report.steps = options_.steps;
  report.top_k = model_.top_k;
  report.tokens_per_rank = T;
  double total_ms = 0;
  for (double x : step_ms) total_ms += x;
  report.tokens_per_s = total_ms > 0 ? R * T * options_.steps / (total_ms / 1e3) : 0;
  report.step_ms_p50 = Percentile(step_ms, 0.5);
  report.step_ms_p90 = Percentile(step_ms, 0.9);
  report.step_ms_p99 = Percentile(step_ms, 0.99);
  report.step_ms_max = Percentile(step_ms, 1.0);
  const PhaseTimes& t = layer_.times();
  std::vector<double> phases = {t.gate, t.dispatch, t.ffn, t.combine};
  SY_RETURN_IF_ERROR(comm_.AllReduce(phases.data(), 4, comm::ReduceOp::kMax));
  const double per_step = options_.steps > 0 ? 1e3 / options_.steps : 0;
  report.phase_ms_gate = phases[0] * per_step;
  report.phase_ms_dispatch = phases[1] * per_step;
  report.phase_ms_ffn = phases[2] * per_step;
  report.phase_ms_combine = phases[3] * per_step;
  // Checksum: the order-free sum over ranks (unsigned, wrapping).
  std::vector<uint64_t> sums(R);
  SY_RETURN_IF_ERROR(comm_.AllGather(&checksum, sizeof checksum, sums.data()));
  report.output_checksum = 0;
  for (uint64_t s : sums) report.output_checksum += s;
  // Per-rank processed totals (measured balancedness) and per-expert sums over ranks.
  SY_ASSIGN_OR_RETURN(const std::vector<double> balance, MeasuredBalance(comm_, whole));
  double rows = 0;
  for (int li = 0; li < L; ++li) {
    for (int64_t x : whole[li].processed) rows += static_cast<double>(x);
  }
  double flops = rows * model_.ExpertShape().FlopsPerRow();
  if (model_.shared_ffn > 0) flops += static_cast<double>(T) * options_.steps * L * model_.SharedShape().FlopsPerRow();
  SY_RETURN_IF_ERROR(comm_.AllReduce(&flops, 1, comm::ReduceOp::kMax));
  report.ffn_flops = flops / options_.steps;
  report.dispatch_bytes = report.combine_bytes = static_cast<double>(T) * model_.top_k * H * sizeof(float) * L;
  report.tokens_conserved = true;
  for (int li = 0; li < L; ++li) {
    std::vector<int64_t> p = whole[li].processed, c = whole[li].chosen;
    SY_RETURN_IF_ERROR(comm_.AllReduce(p.data(), model_.num_experts, comm::ReduceOp::kSum));
    SY_RETURN_IF_ERROR(comm_.AllReduce(c.data(), model_.num_experts, comm::ReduceOp::kSum));
    report.tokens_conserved = report.tokens_conserved && p == c;
    report.layers.push_back({layers[li], balance[li], p});
  }
  return report;
}

std::string RunReport::ToJson() const {
  nlohmann::json layers_json = nlohmann::json::array();
  for (const LayerReport& l : layers) {
    layers_json.push_back({{"layer", l.layer}, {"balancedness", l.balancedness}, {"expert_tokens", l.expert_tokens}});
  }
  nlohmann::json j = {{"tokens_per_s", tokens_per_s},
                      {"step_ms", {{"p50", step_ms_p50}, {"p90", step_ms_p90}, {"p99", step_ms_p99}, {"max", step_ms_max}}},
                      {"phase_ms",
                       {{"gate", phase_ms_gate}, {"dispatch", phase_ms_dispatch}, {"ffn", phase_ms_ffn}, {"combine", phase_ms_combine}}},
                      {"layers", layers_json},
                      {"work_per_step", {{"dispatch_bytes", dispatch_bytes}, {"combine_bytes", combine_bytes}, {"ffn_flops", ffn_flops}}},
                      {"output_checksum", absl::StrFormat("%016x", output_checksum)},
                      {"tokens_conserved", tokens_conserved},
                      {"ranks", ranks},
                      {"steps", steps},
                      {"tokens_per_rank", tokens_per_rank},
                      {"top_k", top_k},
                      {"model", model},
                      {"backend", backend},
                      {"placement", placement_policy},
                      {"workload", workload}};
  return j.dump(1) + "\n";
}

}  // namespace switchyard::worker
