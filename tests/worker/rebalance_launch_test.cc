// Live rebalancing as users run it (label mpi): `mpirun -np 4 switchyard-worker --rebalance on`
// with an embedded or a separate coordinator. DESIGN.md section 6 through the real path:
// outputs bit-identical with rebalancing on and off, migrated replicas byte-identical, every
// step under one epoch on all ranks (from the per-rank step logs), tokens conserved; a rank
// drained through the admin API ends holding nothing; a coordinator restarted in the middle
// of a migration ends agreeing with the workers; a migration that cannot finish is aborted
// on every rank and reported.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "tests/common/cluster_util.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

const std::string kWorker = SWITCHYARD_WORKER;
const std::string kCli = SWITCHYARD_CLI;
const std::string kCoordinator = SWITCHYARD_COORDINATOR;
const std::string kTraces = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/";
const std::vector<std::string> kEnv = {"OMPI_MCA_mpi_yield_when_idle=1", "UCX_NET_DEVICES=lo"};

// DeepSeek-V3 (1/32 scale, 2 layers, 64 tokens per rank: ~10 ms steps here) from a
// contiguous placement with 2 spare slots per rank (or `slots`), prefill load switching to
// decode at step `decode_from` (half way when negative).
std::vector<std::string> Job(int steps, const std::string& backend = "mpi", int slots = 66, int decode_from = -1) {
  if (decode_from < 0) decode_from = steps / 2;
  return {"--model", "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2", "--tokens-per-rank", "64",
          "--slots-per-rank", std::to_string(slots), "--backend", backend, "--workload",
          "trace:" + kTraces + "deepseek_v3_sglang_prefill_in4096.csv", "--workload",
          "trace:" + kTraces + "deepseek_v3_sglang_decode_in1000out1000.csv@" + std::to_string(decode_from), "--steps",
          std::to_string(steps), "--log-every", "0", "--window-steps", "5"};
}

// Jobs that run until the test has seen what it waits for (a commit, and kDecodeFrom + 20
// steps), then are stopped (StopJob): a step count fixed in advance would guess the
// machine's speed. Their load switches to decode at kDecodeFrom, so that a reference of the
// same length sees the same load.
constexpr int kUntilStopped = 1000000;
constexpr int kDecodeFrom = 40;

// The coordinator's status shows `epoch` committed and step kDecodeFrom + 20 reached.
bool WaitForCommitAndDecode(const std::string& address, int64_t epoch) {
  return test::WaitForStatus(kCli, address, [epoch](const nlohmann::json& s) {
    return test::JsonInt(s, "committedEpoch") >= epoch && test::JsonInt(s, "targetEpoch") == epoch &&
           test::JsonInt(s, "step") >= kDecodeFrom + 20;
  });
}

std::vector<std::string> Command(std::vector<std::string> args) {
  std::vector<std::string> argv = test::Mpirun(MPIEXEC, 4);
  argv.push_back(kWorker);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<std::string> Plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

nlohmann::json ReadReport(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nlohmann::json::object();
  return nlohmann::json::parse(in, nullptr, false);
}

// SIGUSR1 to mpirun, which passes it to every rank (a SIGTERM would have mpirun kill them a
// second later): the ranks stop after the same step, rank 0 writes the report, all exit 0.
nlohmann::json StopJob(test::Process& workers, const std::string& report, const std::string& log) {
  EXPECT_EQ(kill(workers.pid(), SIGUSR1), 0);
  bool timed_out = false;
  EXPECT_EQ(workers.Wait(std::chrono::seconds(120), &timed_out), 0) << test::Slurp(log);
  EXPECT_FALSE(timed_out) << test::Slurp(log);
  const nlohmann::json j = ReadReport(report);
  EXPECT_TRUE(j.value("stopped_early", false)) << test::Slurp(log);
  EXPECT_TRUE(j.value("tokens_conserved", false)) << test::Slurp(log);
  return j;
}

nlohmann::json RunJob(const std::vector<std::string>& args, const std::string& report) {
  const test::RunResult r = test::RunCommand(Command(Plus(args, {"--report", report})), std::chrono::seconds(300), kEnv);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return ReadReport(report);
}

// (layer, rank, expert) of every replica of a placement in switchyard.placement/v1 or
// protobuf JSON (both list layers, each with its ranks' replicas).
std::set<std::tuple<int, int, int>> Replicas(const nlohmann::json& p) {
  std::set<std::tuple<int, int, int>> out;
  for (const auto& layer : p.value("layers", nlohmann::json::array())) {
    const auto& ranks = layer["ranks"];
    for (size_t r = 0; r < ranks.size(); ++r) {
      const auto& list = ranks[r].is_array() ? ranks[r] : ranks[r].value("replicas", nlohmann::json::array());
      for (const auto& x : list) out.insert({layer.value("layer", 0), static_cast<int>(r), x.value("expert", 0)});
    }
  }
  return out;
}

// Checks the step logs of all ranks: one epoch per step on every rank; returns the epochs.
std::vector<int> EpochsByStep(const std::string& prefix) {
  std::vector<std::vector<int>> per_rank(4);
  std::map<int, test::StepLog> logs = test::ReadStepLogs(prefix);
  for (int r = 0; r < 4; ++r) {
    for (const auto& [step, row] : logs[r]) per_rank[r].push_back(static_cast<int>(row.epoch));
  }
  for (int r = 1; r < 4; ++r) EXPECT_EQ(per_rank[r], per_rank[0]) << "rank " << r << " ran other epochs than rank 0";
  return per_rank[0];
}

class RebalanceLaunchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = new test::TempDir; }
  static void TearDownTestSuite() { delete dir_; }
  // The checksum of `steps` steps with the placement never changing.
  // (The placement does not change the checksum; the backend may not either, but we keep
  // each comparison within one backend.)
  static std::string Reference(int steps, const std::string& backend = "mpi", int decode_from = -1) {
    static std::map<std::tuple<int, std::string, int>, std::string> cache;
    auto& c = cache[{steps, backend, decode_from}];
    if (c.empty()) {
      const std::string report = dir_->File(absl::StrCat("off", steps, backend, decode_from, ".json"));
      c = RunJob(Plus(Job(steps, backend, 66, decode_from), {"--rebalance", "off"}), report).value("output_checksum", "?");
    }
    return c;
  }
  static test::TempDir* dir_;
};
test::TempDir* RebalanceLaunchTest::dir_ = nullptr;

TEST_F(RebalanceLaunchTest, EmbeddedRebalancingKeepsOutputsAndEpochsConsistent) {
  const int steps = 120;
  const std::string report = dir_->File("on.json"), log = dir_->File("steps");
  const nlohmann::json on = RunJob(Plus(Job(steps), {"--coordinator", "embedded", "--rebalance", "on", "--embedded-policy",
                                                     "noise_z=0,hysteresis_windows=1,cooldown_windows=1", "--step-log", log}),
                                   report);
  EXPECT_EQ(on.value("output_checksum", ""), Reference(steps));
  EXPECT_TRUE(on.value("tokens_conserved", false));
  EXPECT_TRUE(on.value("weights_identical", false));
  ASSERT_TRUE(on.contains("migrations"));
  int committed = 0;
  for (const auto& m : on["migrations"]) {
    if (m.value("commit_step", -1) < 0) continue;
    ++committed;
    EXPECT_GT(m.value("commit_step", 0), m.value("start_step", 0));
    EXPECT_GT(m.value("moved_replicas", 0), 0);
    EXPECT_LT(m.value("moved_replicas", 0), m.value("scratch_moved_replicas", 0));
  }
  EXPECT_GE(committed, 1);
  EXPECT_EQ(on.value("final_epoch", 0), committed);
  // Epoch agreement, and the epoch changes exactly at the commit steps.
  const std::vector<int> epochs = EpochsByStep(log);
  ASSERT_EQ(epochs.size(), static_cast<size_t>(steps));
  std::set<int> switches;
  for (int s = 1; s < steps; ++s) {
    if (epochs[s] != epochs[s - 1]) switches.insert(s);
  }
  std::set<int> commits;
  for (const auto& m : on["migrations"]) {
    if (m.value("commit_step", -1) >= 0) commits.insert(m.value("commit_step", 0));
  }
  EXPECT_EQ(switches, commits);
  // The ranks hold what the final placement says; the report's critical path is filled in.
  int held = 0;
  for (int x : on["held_replicas"]) held += x;
  EXPECT_EQ(held, static_cast<int>(Replicas(on["final_placement"]).size()));
  const nlohmann::json& cp = on["critical_path"];
  EXPECT_GT(cp.value("tokens_per_s", 0.0), 0);
  EXPECT_EQ(on["worst_balancedness_by_step"].size(), static_cast<size_t>(steps));
  ASSERT_EQ(cp["by_step_ms"].size(), static_cast<size_t>(steps));
  for (double ms : cp["by_step_ms"]) EXPECT_GT(ms, 0);
  // The migration term is part of a migration step's critical path, so it is smaller.
  EXPECT_GT(cp["migration_work_ms"].value("p99", 0.0), 0);
  EXPECT_LT(cp["migration_work_ms"].value("p99", 0.0), cp["migration_step_ms"].value("p99", 0.0));
}

TEST_F(RebalanceLaunchTest, DrainedRankEndsHoldingNothing) {
  test::TempDir dir;
  test::CoordinatorProcess coordinator(kCoordinator, dir, 0);
  ASSERT_GT(coordinator.port(), 0) << coordinator.log();
  const std::string address = coordinator.address();
  const std::string report = dir.File("drain.json"), log = dir.File("workers.log");
  // 86 slots per rank: three ranks can hold all 256 experts.
  test::Process workers(
      Command(Plus(Job(kUntilStopped, "ucx", 86, kDecodeFrom), {"--coordinator", address, "--rebalance", "on", "--report", report})),
      log, kEnv);
  ASSERT_TRUE(test::WaitForStatus(kCli, address, [](const nlohmann::json& s) { return test::JsonInt(s, "registered") == 4; }))
      << test::Slurp(log);
  const test::RunResult r = test::Cli(kCli, address, {"drain", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(WaitForCommitAndDecode(address, 1)) << test::StatusJson(kCli, address).dump() << test::Slurp(log);
  const nlohmann::json j = StopJob(workers, report, log);
  ASSERT_TRUE(j.contains("held_replicas")) << test::Slurp(log);
  EXPECT_EQ(j["held_replicas"][3], 0) << "the drain did not commit before the run ended";
  EXPECT_GE(j.value("final_epoch", 0), 1);
  for (const auto& [layer, rank, expert] : Replicas(j["final_placement"])) EXPECT_NE(rank, 3);
  EXPECT_TRUE(j.value("tokens_conserved", false));
  EXPECT_TRUE(j.value("weights_identical", false));
  EXPECT_EQ(j.value("output_checksum", ""), Reference(j.value("steps", 0), "ucx", kDecodeFrom));
  // The coordinator agrees: the workers' epoch and placement.
  const nlohmann::json s = test::StatusJson(kCli, address);
  EXPECT_EQ(test::JsonInt(s, "committedEpoch"), j.value("final_epoch", -1));
  const test::RunResult p = test::Cli(kCli, address, {"placement", "--json"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(Replicas(nlohmann::json::parse(p.out)), Replicas(j["final_placement"]));
}

TEST_F(RebalanceLaunchTest, CoordinatorRestartedMidMigrationEndsConsistent) {
  test::TempDir dir;
  const std::vector<std::string> durable = {"--state-dir", dir.File("state")};
  auto coordinator = std::make_unique<test::CoordinatorProcess>(kCoordinator, dir, 0, durable);
  const int port = coordinator->port();
  ASSERT_GT(port, 0) << coordinator->log();
  const std::string address = coordinator->address();
  const std::string report = dir.File("restart.json"), log = dir.File("workers.log");
  // A slow migration (16 KiB per step) so that the restart falls in the middle of it.
  test::Process workers(Command(Plus(Job(kUntilStopped, "mpi", 66, kDecodeFrom),
                                     {"--coordinator", address, "--rebalance", "on", "--migration-bytes-per-step", "16384",
                                      "--report", report})),
                        log, kEnv);
  ASSERT_TRUE(test::WaitForStatus(kCli, address, [](const nlohmann::json& s) {
    return test::JsonInt(s, "registered") == 4 && test::JsonInt(s, "windows") >= 2;
  })) << test::Slurp(log);
  test::RunResult r = test::Cli(kCli, address, {"rebalance", "--max-moves", "12"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_FALSE(test::WaitForEvent(kCli, address, "migration_started").empty()) << test::Slurp(log);
  const int64_t step_at_stop = test::JsonInt(test::StatusJson(kCli, address), "step");
  EXPECT_EQ(coordinator->Stop(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  coordinator = std::make_unique<test::CoordinatorProcess>(kCoordinator, dir, port, durable);
  ASSERT_EQ(coordinator->port(), port) << coordinator->log();
  // The restarted coordinator learns the commit from the workers.
  EXPECT_TRUE(WaitForCommitAndDecode(address, 1)) << test::StatusJson(kCli, address).dump() << test::Slurp(log);
  const nlohmann::json j = StopJob(workers, report, log);
  ASSERT_TRUE(j.contains("migrations")) << test::Slurp(log);
  ASSERT_EQ(j["migrations"].size(), 1u);
  const auto& m = j["migrations"][0];
  EXPECT_GT(m.value("commit_step", -1), step_at_stop) << "the migration ended before the coordinator stopped";
  EXPECT_EQ(j.value("final_epoch", 0), 1);
  EXPECT_EQ(j.value("output_checksum", ""), Reference(j.value("steps", 0), "mpi", kDecodeFrom));
  EXPECT_TRUE(j.value("weights_identical", false));
  // The restarted coordinator agrees with the workers: one epoch, one placement.
  const nlohmann::json s = test::StatusJson(kCli, address);
  EXPECT_EQ(test::JsonInt(s, "committedEpoch"), 1) << s.dump();
  EXPECT_EQ(test::JsonInt(s, "targetEpoch"), 1) << s.dump();
  r = test::Cli(kCli, address, {"placement", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Replicas(nlohmann::json::parse(r.out)), Replicas(j["final_placement"]));
}

// Expert collapse live: a burst at step 40 (3 hot experts per layer take 35% of the traffic)
// collapses the balanced start; the embedded coordinator plans from the load reports and the
// ranks migrate in the background. Within 20 steps the worst layer is back above 0.9; outputs
// equal the run without rebalancing and every token is computed once.
TEST_F(RebalanceLaunchTest, CollapseBurstIsRebalancedWithinTwentySteps) {
  const int steps = 70;
  test::TempDir dir;
  const std::vector<std::string> job = {
      "--model", "preset:deepseek-v3", "--scale", "0.03125", "--layers", "2", "--tokens-per-rank", "256",
      "--policy", "eplb", "--backend", "mpi", "--workload", "trace:" + kTraces + "deepseek_v3_sglang_decode_in1000out1000.csv",
      "--workload", "burst:3:0.35@40..70", "--steps", std::to_string(steps), "--log-every", "0", "--window-steps", "5",
      "--coordinator", "embedded"};
  const nlohmann::json off = RunJob(Plus(job, {"--rebalance", "off"}), dir.File("off.json"));
  const nlohmann::json on = RunJob(Plus(job, {"--rebalance", "on"}), dir.File("on.json"));
  ASSERT_TRUE(on.contains("worst_balancedness_by_step")) << on.dump();
  std::map<int, double> worst;
  for (const auto& x : on["worst_balancedness_by_step"]) worst[x[0].get<int>()] = x[1].get<double>();
  std::map<int, double> worst_off;
  for (const auto& x : off["worst_balancedness_by_step"]) worst_off[x[0].get<int>()] = x[1].get<double>();
  auto mean = [](const std::map<int, double>& m, int a, int b) {
    double sum = 0;
    for (int s = a; s < b; ++s) sum += m.at(s);
    return sum / (b - a);
  };
  EXPECT_GT(mean(worst, 20, 40), 0.9) << "the start is balanced";
  EXPECT_LT(mean(worst, 40, 44), 0.8) << "the burst collapses it";
  EXPECT_LT(mean(worst_off, 60, 70), 0.8) << "without rebalancing it stays collapsed";
  EXPECT_GE(mean(worst, 60, 70), 0.9) << on["migrations"].dump();
  ASSERT_GE(on["migrations"].size(), 1u);
  EXPECT_LE(on["migrations"][0].value("commit_step", 1000), 60) << on["migrations"].dump();
  EXPECT_EQ(on.value("output_checksum", "on"), off.value("output_checksum", "off"));
  EXPECT_TRUE(on.value("tokens_conserved", false));
  EXPECT_TRUE(on.value("weights_identical", false));
}

// A slow migration is not a stalled one: with a budget that spreads it over many times the
// stall timeout, it completes as long as bytes flow.
TEST_F(RebalanceLaunchTest, ASlowMigrationThatKeepsMovingCompletes) {
  const int steps = 200;
  test::TempDir dir;
  const std::string report = dir.File("slow.json");
  const test::RunResult r = test::RunCommand(
      Command(Plus(Job(steps), {"--coordinator", "embedded", "--rebalance", "on", "--migration-bytes-per-step", "65536",
                                "--migration-timeout-s", "0.2", "--report", report})),
      std::chrono::seconds(300), kEnv);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json j = ReadReport(report);
  ASSERT_GE(j["migrations"].size(), 1u) << j.dump();
  const nlohmann::json& m = j["migrations"][0];
  EXPECT_GE(m.value("commit_step", -1), 0) << m.dump();
  EXPECT_EQ(m.value("error", ""), "");
  EXPECT_GE(j.value("final_epoch", 0), 1) << j["migrations"].dump();
  for (const auto& x : j["migrations"]) EXPECT_EQ(x.value("abort_step", 0), -1) << x.dump();
  // The migration ran over many steps: far longer than the stall timeout on any machine.
  EXPECT_GE(m.value("commit_step", 0) - m.value("start_step", 0), 10) << m.dump();
  EXPECT_EQ(j.value("output_checksum", ""), Reference(steps));
}

// A rank whose transfers hang (test hook: its transfer thread posts nothing) stalls its
// peers' transfers; after the stall timeout every rank aborts at the same step and keeps the
// old epoch.
TEST_F(RebalanceLaunchTest, AMigrationThatCannotFinishIsAbortedEverywhere) {
  const int steps = 300;
  test::TempDir dir;
  test::CoordinatorProcess coordinator(kCoordinator, dir, 0);
  ASSERT_GT(coordinator.port(), 0) << coordinator.log();
  const std::string address = coordinator.address();
  const std::string report = dir.File("abort.json");
  std::vector<std::string> env = kEnv;
  env.push_back("SWITCHYARD_TEST_HOLD_TRANSFERS=1");
  test::Process workers(Command(Plus(Job(steps), {"--coordinator", address, "--rebalance", "on", "--migration-bytes-per-step",
                                                  "1048576", "--migration-timeout-s", "1", "--report", report})),
                        dir.File("workers.log"), env);
  ASSERT_TRUE(test::WaitForStatus(kCli, address, [](const nlohmann::json& s) {
    return test::JsonInt(s, "registered") == 4 && test::JsonInt(s, "windows") >= 1;
  })) << test::Slurp(dir.File("workers.log"));
  ASSERT_EQ(test::Cli(kCli, address, {"rebalance"}).exit_code, 0);
  const std::string failed = test::WaitForEvent(kCli, address, "migration_failed");
  EXPECT_NE(failed.find("stays on epoch 0"), std::string::npos) << failed;
  bool timed_out = false;
  EXPECT_EQ(workers.Wait(std::chrono::seconds(300), &timed_out), 0) << test::Slurp(dir.File("workers.log"));
  const nlohmann::json j = ReadReport(report);
  ASSERT_TRUE(j.contains("migrations"));
  ASSERT_GE(j["migrations"].size(), 1u);
  EXPECT_EQ(j["migrations"][0].value("commit_step", 0), -1);
  EXPECT_NE(j["migrations"][0].value("error", "").find("stalled"), std::string::npos) << j["migrations"].dump();
  EXPECT_GE(j["migrations"][0].value("abort_step", -1), j["migrations"][0].value("start_step", 0));
  EXPECT_EQ(j.value("final_epoch", -1), 0);
  EXPECT_EQ(j.value("output_checksum", ""), Reference(steps));
  const nlohmann::json s = test::StatusJson(kCli, address);
  EXPECT_EQ(test::JsonInt(s, "committedEpoch"), 0);
  EXPECT_EQ(test::JsonInt(s, "targetEpoch"), 0);
}

}  // namespace
}  // namespace switchyard
