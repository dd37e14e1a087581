// A lost rank costs a short hiccup, not the job (issue "survive a lost rank"): real worker
// processes joined through a real coordinator (--world-size, UCX), killed with SIGKILL or
// stopped with SIGSTOP by pid, removed by the operator, with the coordinator restarted in the
// middle of the recovery. Every case compares each surviving token stream's outputs, step by
// step, with a run of the same job without the failure (the step logs' output_hash).
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/common/cluster_util.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

using namespace std::chrono_literals;

const std::string kTrace = std::string(SWITCHYARD_SOURCE_DIR) + "/../shared/traces/deepseek_v3_sglang_decode_in1000out1000.csv";
const std::vector<std::string> kEnv = {"UCX_NET_DEVICES=lo"};
constexpr int kSteps = 160;
constexpr int kFailAt = 40;  // the failure comes once some rank logged this step

using test::ReadStepLogs;
using test::StepLog;

class Job {
 public:
  Job(const test::TempDir& dir, const std::string& name, std::string coordinator, std::vector<std::string> extra = {},
      int steps = kSteps)
      : dir_(dir), name_(name), coordinator_(std::move(coordinator)), extra_(std::move(extra)), steps_(steps) {}

  std::vector<std::string> Args() const {
    std::vector<std::string> a = {SWITCHYARD_WORKER, "--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload",
                                  "trace:" + kTrace, "--layers", "2", "--steps", std::to_string(steps_), "--log-every", "5",
                                  "--tokens-per-rank", "64", "--threads", "1", "--backend", "ucx", "--coordinator",
                                  coordinator_, "--world-size", "4", "--job-key", name_, "--slots-per-rank", "96",
                                  "--step-log", dir_.File(name_), "--timeout-s", "60"};
    a.insert(a.end(), extra_.begin(), extra_.end());
    return a;
  }
  test::Process& Start() {
    const int i = static_cast<int>(workers_.size());
    workers_.push_back(std::make_unique<test::Process>(Args(), Log(i), kEnv));
    return *workers_.back();
  }
  std::string Log(int i) const { return dir_.File(absl::StrCat(name_, ".w", i, ".log")); }
  test::Process& worker(int i) { return *workers_[i]; }
  int size() const { return static_cast<int>(workers_.size()); }
  // Waits until some worker's progress line reached `step` (rank 0 prints every 5 steps).
  bool WaitForStep(int step, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const std::regex progress(R"(^step +(\d+))");
    while (std::chrono::steady_clock::now() < deadline) {
      for (int i = 0; i < size(); ++i) {
        std::istringstream in(test::Slurp(Log(i)));
        std::string line;
        std::smatch m;
        while (std::getline(in, line)) {
          if (std::regex_search(line, m, progress) && std::stoi(m[1]) >= step) return true;
        }
      }
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
  bool WaitForLine(int i, const std::string& text, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (test::Slurp(Log(i)).find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
  // The index of a worker that prints progress (rank 0): killing it shows the loss is not
  // special to a quiet rank.
  int Printer() const {
    for (int i = 0; i < size(); ++i) {
      if (test::Slurp(Log(i)).find("\nstep ") != std::string::npos) return i;
    }
    return 0;
  }
  int Wait(int i, bool* timed_out, std::chrono::seconds timeout = 120s) { return workers_[i]->Wait(timeout, timed_out); }

 private:
  const test::TempDir& dir_;
  std::string name_, coordinator_;
  std::vector<std::string> extra_;
  int steps_;
  std::vector<std::unique_ptr<test::Process>> workers_;
};

double Now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

class FaultToleranceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    coordinator_ = std::make_unique<test::CoordinatorProcess>(SWITCHYARD_COORDINATOR, dir_, 0, std::vector<std::string>{"--auto-rebalance"});
    ASSERT_GT(coordinator_->port(), 0) << coordinator_->log();
  }

  // The same job without a failure, `steps` steps: each origin's outputs of every step (a
  // step's outputs do not depend on how many steps the job runs).
  void RunReference(int steps = kSteps) {
    const std::string name = absl::StrCat("reference", steps);
    Job ref(dir_, name, coordinator_->address(), {}, steps);
    for (int i = 0; i < 4; ++i) ref.Start();
    for (int i = 0; i < 4; ++i) {
      bool timed_out = false;
      ASSERT_EQ(ref.Wait(i, &timed_out), 0) << test::Slurp(ref.Log(i));
    }
    reference_ = ReadStepLogs(dir_.File(name));
    ASSERT_EQ(reference_.size(), 4u);
    for (const auto& [origin, log] : reference_) ASSERT_EQ(log.size(), static_cast<size_t>(steps)) << origin;
  }

  // Every step an origin logged has the reference's outputs; returns how many steps matched.
  int ExpectIdentical(const std::map<int, StepLog>& run, int origin) {
    int matched = 0;
    auto it = run.find(origin);
    if (it == run.end()) {
      ADD_FAILURE() << "no step log for origin " << origin;
      return 0;
    }
    for (const auto& [step, row] : it->second) {
      EXPECT_EQ(row.hash, reference_[origin][step].hash) << "origin " << origin << " step " << step;
      matched += row.hash == reference_[origin][step].hash;
    }
    return matched;
  }

  test::TempDir dir_;
  std::unique_ptr<test::CoordinatorProcess> coordinator_;
  std::map<int, StepLog> reference_;
};

// kill -9 of a worker (the one printing progress): the other three regroup, finish every step
// with exit 0, their outputs identical to the run without the failure, the first step after
// the kill done within 10 s (the target is 5 s; docs/benchmarks.md has the figures); then a
// worker started again rejoins, takes the free token stream and receives replicas (load).
TEST_F(FaultToleranceTest, KillNineSurvivorsFinishIdenticallyAndARestartedWorkerRejoins) {
  // A long job, stopped (SIGTERM: every rank ends after the same step, exit 0) once the
  // restarted worker had 10 s: no race between its start-up and the job's end.
  Job job(dir_, "killed", coordinator_->address(), {"--rebalance", "on"}, 100000);
  for (int i = 0; i < 4; ++i) job.Start();
  ASSERT_TRUE(job.WaitForStep(kFailAt, 120s)) << test::Slurp(job.Log(0));
  const int victim = job.Printer();
  ASSERT_EQ(kill(job.worker(victim).pid(), SIGKILL), 0);
  const double killed_at = Now();
  bool timed_out = false;
  EXPECT_EQ(job.Wait(victim, &timed_out, 10s), -1);
  // The survivors regroup (some survivor prints "generation 1"); then a worker starts again.
  bool regrouped = false;
  for (int round = 0; round < 600 && !regrouped; ++round) {
    for (int i = 0; i < 4 && !regrouped; ++i) regrouped = i != victim && test::Slurp(job.Log(i)).find("generation 1:") != std::string::npos;
    if (!regrouped) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(regrouped) << test::Slurp(job.Log((victim + 1) % 4));
  const int newcomer = job.size();
  job.Start();
  ASSERT_TRUE(job.WaitForLine(newcomer, "joined the running job", 60s)) << test::Slurp(job.Log(newcomer));
  std::this_thread::sleep_for(10s);
  for (int i = 0; i < job.size(); ++i) {
    if (i != victim) kill(job.worker(i).pid(), SIGTERM);
  }
  for (int i = 0; i < job.size(); ++i) {
    if (i == victim) continue;
    EXPECT_EQ(job.Wait(i, &timed_out), 0) << "worker " << i << ":\n" << test::Slurp(job.Log(i));
    EXPECT_FALSE(timed_out);
  }
  // The coordinator saw it all (before the reference job replaces this one there): one loss, two regroups, the lost worker in its status.
  const nlohmann::json status = test::StatusJson(SWITCHYARD_CLI, coordinator_->address());
  EXPECT_GE(std::stoll(status.value("generation", std::string("0"))), 2) << status.dump();
  ASSERT_TRUE(status.contains("lost")) << status.dump();
  EXPECT_EQ(status["lost"].size(), 1u);
  const test::RunResult text = test::Cli(SWITCHYARD_CLI, coordinator_->address(), {"status"});
  EXPECT_NE(text.out.find("lost or removed workers"), std::string::npos) << text.out;
  const std::map<int, StepLog> run = ReadStepLogs(dir_.File("killed"));
  ASSERT_EQ(run.size(), 4u);  // three survivors and the newcomer (on the lost worker's stream)
  int last = 0;
  for (const auto& [origin, steps] : run) last = std::max(last, steps.rbegin()->first);
  RunReference(last + 1);
  int full = 0;
  for (const auto& [origin, steps] : run) full += ExpectIdentical(run, origin) == last + 1;
  EXPECT_EQ(full, 3) << "three survivors ran every step";
  // Recovery: the first step any survivor completed after the kill.
  double first_after = 1e300;
  int newcomer_origin = -1;
  for (const auto& [origin, steps] : run) {
    if (static_cast<int>(steps.size()) < last + 1) newcomer_origin = origin;
    for (const auto& [step, row] : steps) {
      if (row.done > killed_at) {
        first_after = std::min(first_after, row.done);
        break;
      }
    }
  }
  EXPECT_LT(first_after - killed_at, 10.0) << "the first step after the kill took " << first_after - killed_at << " s";
  // The newcomer gets load (replicas migrated to it) within 10 s of its first step.
  ASSERT_GE(newcomer_origin, 0);
  const StepLog& mine = run.at(newcomer_origin);
  ASSERT_FALSE(mine.empty());
  double loaded_at = 0;
  for (const auto& [step, row] : mine) {
    if (row.pairs > 0) {
      loaded_at = row.done;
      break;
    }
  }
  EXPECT_GT(loaded_at, 0) << "the rejoined worker never computed a pair:\n" << test::Slurp(job.Log(newcomer));
  if (loaded_at > 0) {
    EXPECT_LT(loaded_at - mine.begin()->second.done, 10.0);
  }
}

// SIGSTOP: a hung worker is lost after the heartbeat timeout; the others finish identically.
// Continued later, the stopped worker learns it was left out and exits 1 saying so.
TEST_F(FaultToleranceTest, AStoppedWorkerIsLostAndExitsWhenContinued) {
  RunReference();
  Job job(dir_, "stopped", coordinator_->address());
  for (int i = 0; i < 4; ++i) job.Start();
  ASSERT_TRUE(job.WaitForStep(kFailAt, 120s));
  const int victim = 2;
  ASSERT_EQ(kill(job.worker(victim).pid(), SIGSTOP), 0);
  bool timed_out = false;
  for (int i = 0; i < 4; ++i) {
    if (i == victim) continue;
    EXPECT_EQ(job.Wait(i, &timed_out), 0) << "worker " << i << ":\n" << test::Slurp(job.Log(i));
    EXPECT_FALSE(timed_out);
  }
  ASSERT_EQ(kill(job.worker(victim).pid(), SIGCONT), 0);
  EXPECT_EQ(job.Wait(victim, &timed_out, 90s), 1) << test::Slurp(job.Log(victim));
  EXPECT_FALSE(timed_out);
  EXPECT_NE(test::Slurp(job.Log(victim)).find("cannot continue the job"), std::string::npos) << test::Slurp(job.Log(victim));
  const std::map<int, StepLog> run = ReadStepLogs(dir_.File("stopped"));
  int full = 0;
  for (const auto& [origin, steps] : run) full += ExpectIdentical(run, origin) == kSteps;
  EXPECT_EQ(full, 3);
}

// `switchyard drain RANK --remove`: the rank finishes its step and leaves (exit 0); the others
// regroup without it (its experts re-placed) and finish identically.
TEST_F(FaultToleranceTest, DrainRemoveRetiresARank) {
  RunReference();
  Job job(dir_, "removed", coordinator_->address());
  for (int i = 0; i < 4; ++i) job.Start();
  ASSERT_TRUE(job.WaitForStep(kFailAt, 120s));
  const test::RunResult drained = test::Cli(SWITCHYARD_CLI, coordinator_->address(), {"drain", "1", "--remove"});
  ASSERT_EQ(drained.exit_code, 0) << drained.out << drained.err;
  bool timed_out = false;
  int removed = -1;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(job.Wait(i, &timed_out), 0) << "worker " << i << ":\n" << test::Slurp(job.Log(i));
    if (test::Slurp(job.Log(i)).find("removed by the operator") != std::string::npos) removed = i;
  }
  ASSERT_GE(removed, 0);
  const std::map<int, StepLog> run = ReadStepLogs(dir_.File("removed"));
  int full = 0;
  for (const auto& [origin, steps] : run) full += ExpectIdentical(run, origin) == kSteps;
  EXPECT_EQ(full, 3);
  // A launcher-started job cannot remove: refused, naming why (the coordinator's job is the
  // joined one here, so ask for a rank it does not have instead).
  const test::RunResult bad = test::Cli(SWITCHYARD_CLI, coordinator_->address(), {"drain", "9", "--remove"});
  EXPECT_NE(bad.exit_code, 0);
}

// The coordinator dies right after a worker, and comes back on the same port while the
// survivors regroup: they still finish every step identically.
TEST_F(FaultToleranceTest, ACoordinatorRestartDuringRecoveryEndsConsistent) {
  RunReference();
  const int port = coordinator_->port();
  Job job(dir_, "restart", coordinator_->address());
  for (int i = 0; i < 4; ++i) job.Start();
  ASSERT_TRUE(job.WaitForStep(kFailAt, 120s));
  ASSERT_EQ(kill(job.worker(3).pid(), SIGKILL), 0);
  ASSERT_EQ(kill(coordinator_->pid(), SIGKILL), 0);
  bool timed_out = false;
  coordinator_->Wait(5000ms, &timed_out);
  std::this_thread::sleep_for(1s);
  coordinator_ = std::make_unique<test::CoordinatorProcess>(SWITCHYARD_COORDINATOR, dir_, port);
  ASSERT_EQ(coordinator_->port(), port) << coordinator_->log();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(job.Wait(i, &timed_out, 180s), 0) << "worker " << i << ":\n" << test::Slurp(job.Log(i));
    EXPECT_FALSE(timed_out);
  }
  const std::map<int, StepLog> run = ReadStepLogs(dir_.File("restart"));
  int full = 0;
  for (const auto& [origin, steps] : run) full += ExpectIdentical(run, origin) == kSteps;
  EXPECT_EQ(full, 3);
}

}  // namespace
}  // namespace switchyard
