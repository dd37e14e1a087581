#include "common/env.h"

#include <cstdlib>

namespace switchyard {
namespace {

constexpr SettingInfo kSettings[] = {
    {Setting::kCpuIsa, "SWITCHYARD_CPU_ISA",
     "force a CPU kernel path: portable, avx2, avx512 or neon (default: the best this CPU has)"},
    {Setting::kBf16Dot, "SWITCHYARD_BF16_DOT",
     "bf16 weights on the avx512 path: 1 uses vdpbf16ps (AVX-512 BF16), 0 widens to fp32, auto (default) "
     "whichever is faster on this CPU"},
    {Setting::kCoordinator, "SWITCHYARD_COORDINATOR", "admin commands: the coordinator's HOST:PORT when --coordinator is not given"},
    {Setting::kTraces, "SWITCHYARD_TRACES", "bench: the directory of the expert-load traces (default: data/traces of the source tree)"},
    {Setting::kTestHoldTransfers, "SWITCHYARD_TEST_HOLD_TRANSFERS",
     "tests only: the rank whose migration transfer thread posts nothing (a hung peer)"},
    {Setting::kRank, "SWITCHYARD_RANK", "this process's rank, overriding the launcher's (with SWITCHYARD_SIZE)"},
    {Setting::kSize, "SWITCHYARD_SIZE", "the job's rank count, overriding the launcher's"},
    {Setting::kLocalRank, "SWITCHYARD_LOCAL_RANK", "this process's rank on its node, overriding the launcher's"},
    {Setting::kLocalSize, "SWITCHYARD_LOCAL_SIZE", "the ranks on this node, overriding the launcher's"},
};

}  // namespace

std::span<const SettingInfo> Settings() { return kSettings; }

const SettingInfo& Info(Setting setting) {
  for (const SettingInfo& s : kSettings) {
    if (s.setting == setting) return s;
  }
  return kSettings[0];  // unreachable: every enumerator is listed
}

std::optional<std::string> GetSetting(Setting setting) {
  const char* value = std::getenv(Info(setting).name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

}  // namespace switchyard
