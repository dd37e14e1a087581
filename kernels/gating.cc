#include "kernels/gating.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/gating_internal.h"
#include "kernels/cpu/parallel.h"

namespace switchyard::kernels {
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
                     int32_t* expert_ids, float* weights, CpuIsa isa, int threads) {
  if (absl::Status valid = config.Validate(); !valid.ok()) return valid;
  if (threads < 1) return absl::InvalidArgumentError(absl::StrCat("gating: threads ", threads, " (must be >= 1)"));
  if (!CpuSupports(isa)) {
    return absl::FailedPreconditionError(
        absl::StrCat("gating: the ", CpuIsaName(isa), " path is not available on this CPU"));
  }
  const internal::GateFn gate = internal::GateFor(isa);
  const int64_t E = config.num_experts, k = config.top_k;
  const int64_t chunks = (tokens + kGateChunkTokens - 1) / kGateChunkTokens;
  internal::ParallelFor(threads, chunks, 1, [&](int64_t chunk) {
    const int64_t first = chunk * kGateChunkTokens, count = std::min(kGateChunkTokens, tokens - first);
    gate(config, logits + first * E, count, expert_ids + first * k, weights + first * k);
  });
  return absl::OkStatus();
}

absl::Status SharedExpertGateCpu(const float* hidden, const float* gate, int64_t tokens, int64_t hidden_size, float* scale,
                                 CpuIsa isa) {
  if (tokens < 0 || hidden_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("shared expert gate: tokens ", tokens, ", hidden size ", hidden_size));
  }
  if (!CpuSupports(isa)) {
    return absl::FailedPreconditionError(
        absl::StrCat("shared expert gate: the ", CpuIsaName(isa), " path is not available on this CPU"));
  }
  internal::SharedGateFor(isa)(hidden, gate, tokens, hidden_size, scale);
  return absl::OkStatus();
}

}  // namespace switchyard::kernels
