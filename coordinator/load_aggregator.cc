#include "coordinator/load_aggregator.h"

#include <cmath>

#include <algorithm>

namespace switchyard::coordinator {

void LoadAggregator::Reset(int layers, int experts) {
  experts_ = experts;
  pending_.clear();
  layers_.assign(layers, Layer{});
  rank_load_.clear();
  windows_ = 0;
  last_window_steps_ = 1;
}

void LoadAggregator::Add(const switchyard::control::v1::LoadReport& r) {
  const int L = num_layers();
  Pending& window = pending_[{r.first_step(), r.end_step()}];
  if (window.chosen.empty()) window.chosen.assign(L, std::vector<int64_t>(experts_, 0));
  std::vector<int64_t> per_layer(L, 0);
  for (int i = 0; i < L; ++i) {
    for (int e = 0; e < experts_; ++e) {
      window.chosen[i][e] += r.layers(i).chosen(e);
      per_layer[i] += r.layers(i).processed(e);
    }
  }
  window.processed_per_rank[r.rank()] = per_layer;
}

int LoadAggregator::CompleteReady(int ranks, int active_ranks, double smoothing, const std::function<bool(int rank)>& gone) {
  constexpr size_t kMaxPendingWindows = 64;  // a rank that never comes back must not pile them up
  while (pending_.size() > kMaxPendingWindows) pending_.erase(pending_.begin());
  int completed = 0;
  for (auto it = pending_.begin(); it != pending_.end();) {
    bool complete = true;
    for (int rank = 0; rank < ranks && complete; ++rank) {
      complete = it->second.processed_per_rank.count(rank) > 0 || gone(rank);
    }
    if (!complete) {
      ++it;
      continue;
    }
    const int64_t steps = it->first.second - it->first.first;
    Pending done = std::move(it->second);
    it = pending_.erase(it);
    if (done.processed_per_rank.empty()) continue;
    Complete(std::move(done), steps, active_ranks, smoothing);
    ++completed;
  }
  return completed;
}

void LoadAggregator::Complete(Pending window, int64_t steps, int active_ranks, double smoothing) {
  const double alpha = windows_ == 0 ? 1.0 : smoothing;
  for (int i = 0; i < num_layers(); ++i) {
    Layer& s = layers_[i];
    if (s.smoothed.empty()) s.smoothed.assign(experts_, 0.0);
    if (s.variance.empty()) s.variance.assign(experts_, 0.0);
    s.last_window = window.chosen[i];
    for (int e = 0; e < experts_; ++e) {
      const double x = static_cast<double>(window.chosen[i][e]) / steps, d = x - s.smoothed[e];
      s.smoothed[e] += alpha * d;
      s.variance[e] = (1 - alpha) * (s.variance[e] + alpha * d * d);  // exponentially weighted variance
    }
    // Over the active ranks, and any other rank that computed in the window (a window that
    // straddles a drain's switch still has the drained rank's pairs): never above 1.
    double sum = 0, max = 0;
    int computing = 0;
    for (const auto& [rank, per_layer] : window.processed_per_rank) {
      sum += static_cast<double>(per_layer[i]);
      max = std::max(max, static_cast<double>(per_layer[i]));
      computing += per_layer[i] > 0 ? 1 : 0;
    }
    s.balancedness = max > 0 ? sum / std::max({1, active_ranks, computing}) / max : 1.0;
  }
  ++windows_;
  last_window_steps_ = steps;
  rank_load_.clear();
  for (const auto& [rank, per_layer] : window.processed_per_rank) {
    int64_t total = 0;
    for (int64_t x : per_layer) total += x;
    rank_load_[rank] = total;
  }
}

placement::LoadMatrix LoadAggregator::PlanningLoad(const std::vector<int>& layer_ids, double smoothing, double spread) const {
  placement::LoadMatrix load;
  const double a = smoothing;
  const double windows = std::min(static_cast<double>(windows_), (2 - a) / a);
  const double steps = static_cast<double>(last_window_steps_) * std::max(1.0, windows);
  for (int i = 0; i < num_layers(); ++i) {
    load.layer_ids.push_back(layer_ids[i]);
    std::vector<double> row(experts_, 1.0);  // before any report: uniform
    if (windows_ > 0) {
      for (int e = 0; e < experts_; ++e) {
        row[e] = (layers_[i].smoothed[e] + spread * std::sqrt(layers_[i].variance[e])) * steps;
      }
    }
    load.values.push_back(std::move(row));
  }
  return load;
}

}  // namespace switchyard::coordinator
