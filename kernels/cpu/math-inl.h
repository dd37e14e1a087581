// Per-lane math shared by every CPU kernel path (Highway "-inl" header: included once per
// compiled target from a file that includes hwy/foreach_target.h).
//
// Contract: every function here is a fixed sequence of per-lane IEEE-754 operations (add,
// multiply, divide, fused multiply-add with one rounding, min/max of ordered values, integer
// bit tricks), so a lane's result is the same bits on every target (AVX2, AVX-512, NEON, the
// scalar fallback) and for every vector width. This is what keeps a row's output identical
// whichever CPU computes it (DESIGN.md section 4: output identity across ranks and
// migrations). Do not call libm here: its exp differs between versions and machines.

// Per-target include guard (see hwy/highway.h).
#if defined(SWITCHYARD_KERNELS_CPU_MATH_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SWITCHYARD_KERNELS_CPU_MATH_INL_H_
#undef SWITCHYARD_KERNELS_CPU_MATH_INL_H_
#else
#define SWITCHYARD_KERNELS_CPU_MATH_INL_H_
#endif

#include <cmath>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace switchyard::kernels::internal::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The full-width fp32 vector of this target (fixed width: SVE is not compiled) and its lanes.
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr int kLanes = static_cast<int>(hn::MaxLanes(DF()));

// a * b + c with one rounding on every target. Highway emulates MulAdd as a * b + c (two
// roundings) where the target has no FMA (its scalar and SSE4 targets); there each lane goes
// through std::fma, which is correctly rounded everywhere.
template <class V>
HWY_INLINE V Fma(V a, V b, V c) {
#if HWY_NATIVE_FMA
  return hn::MulAdd(a, b, c);
#else
  const hn::DFromV<V> d;
  constexpr size_t kLanes = hn::MaxLanes(d);
  HWY_ALIGN float fa[kLanes], fb[kLanes], fc[kLanes];
  hn::Store(a, d, fa);
  hn::Store(b, d, fb);
  hn::Store(c, d, fc);
  for (size_t i = 0; i < kLanes; ++i) fc[i] = std::fma(fa[i], fb[i], fc[i]);
  return hn::Load(d, fc);
#endif
}

// e^x for fp32 lanes, about 1 ulp: x clamped to [-87.3, 88.7]; x = n ln2 + r with n the
// nearest integer to x log2(e) (ties to even, by the 1.5 * 2^23 shifter: exact for |n| < 2^22),
// r reduced in two fused steps (Cody-Waite); e^r by Cephes' expf polynomial; 2^n applied as
// two exact powers of two so that the product is rounded once (as AVX-512's scalef does).
template <class D, class V = hn::VFromD<D>>
HWY_INLINE V Exp(D d, V x) {
  const hn::RebindToSigned<D> di;
  x = hn::Min(hn::Max(x, hn::Set(d, -87.3f)), hn::Set(d, 88.7f));
  const V shifter = hn::Set(d, 12582912.0f);  // 1.5 * 2^23
  const V n = hn::Sub(hn::Add(hn::Mul(x, hn::Set(d, 1.44269504088896341f)), shifter), shifter);
  const V minus_n = hn::Neg(n);
  V r = Fma(minus_n, hn::Set(d, 0.693359375f), x);
  r = Fma(minus_n, hn::Set(d, -2.12194440e-4f), r);
  V p = hn::Set(d, 1.9875691500e-4f);
  p = Fma(p, r, hn::Set(d, 1.3981999507e-3f));
  p = Fma(p, r, hn::Set(d, 8.3334519073e-3f));
  p = Fma(p, r, hn::Set(d, 4.1665795894e-2f));
  p = Fma(p, r, hn::Set(d, 1.6666665459e-1f));
  p = Fma(p, r, hn::Set(d, 5.0000001201e-1f));
  p = Fma(p, hn::Mul(r, r), hn::Add(r, hn::Set(d, 1.0f)));
  // n in [-126, 128]: split as n1 + n2 with both in [-63, 64], each a normal power of two.
  const auto ni = hn::ConvertTo(di, n);
  const auto n1 = hn::ShiftRight<1>(ni);
  const auto n2 = hn::Sub(ni, n1);
  const auto bias = hn::Set(di, 127);
  const V f1 = hn::BitCast(d, hn::ShiftLeft<23>(hn::Add(n1, bias)));
  const V f2 = hn::BitCast(d, hn::ShiftLeft<23>(hn::Add(n2, bias)));
  return hn::Mul(hn::Mul(p, f1), f2);
}

// silu(g) = g / (1 + e^-g).
template <class D, class V = hn::VFromD<D>>
HWY_INLINE V Silu(D d, V g) {
  return hn::Div(g, hn::Add(hn::Set(d, 1.0f), Exp(d, hn::Neg(g))));
}

// sigmoid(x) = 1 / (1 + e^-x).
template <class D, class V = hn::VFromD<D>>
HWY_INLINE V Sigmoid(D d, V x) {
  return hn::Div(hn::Set(d, 1.0f), hn::Add(hn::Set(d, 1.0f), Exp(d, hn::Neg(x))));
}

}  // namespace switchyard::kernels::internal::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
