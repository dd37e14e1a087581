// The control plane as users run it (label mpi): a switchyard-coordinator process, workers
// under `mpirun -np 4` registering and reporting to it, the `switchyard` CLI reading and
// changing it; the coordinator is stopped and restarted mid-run: the workers keep serving,
// register again, and the restarted coordinator has its policy and pins back.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

const std::string kCoordinator = SWITCHYARD_COORDINATOR;
const std::string kWorker = SWITCHYARD_WORKER;
const std::string kCli = SWITCHYARD_CLI;
const std::string kTrace = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_decode_in1000out1000.csv";
const std::vector<std::string> kEnv = {"OMPI_MCA_mpi_yield_when_idle=1"};

// Waits for the coordinator's port file; 0 if it does not appear.
int WaitForPort(const std::string& port_file) {
  for (int i = 0; i < 200; ++i) {
    int port = 0;
    const std::string text = test::Slurp(port_file);
    if (!text.empty() && absl::SimpleAtoi(std::vector<std::string>(absl::StrSplit(text, ' '))[0], &port)) return port;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}

test::RunResult Cli(const std::string& address, std::vector<std::string> args) {
  args.insert(args.begin(), kCli);
  args.insert(args.end(), {"--coordinator", address});
  return test::RunCommand(args, std::chrono::seconds(30));
}

nlohmann::json StatusJson(const std::string& address) {
  const test::RunResult r = Cli(address, {"status", "--json"});
  if (r.exit_code != 0) return nlohmann::json::object();
  return nlohmann::json::parse(r.out, nullptr, false);
}

int64_t Number(const nlohmann::json& j, const char* key) {  // protobuf JSON: int64 as strings
  if (!j.contains(key)) return 0;
  if (j[key].is_string()) return std::stoll(j[key].get<std::string>());
  return j[key].get<int64_t>();
}

// Polls the status until `done` holds (up to `seconds`).
bool WaitForStatus(const std::string& address, const std::function<bool(const nlohmann::json&)>& done, int seconds = 60) {
  for (int i = 0; i < seconds * 5; ++i) {
    const nlohmann::json s = StatusJson(address);
    if (!s.is_discarded() && done(s)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

int Registered(const nlohmann::json& s) { return static_cast<int>(Number(s, "registered")); }

TEST(CoordinatorLaunch, WorkersRegisterReportAndSurviveACoordinatorRestart) {
  test::TempDir dir;
  const std::string state = dir.File("state");
  auto start_coordinator = [&](int port) {
    std::remove(dir.File("port").c_str());
    return std::make_unique<test::Process>(
        std::vector<std::string>{kCoordinator, "--listen", absl::StrCat("127.0.0.1:", port), "--state-dir", state,
                                 "--port-file", dir.File("port"), "--heartbeat-timeout-s", "3"},
        dir.File(absl::StrCat("coordinator", port, ".log")));
  };
  auto coordinator = start_coordinator(0);
  const int port = WaitForPort(dir.File("port"));
  ASSERT_GT(port, 0) << test::Slurp(dir.File("coordinator0.log"));
  const std::string address = absl::StrCat("127.0.0.1:", port);

  // 4 ranks, 256 experts in 65 slots per rank (one spare), ~10 ms steps here: long enough
  // for the restart below.
  test::Process workers({MPIEXEC, "--allow-run-as-root", "--oversubscribe", "-np", "4", "--mca", "btl_tcp_if_include", "lo",
                         "--mca", "oob_tcp_if_include", "lo", "-x", "OMPI_MCA_mpi_yield_when_idle", kWorker, "--model",
                         "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2", "--tokens-per-rank", "64",
                         "--slots-per-rank", "65", "--workload", "trace:" + kTrace, "--steps", "2500", "--log-every", "0",
                         "--window-steps", "20", "--coordinator", address},
                        dir.File("workers.log"), kEnv);
  ASSERT_TRUE(WaitForStatus(address, [](const nlohmann::json& s) { return Registered(s) == 4 && Number(s, "windows") >= 2; }))
      << test::Slurp(dir.File("workers.log"));

  // The CLI's table.
  test::RunResult r = Cli(address, {"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("4 ranks on 1 nodes; 4 registered, 4 healthy"), std::string::npos) << r.out;
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

  // Stop the coordinator: the workers keep stepping.
  const int64_t step_before = Number(StatusJson(address), "step");
  EXPECT_EQ(coordinator->Stop(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_TRUE(workers.Running()) << "the run ended before the restart; make it longer";

  coordinator = start_coordinator(port);
  ASSERT_EQ(WaitForPort(dir.File("port")), port) << test::Slurp(dir.File(absl::StrCat("coordinator", port, ".log")));
  ASSERT_TRUE(WaitForStatus(address, [](const nlohmann::json& s) { return Registered(s) == 4 && Number(s, "windows") >= 1; }))
      << test::Slurp(dir.File("workers.log"));
  const nlohmann::json after = StatusJson(address);
  EXPECT_GT(Number(after, "step"), step_before + 50);  // they served meanwhile
  ASSERT_TRUE(after.contains("pins"));
  EXPECT_EQ(after["pins"][0].value("expert", 0), 200);
  r = Cli(address, {"policy", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json policy = nlohmann::json::parse(r.out);
  EXPECT_DOUBLE_EQ(policy.value("minGain", 0.0), 0.25);
  EXPECT_EQ(policy.value("hysteresisWindows", 0), 3);
  r = Cli(address, {"events"});
  EXPECT_NE(r.out.find("restored"), std::string::npos) << r.out;

  bool timed_out = false;
  const int code = workers.Wait(std::chrono::seconds(300), &timed_out);
  ASSERT_FALSE(timed_out);
  const std::string log = test::Slurp(dir.File("workers.log"));
  EXPECT_EQ(code, 0) << log;
  EXPECT_NE(log.find("tokens conserved: yes"), std::string::npos) << log;
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
  test::Process workers({MPIEXEC, "--allow-run-as-root", "--oversubscribe", "-np", "4", "--mca", "btl_tcp_if_include", "lo",
                         "--mca", "oob_tcp_if_include", "lo", "-x", "OMPI_MCA_mpi_yield_when_idle", kWorker, "--model",
                         "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2", "--tokens-per-rank", "64", "--workload",
                         "trace:" + kTrace, "--steps", "600", "--log-every", "0", "--window-steps", "20", "--coordinator",
                         "embedded"},
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

}  // namespace
}  // namespace switchyard
