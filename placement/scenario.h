// Load scenarios: expert-collapse bursts and sampled load windows, the same on every rank and
// in every tool (the worker's burst workload, `switchyard trace synth`, `bench plan`).
//
// Pure (DESIGN.md section 3): plain values in, plain values out; randomness only from the
// seed (SplitMix64), so the same arguments give the same bits on every machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "placement/load.h"

namespace switchyard::placement {

// A collapse burst: during steps (or windows) [start, end), `experts` hot experts per layer
// together take `share` of the layer's routing probability, split evenly; the rest keeps its
// shape, scaled by 1 - share. (Tokens pick top-k experts without replacement, so the hot
// experts' realised share of the pairs is lower when share / experts > 1 / k.) The hot
// experts are a seeded draw per layer (HotExperts).
struct Burst {
  int experts = 0;
  double share = 0;
  int start = 0, end = 0;

  bool ActiveAt(int step) const { return step >= start && step < end; }
};

// Parses "EXPERTS:SHARE@START..END" (e.g. "3:0.35@20..35"): 1 <= EXPERTS, 0 < SHARE < 1,
// 0 <= START < END. Errors name the text and the problem.
absl::StatusOr<Burst> ParseBurst(absl::string_view text);

// The burst's hot experts of layer `layer_index` (0-based among the layers in use), distinct,
// from a seeded shuffle of 0..num_experts-1. FailedPrecondition if experts > num_experts.
absl::StatusOr<std::vector<int>> HotExperts(const Burst& burst, int num_experts, int layer_index, uint64_t seed);

// `p` (one layer's expert probabilities, summing to 1) under the burst: (1 - share) p_e, plus
// share / experts for each hot expert.
std::vector<double> ApplyBurst(const std::vector<double>& p, const std::vector<int>& hot, double share);

// Windows of sampled token counts: window w draws `tokens` tokens per layer, each choosing
// `top_k` distinct experts with probability proportional to the layer's distribution (the
// profile's row, normalised; under `bursts` active at w, ApplyBurst). For drift, the
// distribution of window w blends `profile` into `drift_to` (same shape) linearly over the
// windows; pass an empty matrix for none.
struct WindowSpec {
  int windows = 0;
  int64_t tokens = 0;
  int top_k = 1;
  std::vector<Burst> bursts;
  uint64_t seed = 1;
};
absl::StatusOr<std::vector<LoadMatrix>> SampleWindows(const LoadMatrix& profile, const LoadMatrix& drift_to,
                                                      const WindowSpec& spec);

}  // namespace switchyard::placement
