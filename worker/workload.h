// Workloads: the router logits and hidden states the worker feeds its MoE layers.
//
//   trace:FILE[:KEY]   expert choices follow a measured trace's per-layer distribution
//                      (per step when the trace has a step column and no KEY selects one)
//   zipf:S[:D]         Zipf skew S over a seeded expert order per layer; with D, the order
//                      shifts by one expert every D steps (drift of the hot set)
//   uniform            every expert equally likely
//   SPEC@STEP          starts SPEC at step STEP (the previous one runs until then)
//   burst:K:SHARE@A..B an expert collapse on top of whatever runs: during steps A..B-1, K hot
//                      experts per layer (a seeded draw, the same on every rank) together
//                      take SHARE of each layer's traffic; the rest keeps its shape, scaled
//                      by 1 - SHARE (placement/scenario.h). Repeatable.
//
// Logits are log(p_e) + Gumbel noise, so a top-k gate picks experts without replacement in
// proportion to p (the Gumbel-top-k trick; exact for softmax and sigmoid top-k, approximate
// under group limits). Every value is a pure function of (seed, step, layer, global token id):
// R ranks of T tokens and one process of R*T tokens see the same inputs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/scenario.h"
#include "model/model.h"

namespace switchyard::worker {

class Workload {
 public:
  // Parses and loads every spec (traces are read here). Errors name the spec and problem.
  static absl::StatusOr<std::unique_ptr<Workload>> Create(const std::vector<std::string>& specs,
                                                          const model::ModelConfig& model,
                                                          const std::vector<int>& layer_ids,
                                                          uint64_t seed);

  // Router logits [tokens, E] for layer `layer_index` at `step`, tokens
  // [first_token, first_token + tokens) of the step.
  void Logits(int step, int layer_index, int64_t first_token, int64_t tokens, float* logits) const;
  // Hidden states [tokens, hidden] entering the first MoE layer at `step`.
  void Hidden(int step, int64_t first_token, int64_t tokens, float* hidden) const;
  // Expected share of the pairs each expert gets, [layer][expert], at `step` (planning).
  std::vector<std::vector<double>> Expected(int step) const;
  // The spec in force at `step`.
  const std::string& SpecAt(int step) const;
  // The hot experts of layer `layer_index` under every burst active at `step` (empty: none).
  std::vector<int> HotExpertsAt(int step, int layer_index) const;

 private:
  struct Phase {
    std::string spec;
    int start_step = 0;
    // probabilities[s][layer][e]: one entry per trace step (one for everything else).
    std::vector<std::vector<std::vector<double>>> probabilities;
    int drift_every = 0;  // zipf drift
  };
  Workload(const model::ModelConfig& model, std::vector<int> layer_ids, uint64_t seed)
      : model_(model), layer_ids_(std::move(layer_ids)), seed_(seed) {}
  const Phase& PhaseAt(int step) const;
  const std::vector<double>& Probabilities(int step, int layer_index) const;

  model::ModelConfig model_;
  std::vector<int> layer_ids_;
  uint64_t seed_;
  std::vector<Phase> phases_;  // by start step
  struct BurstPhase {
    placement::Burst burst;
    std::vector<std::vector<int>> hot;  // [layer index]: its hot experts
  };
  std::vector<BurstPhase> bursts_;
  // Probabilities (shifted by drift, under the bursts) of `layer_index` at `step`.
  std::vector<double> EffectiveProbabilities(int step, int layer_index) const;
  // log-probabilities cache of the distributions above (same indexing)
  mutable std::vector<std::vector<std::vector<std::vector<double>>>> log_p_;
};

}  // namespace switchyard::worker
