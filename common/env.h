// Every environment variable Switchyard itself reads, in one registry: its name, what it
// does, and one way to read it. `switchyard env` lists them (docs/configuration.md too).
// Variables of the launchers (SLURM_*, OMPI_*, PMIX_*, OMP_NUM_THREADS) are the launch
// glue's to read (cluster/launch.h, kernels/cpu_isa.h): they describe the launch, not a
// Switchyard setting.
#pragma once

#include <optional>
#include <span>
#include <string>

namespace switchyard {

enum class Setting {
  kCpuIsa,              // SWITCHYARD_CPU_ISA
  kBf16Dot,             // SWITCHYARD_BF16_DOT
  kCoordinator,         // SWITCHYARD_COORDINATOR
  kTraces,              // SWITCHYARD_TRACES
  kTestHoldTransfers,   // SWITCHYARD_TEST_HOLD_TRANSFERS
  kRank,                // SWITCHYARD_RANK
  kSize,                // SWITCHYARD_SIZE
  kLocalRank,           // SWITCHYARD_LOCAL_RANK
  kLocalSize,           // SWITCHYARD_LOCAL_SIZE
};

struct SettingInfo {
  Setting setting;
  const char* name;  // the environment variable
  const char* help;
};

// All of them, in declaration order.
std::span<const SettingInfo> Settings();
const SettingInfo& Info(Setting setting);

// The variable's value; nullopt when unset or empty.
std::optional<std::string> GetSetting(Setting setting);

}  // namespace switchyard
