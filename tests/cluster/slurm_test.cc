// Switchyard under a real Slurm (label slurm): slurmctld + munged + 4 slurmd started by
// scripts/slurm_local.sh (the ctest fixtures slurm_cluster_up / slurm_cluster_down, which also
// runs when a test fails), jobs submitted with sbatch from examples/slurm/.
//
//   - the example on 2 and 4 nodes completes; `switchyard status` maps each rank to the node
//     Slurm gave it; the output checksum equals an mpirun run of the same configuration;
//   - the mpirun variant inside the allocation does the same;
//   - scancel mid-run: workers finish their step and exit 0, the report and the state are
//     written, nothing is left running; a new job on the same state directory resumes its epoch;
//   - requeue resumes too, and the time-limit warning (SIGUSR1) drains the job to a clean end;
//   - a malformed Slurm environment: every rank exits 2 naming the variable.
#include <dirent.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/common/cluster_util.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

using std::chrono::seconds;

const std::string kSource = SWITCHYARD_SOURCE_DIR;
const std::string kBuild = SWITCHYARD_BUILD_DIR;
const std::string kCli = kBuild + "/cli/switchyard";
const std::string kTrace = kSource + "/data/traces/deepseek_v3_sglang_decode_in1000out1000.csv";
constexpr int kTotalTokens = 96;  // per step over all ranks: the checksum does not depend on the rank count

// Open MPI ranks on fake nodes of one host: pml ucx (UCX finds the shared host by itself; Open
// MPI 4.1's btl tcp crashed in MPI_Init about one job in six between such nodes, and its
// shared-memory btl would collide between nodes that share a host name), yield when ranks
// outnumber cores; mpirun runs as root here.
const std::vector<std::string> kMpiEnv = {"OMPI_MCA_pml=ucx", "OMPI_MCA_pml_ucx_tls=any", "OMPI_MCA_pml_ucx_devices=any",
                                          "OMPI_MCA_btl=self", "OMPI_MCA_oob_tcp_if_include=lo",
                                          "OMPI_MCA_mpi_yield_when_idle=1", "OMPI_ALLOW_RUN_AS_ROOT=1",
                                          "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "UCX_NET_DEVICES=lo"};

std::string WorkerArgs(int ranks, int steps, const std::string& extra = "") {
  return absl::StrCat("--model preset:deepseek-v3 --scale 0.0625 --layers 2 --workload trace:", kTrace,
                      " --tokens-per-rank ", kTotalTokens / ranks, " --steps ", steps, " --log-every 0 ", extra);
}

std::string Trim(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

test::RunResult Slurm(const std::vector<std::string>& argv, int timeout_s = 30) {
  return test::RunCommand(argv, seconds(timeout_s));
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nlohmann::json::object();
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// PIDs of live processes whose environment says they belong to Slurm job `id`.
std::vector<int> JobProcesses(const std::string& id) {
  std::vector<int> out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return out;
  const std::string needle = "SLURM_JOB_ID=" + id;
  while (dirent* e = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    const std::string env = test::Slurp(absl::StrCat("/proc/", pid, "/environ"));
    const std::string status = test::Slurp(absl::StrCat("/proc/", pid, "/status"));
    if (absl::StrContains(status, "State:\tZ")) continue;  // exited, not yet reaped
    for (absl::string_view var : absl::StrSplit(env, '\0')) {
      if (var == needle) out.push_back(pid);
    }
  }
  closedir(proc);
  return out;
}

// One sbatch job of an example script, writing into its own directory under `dir`.
class Job {
 public:
  Job(const test::TempDir& dir, const std::string& script, int nodes, const std::string& worker_args,
      const std::vector<std::string>& env = {}, const std::string& name = "job")
      : dir_(dir.File(name)) {
    std::vector<std::string> all = kMpiEnv;
    all.insert(all.end(), {"SWITCHYARD_HOME=" + kSource, "SWITCHYARD_BIN=" + kBuild, "SWITCHYARD_JOB_DIR=" + dir_,
                           "SWITCHYARD_LISTEN_HOST=127.0.0.1", "SWITCHYARD_WORKER_ARGS=" + worker_args});
    all.insert(all.end(), env.begin(), env.end());
    const test::RunResult r = test::RunCommand(
        {"sbatch", "--parsable", absl::StrCat("--nodes=", nodes), "--ntasks-per-node=2", "--overcommit",
         "--output=" + dir_ + ".out", "--chdir=" + dir.path(), kSource + "/examples/slurm/" + script},
        seconds(30), all);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    id_ = Trim(r.out);
  }
  // Cancels the job if a failed test left it running.
  ~Job() {
    if (!id_.empty() && !Done()) Slurm({"scancel", id_});
  }

  const std::string& id() const { return id_; }
  std::string File(const std::string& name) const { return dir_ + "/" + name; }
  std::string Output() const { return test::Slurp(dir_ + ".out"); }

  bool Done() const {
    const test::RunResult r = Slurm({"squeue", "-h", "-j", id_, "-o", "%T"});
    return r.exit_code == 0 && Trim(r.out).empty();
  }
  // Polls squeue until the job has left it; then waits for its processes to be gone.
  bool Wait(int timeout_s) const {
    const auto deadline = std::chrono::steady_clock::now() + seconds(timeout_s);
    while (!Done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    while (!JobProcesses(id_).empty()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return true;
  }
  // The field of `scontrol show job` (e.g. "NodeList", "JobState").
  std::string Field(const std::string& key) const {
    const test::RunResult r = Slurm({"scontrol", "-o", "show", "job", id_});
    for (absl::string_view kv : absl::StrSplit(r.out, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
      if (absl::ConsumePrefix(&kv, key + "=")) return std::string(kv);
    }
    return "";
  }
  std::string Address() const { return Trim(test::Slurp(File("admin_address"))); }
  // Polls the job's coordinator until its committed epoch is at least `epoch`.
  int64_t WaitForEpoch(int64_t epoch, int timeout_s) const {
    int64_t seen = -1;
    const auto deadline = std::chrono::steady_clock::now() + seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (!Address().empty()) {
        seen = test::JsonInt(test::StatusJson(kCli, Address()), "committedEpoch");
        if (seen >= epoch) return seen;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return seen;
  }

 private:
  std::string dir_, id_;
};

// The nodes Slurm gave the job, in order.
std::vector<std::string> Hostnames(const std::string& nodelist) {
  const test::RunResult r = Slurm({"scontrol", "show", "hostnames", nodelist});
  return absl::StrSplit(Trim(r.out), '\n', absl::SkipEmpty());
}

// The output checksum of the same configuration under plain mpirun (one host, no Slurm).
std::string MpirunChecksum() {
  test::TempDir dir;
  const std::string report = dir.File("mpirun.json");
  std::vector<std::string> argv = test::Mpirun(MPIEXEC, 4);
  argv.push_back(kBuild + "/worker/switchyard-worker");
  for (absl::string_view a : absl::StrSplit(WorkerArgs(4, 3), ' ', absl::SkipEmpty())) argv.emplace_back(a);
  argv.insert(argv.end(), {"--report", report});
  const test::RunResult r = test::RunCommand(argv, seconds(120), {"OMPI_MCA_mpi_yield_when_idle=1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return ReadJson(report).value("output_checksum", "(mpirun run failed)");
}

class SlurmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(std::getenv("SLURM_CONF"), nullptr) << "run through ctest: the slurm_cluster fixture sets SLURM_CONF";
  }

  // A completed job of `nodes` x 2 ranks: exit 0, the mpirun checksum, rank -> node as Slurm says.
  void ExpectCompletedLikeMpirun(const Job& job, int nodes) {
    ASSERT_TRUE(job.Wait(120)) << "job " << job.id() << " still there: " << job.Output();
    EXPECT_EQ(job.Field("JobState"), "COMPLETED") << job.Output();
    EXPECT_EQ(job.Field("ExitCode"), "0:0") << job.Output();
    EXPECT_TRUE(absl::StrContains(job.Output(), "workers exited 0")) << job.Output();
    const nlohmann::json report = ReadJson(job.File("report.json"));
    static const std::string reference = MpirunChecksum();
    EXPECT_EQ(report.value("output_checksum", "?"), reference) << job.Output();
    const nlohmann::json status = ReadJson(job.File("status.json"));
    const std::vector<std::string> names = Hostnames(job.Field("NodeList"));
    ASSERT_EQ(static_cast<int>(names.size()), nodes) << job.Field("NodeList");
    EXPECT_EQ(status.value("nodes", 0), nodes) << status.dump();
    ASSERT_EQ(static_cast<int>(status.value("workers", nlohmann::json::array()).size()), 2 * nodes) << status.dump();
    for (const nlohmann::json& w : status["workers"]) {
      const int rank = w.value("rank", 0);
      EXPECT_EQ(w.value("nodeName", ""), names[rank / 2]) << "rank " << rank << ": " << status.dump();
      EXPECT_EQ(w.value("node", 0), rank / 2) << "rank " << rank;
    }
  }
};

TEST_F(SlurmTest, SbatchOnTwoAndFourNodesMatchesMpirun) {
  test::TempDir dir;
  const Job two(dir, "switchyard.sbatch", 2, WorkerArgs(4, 3), {}, "two");
  const Job four(dir, "switchyard.sbatch", 4, WorkerArgs(8, 3), {}, "four");
  ExpectCompletedLikeMpirun(two, 2);
  ExpectCompletedLikeMpirun(four, 4);
}

TEST_F(SlurmTest, MpirunInsideTheAllocationMatchesToo) {
  test::TempDir dir;
  const Job job(dir, "switchyard-mpirun.sbatch", 2, WorkerArgs(4, 3));
  ExpectCompletedLikeMpirun(job, 2);
}

// Rebalancing on and a policy that acts on every window, so the job has moved past epoch 0
// when it is cancelled.
const std::vector<std::string> kRebalancing = {
    "SWITCHYARD_COORDINATOR_ARGS=--auto-rebalance --policy hysteresis_windows=1,cooldown_windows=1"};
std::string LongRun() { return WorkerArgs(4, 1000000, "--rebalance on --migration-bytes-per-step 67108864"); }

TEST_F(SlurmTest, ScancelPersistsStateAndResubmitResumes) {
  test::TempDir dir;
  int64_t epoch = 0;
  {
    const Job job(dir, "switchyard.sbatch", 2, LongRun(), kRebalancing, "first");
    epoch = job.WaitForEpoch(1, 90);
    ASSERT_GE(epoch, 1) << job.Output();
    ASSERT_EQ(Slurm({"scancel", job.id()}).exit_code, 0);
    ASSERT_TRUE(job.Wait(60)) << "still running after scancel: " << absl::StrJoin(JobProcesses(job.id()), " ");
    const std::string out = job.Output();
    EXPECT_EQ(job.Field("JobState"), "CANCELLED");
    EXPECT_TRUE(absl::StrContains(out, "(signal)")) << out;           // every rank stopped after one step
    EXPECT_TRUE(absl::StrContains(out, "workers exited 0")) << out;   // and exited 0
    EXPECT_FALSE(absl::StrContains(out, "retrying")) << out;          // the coordinator served them to the end
    EXPECT_GT(ReadJson(job.File("report.json")).value("steps", 0), 0) << out;
    // The coordinator wrote the final status once the workers had left.
    const nlohmann::json status = ReadJson(job.File("status.json"));
    EXPECT_EQ(status.value("workers", nlohmann::json::array()).size(), 4u) << test::Slurp(job.File("status.json"));
    const nlohmann::json state = ReadJson(job.File("state/state.json"));
    int64_t persisted = -1;
    ASSERT_TRUE(absl::SimpleAtoi(state.value("committed", nlohmann::json::object()).value("epoch", "-1"), &persisted))
        << state.dump().substr(0, 300);
    EXPECT_GE(persisted, epoch);
    epoch = persisted;
  }
  // A new job (new id, new job directory) on the first one's state directory.
  const Job again(dir, "switchyard.sbatch", 2, WorkerArgs(4, 5), {"SWITCHYARD_STATE_DIR=" + dir.File("first/state")}, "again");
  ASSERT_TRUE(again.Wait(120)) << again.Output();
  const std::string out = again.Output();
  EXPECT_TRUE(absl::StrContains(out, absl::StrCat("placement resumed epoch ", epoch, " from the coordinator"))) << out;
  EXPECT_EQ(test::JsonInt(ReadJson(again.File("status.json")), "committedEpoch"), epoch) << out;
  EXPECT_EQ(ReadJson(again.File("report.json")).value("final_epoch", int64_t{-1}), epoch) << out;  // the epoch it ran
  EXPECT_TRUE(absl::StrContains(out, "workers exited 0")) << out;
}

TEST_F(SlurmTest, RequeueResumesAndTimeLimitWarningDrains) {
  test::TempDir dir;
  const Job job(dir, "switchyard.sbatch", 2, LongRun(), kRebalancing);
  const int64_t epoch = job.WaitForEpoch(1, 90);
  ASSERT_GE(epoch, 1) << job.Output();
  ASSERT_EQ(Slurm({"scontrol", "requeue", job.id()}).exit_code, 0);
  // Slurm holds a requeued job for a while (BeginTime); release it as soon as it is pending.
  for (int i = 0; i < 200 && job.Field("JobState") != "PENDING"; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(Slurm({"scontrol", "update", "JobId=" + job.id(), "StartTime=now"}).exit_code, 0);
  for (int i = 0; i < 600 && !absl::StrContains(job.Output(), "placement resumed"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::string out = job.Output();
  ASSERT_TRUE(absl::StrContains(out, "(attempt 1)")) << out;
  ASSERT_TRUE(absl::StrContains(out, "placement resumed epoch ")) << out;
  // The time-limit warning as `--signal=USR1@60` sends it: to the job's steps, not the batch shell.
  ASSERT_EQ(Slurm({"scancel", "--signal=USR1", job.id()}).exit_code, 0);
  ASSERT_TRUE(job.Wait(60)) << job.Output();
  out = job.Output();
  EXPECT_EQ(job.Field("JobState"), "COMPLETED") << out;
  EXPECT_EQ(job.Field("ExitCode"), "0:0") << out;
  EXPECT_TRUE(absl::StrContains(out, "(signal)")) << out;
  const nlohmann::json state = ReadJson(job.File("state/state.json"));
  EXPECT_GE(std::stoll(state.value("committed", nlohmann::json::object()).value("epoch", "-1")), epoch);
}

TEST_F(SlurmTest, MalformedSlurmEnvironmentExitsTwoOnEveryRank) {
  // srun sets the step's variables; `env` then overrides one in each task, as a broken
  // prolog or wrapper would.
  std::vector<std::string> argv = {"srun", "--nodes=2", "--ntasks=4", "--overcommit", "--mpi=pmix", "env",
                                   "SLURM_STEP_NODELIST=n[1-3]", kBuild + "/worker/switchyard-worker"};
  for (absl::string_view a : absl::StrSplit(WorkerArgs(4, 3), ' ', absl::SkipEmpty())) argv.emplace_back(a);
  const test::RunResult r = test::RunCommand(argv, seconds(60), kMpiEnv);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  int lines = 0;
  for (absl::string_view line : absl::StrSplit(r.err, '\n')) {
    lines += absl::StrContains(line, "switchyard-worker: SLURM_STEP_NODELIST='n[1-3]' names 3 nodes but "
                                     "SLURM_STEP_TASKS_PER_NODE='2(x2)' counts tasks on 2");
  }
  EXPECT_EQ(lines, 4) << r.err;
}

}  // namespace
}  // namespace switchyard
