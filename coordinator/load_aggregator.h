// Load aggregation (DESIGN.md section 5, step 1): the ranks' load windows, summed per window
// once every rank of the job has sent its own or is known to be gone, then smoothed per
// (layer, expert). Pure state, no lock, no clock: the Coordinator calls it under its lock with
// reports it has validated.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "placement/load.h"
#include "switchyard/control/v1/control.pb.h"

namespace switchyard::coordinator {

class LoadAggregator {
 public:
  struct Layer {
    std::vector<double> smoothed;     // pairs per step, exponential average over windows
    std::vector<double> variance;     // of pairs per step between windows, exponentially weighted
    std::vector<int64_t> last_window;
    double balancedness = 1;          // measured from pairs processed per rank, last window
  };

  // Forgets everything: a job of `layers` MoE layers and `experts` experts per layer.
  void Reset(int layers, int experts);
  // Adds a validated report (sizes match the job; the coordinator refuses a window that
  // overlaps the rank's previous one, so a rank is never counted twice in a window).
  void Add(const switchyard::control::v1::LoadReport& report);
  // Completes, oldest first, every pending window that no rank still owes: rank r owes it
  // unless it sent it or gone(r). Each complete window updates the smoothed load (weight
  // `smoothing` for the newest; the first window sets it) and the balancedness over
  // `active_ranks` ranks. At most 64 windows wait; older ones are dropped. Returns the number
  // completed.
  int CompleteReady(int ranks, int active_ranks, double smoothing, const std::function<bool(int rank)>& gone);

  // The smoothed load in token counts for the planner's noise guard (Poisson noise of the
  // counts): an exponential average with weight a over windows of W steps carries about
  // (2 - a) / a windows' worth of counts, and no more windows than it has seen. Uniform
  // (1.0) before any window. `spread` > 0 adds that many standard deviations of each expert's
  // load between windows: with per-step shares (worker --shares step) the planner then gives
  // replicas to the experts whose load moves most, which the per-step split can use.
  placement::LoadMatrix PlanningLoad(const std::vector<int>& layer_ids, double smoothing, double spread = 0) const;

  int64_t windows() const { return windows_; }
  const Layer& layer(int i) const { return layers_[i]; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  // Pairs each rank computed in the last complete window, over all layers.
  const std::map<int, int64_t>& rank_load() const { return rank_load_; }

 private:
  struct Pending {
    std::map<int, std::vector<int64_t>> processed_per_rank;  // rank -> per layer total
    std::vector<std::vector<int64_t>> chosen;                // [layer][expert], summed
  };
  void Complete(Pending window, int64_t steps, int active_ranks, double smoothing);

  int experts_ = 0;
  std::map<std::pair<int64_t, int64_t>, Pending> pending_;
  std::vector<Layer> layers_;
  std::map<int, int64_t> rank_load_;
  int64_t windows_ = 0;
  int64_t last_window_steps_ = 1;
};

}  // namespace switchyard::coordinator
