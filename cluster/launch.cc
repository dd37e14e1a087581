#include "cluster/launch.h"

#include <unistd.h>

#include <cstdlib>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cluster/slurm.h"
#include "common/env.h"
#include "common/json_reader.h"
#include "common/status.h"

namespace switchyard::cluster {
namespace {

// The integer value of an environment variable, if set.
absl::StatusOr<std::optional<int>> IntEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::optional<int>();
  int out = 0;
  if (!absl::SimpleAtoi(value, &out) || out < 0) {
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", name, "='", EchoValue(value),
                                                   "' is not an integer >= 0"));
  }
  return std::optional<int>(out);
}

std::string HostName() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

// Nodes of a srun step: Slurm's list, checked against this rank's position.
absl::Status FromSlurmStep(const SlurmStep& step, LaunchInfo& info) {
  info.node = step.node_id;
  info.nodes = static_cast<int>(step.node_names.size());
  info.node_name = step.node_names[step.node_id];
  info.local_size = step.tasks_per_node[step.node_id];
  const int first = step.FirstRankOf(step.node_id);
  if (info.rank < first || info.rank >= first + info.local_size || info.local_rank != info.rank - first) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SLURM_PROCID=", info.rank, " (SLURM_LOCALID=", info.local_rank, ") on node ", EchoValue(info.node_name), " (SLURM_NODEID=",
        info.node, ") is not in node order: Switchyard's placement needs each node's ranks consecutive; launch with "
        "srun --distribution=block (Slurm's default)"));
  }
  info.ranks_per_node = info.local_size;
  for (int count : step.tasks_per_node) {
    if (count != info.local_size) info.ranks_per_node = 0;
  }
  return absl::OkStatus();
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
  const char* slurm_name = std::getenv("SLURMD_NODENAME");
  info.node_name = slurm_name != nullptr && *slurm_name != '\0' ? EchoValue(slurm_name) : HostName();
  for (const Source& src : sources) {
    SY_ASSIGN_OR_RETURN(std::optional<int> rank, IntEnv(src.rank));
    if (!rank) continue;
    SY_ASSIGN_OR_RETURN(std::optional<int> size, IntEnv(src.size));
    SY_ASSIGN_OR_RETURN(std::optional<int> local_rank, IntEnv(src.local_rank));
    std::optional<int> local_size;
    if (src.local_size != nullptr) {
      SY_ASSIGN_OR_RETURN(local_size, IntEnv(src.local_size));
    }
    info.launcher = src.launcher;
    info.rank = *rank;
    info.size = size.value_or(1);
    info.local_rank = local_rank.value_or(0);
    info.local_size = local_size.value_or(1);
    const bool size_from_step = src.local_size == nullptr && !size;  // srun without SLURM_NTASKS
    if (!size_from_step && (info.size < 1 || info.rank >= info.size)) {
      return absl::InvalidArgumentError(absl::StrCat(src.launcher, " environment is inconsistent: ", src.rank, "=", info.rank,
                                                     " but ", src.size, "=", info.size));
    }
    if (src.local_size == nullptr) {  // srun: the step's node list says where everyone is
      SY_ASSIGN_OR_RETURN(std::optional<SlurmStep> step, SlurmStepFromEnvironment(size ? info.size : -1));
      if (step && !size) {  // no SLURM_NTASKS: the step's task counts say how many
        info.size = step->tasks();
        if (info.rank >= info.size) {
          return absl::InvalidArgumentError(absl::StrCat("SLURM_PROCID=", info.rank, " but the step's tasks per node place ",
                                                         info.size, " tasks (", step->tasks_per_node.size(), " nodes)"));
        }
      }
      if (step) {
        SY_RETURN_IF_ERROR(FromSlurmStep(*step, info));
        info.nodes_from = step->nodes_from;
        return info;
      }
      if (size_from_step) {
        return absl::InvalidArgumentError(absl::StrCat(
            "SLURM_PROCID=", info.rank, " without SLURM_NTASKS or the step's node list (SLURM_STEP_NODELIST, "
            "SLURM_STEP_TASKS_PER_NODE, SLURM_NODEID): start the workers with srun"));
      }
      info.local_size = info.size;  // SLURM_PROCID without a step's node list: one node
    }
    if (info.local_rank >= info.local_size || info.local_size > info.size) {
      return absl::InvalidArgumentError(absl::StrCat(
          src.launcher, " environment is inconsistent: rank ", info.rank, " of ", info.size, ", local rank ", info.local_rank,
          " of ", info.local_size));
    }
    // Other launchers say how many ranks share this node; equal blocks are assumed, as
    // mpirun's default by-slot mapping lays them out.
    if (info.size % info.local_size == 0) {
      info.nodes = info.size / info.local_size;
      info.ranks_per_node = info.local_size;
      info.node = info.rank / info.local_size;
    } else {
      info.nodes = 1;
      info.ranks_per_node = 0;
    }
    info.nodes_from = absl::StrCat(src.local_size != nullptr ? src.local_size : "the launcher's local size", "=", info.local_size);
    return info;
  }
  return info;
}

}  // namespace switchyard::cluster
