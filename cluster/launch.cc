#include "cluster/launch.h"

#include <cstdlib>
#include <optional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/env.h"
#include "common/status.h"

namespace switchyard::cluster {
namespace {

// The integer value of an environment variable, if set.
absl::StatusOr<std::optional<int>> IntEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::optional<int>();
  int out = 0;
  if (!absl::SimpleAtoi(value, &out) || out < 0) {
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", name, "='", value,
                                                   "' is not an integer >= 0"));
  }
  return std::optional<int>(out);
}

// Slurm's tasks on this node: SLURM_STEP_TASKS_PER_NODE is "2(x3),1" — counts per node in
// node order; SLURM_NODEID picks ours.
absl::StatusOr<std::optional<int>> SlurmLocalSize() {
  const char* spec = std::getenv("SLURM_STEP_TASKS_PER_NODE");
  if (spec == nullptr) spec = std::getenv("SLURM_TASKS_PER_NODE");
  SY_ASSIGN_OR_RETURN(std::optional<int> node, IntEnv("SLURM_NODEID"));
  if (spec == nullptr || !node) return std::optional<int>();
  int index = 0;
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    int count = 0, repeat = 1;
    std::vector<absl::string_view> fields = absl::StrSplit(part, "(x");
    if (!absl::SimpleAtoi(fields[0], &count) ||
        (fields.size() > 1 && !absl::SimpleAtoi(absl::StripSuffix(fields[1], ")"), &repeat))) {
      return absl::InvalidArgumentError(absl::StrCat("cannot parse SLURM tasks per node '", spec, "'"));
    }
    if (*node < index + repeat) return std::optional<int>(count);
    index += repeat;
  }
  return absl::InvalidArgumentError(absl::StrCat("SLURM_NODEID ", *node, " beyond '", spec, "'"));
}

}  // namespace

absl::StatusOr<LaunchInfo> DetectLaunch() {
  LaunchInfo info;
  struct Source {
    const char* launcher;
    const char *rank, *size, *local_rank, *local_size;
  };
  const Source sources[] = {
      {"switchyard", Info(Setting::kRank).name, Info(Setting::kSize).name, Info(Setting::kLocalRank).name,
       Info(Setting::kLocalSize).name},
      {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr},
      {"pmix", "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"},
  };
  for (const Source& src : sources) {
    SY_ASSIGN_OR_RETURN(std::optional<int> rank, IntEnv(src.rank));
    if (!rank) continue;
    SY_ASSIGN_OR_RETURN(std::optional<int> size, IntEnv(src.size));
    SY_ASSIGN_OR_RETURN(std::optional<int> local_rank, IntEnv(src.local_rank));
    std::optional<int> local_size;
    if (src.local_size != nullptr) {
      SY_ASSIGN_OR_RETURN(local_size, IntEnv(src.local_size));
    } else {
      SY_ASSIGN_OR_RETURN(local_size, SlurmLocalSize());
    }
    info.launcher = src.launcher;
    info.rank = *rank;
    info.size = size.value_or(1);
    info.local_rank = local_rank.value_or(0);
    info.local_size = local_size.value_or(1);
    if (info.size < 1 || info.rank >= info.size || info.local_rank >= info.local_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          src.launcher, " environment is inconsistent: rank ", info.rank, " of ", info.size,
          ", local rank ", info.local_rank, " of ", info.local_size));
    }
    return info;
  }
  return info;
}

}  // namespace switchyard::cluster
