// Element types and small conversions shared by the kernels.
#pragma once

#include <cstdint>
#include <cstring>

#include "absl/strings/string_view.h"

namespace switchyard::kernels {

// How expert weights (and the FFN's input activations) are held.
enum class WeightType {
  kF32,   // fp32 weights and activations, fp32 accumulation
  kBF16,  // bf16 weights and activations, fp32 accumulation
};

enum class Activation {
  kSwiGlu,       // down(silu(x Wg) * (x Wu))        Mixtral, Qwen, DeepSeek
  kReluSquared,  // down(relu(x Wu)^2)               Nemotron-H
  // gpt-oss: g = min(x Wg + bg, 7), u = clamp(x Wu + bu, -7, 7),
  // down((u + 1) * g * sigmoid(1.702 g)) + bd. Experts carry biases.
  kGptOssSwiGlu,
};
// gpt-oss's clamped SwiGLU constants (its config's swiglu_limit, and the alpha of its code).
inline constexpr float kGptOssSwiGluLimit = 7.0f;
inline constexpr float kGptOssSwiGluAlpha = 1.702f;
// Gate and up rows in one first-GEMM panel (SwiGLU kinds), else up rows only.
inline bool IsGated(Activation a) { return a != Activation::kReluSquared; }

absl::string_view WeightTypeName(WeightType type);
absl::string_view ActivationName(Activation activation);

// bf16 as its raw 16 bits (the top half of an fp32).
using bf16 = uint16_t;

// Round to nearest even; NaN stays NaN.
inline bf16 FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16>(u >> 16);
}

inline float Bf16ToFloat(bf16 h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace switchyard::kernels
