// The per-ISA table of a function compiled once per Highway target: include it in the
// HWY_ONCE section of a file that includes hwy/foreach_target.h, after the function's
// per-target definitions. SY_CPU_ISA_FUNCTION(isa, Fn) is the pointer to `Fn` compiled for
// the target implementing `isa` (kernels/cpu_isa.h), or null where this build has none.
#pragma once

#include "hwy/highway.h"
#include "kernels/cpu_isa.h"

namespace switchyard::kernels::internal {

template <typename Fn>
Fn PickForIsa(CpuIsa isa, Fn portable, Fn avx2, Fn avx512, Fn neon) {
  switch (isa) {
    case CpuIsa::kPortable: return portable;
    case CpuIsa::kAvx2: return avx2;
    case CpuIsa::kAvx512: return avx512;
    case CpuIsa::kNeon: return neon;
  }
  return nullptr;
}

}  // namespace switchyard::kernels::internal

// The portable path is Highway's scalar fallback (exact per lane through std::fma).
#if HWY_TARGETS & HWY_EMU128
#define SY_HWY_PORTABLE_FN(fn) &N_EMU128::fn
#elif HWY_TARGETS & HWY_SCALAR
#define SY_HWY_PORTABLE_FN(fn) &N_SCALAR::fn
#else
#define SY_HWY_PORTABLE_FN(fn) nullptr
#endif
#if HWY_TARGETS & HWY_AVX2
#define SY_HWY_AVX2_FN(fn) &N_AVX2::fn
#else
#define SY_HWY_AVX2_FN(fn) nullptr
#endif
#if HWY_TARGETS & HWY_AVX3
#define SY_HWY_AVX512_FN(fn) &N_AVX3::fn
#else
#define SY_HWY_AVX512_FN(fn) nullptr
#endif
#if HWY_TARGETS & HWY_NEON
#define SY_HWY_NEON_FN(fn) &N_NEON::fn
#else
#define SY_HWY_NEON_FN(fn) nullptr
#endif

#define SY_CPU_ISA_FUNCTION(isa, fn)                                                      \
  ::switchyard::kernels::internal::PickForIsa<decltype(SY_HWY_PORTABLE_FN(fn))>(         \
      (isa), SY_HWY_PORTABLE_FN(fn), SY_HWY_AVX2_FN(fn), SY_HWY_AVX512_FN(fn), SY_HWY_NEON_FN(fn))
