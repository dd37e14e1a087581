// Launch detection: Slurm hostlists and tasks-per-node strings, and DetectLaunch on the
// environments srun, mpirun and PMIx give (set here with setenv, cleared after each test).
#include "cluster/launch.h"

#include <cstdlib>
#include <map>
#include <string>

#include "cluster/slurm.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::cluster {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(Hostlist, ExpandsRangesListsAndPadding) {
  EXPECT_THAT(*ExpandHostlist("n[1-3]"), ElementsAre("n1", "n2", "n3"));
  EXPECT_THAT(*ExpandHostlist("gpu[08-10,12],login1"), ElementsAre("gpu08", "gpu09", "gpu10", "gpu12", "login1"));
  EXPECT_THAT(*ExpandHostlist("rack[1-2]-g[01-02]"), ElementsAre("rack1-g01", "rack1-g02", "rack2-g01", "rack2-g02"));
  EXPECT_THAT(*ExpandHostlist("solo"), ElementsAre("solo"));
  EXPECT_THAT(*ExpandHostlist("a[7]b"), ElementsAre("a7b"));
}

TEST(Hostlist, RefusesMalformedExpressions) {
  for (const char* bad : {"", "n[1-3", "n1-3]", "n[[1]]", "n[3-1]", "n[a-b]", "n[1-]", "a,,b", ",a", "n[]",
                          "n[1-99999999]", "n[1-300][1-300]"}) {
    auto names = ExpandHostlist(bad);
    EXPECT_FALSE(names.ok()) << bad;
    EXPECT_THAT(names.status().message(), HasSubstr("hostlist")) << bad;
  }
}

TEST(Hostlist, BoundsNamesAndBytes) {
  // Long names would multiply into gigabytes over a large range: refused before expanding.
  const std::string long_name = std::string(100000, 'A') + "[1-65536]";
  auto names = ExpandHostlist(long_name);
  ASSERT_FALSE(names.ok());
  EXPECT_THAT(names.status().message(), HasSubstr("more than 65536"));
  EXPECT_LT(names.status().message().size(), 200u);  // the value is echoed capped
  EXPECT_THAT(ExpandHostlist(std::string(300, 'n') + "[1-2]").status().message(), HasSubstr("more than 255 bytes"));
  EXPECT_THAT(ExpandHostlist(std::string(256, 'n')).status().message(), HasSubstr("256 bytes"));
  EXPECT_THAT(ExpandHostlist("n\x1b(0\rEVIL").status().message(), HasSubstr("printable ASCII"));
  EXPECT_THAT(ExpandHostlist("n 1").status().message(), HasSubstr("printable ASCII"));
  EXPECT_TRUE(ExpandHostlist(std::string(255, 'n')).ok());
}

TEST(TasksPerNode, ExpandsRepeats) {
  EXPECT_THAT(*ExpandTasksPerNode("2(x3),1"), ElementsAre(2, 2, 2, 1));
  EXPECT_THAT(*ExpandTasksPerNode("4"), ElementsAre(4));
  for (const char* bad : {"", "0", "2(x0)", "2(x3", "x", "2,,1", "-1", "2(x999999)", "2147483647", "65537"}) {
    EXPECT_FALSE(ExpandTasksPerNode(bad).ok()) << bad;
  }
}

// Sets the variables for the test's lifetime; every launcher variable DetectLaunch reads is
// unset first so the runner's own environment (a CI job under Slurm) does not leak in.
class Env {
 public:
  explicit Env(const std::map<std::string, std::string>& vars) {
    for (const char* name : {"SWITCHYARD_RANK", "SWITCHYARD_SIZE", "SWITCHYARD_LOCAL_RANK", "SWITCHYARD_LOCAL_SIZE",
                             "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                             "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODEID",
                             "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_STEP_TASKS_PER_NODE",
                             "SLURM_TASKS_PER_NODE", "SLURMD_NODENAME", "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK",
                             "PMIX_LOCAL_SIZE"}) {
      if (const char* v = std::getenv(name)) saved_[name] = v;
      unsetenv(name);
      touched_.push_back(name);
    }
    for (const auto& [k, v] : vars) setenv(k.c_str(), v.c_str(), 1);
  }
  ~Env() {
    for (const std::string& name : touched_) unsetenv(name.c_str());
    for (const auto& [k, v] : saved_) setenv(k.c_str(), v.c_str(), 1);
  }

 private:
  std::map<std::string, std::string> saved_;
  std::vector<std::string> touched_;
};

std::map<std::string, std::string> SrunRank(int rank, int local, int node, const std::string& name) {
  return {{"SLURM_PROCID", std::to_string(rank)}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", std::to_string(local)},
          {"SLURM_NODEID", std::to_string(node)}, {"SLURM_STEP_NODELIST", "n[1-2]"}, {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"},
          {"SLURMD_NODENAME", name}};
}

TEST(DetectLaunch, SrunGivesNodesAndNames) {
  Env env(SrunRank(3, 1, 1, "n2"));
  auto info = DetectLaunch();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->launcher, "srun");
  EXPECT_EQ(info->rank, 3);
  EXPECT_EQ(info->size, 4);
  EXPECT_EQ(info->local_rank, 1);
  EXPECT_EQ(info->local_size, 2);
  EXPECT_EQ(info->node, 1);
  EXPECT_EQ(info->nodes, 2);
  EXPECT_EQ(info->ranks_per_node, 2);
  EXPECT_EQ(info->node_name, "n2");
}

TEST(DetectLaunch, UnequalNodesHaveNoRanksPerNode) {
  auto vars = SrunRank(3, 0, 1, "n2");
  vars["SLURM_STEP_TASKS_PER_NODE"] = "3,1";
  Env env(vars);
  auto info = DetectLaunch();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->nodes, 2);
  EXPECT_EQ(info->local_size, 1);
  EXPECT_EQ(info->ranks_per_node, 0);
}

TEST(DetectLaunch, MalformedSlurmEnvironmentNamesTheVariable) {
  struct Case {
    std::string var, value, says;
  };
  const Case cases[] = {
      {"SLURM_STEP_NODELIST", "n[1-3]", "SLURM_STEP_NODELIST='n[1-3]' names 3 nodes but SLURM_STEP_TASKS_PER_NODE"},
      {"SLURM_STEP_NODELIST", "n[1-2", "SLURM_STEP_NODELIST: hostlist 'n[1-2'"},
      {"SLURM_STEP_TASKS_PER_NODE", "2(x2", "SLURM_STEP_TASKS_PER_NODE: tasks per node"},
      {"SLURM_STEP_TASKS_PER_NODE", "3(x2)", "places 6 tasks but SLURM_NTASKS=4"},
      {"SLURM_NODEID", "5", "SLURM_NODEID='5' is not a node of SLURM_STEP_NODELIST"},
      {"SLURMD_NODENAME", "n7", "SLURMD_NODENAME='n7' but SLURM_NODEID=1 is node 'n2'"},
      {"SLURM_PROCID", "0", "is not in node order"},
      {"SLURM_NTASKS", "x", "SLURM_NTASKS='x' is not an integer"},
      {"SLURM_STEP_TASKS_PER_NODE", "65536,65536", "places 131072 tasks, more than 65536"},
  };
  for (const Case& c : cases) {
    auto vars = SrunRank(3, 1, 1, "n2");
    vars[c.var] = c.value;
    Env env(vars);
    auto info = DetectLaunch();
    ASSERT_FALSE(info.ok()) << c.var << "=" << c.value;
    EXPECT_TRUE(absl::IsInvalidArgument(info.status()));
    EXPECT_THAT(info.status().message(), HasSubstr(c.says)) << c.var << "=" << c.value;
  }
}

TEST(DetectLaunch, TaskCountsGiveTheSizeWithoutSlurmNtasks) {
  auto vars = SrunRank(3, 1, 1, "n2");
  vars.erase("SLURM_NTASKS");
  {
    Env env(vars);
    auto info = DetectLaunch();
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->size, 4);
  }
  vars["SLURM_PROCID"] = "9";
  Env env(vars);
  EXPECT_THAT(DetectLaunch().status().message(), HasSubstr("SLURM_PROCID=9 but the step's tasks per node place 4 tasks"));
}

TEST(DetectLaunch, MpirunInsideAnAllocationTakesSlurmsNodeName) {
  Env env({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
           {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}, {"SLURMD_NODENAME", "n3"},
           // the orted's own one-task step: not the ranks' layout, and not checked against it
           {"SLURM_STEP_TASKS_PER_NODE", "1(x4)"}, {"SLURM_STEP_NODELIST", "n[1-4]"}, {"SLURM_NODEID", "2"}});
  auto info = DetectLaunch();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->launcher, "mpirun");
  EXPECT_EQ(info->nodes, 4);
  EXPECT_EQ(info->node, 2);
  EXPECT_EQ(info->ranks_per_node, 2);
  EXPECT_EQ(info->node_name, "n3");
}

TEST(DetectLaunch, NoLauncherIsRankZeroOfOneOnThisHost) {
  Env env({});
  auto info = DetectLaunch();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->launcher, "none");
  EXPECT_EQ(info->size, 1);
  EXPECT_EQ(info->nodes, 1);
  EXPECT_FALSE(info->node_name.empty());
}

}  // namespace
}  // namespace switchyard::cluster
