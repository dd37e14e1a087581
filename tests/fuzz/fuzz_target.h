// Fuzz targets: each reader of untrusted input (load CSV, placement JSON, config.json,
// safetensors, coordinator state.json, control/admin requests) fed arbitrary bytes.
//
//   SY_FUZZ_TARGET(name) { ... uses `data`, `size` ... return 0; }
//
// A target must never crash, hang or leak, whatever the bytes; where the reader accepts the
// input, the target also checks what the reader promises (the value validates, it round-trips)
// and aborts (SY_CHECK) otherwise. The same sources build two ways:
//   - libFuzzer (scripts/fuzz.sh, clang, -DSY_LIBFUZZER): one executable per target;
//   - the corpus runner (tests/fuzz/corpus_runner_test.cc, in CI): every target replays its
//     committed corpus and regression cases, then runs a bounded, seeded mutation loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace switchyard::fuzz {

using TargetFn = int (*)(const uint8_t* data, size_t size);

inline std::map<std::string, TargetFn>& Targets() {
  static std::map<std::string, TargetFn> targets;
  return targets;
}
inline bool Register(const char* name, TargetFn fn) {
  Targets()[name] = fn;
  return true;
}

}  // namespace switchyard::fuzz

#ifdef SY_LIBFUZZER
#define SY_FUZZ_LIBFUZZER_ENTRY(name) \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return SyFuzz_##name(data, size); }
#else
#define SY_FUZZ_LIBFUZZER_ENTRY(name)
#endif

#define SY_FUZZ_TARGET(name)                                                                                 \
  static int SyFuzz_##name(const uint8_t* data, size_t size);                                              \
  [[maybe_unused]] static const bool sy_fuzz_registered_##name = ::switchyard::fuzz::Register(#name, SyFuzz_##name); \
  SY_FUZZ_LIBFUZZER_ENTRY(name)                                                                            \
  static int SyFuzz_##name(const uint8_t* data, size_t size)
