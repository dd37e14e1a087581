// Helpers shared by the placement tests: trace access and seeded synthetic loads.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "placement/io/load_csv.h"
#include "placement/load.h"

namespace switchyard::placement::test {

inline std::string TracePath(const std::string& file) {
  return std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/" + file;
}

// DeepSeek-V3 trace rows [first, first + count) (profile: prefill_in1024, prefill_in4096,
// decode_in1000out1000).
inline LoadMatrix DeepSeekLayers(const std::string& profile, int first, int count) {
  auto load = ReadLoadCsv(TracePath("deepseek_v3_sglang_" + profile + ".csv"));
  if (!load.ok()) std::abort();
  LoadMatrix out;
  for (int i = first; i < first + count; ++i) {
    out.layer_ids.push_back(load->layer_ids[i]);
    out.values.push_back(load->values[i]);
  }
  return out;
}

// Zipf-skewed loads (exponent `skew`) over `experts`, the hot set permuted per layer, about
// `tokens` per layer; seeded.
inline LoadMatrix ZipfLoad(int layers, int experts, double skew, double tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  LoadMatrix load;
  for (int l = 0; l < layers; ++l) {
    std::vector<int> perm(experts);
    for (int e = 0; e < experts; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<double> row(experts);
    double total = 0;
    for (int e = 0; e < experts; ++e) total += std::pow(e + 1.0, -skew);
    for (int e = 0; e < experts; ++e) row[perm[e]] = std::round(tokens * std::pow(e + 1.0, -skew) / total);
    load.layer_ids.push_back(l);
    load.values.push_back(std::move(row));
  }
  return load;
}

// The same expert distribution resampled: `tokens` draws per layer (multinomial).
inline LoadMatrix Resample(const LoadMatrix& load, double tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  LoadMatrix out = load;
  for (auto& row : out.values) {
    std::discrete_distribution<int> pick(row.begin(), row.end());
    std::fill(row.begin(), row.end(), 0.0);
    for (int i = 0; i < static_cast<int>(tokens); ++i) row[pick(rng)] += 1;
  }
  return out;
}

}  // namespace switchyard::placement::test
