#include "kernels/cpu_isa.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "common/env.h"
#include "common/json_reader.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/ffn_internal.h"

namespace switchyard::kernels {

absl::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kPortable: return "portable";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kNeon: return "neon";
  }
  return "unknown";
}

namespace {
constexpr CpuIsa kAllIsas[] = {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kNeon};
}  // namespace

bool CpuSupports(CpuIsa isa) {
  return (internal::SupportedIsaMask() >> static_cast<int>(isa)) & 1u;
}

std::vector<CpuIsa> SupportedCpuIsas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : kAllIsas) {
    if (CpuSupports(isa)) isas.push_back(isa);
  }
  return isas;
}

absl::StatusOr<CpuIsa> ParseCpuIsa(absl::string_view name) {
  std::string supported;
  for (CpuIsa isa : SupportedCpuIsas()) absl::StrAppend(&supported, supported.empty() ? "" : ", ", CpuIsaName(isa));
  for (CpuIsa isa : kAllIsas) {
    if (CpuIsaName(isa) != name) continue;
    if (!CpuSupports(isa)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CPU ISA path '", name, "' is not available on this CPU (it runs: ", supported, ")"));
    }
    return isa;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown CPU ISA path '", EchoValue(name),
                                                 "' (known: portable, avx2, avx512, neon; this CPU runs: ",
                                                 supported, ")"));
}

absl::StatusOr<CpuIsa> CpuIsaFromEnvironment() {
  const std::optional<std::string> forced = GetSetting(Setting::kCpuIsa);  // unset or empty: none
  if (!forced) return SupportedCpuIsas().back();
  absl::StatusOr<CpuIsa> isa = ParseCpuIsa(*forced);
  if (!isa.ok()) return absl::Status(isa.status().code(), absl::StrCat(kCpuIsaEnv, ": ", isa.status().message()));
  return isa;
}

CpuIsa BestCpuIsa() {
  absl::StatusOr<CpuIsa> isa = CpuIsaFromEnvironment();
  return isa.ok() ? *isa : SupportedCpuIsas().back();
}

bool CpuSupportsBf16Dot() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = CpuSupports(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

absl::StatusOr<std::optional<bool>> Bf16DotFromEnvironment() {
  const std::optional<std::string> value = GetSetting(Setting::kBf16Dot);
  if (!value || *value == "auto") return std::nullopt;
  if (*value == "0") return false;
  if (*value == "1") {
    if (!CpuSupportsBf16Dot()) {
      return absl::FailedPreconditionError(
          absl::StrCat(kBf16DotEnv, "=1: this CPU has no AVX-512 BF16 (vdpbf16ps); use 0 or auto"));
    }
    return true;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(kBf16DotEnv, "='", EchoValue(*value), "': use 1 (vdpbf16ps), 0 (widen to fp32) or auto"));
}

int DefaultCpuThreads() {
  auto env_int = [](const char* name) -> long {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return 0;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    return end != nullptr && *end == '\0' && n > 0 && n <= 1024 ? n : 0;  // as --threads
  };
  if (long omp = env_int("OMP_NUM_THREADS"); omp > 0) return static_cast<int>(omp);
  cpu_set_t set;
  const long online = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  long mine = online;
  if (sched_getaffinity(0, sizeof set, &set) == 0) mine = std::max(1, CPU_COUNT(&set));
  if (mine < online) return static_cast<int>(mine);  // bound by the launcher: use what we got
  long local = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (local == 0) local = env_int("MPI_LOCALNRANKS");
  if (local == 0) {
    const long tasks = env_int("SLURM_STEP_NUM_TASKS"), nodes = env_int("SLURM_STEP_NUM_NODES");
    if (tasks > 0 && nodes > 0) local = (tasks + nodes - 1) / nodes;
  }
  return static_cast<int>(std::max(1L, mine / std::max(1L, local)));
}

}  // namespace switchyard::kernels
