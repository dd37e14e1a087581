// switchyard-worker as users run it (label mpi): under mpirun with 2 and 4 ranks, on the mpi
// and ucx backends, with several placements, the output checksum equals the single-process
// reference bit for bit; bad input ends the job with exit code 2 and a line naming it.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/common/cluster_util.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

const std::string kWorker = SWITCHYARD_WORKER;
const std::string kCli = SWITCHYARD_CLI;
const std::string kTrace = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_decode_in1000out1000.csv";
const std::vector<std::string> kEnv = {"OMPI_MCA_mpi_yield_when_idle=1", "UCX_NET_DEVICES=lo"};
constexpr int kTotalTokens = 96;

std::vector<std::string> Mpirun(int np) {
  return {MPIEXEC, "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(np), "--mca", "btl_tcp_if_include",
          "lo", "--mca", "oob_tcp_if_include", "lo", "-x", "UCX_NET_DEVICES"};
}

std::vector<std::string> WorkerArgs(int tokens_per_rank, const std::string& report) {
  return {kWorker, "--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "trace:" + kTrace,
          "--layers", "2", "--steps", "3", "--log-every", "0", "--tokens-per-rank", std::to_string(tokens_per_rank),
          "--report", report};
}

nlohmann::json RunReport(const std::vector<std::string>& argv, const std::string& report) {
  const test::RunResult r = test::RunCommand(argv, std::chrono::seconds(300), kEnv);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  std::ifstream in(report);
  if (!in) return nlohmann::json::object();
  return nlohmann::json::parse(in);
}

class WorkerIdentityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    const std::string report = dir_->File("reference.json");
    const nlohmann::json j = RunReport(WorkerArgs(kTotalTokens, report), report);
    reference_ = new std::string(j.value("output_checksum", ""));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete reference_;
  }
  static test::TempDir* dir_;
  static std::string* reference_;
};
test::TempDir* WorkerIdentityTest::dir_ = nullptr;
std::string* WorkerIdentityTest::reference_ = nullptr;

struct Launch {
  int np;
  std::string backend, policy;
  std::string shares = "epoch";
};

class WorkerUnderMpirunTest : public WorkerIdentityTest, public ::testing::WithParamInterface<Launch> {};

TEST_P(WorkerUnderMpirunTest, OutputEqualsTheSingleProcessReference) {
  const Launch l = GetParam();
  ASSERT_FALSE(reference_->empty());
  const std::string report = dir_->File(absl::StrCat("np", l.np, l.backend, l.policy, ".json"));
  std::vector<std::string> argv = Mpirun(l.np);
  for (const std::string& a : WorkerArgs(kTotalTokens / l.np, report)) argv.push_back(a);
  argv.insert(argv.end(), {"--backend", l.backend, "--policy", l.policy, "--shares", l.shares});
  const nlohmann::json j = RunReport(argv, report);
  EXPECT_EQ(j.value("output_checksum", "?"), *reference_);
  EXPECT_EQ(j.value("shares", ""), l.shares);
  EXPECT_TRUE(j.value("tokens_conserved", false));
  EXPECT_EQ(j.value("ranks", 0), l.np);
  for (const char* key : {"tokens_per_s", "step_ms", "phase_ms", "layers", "steps", "tokens_per_rank", "top_k"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  ASSERT_EQ(j["layers"].size(), 2u);
  EXPECT_EQ(j["layers"][0]["expert_tokens"].size(), 256u);
}

INSTANTIATE_TEST_SUITE_P(Launches, WorkerUnderMpirunTest,
                         ::testing::Values(Launch{2, "mpi", "contiguous"}, Launch{2, "ucx", "incremental"},
                                           Launch{4, "mpi", "eplb"}, Launch{4, "ucx", "contiguous"},
                                           Launch{4, "ucx", "incremental"}, Launch{2, "mpi", "eplb", "step"},
                                           Launch{4, "ucx", "incremental", "step"}, Launch{4, "mpi", "incremental", "step"}),
                         [](const auto& info) {
                           return absl::StrCat("np", info.param.np, "_", info.param.backend, "_", info.param.policy,
                                               info.param.shares == "step" ? "_step" : "");
                         });

// Ranks started with different --shares would run different collectives: every rank stops
// first, exit 2, naming the flag.
TEST(WorkerLaunchTest, RanksWithDifferentSharesStopWithExitTwo) {
  test::TempDir dir;
  std::vector<std::string> argv = {MPIEXEC, "--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo",
                                   "--mca", "oob_tcp_if_include", "lo"};
  for (const char* shares : {"step", "epoch"}) {
    if (std::string(shares) == "epoch") argv.push_back(":");
    argv.insert(argv.end(), {"-np", "1"});
    for (const std::string& a : WorkerArgs(48, dir.File("r.json"))) argv.push_back(a);
    argv.insert(argv.end(), {"--shares", shares});
  }
  const test::RunResult r = test::RunCommand(argv, std::chrono::seconds(120), kEnv);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("the ranks were started with different --shares"), std::string::npos) << r.err;
}

// Plain processes, no launcher: four workers meet through a coordinator (--world-size 4
// --job-key), which assigns their ranks; the output equals the single-process reference.
// Bad joins exit 2 naming the problem: no --job-key, --backend mpi, another world size.
TEST_F(WorkerIdentityTest, PlainWorkersJoinThroughTheCoordinator) {
  test::TempDir dir;
  test::CoordinatorProcess coordinator(SWITCHYARD_COORDINATOR, dir, 0);
  ASSERT_GT(coordinator.port(), 0) << coordinator.log();
  auto worker = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv = WorkerArgs(kTotalTokens / 4, dir.File("report.json"));
    argv.insert(argv.end(), {"--backend", "ucx", "--coordinator", coordinator.address()});
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  };
  std::vector<std::unique_ptr<test::Process>> workers;
  for (int i = 0; i < 4; ++i) {
    workers.push_back(std::make_unique<test::Process>(worker({"--world-size", "4", "--job-key", "joined"}),
                                                      dir.File(absl::StrCat("w", i, ".log")), kEnv));
  }
  for (int i = 0; i < 4; ++i) {
    bool timed_out = false;
    EXPECT_EQ(workers[i]->Wait(std::chrono::seconds(120), &timed_out), 0) << test::Slurp(dir.File(absl::StrCat("w", i, ".log")));
    EXPECT_FALSE(timed_out);
  }
  std::ifstream in(dir.File("report.json"));
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  EXPECT_EQ(j.value("output_checksum", "?"), *reference_);
  EXPECT_EQ(j.value("ranks", 0), 4);
  struct Bad {
    std::vector<std::string> extra;
    std::string says;
  };
  const Bad bad[] = {
      {{"--world-size", "4"}, "--world-size needs --job-key"},
      {{"--world-size", "4", "--job-key", "k", "--backend", "mpi"}, "use --backend ucx"},
      {{"--world-size", "5", "--job-key", "joined"}, "job 'joined' has world size 4, this worker says 5"},
  };
  for (const Bad& b : bad) {
    const test::RunResult r = test::RunCommand(worker(b.extra), std::chrono::seconds(60), kEnv);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find(b.says), std::string::npos) << r.err;
  }
  EXPECT_EQ(coordinator.Stop(), 0);
}

TEST_F(WorkerIdentityTest, PlacementFileFromSwitchyardPlan) {
  const std::string placement = dir_->File("plan.json");
  const test::RunResult plan = test::RunCommand({kCli, "plan", "--loads", kTrace, "--ranks", "4", "--slots-per-rank", "65",
                                                 "--nodes", "2", "--out", placement});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const std::string report = dir_->File("from_plan.json");
  std::vector<std::string> argv = Mpirun(4);
  for (const std::string& a : WorkerArgs(kTotalTokens / 4, report)) argv.push_back(a);
  argv.insert(argv.end(), {"--backend", "ucx", "--placement", placement});
  const nlohmann::json j = RunReport(argv, report);
  EXPECT_EQ(j.value("output_checksum", "?"), *reference_);
  EXPECT_EQ(j.value("placement", ""), placement);
}

// The CPU kernels' ISA paths compute the same bits: forcing any path this CPU has (and the
// portable one) gives the reference checksum, and the report names the path and threads.
TEST_F(WorkerIdentityTest, EveryCpuPathGivesTheSameOutput) {
  const std::vector<std::string> paths = {"portable",
#if defined(__x86_64__)
                                          "avx2",
#endif
  };
  for (const std::string& path : paths) {
    SCOPED_TRACE(path);
    const std::string report = dir_->File("isa_" + path + ".json");
    std::vector<std::string> argv = Mpirun(2);
    argv.insert(argv.end(), {"-x", "SWITCHYARD_CPU_ISA"});
    const std::vector<std::string> worker = WorkerArgs(kTotalTokens / 2, report);
    argv.insert(argv.end(), worker.begin(), worker.end());
    argv.insert(argv.end(), {"--threads", "2"});
    std::vector<std::string> env = kEnv;
    env.push_back("SWITCHYARD_CPU_ISA=" + path);
    const test::RunResult r = test::RunCommand(argv, std::chrono::seconds(300), env);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    std::ifstream in(report);
    const nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_EQ(j.value("output_checksum", ""), *reference_);
    EXPECT_EQ(j.value("isa", ""), path);
    EXPECT_EQ(j.value("threads", 0), 2);
  }
}

TEST(WorkerBadInputTest, EveryRankStopsWithExitCodeTwo) {
  test::TempDir dir;
  std::ofstream(dir.File("config.json")) << "{\"model_type\": \"mixtral\", \"hidden_size\": \"wide\"}";
  std::ofstream(dir.File("placement.json")) << "{\"format\": \"switchyard.placement/v1\"";
  std::ofstream(dir.File("trace.csv")) << "layer,expert,tokens\n3,0,1\n3,1,x\n";
  std::ofstream(dir.File("huge.csv")) << "layer,expert,tokens\n3,0,1\n3,1,1e23\n";
  // 2^32 + 8 experts: narrowed to int it would be 8, a valid Mixtral.
  std::ofstream(dir.File("narrow.json")) << R"({"model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32,
      "num_experts_per_tok": 2, "num_local_experts": 4294967304, "intermediate_size": 14336})";
  std::ofstream(dir.File("bigmem.json")) << R"({"model_type": "mixtral", "hidden_size": 131072, "num_hidden_layers": 1,
      "num_experts_per_tok": 2, "num_local_experts": 8, "intermediate_size": 1048576})";
  std::ofstream(dir.File("billions.json")) << R"({"model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32,
      "num_experts_per_tok": 2, "num_local_experts": 2000000000, "intermediate_size": 14336})";
  {  // a safetensors header whose dtype is a number
    const std::string header = R"({"model.layers.3.mlp.experts.0.gate_proj.weight": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})";
    std::ofstream out(dir.File("bad.safetensors"), std::ios::binary);
    const uint64_t len = header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header << "abcd";
  }
  struct Case {
    std::vector<std::string> args;
    std::string message;
    std::string env = "";  // NAME=VALUE for this case
  };
  const std::vector<Case> cases = {
      {{"--model", "preset:gpt5", "--workload", "uniform"}, "unknown model preset 'gpt5'"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--shares", "sometimes"},
       "--shares 'sometimes': use epoch or step"},
      {{"--model", dir.File("config.json"), "--workload", "uniform"}, "$.hidden_size: expected an integer, got string \"wide\""},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "trace:" + dir.File("trace.csv")},
       "trace.csv line 3: tokens 'x' is not a number"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--placement", dir.File("placement.json")},
       "placement.json: not valid JSON"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--policy", "random"},
       "--policy 'random'"},
      {{"--model", "preset:deepseek-v3", "--workload", "uniform", "--steps", "lots"}, "--steps 'lots': expected an integer"},
      {{"--model", dir.File("narrow.json"), "--workload", "uniform"}, "$.num_local_experts: 4294967304 is out of range"},
      {{"--model", dir.File("billions.json"), "--workload", "uniform"}, "$.num_local_experts: 2000000000 is out of range"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "zipf:nan"}, "zipf skew must be a number in [0, 100]"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--coordinator", "embedded",
        "--embedded-listen", "0.0.0.0:0"},
       "embedded coordinator: refusing to serve 0.0.0.0:0 without --auth-token-file"},
      {{"--model", dir.File("bigmem.json"), "--workload", "uniform"}, "the machine has"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--tokens-per-rank", "2147483647"},
       "--tokens-per-rank 2147483647: must be in 1..4194304"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "trace:" + dir.File("huge.csv")},
       "huge.csv line 3: tokens 1e23 bring layer 3 expert 1 beyond 2^53"},
      {{"--model", "preset:mixtral-8x7b", "--scale", "0.0625", "--layers", "1", "--workload", "uniform", "--weights",
        dir.File("bad.safetensors")},
       "bad.safetensors header: $.model.layers.3.mlp.experts.0.gate_proj.weight.dtype: expected a string, got number 7"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--backend", "carrier-pigeon"},
       "unknown or unavailable backend"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--coordinator", "localhost"},
       "--coordinator 'localhost': use HOST:PORT or embedded"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--coordinator", "127.0.0.1:1",
        "--coordinator-token-file", dir.File("missing-token")},
       "missing-token"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--threads", "-1"}, "--threads -1"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform", "--workload", "burst:3:1.5@1..2"},
       "SHARE must be a number in (0, 1)"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "burst:3:0.3@1..2"}, "a burst needs a workload"},
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform"}, "SWITCHYARD_CPU_ISA: unknown CPU ISA path 'sse9'",
       "SWITCHYARD_CPU_ISA=sse9"},
#if defined(__x86_64__)
      {{"--model", "preset:deepseek-v3", "--scale", "0.0625", "--workload", "uniform"}, "'neon' is not available on this CPU",
       "SWITCHYARD_CPU_ISA=neon"},
#endif
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    std::vector<std::string> argv = Mpirun(2);
    std::vector<std::string> env = kEnv;
    if (!c.env.empty()) {
      argv.insert(argv.end(), {"-x", c.env.substr(0, c.env.find('='))});
      env.push_back(c.env);
    }
    argv.push_back(kWorker);
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const auto start = std::chrono::steady_clock::now();
    const test::RunResult r = test::RunCommand(argv, std::chrono::seconds(60), env);
    EXPECT_FALSE(r.timed_out);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE((r.out + r.err).find("switchyard-worker: "), std::string::npos);
    EXPECT_NE((r.out + r.err).find(c.message), std::string::npos) << r.out << r.err;
  }
}

}  // namespace
}  // namespace switchyard
