// Slurm's description of a job step, read from the environment srun (or sbatch) gives each
// task: the step's nodes in order, the tasks on each, and this task's node. Pure parsing and
// checks; DetectLaunch (cluster/launch.h) turns it into a LaunchInfo.
//
//   SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST)          hostlist, e.g. "gpu[01-04,07],login1"
//   SLURM_STEP_TASKS_PER_NODE (else SLURM_TASKS_PER_NODE)  e.g. "2(x3),1": one count per node
//   SLURM_NODEID                                           this task's node, index into the list
//   SLURMD_NODENAME                                        this task's node name (checked)
//
// Every error is InvalidArgument and names the variable and its value.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::cluster {

// At most this many names from one hostlist expression (a typo like "n[1-99999999]" must not
// exhaust memory): every rank a placement can have. A name is at most kMaxNodeNameBytes of
// printable ASCII (what the coordinator accepts), an expression at most kMaxHostlistBytes.
inline constexpr int kMaxHostlistNames = 1 << 16;
inline constexpr size_t kMaxNodeNameBytes = 255;
inline constexpr size_t kMaxHostlistBytes = 1 << 16;

// Expands a Slurm hostlist expression into its names, in order: comma-separated terms, each
// with zero or more bracket groups of comma-separated numbers and ranges ("n[1-3,7]",
// "rack[1-2]-gpu[01-02]"; a range keeps the lower bound's zero padding). InvalidArgument
// naming the expression for unbalanced brackets, empty terms, a range whose end is below its
// start, or more than kMaxHostlistNames names.
absl::StatusOr<std::vector<std::string>> ExpandHostlist(absl::string_view expression);

// Expands Slurm's tasks-per-node string ("2(x3),1" -> {2, 2, 2, 1}). Counts are >= 1, repeats
// >= 1; the total length and every count are at most kMaxHostlistNames.
absl::StatusOr<std::vector<int>> ExpandTasksPerNode(absl::string_view spec);

struct SlurmStep {
  std::vector<std::string> node_names;  // the step's nodes, in Slurm's order
  std::vector<int> tasks_per_node;      // same length as node_names
  int node_id = 0;                      // this task's node: index into node_names
  std::string nodes_from;               // the node list's variable and value, for messages
  // First rank of each node when ranks are laid out in node order (block distribution).
  int FirstRankOf(int node) const;
  int tasks() const;
};

// The step as the environment describes it; nullopt when the SLURM_* variables of a step are
// not all there (not launched by srun or sbatch). InvalidArgument, naming the variable, when
// they disagree: a nodelist whose length is not the tasks-per-node count, a SLURM_NODEID
// beyond it, SLURMD_NODENAME not the node SLURM_NODEID names, or `tasks` (SLURM_NTASKS, when
// >= 0) not the sum of the tasks per node (which must be at most kMaxHostlistNames).
absl::StatusOr<std::optional<SlurmStep>> SlurmStepFromEnvironment(int tasks);

}  // namespace switchyard::cluster
