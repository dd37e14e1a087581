// CPU combine (permute.h), written once over Highway and compiled for each target: one
// token's output row from its k expert rows, in register blocks of 4 vectors over all k rows
// (a block's k loads, one store). Per element the operations are those of the scalar
// definition, w0 * r0, then + wj * rj for j = 1..k-1 (multiply and add each rounded; no
// fused multiply-add), so every path gives the same bits.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/combine_kernel.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "kernels/cpu/permute_internal.h"

HWY_BEFORE_NAMESPACE();
namespace switchyard::kernels::internal::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void CombineToken(const float* rows, const int32_t* position, const float* weights, int top_k, int64_t hidden,
                  float* out) {
  const hn::ScalableTag<float> d;
  const hn::CappedTag<float, 1> d1;  // the tail, with the same per-lane operations
  constexpr int64_t L = static_cast<int64_t>(hn::MaxLanes(d));
  auto row = [&](int j) { return rows + static_cast<int64_t>(position[j]) * hidden; };
  int64_t h = 0;
  for (; h + 4 * L <= hidden; h += 4 * L) {
    const float* r = row(0) + h;
    const auto w0 = hn::Set(d, weights[0]);
    auto a0 = hn::Mul(w0, hn::LoadU(d, r)), a1 = hn::Mul(w0, hn::LoadU(d, r + L));
    auto a2 = hn::Mul(w0, hn::LoadU(d, r + 2 * L)), a3 = hn::Mul(w0, hn::LoadU(d, r + 3 * L));
    for (int j = 1; j < top_k; ++j) {
      r = row(j) + h;
      const auto wj = hn::Set(d, weights[j]);
      a0 = hn::Add(a0, hn::Mul(wj, hn::LoadU(d, r)));
      a1 = hn::Add(a1, hn::Mul(wj, hn::LoadU(d, r + L)));
      a2 = hn::Add(a2, hn::Mul(wj, hn::LoadU(d, r + 2 * L)));
      a3 = hn::Add(a3, hn::Mul(wj, hn::LoadU(d, r + 3 * L)));
    }
    hn::StoreU(a0, d, out + h);
    hn::StoreU(a1, d, out + h + L);
    hn::StoreU(a2, d, out + h + 2 * L);
    hn::StoreU(a3, d, out + h + 3 * L);
  }
  for (; h < hidden; ++h) {
    auto a = hn::Mul(hn::Set(d1, weights[0]), hn::LoadU(d1, row(0) + h));
    for (int j = 1; j < top_k; ++j) a = hn::Add(a, hn::Mul(hn::Set(d1, weights[j]), hn::LoadU(d1, row(j) + h)));
    hn::StoreU(a, d1, out + h);
  }
}

}  // namespace switchyard::kernels::internal::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "kernels/cpu/hwy_dispatch.h"

namespace switchyard::kernels::internal {

CombineTokenFn CombineTokenFor(CpuIsa isa) { return SY_CPU_ISA_FUNCTION(isa, CombineToken); }

}  // namespace switchyard::kernels::internal
#endif  // HWY_ONCE
