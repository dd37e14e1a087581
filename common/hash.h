// Small non-cryptographic hashes shared by the modules: seeded draws (routing, workloads,
// demo weights) and fingerprints (checksums, orders). Their values are part of reproducible
// outputs; do not change them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace switchyard {

inline constexpr uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ULL;
inline constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;

// SplitMix64's output function applied to x + the golden gamma: a bijective 64-bit mix. The
// i-th value (from 0) of the SplitMix64 generator seeded with s is SplitMix64(s + i * kGoldenGamma).
inline uint64_t SplitMix64(uint64_t x) {
  x += kGoldenGamma;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The SplitMix64 stream seeded with `seed`: Next() returns its values in order from the
// 0th; Uniform() is the next value as a double in [0, 1).
class SplitMix64Stream {
 public:
  explicit SplitMix64Stream(uint64_t seed) : seed_(seed) {}
  uint64_t Next() { return SplitMix64(seed_ + (i_++) * kGoldenGamma); }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t seed_, i_ = 0;
};

// FNV-1a of `bytes` bytes, continuing from `h`.
inline uint64_t Fnv1a(const void* data, size_t bytes, uint64_t h = kFnvOffsetBasis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

}  // namespace switchyard
