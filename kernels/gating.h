// Gating: router logits -> each token's top-k experts and their combine weights.
//
// Covers the routers of the supported models:
//   softmax, top-k, optional renormalisation                 Mixtral, Qwen2/3-MoE
//   sigmoid, + per-expert bias for selection only, group-limited top-k (n_group groups,
//   keep the topk_group groups with the largest sum of their top-2 biased scores), weights
//   from the unbiased scores, optional renormalisation, x routed_scaling_factor   DeepSeek-V3
//   softmax, group-limited top-k with a group scored by its best expert, no renorm,
//   x routed_scaling_factor                                   DeepSeek-V2
//   sigmoid top-k (n_group = 1, optional bias)                Nemotron-H
//
// The k choices of a token come out in descending order of their selection score (biased
// for sigmoid + bias), ties to the lowest expert id; that order is the "k order" combine
// sums in. Deterministic: the same logits give the same ids and bits on every run and every
// ISA path (exp is kernels/cpu/math-inl.h's, not libm's; the softmax sum has a fixed order).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cpu_isa.h"

namespace switchyard::kernels {

enum class ScoreFunction { kSoftmax, kSigmoid };
// How a group is scored for group-limited routing.
enum class GroupScore {
  kTopTwoSum,  // sum of its two best selection scores (DeepSeek-V3 "noaux_tc")
  kMax,        // its best selection score (DeepSeek-V2 "group_limited_greedy")
};

struct GatingConfig {
  int num_experts = 0;
  int top_k = 0;
  ScoreFunction score = ScoreFunction::kSoftmax;
  bool renormalize = false;              // divide the k weights by their sum
  int num_groups = 1;                    // DeepSeek n_group (1: no group limit)
  int top_groups = 1;                    // DeepSeek topk_group
  float routed_scaling_factor = 1.0f;    // applied to the final weights
  const float* expert_bias = nullptr;    // [num_experts] selection-only bias, or null
  GroupScore group_score = GroupScore::kTopTwoSum;

  // InvalidArgument naming the field unless 1 <= top_k <= num_experts, groups divide the
  // experts, 1 <= top_groups <= num_groups, and the kept groups hold at least top_k experts.
  absl::Status Validate() const;
};

// CPU: logits [tokens, num_experts] row-major, finite (the worker checks) -> expert_ids and
// weights [tokens, top_k], on the ISA path `isa` (every path gives the same ids and bits) and
// `threads` (>= 1) OpenMP threads, which share the tokens in chunks of kGateChunkTokens when
// there are at least two (each token is gated whole by one thread: the results do not depend
// on the thread count). FailedPrecondition for a path this CPU lacks; InvalidArgument naming
// the field for a bad config or a thread count below 1. A NaN or infinite logit still gives
// k distinct ids in [0, num_experts) per token, but which ones (and the weights, which may be
// NaN) can differ between paths.
inline constexpr int64_t kGateChunkTokens = 512;
absl::Status GateCpu(const GatingConfig& config, const float* logits, int64_t tokens,
                     int32_t* expert_ids, float* weights, CpuIsa isa = BestCpuIsa(), int threads = 1);

// The gate of a gated shared expert (Qwen2-MoE, Qwen3.5-MoE): scale[t] =
// sigmoid(hidden[t] . gate) for hidden [tokens, hidden_size], gate [hidden_size]. The dot is
// one fused multiply-add per element in ascending order, the sigmoid the gating kernels' own:
// the same bits on every ISA path.
absl::Status SharedExpertGateCpu(const float* hidden, const float* gate, int64_t tokens, int64_t hidden_size,
                                 float* scale, CpuIsa isa = BestCpuIsa());

}  // namespace switchyard::kernels
