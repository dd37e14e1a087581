// Internal to the CPU gating: the per-ISA entry points and the top-k keeper they share.
#pragma once

#include <cstdint>

#include "kernels/cpu_isa.h"
#include "kernels/gating.h"

namespace switchyard::kernels::internal {

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
  bool full() const { return n_ == k_; }
  float kth() const { return values_[k_ - 1]; }  // valid when full()
  int size() const { return n_; }

 private:
  int k_, n_ = 0;
  float* values_;
  int32_t* ids_;
};

// Gates `tokens` rows of logits (config already validated). Every path computes the same
// bits: per-lane math-inl.h functions, a softmax sum over 16 fixed partial lanes (lane
// e mod 16, e ascending, then lanes 0..15 in order) whatever the vector width, and exact
// max / compare steps for the selection.
using GateFn = void (*)(const GatingConfig& config, const float* logits, int64_t tokens, int32_t* expert_ids,
                        float* weights);
GateFn GateFor(CpuIsa isa);
// The bound on |FilterSigmoid(x) - Sigmoid(x)| (gating_kernel.cc's filter) on every path, for
// every input but NaN; FilterSigmoidError measures it.
inline constexpr float kFilterSigmoidError = 2.5e-5f;

// The largest |FilterSigmoid(x) - Sigmoid(x)| on `isa`'s path over the floats x whose bits
// are first_bits, first_bits + stride, ... <= last_bits, NaNs skipped. A test hook.
using FilterErrorFn = float (*)(uint32_t first_bits, uint32_t last_bits, uint32_t stride);
FilterErrorFn FilterSigmoidErrorFor(CpuIsa isa);

using SharedGateFn = void (*)(const float* hidden, const float* gate, int64_t tokens, int64_t hidden_size, float* scale);
SharedGateFn SharedGateFor(CpuIsa isa);

}  // namespace switchyard::kernels::internal
