// Per-lane math shared by every CPU kernel path (Highway "-inl" header: included once per
// compiled target from a file that includes hwy/foreach_target.h).
//
// Contract: every function here is a fixed sequence of per-lane IEEE-754 operations (add,
// multiply, divide, fused multiply-add with one rounding, min/max of ordered values, integer
// bit tricks), so a lane's result is the same bits on every target (AVX2, AVX-512, NEON, the
// scalar fallback) and for every vector width. This is what keeps a row's output identical
// whichever CPU computes it (DESIGN.md section 4: output identity across ranks and
// migrations). Do not call libm here: its exp differs between versions and machines.

// True in the pass of any AVX-512 target: HWY_AVX3, which the dispatcher names for the avx512
// path (hwy_dispatch.h), and any newer one a later Highway compiles as well (AVX3_ZEN4,
// AVX3_SPR: never dispatched, but compiled, so their code must take the AVX-512 branches
// too; a branch keyed to HWY_AVX3 alone would give them the AVX2 branches at 16 lanes).
#define SY_HWY_AVX512 (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3)

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

// c - a * b with one rounding on every target (the same value as Fma(-a, b, c): negation is
// exact).
template <class V>
HWY_INLINE V FmaNeg(V a, V b, V c) {
#if HWY_NATIVE_FMA
  return hn::NegMulAdd(a, b, c);
#else
  return Fma(hn::Neg(a), b, c);
#endif
}

namespace exp_detail {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (ties to even)
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // Cody-Waite ln 2

// e^r on the reduced range, in terms of q = -r when `negated` (the same bits: every step
// below is a sign-symmetric single rounding of the same exact value).
template <bool negated, class D, class V = hn::VFromD<D>>
HWY_INLINE V Poly(D d, V q) {
  // r = q or -q; p(r) by Horner, p = p * r + c as Fma or FmaNeg.
  auto step = [&](V p, float c) { return negated ? FmaNeg(p, q, hn::Set(d, c)) : Fma(p, q, hn::Set(d, c)); };
  V p = hn::Set(d, 1.9875691500e-4f);
  p = step(p, 1.3981999507e-3f);
  p = step(p, 8.3334519073e-3f);
  p = step(p, 4.1665795894e-2f);
  p = step(p, 1.6666665459e-1f);
  p = step(p, 5.0000001201e-1f);
  const V one_plus_r = negated ? hn::Sub(hn::Set(d, 1.0f), q) : hn::Add(q, hn::Set(d, 1.0f));
  return Fma(p, hn::Mul(q, q), one_plus_r);
}

// p * 2^n for n in [-126, 128] given as the shifter sum t = 1.5 * 2^23 + n, rounded once.
// 2^n is a normal float for n <= 127; n = 128 multiplies by 2^127 (exact) and then by 2.
template <class D, class V = hn::VFromD<D>>
HWY_INLINE V Scale(D d, V p, V t) {
  const hn::RebindToSigned<D> di;
  // n + 127 = bits(t) - (bits(1.5 * 2^23) - 127): t's low mantissa bits hold n exactly.
  const auto biased = hn::Sub(hn::BitCast(di, t), hn::Set(di, 0x4B400000 - 127));
  const auto top = hn::Set(di, 254);
  const V pow2 = hn::BitCast(d, hn::ShiftLeft<23>(hn::Min(biased, top)));
  const V y = hn::Mul(p, pow2);
  return hn::IfThenElse(hn::RebindMask(d, hn::Gt(biased, top)), hn::Add(y, y), y);
}
}  // namespace exp_detail

// e^x for fp32 lanes, about 1 ulp: x clamped to [-87.3, 88.7]; x = n ln2 + r with n the
// nearest integer to x log2(e) (ties to even, by the 1.5 * 2^23 shifter: exact for |n| < 2^22),
// r reduced in two fused steps (Cody-Waite); e^r by Cephes' expf polynomial; 2^n applied with
// one rounding of the product (n = 128: by 2^127, then by 2, still one rounding).
template <class D, class V = hn::VFromD<D>>
HWY_INLINE V Exp(D d, V x) {
  using namespace exp_detail;
  x = hn::Min(hn::Max(x, hn::Set(d, -87.3f)), hn::Set(d, 88.7f));
  const V shifter = hn::Set(d, kShifter);
  const V t = hn::Add(hn::Mul(x, hn::Set(d, kLog2e)), shifter);
  const V n = hn::Sub(t, shifter);
  V r = FmaNeg(n, hn::Set(d, kLn2Hi), x);
  r = FmaNeg(n, hn::Set(d, kLn2Lo), r);
  return Scale(d, Poly<false>(d, r), t);
}

// e^-x with the bits of Exp(d, -x), without the negations: every step is Exp's on the
// negated operands (the sign folds into the constants and into FmaNeg).
template <class D, class V = hn::VFromD<D>>
HWY_INLINE V ExpNeg(D d, V x) {
  using namespace exp_detail;
  x = hn::Max(hn::Min(x, hn::Set(d, 87.3f)), hn::Set(d, -88.7f));  // Exp's clamp of -x (NaN alike on x86)
  const V shifter = hn::Set(d, kShifter);
  const V t = hn::Add(hn::Mul(x, hn::Set(d, -kLog2e)), shifter);
  const V n = hn::Sub(t, shifter);
  V q = Fma(n, hn::Set(d, kLn2Hi), x);  // q = -r
  q = Fma(n, hn::Set(d, kLn2Lo), q);
  return Scale(d, Poly<true>(d, q), t);
}

// silu(g) = g / (1 + e^-g).
template <class D, class V = hn::VFromD<D>>
HWY_INLINE V Silu(D d, V g) {
  return hn::Div(g, hn::Add(hn::Set(d, 1.0f), ExpNeg(d, g)));
}

// sigmoid(x) = 1 / (1 + e^-x).
template <class D, class V = hn::VFromD<D>>
HWY_INLINE V Sigmoid(D d, V x) {
  return hn::Div(hn::Set(d, 1.0f), hn::Add(hn::Set(d, 1.0f), ExpNeg(d, x)));
}

}  // namespace switchyard::kernels::internal::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
