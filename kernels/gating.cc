#include "kernels/gating.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace switchyard::kernels {
namespace {

// Keeps the best `k` (value, id) pairs seen, best first: higher value, then lower id. Ids
// must be offered in ascending order, so an equal value never displaces an earlier id.
class TopK {
 public:
  TopK(int k, float* values, int32_t* ids) : k_(k), values_(values), ids_(ids) {}
  void Offer(float value, int32_t id) {
    if (n_ == k_ && !(value > values_[n_ - 1])) return;
    int i = n_ < k_ ? n_++ : n_ - 1;
    while (i > 0 && value > values_[i - 1]) {
      values_[i] = values_[i - 1];
      ids_[i] = ids_[i - 1];
      --i;
    }
    values_[i] = value;
    ids_[i] = id;
  }
  int size() const { return n_; }

 private:
  int k_, n_ = 0;
  float* values_;
  int32_t* ids_;
};

}  // namespace

absl::Status GatingConfig::Validate() const {
  if (num_experts < 1) return absl::InvalidArgumentError(absl::StrCat("gating: num_experts ", num_experts, " < 1"));
  if (top_k < 1 || top_k > num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("gating: top_k ", top_k, " must be in 1..", num_experts));
  }
  if (num_groups < 1 || num_experts % num_groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("gating: ", num_groups,
                                                   " groups do not divide ", num_experts, " experts"));
  }
  if (top_groups < 1 || top_groups > num_groups) {
    return absl::InvalidArgumentError(
        absl::StrCat("gating: top_groups ", top_groups, " must be in 1..", num_groups));
  }
  if (top_groups * (num_experts / num_groups) < top_k) {
    return absl::InvalidArgumentError(absl::StrCat("gating: ", top_groups, " groups of ",
                                                   num_experts / num_groups,
                                                   " experts cannot supply top_k ", top_k));
  }
  if (!std::isfinite(routed_scaling_factor)) {
    return absl::InvalidArgumentError("gating: routed_scaling_factor is not finite");
  }
  return absl::OkStatus();
}

absl::Status GateCpu(const GatingConfig& config, const float* logits, int64_t tokens,
                     int32_t* expert_ids, float* weights) {
  if (absl::Status valid = config.Validate(); !valid.ok()) return valid;
  const int E = config.num_experts, k = config.top_k;
  const int group_size = E / config.num_groups;
  const bool grouped = config.num_groups > 1 && config.top_groups < config.num_groups;
  std::vector<float> scores(E), choice(E), group_score(config.num_groups), top_values(k);
  std::vector<char> allowed(E, 1);
  std::vector<float> group_top_values(config.top_groups);
  std::vector<int32_t> group_top_ids(config.top_groups);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* x = logits + t * E;
    if (config.score == ScoreFunction::kSoftmax) {
      float max = -std::numeric_limits<float>::infinity();
      for (int e = 0; e < E; ++e) max = std::max(max, x[e]);
      float sum = 0;
      for (int e = 0; e < E; ++e) sum += scores[e] = std::exp(x[e] - max);
      for (int e = 0; e < E; ++e) scores[e] /= sum;
    } else {
      for (int e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-x[e]));
    }
    for (int e = 0; e < E; ++e) choice[e] = config.expert_bias ? scores[e] + config.expert_bias[e] : scores[e];
    if (grouped) {
      // A group's score: the sum of its two best selection scores (its best, if it has one).
      for (int g = 0; g < config.num_groups; ++g) {
        float best = -std::numeric_limits<float>::infinity(), second = best;
        for (int e = g * group_size; e < (g + 1) * group_size; ++e) {
          if (choice[e] > best) {
            second = best;
            best = choice[e];
          } else if (choice[e] > second) {
            second = choice[e];
          }
        }
        group_score[g] = config.group_score == GroupScore::kMax || group_size < 2 ? best : best + second;
      }
      TopK groups(config.top_groups, group_top_values.data(), group_top_ids.data());
      for (int g = 0; g < config.num_groups; ++g) groups.Offer(group_score[g], g);
      std::fill(allowed.begin(), allowed.end(), 0);
      for (int i = 0; i < groups.size(); ++i) {
        std::fill(allowed.begin() + group_top_ids[i] * group_size,
                  allowed.begin() + (group_top_ids[i] + 1) * group_size, 1);
      }
    }
    int32_t* ids = expert_ids + t * k;
    float* w = weights + t * k;
    TopK top(k, top_values.data(), ids);
    for (int e = 0; e < E; ++e) {
      if (allowed[e]) top.Offer(choice[e], e);
    }
    float sum = 0;
    for (int i = 0; i < k; ++i) sum += w[i] = scores[ids[i]];
    const float scale = config.renormalize ? config.routed_scaling_factor / (sum + 1e-20f)
                                           : config.routed_scaling_factor;
    for (int i = 0; i < k; ++i) w[i] *= scale;
  }
  return absl::OkStatus();
}

}  // namespace switchyard::kernels
