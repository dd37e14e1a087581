#include "worker/driver.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/hash.h"
#include "common/stats.h"
#include "common/status.h"
#include "placement/io/placement_json.h"

namespace switchyard::worker {
namespace {

using Clock = std::chrono::steady_clock;

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

absl::Status WriteStepLog(const std::string& prefix, int64_t origin, const RunProgress& progress) {
  return WriteFileAtomically(absl::StrCat(prefix, ".rank", origin, ".csv"),
                             "step,epoch,wall_ms,busy_ms,comm_ms,migration_ms,migrating,origin,output_hash,done_unix_s,pairs\n" +
                                 progress.step_log);
}

uint64_t HashBytes(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = kGoldenGamma ^ bytes;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  for (; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h ^ (h >> 29);
}

uint64_t TokenHash(uint64_t step, uint64_t global_token, const float* hidden, int64_t width) {
  uint64_t h = Fnv1a(hidden, static_cast<size_t>(width) * sizeof(float));
  h ^= (step * kGoldenGamma) ^ (global_token * 0xc2b2ae3d27d4eb4fULL);
  h = (h ^ (h >> 31)) * 0x7fb5d329728ea185ULL;
  return h ^ (h >> 27);
}

Driver::Driver(const model::ModelConfig& model, comm::Communicator& comm, const Workload& workload, WeightStore& weights,
               std::shared_ptr<const placement::RoutingTable> table, DriverOptions options)
    : Driver(model, comm, workload, weights, std::move(table), options, CreateCpuDevice(model, options.cpu_threads)) {}

Driver::Driver(const model::ModelConfig& model, comm::Communicator& comm, const Workload& workload, WeightStore& weights,
               std::shared_ptr<const placement::RoutingTable> table, DriverOptions options,
               std::unique_ptr<LayerDevice> device)
    : model_(model),
      comm_(comm),
      workload_(workload),
      weights_(weights),
      options_(std::move(options)),
      layer_(model, comm, weights, std::move(table), std::move(device)) {}

absl::StatusOr<RunReport> Driver::Run(RunProgress* progress) {
  RunProgress local;
  RunProgress& p = progress != nullptr ? *progress : local;
  const int R = comm_.size(), me = comm_.rank();
  const int64_t origin = options_.origin >= 0 ? options_.origin : me;
  const int64_t T = options_.tokens_per_rank, H = model_.hidden;
  const std::vector<int>& layers = weights_.layer_ids();
  const int L = static_cast<int>(layers.size());
  EpochManager* epochs = epochs_;
  std::vector<float> h(T * H), out(T * H), logits(T * model_.num_experts);
  // Where the layers read and write: the host vectors, or device copies of them.
  LayerDevice& device = layer_.device();
  const bool on_host = device.memory() == comm::MemoryKind::kHost;
  float *dev_h = h.data(), *dev_out = out.data(), *dev_logits = logits.data();
  if (!on_host) {
    SY_ASSIGN_OR_RETURN(void* a, device.Allocate(h.size() * sizeof(float)));
    SY_ASSIGN_OR_RETURN(void* b, device.Allocate(out.size() * sizeof(float)));
    SY_ASSIGN_OR_RETURN(void* c, device.Allocate(logits.size() * sizeof(float)));
    dev_h = static_cast<float*>(a), dev_out = static_cast<float*>(b), dev_logits = static_cast<float*>(c);
  }
  if (p.step_balance.empty()) p.step_balance.resize(L);
  // Counts of the current load window (this call's); the log lines' balance comes from the
  // step exchange's rows (log_pairs).
  std::vector<LayerCounts> load_window;
  const int from = std::max(0, p.resume_step);
  p.next_step = std::max(p.next_step, from);  // a newcomer: the steps before it are not its own
  if (p.first_step < 0) p.first_step = from;
  int64_t load_window_start = from;
  std::vector<double> window_ms, load_window_ms;  // step wall times of the log / load window
  std::vector<double> log_pairs(static_cast<size_t>(L) * R, 0.0);  // per rank, per layer, this log window
  // The per-step exchange: kFixed figures, the vote, then per layer: pairs computed, busy ms,
  // communication ms.
  enum { kWall, kBusy, kComm, kMigration, kStop, kRegroup, kFixed };
  const int kPairs = kFixed + StepVote::kSize, kLayerBusy = kPairs + L, kLayerComm = kLayerBusy + L, kChosen = kLayerComm + L;
  const int width = kChosen + L;
  std::vector<double> row(width), rows(static_cast<size_t>(width) * R);
  double boundary_cpu = 0;  // migration work done by this thread at the last boundary
  layer_.counters().Reset();
  layer_.ResetTimes();
  if (epochs) epochs->TakeTransferCpuSeconds();
  for (int step = from; step < options_.steps; ++step) {
    const bool replay = step < p.next_step;  // done here before a regroup: run it again for the others, count nothing
    const bool migrating = epochs != nullptr && epochs->migrating();
    const double busy0 = layer_.times().busy, comm0 = layer_.times().comm;
    const auto start = Clock::now();
    workload_.Hidden(step, origin * T, T, h.data());
    if (!on_host) SY_RETURN_IF_ERROR(device.Upload(dev_h, h.data(), h.size() * sizeof(float)));
    for (int li = 0; li < L; ++li) {
      const double layer_busy0 = layer_.times().busy, layer_comm0 = layer_.times().comm;
      workload_.Logits(step, li, origin * T, T, logits.data());
      if (!on_host) SY_RETURN_IF_ERROR(device.Upload(dev_logits, logits.data(), logits.size() * sizeof(float)));
      SY_RETURN_IF_ERROR(layer_.Forward(layers[li], dev_h, dev_logits, T, dev_out, static_cast<uint64_t>(step)));
      SY_RETURN_IF_ERROR(device.Add(dev_h, dev_out, T * H));
      row[kLayerBusy + li] = 1e3 * (layer_.times().busy - layer_busy0);
      row[kLayerComm + li] = 1e3 * (layer_.times().comm - layer_comm0);
    }
    if (!on_host) SY_RETURN_IF_ERROR(device.Download(h.data(), dev_h, h.size() * sizeof(float)));
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    uint64_t step_hash = 0;
    for (int64_t t = 0; t < T; ++t) step_hash += TokenHash(step, static_cast<uint64_t>(origin * T + t), &h[t * H], H);
    const std::vector<LayerCounts> counts = layer_.counters().TakeWindow();

    // The boundary: orders in, budget out, one exchange, the same decision everywhere.
    const double boundary0 = ThreadCpuSeconds();
    StepVote vote;
    if (epochs) {
      if (poll_orders_) {
        if (std::optional<control::Orders> orders = poll_orders_()) epochs->Offer(*orders);
      }
      epochs->GrantBudget();
      vote = epochs->Vote();
    }
    row[kWall] = ms;
    row[kBusy] = 1e3 * (layer_.times().busy - busy0);
    row[kComm] = 1e3 * (layer_.times().comm - comm0);
    row[kMigration] = epochs ? 1e3 * (epochs->TakeTransferCpuSeconds() + boundary_cpu + ThreadCpuSeconds() - boundary0) : 0;
    row[kStop] = options_.stop_requested && options_.stop_requested() ? 1 : 0;
    row[kRegroup] = options_.regroup_requested && options_.regroup_requested() ? 1 : 0;
    const double v[StepVote::kSize] = {vote.epoch,  vote.offer_epoch, vote.offer_hash, vote.ready,
                                       vote.failed, vote.completed,   vote.stalled,    vote.pieces};
    std::copy(v, v + StepVote::kSize, row.begin() + kFixed);
    for (int li = 0; li < L; ++li) {
      int64_t n = 0, chosen = 0;
      for (int64_t x : counts[li].processed) n += x;
      for (int64_t x : counts[li].chosen) chosen += x;
      row[kPairs + li] = static_cast<double>(n);
      row[kChosen + li] = static_cast<double>(chosen);
    }
    SY_RETURN_IF_ERROR(comm_.AllGather(row.data(), width * static_cast<int64_t>(sizeof(double)), rows.data()));
    // Each layer's collectives make every rank wait for the slowest one: per layer, the
    // busiest rank's busy time plus the least communication time of any rank; summed over
    // layers, plus the most migration work any rank did this step.
    double wall = 0, migration = 0;
    bool stop = false, regroup = false;  // a rank asked to stop / regroup: every rank ends after this step
    std::vector<double> layer_busy(L, 0.0), layer_comm(L, std::numeric_limits<double>::infinity());
    std::vector<StepVote> votes(R);
    for (int r = 0; r < R; ++r) {
      const double* x = &rows[static_cast<size_t>(r) * width];
      wall = std::max(wall, x[kWall]);  // the step waits for the slowest rank
      migration = std::max(migration, x[kMigration]);
      stop = stop || x[kStop] > 0;
      regroup = regroup || x[kRegroup] > 0;
      for (int li = 0; li < L; ++li) {
        layer_busy[li] = std::max(layer_busy[li], x[kLayerBusy + li]);
        layer_comm[li] = std::min(layer_comm[li], x[kLayerComm + li]);
        log_pairs[static_cast<size_t>(r) * L + li] += x[kPairs + li];
      }
      const double* y = x + kFixed;
      votes[r] = {y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]};
    }
    double critical = migration;
    for (int li = 0; li < L; ++li) critical += layer_busy[li] + layer_comm[li];
    for (int li = 0; li < L; ++li) {
      double processed = 0, chosen = 0;
      for (int r = 0; r < R; ++r) {
        processed += rows[static_cast<size_t>(r) * width + kPairs + li];
        chosen += rows[static_cast<size_t>(r) * width + kChosen + li];
      }
      p.conserved = p.conserved && processed == chosen;
    }
    if (!replay) {  // the step is done on this rank: count it
      double worst = 1;
      for (int li = 0; li < L; ++li) {
        double sum = 0, max = 0;
        for (int r = 0; r < R; ++r) {
          const double x = rows[static_cast<size_t>(r) * width + kPairs + li];
          sum += x;
          max = std::max(max, x);
        }
        const double balance = max > 0 ? sum / R / max : 1.0;
        p.step_balance[li].push_back(balance);
        worst = std::min(worst, balance);
      }
      p.checksum += step_hash;
      AddCounts(counts, p.whole);
      AddCounts(counts, load_window);
      p.step_ms.push_back(wall);
      p.critical_ms.push_back(critical);
      p.migration_ms.push_back(migration);
      p.migrating_step.push_back(migrating);
      p.worst_balancedness_by_step.push_back({step, worst});
      window_ms.push_back(wall);
      load_window_ms.push_back(wall);
      if (!options_.step_log.empty()) {
        int64_t my_pairs = 0;
        for (int li = 0; li < L; ++li) my_pairs += static_cast<int64_t>(row[kPairs + li]);
        absl::StrAppendFormat(&p.step_log, "%d,%d,%.3f,%.3f,%.3f,%.3f,%d,%d,%016x,%.3f,%d\n", step,
                              epochs ? static_cast<int64_t>(vote.epoch) : layer_.routing_table().epoch(), ms,
                              row[kBusy], row[kComm], row[kMigration], migrating ? 1 : 0, origin, step_hash,
                              absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()), my_pairs);
      }
      p.next_step = step + 1;
    }
    const double decide0 = ThreadCpuSeconds();
    if (epochs) SY_RETURN_IF_ERROR(epochs->Decide(step + 1, votes));
    boundary_cpu = epochs ? ThreadCpuSeconds() - decide0 : 0;

    const bool last = stop || step + 1 == options_.steps;
    const int64_t epoch_now = epochs ? epochs->epoch() : layer_.routing_table().epoch();
    if (options_.window_steps > 0 && ((step + 1 - load_window_start) == options_.window_steps || stop || regroup)) {
      if (options_.on_window && !load_window.empty()) {
        std::vector<std::pair<double, double>> window_balance;
        for (int li = 0; li < L; ++li) {
          const std::vector<double>& all = p.step_balance[li];
          const size_t n = std::min<size_t>(all.size(), static_cast<size_t>(step + 1 - load_window_start));
          const std::vector<double> recent(all.end() - n, all.end());
          window_balance.push_back({Percentile(recent, 0.5), Percentile(recent, 0.01)});
        }
        LoadWindow w{load_window_start, step + 1, epoch_now, std::move(load_window), std::move(window_balance), load_window_ms};
        const std::vector<int64_t> sent = layer_.TakeSentBytes();
        const int per_node = options_.ranks_per_node > 0 ? options_.ranks_per_node : R;
        for (int r = 0; r < R; ++r) (r / per_node == me / per_node ? w.alltoall_bytes_intra_node : w.alltoall_bytes_inter_node) += sent[r];
        options_.on_window(std::move(w));
      }
      load_window.clear();
      load_window_ms.clear();
      load_window_start = step + 1;
    }
    if (options_.on_step) options_.on_step(step + 1, epoch_now);
    const bool log_now = options_.log_every > 0 && ((step + 1) % options_.log_every == 0 || last);
    if (log_now) {
      double worst = 1;
      for (int li = 0; li < L; ++li) {
        double sum = 0, max = 0;
        for (int r = 0; r < R; ++r) {
          sum += log_pairs[static_cast<size_t>(r) * L + li];
          max = std::max(max, log_pairs[static_cast<size_t>(r) * L + li]);
        }
        worst = std::min(worst, max > 0 ? sum / R / max : 1.0);
      }
      std::fill(log_pairs.begin(), log_pairs.end(), 0.0);
      if (me == 0 && options_.log && !window_ms.empty()) {
        double total_ms = 0;
        for (double x : window_ms) total_ms += x;
        options_.log(absl::StrFormat(
            "step %4d  epoch %lld  tokens/s %9.0f  step ms p50 %7.2f p99 %7.2f  worst-layer balancedness %.3f", step + 1,
            static_cast<long long>(epoch_now), R * T * window_ms.size() / (total_ms / 1e3), Percentile(window_ms, 0.5),
            Percentile(window_ms, 0.99), worst));
      }
      window_ms.clear();
    }
    if (stop) {
      p.stopped = true;
      if (me == 0 && options_.log) options_.log(absl::StrFormat("stopping after step %d: a rank was asked to stop", step + 1));
      break;
    }
    if (regroup && step + 1 < options_.steps) {
      if (epochs) {
        for (const MigrationRecord& m : epochs->records()) p.migrations.push_back(m);
      }
      return absl::AbortedError(kRegroupMessage);
    }
  }

  RunReport report;
  const int steps_run = static_cast<int>(p.step_ms.size());
  const std::vector<double>& step_ms = p.step_ms;
  const std::vector<double>& critical_ms = p.critical_ms;
  const std::vector<double>& migration_ms = p.migration_ms;
  std::vector<bool> migrating_step = p.migrating_step;
  report.worst_balancedness_by_step = p.worst_balancedness_by_step;
  report.ranks = R;
  report.steps = steps_run;
  report.stopped_early = p.stopped;
  report.top_k = model_.top_k;
  report.experts = model_.num_experts;
  report.tokens_per_rank = T;
  double total_ms = 0;
  for (double x : step_ms) total_ms += x;
  report.tokens_per_s = total_ms > 0 ? R * T * steps_run / (total_ms / 1e3) : 0;
  report.step_ms_p50 = Percentile(step_ms, 0.5);
  report.step_ms_p90 = Percentile(step_ms, 0.9);
  report.step_ms_p99 = Percentile(step_ms, 0.99);
  report.step_ms_max = Percentile(step_ms, 1.0);
  // Critical path; a migration's steps run from its start to its first step after the switch.
  report.migrations = p.migrations;
  if (epochs) {
    for (const MigrationRecord& m : epochs->records()) report.migrations.push_back(m);
    if (const MigrationRecord* m = epochs->in_flight()) report.migrations.push_back(*m);  // unfinished at the end
    if (epochs->migrating()) {
      for (int s = steps_run - 1; s >= 0 && !migrating_step[s]; --s) migrating_step[s] = true;
    }
  }
  for (const MigrationRecord& m : report.migrations) {  // index: step - first_step
    const int64_t end = m.commit_step >= 0 ? m.commit_step : m.abort_step >= 0 ? m.abort_step : m.start_step;
    for (int64_t s = std::max<int64_t>(m.start_step, p.first_step); s <= end && s - p.first_step < steps_run; ++s) {
      migrating_step[s - p.first_step] = true;
    }
  }
  double critical_total = 0;
  std::vector<double> steady, moving, moving_work;
  for (int s = 0; s < steps_run; ++s) {
    critical_total += critical_ms[s];
    (migrating_step[s] ? moving : steady).push_back(critical_ms[s]);
    if (migrating_step[s]) moving_work.push_back(migration_ms[s]);
  }
  report.critical_tokens_per_s = critical_total > 0 ? R * T * steps_run / (critical_total / 1e3) : 0;
  report.critical_step_ms_p50 = Percentile(critical_ms, 0.5);
  report.critical_step_ms_p99 = Percentile(critical_ms, 0.99);
  report.critical_steady_ms_p99 = Percentile(steady, 0.99);
  report.critical_migration_ms_p99 = Percentile(moving, 0.99);
  report.critical_migration_work_ms_p99 = Percentile(moving_work, 0.99);
  report.migration_steps = static_cast<int>(moving.size());
  report.critical_step_ms = critical_ms;
  // Each rank's phases (the report's per-rank view), and their maxima (the slowest rank's).
  const PhaseTimes& t = layer_.times();
  constexpr int kPhases = 6;
  const double mine[kPhases] = {t.gate, t.dispatch, t.ffn, t.combine, t.busy, t.comm};
  std::vector<double> all(static_cast<size_t>(kPhases) * R);
  SY_RETURN_IF_ERROR(comm_.AllGather(mine, kPhases * static_cast<int64_t>(sizeof(double)), all.data()));
  const double per_step = steps_run > 0 ? 1e3 / steps_run : 0;
  for (int r = 0; r < R; ++r) {
    const double* x = &all[static_cast<size_t>(r) * kPhases];
    report.rank_phase_ms.push_back({x[0] * per_step, x[1] * per_step, x[2] * per_step, x[3] * per_step, x[4] * per_step, x[5] * per_step});
    report.phase_ms_gate = std::max(report.phase_ms_gate, x[0] * per_step);
    report.phase_ms_dispatch = std::max(report.phase_ms_dispatch, x[1] * per_step);
    report.phase_ms_ffn = std::max(report.phase_ms_ffn, x[2] * per_step);
    report.phase_ms_combine = std::max(report.phase_ms_combine, x[3] * per_step);
  }
  // Checksum: the order-free sum over ranks (unsigned, wrapping).
  std::vector<uint64_t> sums(R);
  SY_RETURN_IF_ERROR(comm_.AllGather(&p.checksum, sizeof p.checksum, sums.data()));
  report.output_checksum = 0;
  for (uint64_t s : sums) report.output_checksum += s;
  // Per-rank processed totals (measured balancedness) and per-expert sums over ranks.
  std::vector<LayerCounts>& whole = p.whole;
  if (whole.empty()) {  // no step done here (a newcomer that came for the last step)
    whole.assign(L, LayerCounts{std::vector<int64_t>(model_.num_experts, 0), std::vector<int64_t>(model_.num_experts, 0)});
  }
  SY_ASSIGN_OR_RETURN(const std::vector<double> balance, MeasuredBalance(comm_, whole));
  double rows_total = 0;
  for (int li = 0; li < L; ++li) {
    for (int64_t x : whole[li].processed) rows_total += static_cast<double>(x);
  }
  double flops = rows_total * model_.ExpertShape().FlopsPerRow();
  if (model_.shared_ffn > 0) flops += static_cast<double>(T) * steps_run * L * model_.SharedShape().FlopsPerRow();
  SY_RETURN_IF_ERROR(comm_.AllReduce(&flops, 1, comm::ReduceOp::kMax));
  report.ffn_flops = steps_run > 0 ? flops / steps_run : 0;
  // Measured per rank and step (mean over ranks): dispatch rows and metadata, combine rows.
  const MoeLayer::ExchangeBytes& xb = layer_.exchange_bytes();
  double exchanged[3] = {static_cast<double>(xb.dispatch_rows), static_cast<double>(xb.dispatch_meta), static_cast<double>(xb.combine)};
  SY_RETURN_IF_ERROR(comm_.AllReduce(exchanged, 3, comm::ReduceOp::kSum));
  const double per_rank_step = steps_run > 0 ? 1.0 / (static_cast<double>(R) * steps_run) : 0;
  report.dispatch_bytes = exchanged[0] * per_rank_step;
  report.dispatch_meta_bytes = exchanged[1] * per_rank_step;
  report.combine_bytes = exchanged[2] * per_rank_step;
  report.tokens_conserved = p.conserved;
  // After a regroup the lost rank's counts are gone: the per-step check above stands alone.
  int64_t regrouped = p.regroups;
  SY_RETURN_IF_ERROR(comm_.AllReduce(&regrouped, 1, comm::ReduceOp::kMax));
  for (int li = 0; li < L; ++li) {
    std::vector<int64_t> pr = whole[li].processed, c = whole[li].chosen;
    SY_RETURN_IF_ERROR(comm_.AllReduce(pr.data(), model_.num_experts, comm::ReduceOp::kSum));
    SY_RETURN_IF_ERROR(comm_.AllReduce(c.data(), model_.num_experts, comm::ReduceOp::kSum));
    report.tokens_conserved = report.tokens_conserved && (pr == c || regrouped > 0);
    report.layers.push_back({layers[li], balance[li], Percentile(p.step_balance[li], 0.5), Percentile(p.step_balance[li], 0.01), pr,
                             p.step_balance[li]});
  }
  SY_RETURN_IF_ERROR(CheckWeights(report));
  report.final_epoch = epochs ? epochs->epoch() : layer_.routing_table().epoch();
  report.final_placement = layer_.routing_table().placement();
  if (!options_.step_log.empty()) SY_RETURN_IF_ERROR(WriteStepLog(options_.step_log, origin, p));
  return report;
}

// Every rank hashes each slot's bytes; all gather (layer, expert, hash) for every slot
// (padded to the largest slot count); every replica of a (layer, expert) must agree.
absl::Status Driver::CheckWeights(RunReport& report) {
  const int R = comm_.size(), L = static_cast<int>(weights_.layer_ids().size());
  int64_t slots = 0;
  for (int li = 0; li < L; ++li) slots = std::max<int64_t>(slots, weights_.num_slots(li));
  SY_RETURN_IF_ERROR(comm_.AllReduce(&slots, 1, comm::ReduceOp::kMax));
  const int64_t n = L * slots * 3;
  std::vector<int64_t> mine(n, -1), all(n * R);
  for (int li = 0; li < L; ++li) {
    for (int s = 0; s < weights_.num_slots(li); ++s) {
      int64_t* e = &mine[(li * slots + s) * 3];
      e[0] = weights_.layer_ids()[li];
      e[1] = weights_.slot_expert(li, s);
      e[2] = static_cast<int64_t>(HashBytes(weights_.slot_weights(li, s), weights_.expert_bytes()));
    }
  }
  SY_RETURN_IF_ERROR(comm_.AllGather(mine.data(), n * static_cast<int64_t>(sizeof(int64_t)), all.data()));
  std::map<std::pair<int64_t, int64_t>, int64_t> hash_of;
  report.weights_identical = true;
  report.replicas_checked = 0;
  report.held_replicas.assign(R, 0);
  for (int r = 0; r < R; ++r) {
    for (int64_t i = 0; i < L * slots; ++i) {
      const int64_t* e = &all[(r * L * slots + i) * 3];
      if (e[0] < 0) continue;
      ++report.held_replicas[r];
      ++report.replicas_checked;
      auto [it, fresh] = hash_of.insert({{e[0], e[1]}, e[2]});
      report.weights_identical = report.weights_identical && (fresh || it->second == e[2]);
    }
  }
  return absl::OkStatus();
}

std::string RunReport::ToJson() const {
  nlohmann::json layers_json = nlohmann::json::array();
  for (const LayerReport& l : layers) {
    layers_json.push_back({{"layer", l.layer},
                           {"balancedness", l.balancedness},
                           {"step_balancedness", {{"p50", l.step_balancedness_p50}, {"p99", l.step_balancedness_p99}}},
                           {"expert_tokens", l.expert_tokens},
                           {"balancedness_by_step", l.balancedness_by_step}});
  }
  nlohmann::json rank_phases = nlohmann::json::array();
  for (const RankPhases& r : rank_phase_ms) {
    rank_phases.push_back({{"gate", r.gate}, {"dispatch", r.dispatch}, {"ffn", r.ffn}, {"combine", r.combine}, {"busy", r.busy},
                           {"comm", r.comm}});
  }
  nlohmann::json j = {{"tokens_per_s", tokens_per_s},
                      {"step_ms", {{"p50", step_ms_p50}, {"p90", step_ms_p90}, {"p99", step_ms_p99}, {"max", step_ms_max}}},
                      {"phase_ms",
                       {{"gate", phase_ms_gate}, {"dispatch", phase_ms_dispatch}, {"ffn", phase_ms_ffn}, {"combine", phase_ms_combine}}},
                      {"layers", layers_json},
                      {"work_per_step", {{"dispatch_bytes", dispatch_bytes}, {"dispatch_meta_bytes", dispatch_meta_bytes}, {"combine_bytes", combine_bytes}, {"ffn_flops", ffn_flops}}},
                      {"output_checksum", absl::StrFormat("%016x", output_checksum)},
                      {"tokens_conserved", tokens_conserved},
                      {"ranks", ranks},
                      {"steps", steps},
                      {"stopped_early", stopped_early},
                      {"tokens_per_rank", tokens_per_rank},
                      {"experts", experts},
                      {"top_k", top_k},
                      {"model", model},
                      {"backend", backend},
                      {"placement", placement_policy},
                      {"shares", shares},
                      {"workload", workload},
                      {"device", device},
                      {"isa", cpu_isa},
                      {"threads", cpu_threads}};
  j["rank_phase_ms"] = rank_phases;
  j["critical_path"] = {{"tokens_per_s", critical_tokens_per_s},
                        {"step_ms", {{"p50", critical_step_ms_p50}, {"p99", critical_step_ms_p99}}},
                        {"steady_step_ms", {{"p99", critical_steady_ms_p99}}},
                        {"migration_step_ms", {{"p99", critical_migration_ms_p99}}},
                        {"migration_work_ms", {{"p99", critical_migration_work_ms_p99}}},
                        {"migration_steps", migration_steps},
                        {"by_step_ms", critical_step_ms}};
  nlohmann::json migrations_json = nlohmann::json::array();
  for (const MigrationRecord& m : migrations) {
    nlohmann::json x = {{"epoch", m.epoch},
                        {"start_step", m.start_step},
                        {"commit_step", m.commit_step},
                        {"abort_step", m.abort_step},
                        {"moved_replicas", m.moved_replicas},
                        {"bytes", m.bytes},
                        {"scratch_moved_replicas", m.scratch_moved_replicas}};
    if (!m.error.empty()) x["error"] = m.error;
    migrations_json.push_back(x);
  }
  j["migrations"] = migrations_json;
  nlohmann::json by_step = nlohmann::json::array();
  for (const auto& [step, value] : worst_balancedness_by_step) by_step.push_back({step, value});
  j["worst_balancedness_by_step"] = by_step;
  j["final_epoch"] = final_epoch;
  j["final_placement"] = nlohmann::json::parse(placement::PlacementToJson(final_placement, "final", std::nullopt));
  j["held_replicas"] = held_replicas;
  j["weights_identical"] = weights_identical;
  j["replicas_checked"] = replicas_checked;
  return j.dump(1) + "\n";
}

}  // namespace switchyard::worker
