// The control plane as users run it (label mpi): a switchyard-coordinator process, workers
// under `mpirun -np 4` registering and reporting to it, the `switchyard` CLI reading and
// changing it; the coordinator is stopped and restarted mid-run: the workers keep serving,
// register again, and the restarted coordinator has its policy and pins back.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "tests/common/cluster_util.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

const std::string kCoordinator = SWITCHYARD_COORDINATOR;
const std::string kWorker = SWITCHYARD_WORKER;
const std::string kCli = SWITCHYARD_CLI;
const std::string kTrace = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_decode_in1000out1000.csv";
const std::vector<std::string> kEnv = {"OMPI_MCA_mpi_yield_when_idle=1", "UCX_NET_DEVICES=lo"};

test::RunResult Cli(const std::string& address, std::vector<std::string> args) {
  return test::Cli(kCli, address, std::move(args));
}
nlohmann::json StatusJson(const std::string& address) { return test::StatusJson(kCli, address); }
bool WaitForStatus(const std::string& address, const std::function<bool(const nlohmann::json&)>& done, int seconds = 60) {
  return test::WaitForStatus(kCli, address, done, seconds);
}
int64_t Number(const nlohmann::json& j, const char* key) { return test::JsonInt(j, key); }
int Registered(const nlohmann::json& s) { return static_cast<int>(Number(s, "registered")); }

std::vector<std::string> WorkerCommand(std::vector<std::string> args) {
  std::vector<std::string> argv = test::Mpirun(MPIEXEC, 4);
  argv.push_back(kWorker);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// Now, as the step logs' done_unix_s.
double UnixSeconds() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

TEST(CoordinatorLaunch, WorkersRegisterReportAndSurviveACoordinatorRestart) {
  test::TempDir dir;
  const std::vector<std::string> durable = {"--state-dir", dir.File("state"), "--heartbeat-timeout-s", "3"};
  auto coordinator = std::make_unique<test::CoordinatorProcess>(kCoordinator, dir, 0, durable);
  const int port = coordinator->port();
  ASSERT_GT(port, 0) << coordinator->log();
  const std::string address = coordinator->address();

  // 4 ranks, 256 experts in 65 slots per rank (one spare); the run lasts until the SIGUSR1
  // below, after the restart's checks (a fixed step count is a guess at the machine's speed).
  test::Process workers(WorkerCommand({"--model", "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2",
                                       "--tokens-per-rank", "64", "--slots-per-rank", "65", "--workload", "trace:" + kTrace,
                                       "--steps", "1000000", "--log-every", "0", "--window-steps", "20", "--coordinator", address,
                                       "--step-log", dir.File("steps")}),
                        dir.File("workers.log"), kEnv);
  ASSERT_TRUE(WaitForStatus(address, [](const nlohmann::json& s) { return Registered(s) == 4 && Number(s, "windows") >= 2; }))
      << test::Slurp(dir.File("workers.log"));

  // The CLI's table.
  test::RunResult r = Cli(address, {"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("4 ranks on 1 node, step shares; 4 registered, 4 healthy"), std::string::npos) << r.out;
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_NE(r.out.find(absl::StrFormat("%5d  ", rank)), std::string::npos) << r.out;
  }
  EXPECT_NE(r.out.find("balancedness (last window"), std::string::npos) << r.out;
  r = Cli(address, {"load", "--layer", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("hottest experts"), std::string::npos) << r.out;
  // Changes the restart must keep: a policy and a pin; and a bad request changes nothing.
  r = Cli(address, {"policy", "min_gain=0.25", "hysteresis_windows=3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Cli(address, {"pin", "--expert", "200", "--rank", "0", "--layer", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Cli(address, {"pin", "--expert", "999", "--rank", "0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("expert 999"), std::string::npos) << r.err;

  // Stop the coordinator: the workers keep stepping (their step logs show steps done while
  // it was down: a count of steps would depend on the machine's speed).
  const int64_t step_before = Number(StatusJson(address), "step");
  EXPECT_EQ(coordinator->Stop(), 0);
  const double down_from = UnixSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_TRUE(workers.Running()) << test::Slurp(dir.File("workers.log"));

  const double down_until = UnixSeconds();
  coordinator = std::make_unique<test::CoordinatorProcess>(kCoordinator, dir, port, durable);
  ASSERT_EQ(coordinator->port(), port) << coordinator->log();
  ASSERT_TRUE(WaitForStatus(address, [](const nlohmann::json& s) { return Registered(s) == 4 && Number(s, "windows") >= 1; }))
      << test::Slurp(dir.File("workers.log"));
  const nlohmann::json after = StatusJson(address);
  EXPECT_GT(Number(after, "step"), step_before);
  ASSERT_TRUE(after.contains("pins"));
  EXPECT_EQ(after["pins"][0].value("expert", 0), 200);
  r = Cli(address, {"policy", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json policy = nlohmann::json::parse(r.out);
  EXPECT_DOUBLE_EQ(policy.value("minGain", 0.0), 0.25);
  EXPECT_EQ(policy.value("hysteresisWindows", 0), 3);
  r = Cli(address, {"events"});
  EXPECT_NE(r.out.find("restored"), std::string::npos) << r.out;

  // SIGUSR1 to mpirun, which passes it to every rank (a SIGTERM would have mpirun kill them
  // a second later): the ranks stop after the same step, leave, and exit 0.
  ASSERT_EQ(kill(workers.pid(), SIGUSR1), 0);
  bool timed_out = false;
  const int code = workers.Wait(std::chrono::seconds(120), &timed_out);
  ASSERT_FALSE(timed_out);
  const std::string log = test::Slurp(dir.File("workers.log"));
  EXPECT_EQ(code, 0) << log;
  EXPECT_NE(log.find("stopped after step"), std::string::npos) << log;
  EXPECT_NE(log.find("tokens conserved: yes"), std::string::npos) << log;
  // Every rank served while the coordinator was down.
  const std::map<int, test::StepLog> steps = test::ReadStepLogs(dir.File("steps"));
  ASSERT_EQ(steps.size(), 4u);
  for (const auto& [rank, rows] : steps) {
    const int64_t served = std::count_if(rows.begin(), rows.end(), [&](const auto& row) {
      return row.second.done > down_from && row.second.done < down_until;
    });
    EXPECT_GE(served, 2) << "rank " << rank << " between " << absl::StrFormat("%.3f and %.3f", down_from, down_until);
  }
  // They said goodbye: all four left, none lost.
  EXPECT_TRUE(WaitForStatus(address, [](const nlohmann::json& s) {
    int left = 0;
    for (const auto& w : s.value("workers", nlohmann::json::array())) left += w.value("left", false);
    return left == 4;
  }, 10));
  EXPECT_EQ(coordinator->Stop(), 0);
}

// --coordinator embedded: rank 0 runs the coordinator; the CLI reaches it at the address rank
// 0 prints; every window of every rank is aggregated.
TEST(CoordinatorLaunch, EmbeddedCoordinatorInRankZero) {
  test::TempDir dir;
  test::Process workers(WorkerCommand({"--model", "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2",
                                       "--tokens-per-rank", "64", "--workload", "trace:" + kTrace, "--steps", "600",
                                       "--log-every", "0", "--window-steps", "20", "--coordinator", "embedded"}),
                        dir.File("workers.log"), kEnv);
  const std::string marker = "embedded coordinator at ";
  std::string address;
  for (int i = 0; i < 600 && address.empty(); ++i) {
    const std::string log = test::Slurp(dir.File("workers.log"));
    const size_t at = log.find(marker);
    if (at != std::string::npos && log.find(' ', at + marker.size()) != std::string::npos) {
      address = log.substr(at + marker.size(), log.find(' ', at + marker.size()) - at - marker.size());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(address.empty()) << test::Slurp(dir.File("workers.log"));
  EXPECT_TRUE(WaitForStatus(address, [](const nlohmann::json& s) { return Registered(s) == 4; }, 20));
  bool timed_out = false;
  const int code = workers.Wait(std::chrono::seconds(300), &timed_out);
  ASSERT_FALSE(timed_out);
  const std::string log = test::Slurp(dir.File("workers.log"));
  EXPECT_EQ(code, 0) << log;
  EXPECT_NE(log.find("embedded coordinator: 30 load windows aggregated"), std::string::npos) << log;
}

// SIGTERM to mpirun (what scancel and Ctrl-C do): every rank stops after the same step, sends
// its last window and Leave, writes its report; the coordinator shows every rank as left, none
// as lost.
TEST(CoordinatorLaunch, SigtermEndsEveryRankCleanly) {
  test::TempDir dir;
  test::CoordinatorProcess coordinator(kCoordinator, dir, 0, {"--heartbeat-timeout-s", "2"});
  ASSERT_GT(coordinator.port(), 0) << coordinator.log();
  const std::string address = coordinator.address();
  test::Process workers(WorkerCommand({"--model", "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2",
                                       "--tokens-per-rank", "64", "--workload", "trace:" + kTrace, "--steps", "1000000",
                                       "--log-every", "0", "--window-steps", "20", "--coordinator", address, "--report",
                                       dir.File("report.json")}),
                        dir.File("workers.log"), kEnv);
  ASSERT_TRUE(WaitForStatus(address, [](const nlohmann::json& s) { return Registered(s) == 4 && Number(s, "windows") >= 2; }))
      << test::Slurp(dir.File("workers.log"));
  ASSERT_EQ(kill(workers.pid(), SIGTERM), 0);
  bool timed_out = false;
  workers.Wait(std::chrono::seconds(60), &timed_out);
  ASSERT_FALSE(timed_out) << test::Slurp(dir.File("workers.log"));
  const std::string log = test::Slurp(dir.File("workers.log"));
  EXPECT_NE(log.find("stopped after step"), std::string::npos) << log;
  std::ifstream in(dir.File("report.json"));
  const nlohmann::json report = nlohmann::json::parse(in, nullptr, false);
  ASSERT_TRUE(report.is_object()) << log;
  EXPECT_TRUE(report.value("stopped_early", false));
  EXPECT_TRUE(report.value("tokens_conserved", false));
  std::this_thread::sleep_for(std::chrono::seconds(3));  // past the heartbeat timeout
  const nlohmann::json status = StatusJson(address);
  ASSERT_TRUE(status.contains("workers")) << status.dump();
  for (const auto& w : status["workers"]) {
    EXPECT_TRUE(w.value("left", false)) << w.dump();
  }
  const std::string events = Cli(address, {"events"}).out;
  EXPECT_EQ(events.find("worker_lost"), std::string::npos) << events;
  EXPECT_EQ(coordinator.Stop(), 0);
}

// SIGUSR1 makes the coordinator write its state (Slurm's time-limit warning); SIGTERM with
// --stop-grace-s keeps it serving the workers a scancel also signalled until they have left,
// so none of them finds it gone while it finishes its step.
TEST(CoordinatorLaunch, StopGraceServesSignalledWorkersUntilTheyLeave) {
  test::TempDir dir;
  test::CoordinatorProcess coordinator(kCoordinator, dir, 0,
                                       {"--state-dir", dir.File("state"), "--stop-grace-s", "30", "--heartbeat-timeout-s", "5"});
  ASSERT_GT(coordinator.port(), 0) << coordinator.log();
  const std::string address = coordinator.address();
  test::Process workers(WorkerCommand({"--model", "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2",
                                       "--tokens-per-rank", "64", "--workload", "trace:" + kTrace, "--steps", "1000000",
                                       "--log-every", "0", "--window-steps", "20", "--coordinator", address}),
                        dir.File("workers.log"), kEnv);
  ASSERT_TRUE(WaitForStatus(address, [](const nlohmann::json& s) { return Registered(s) == 4 && Number(s, "windows") >= 1; }))
      << test::Slurp(dir.File("workers.log"));
  ASSERT_EQ(kill(coordinator.pid(), SIGUSR1), 0);
  EXPECT_NE(test::WaitForEvent(kCli, address, "checkpoint", 10).find("SIGUSR1"), std::string::npos);

  ASSERT_EQ(kill(coordinator.pid(), SIGTERM), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_NE(StatusJson(address).dump(), "{}") << "the coordinator stopped serving with workers running";
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(workers.pid(), SIGTERM), 0);
  bool timed_out = false;
  workers.Wait(std::chrono::seconds(60), &timed_out);  // mpirun itself exits 1 when signalled
  ASSERT_FALSE(timed_out) << test::Slurp(dir.File("workers.log"));
  EXPECT_EQ(coordinator.Wait(std::chrono::seconds(20), &timed_out), 0) << coordinator.log();
  EXPECT_FALSE(timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(25)) << "waited for the grace, not the workers";
  const std::string log = test::Slurp(dir.File("workers.log"));
  EXPECT_NE(log.find("stopped after step"), std::string::npos) << log;
  EXPECT_EQ(log.find("retrying"), std::string::npos) << log;  // no worker lost the coordinator
  EXPECT_NE(coordinator.log().find("waiting up to 30 s for 4 running workers"), std::string::npos) << coordinator.log();
}

// A worker without the coordinator's token (or talking plaintext to its TLS port) stops after
// a few refused registrations with exit code 2 and says why, instead of running unmanaged.
TEST(CoordinatorLaunch, WorkersThatCannotAuthenticateExitTwo) {
  test::TempDir dir;
  std::ofstream(dir.File("token")) << "right\n";
  std::ofstream(dir.File("wrong")) << "wrong\n";
  test::CoordinatorProcess coordinator(kCoordinator, dir, 0, {"--auth-token-file", dir.File("token")});
  ASSERT_GT(coordinator.port(), 0) << coordinator.log();
  std::vector<std::string> argv = WorkerCommand({"--model", "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2",
                                                 "--tokens-per-rank", "64", "--workload", "uniform", "--steps", "1000000",
                                                 "--log-every", "0", "--coordinator", coordinator.address(),
                                                 "--coordinator-token-file", dir.File("wrong")});
  const auto start = std::chrono::steady_clock::now();
  const test::RunResult r = test::RunCommand(argv, std::chrono::seconds(120), kEnv);
  EXPECT_FALSE(r.timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("cannot authenticate to the coordinator"), std::string::npos) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("wrong bearer token"), std::string::npos) << r.out << r.err;
  // --resume asks first: the same refusal, exit 2, with what to check.
  argv.push_back("--resume");
  const test::RunResult resumed = test::RunCommand(argv, std::chrono::seconds(120), kEnv);
  EXPECT_EQ(resumed.exit_code, 2) << resumed.out << resumed.err;
  EXPECT_NE(resumed.err.find("--resume: cannot authenticate"), std::string::npos) << resumed.err;
  EXPECT_NE(resumed.err.find("check --coordinator-token-file"), std::string::npos) << resumed.err;
  EXPECT_EQ(coordinator.Stop(), 0);
}

// A stop (scancel) while --resume still waits for its coordinator ends the rank at once,
// exit 0, no step run.
TEST(CoordinatorLaunch, StopWhileResumeWaitsEndsCleanly) {
  test::TempDir dir;
  test::Process worker({kWorker, "--model", "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2", "--workload",
                        "uniform", "--steps", "10", "--coordinator", "127.0.0.1:1", "--resume", "--timeout-s", "120"},
                       dir.File("worker.log"), kEnv);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_TRUE(worker.Running()) << test::Slurp(dir.File("worker.log"));
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(worker.pid(), SIGTERM), 0);
  bool timed_out = false;
  EXPECT_EQ(worker.Wait(std::chrono::seconds(20), &timed_out), 0) << test::Slurp(dir.File("worker.log"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(test::Slurp(dir.File("worker.log")).find("stopped by a signal"), std::string::npos) << test::Slurp(dir.File("worker.log"));
}

}  // namespace
}  // namespace switchyard
