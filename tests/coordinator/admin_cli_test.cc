// The `switchyard` admin subcommands (the real binary) against a coordinator served by this
// test process: tables, --json, changes, and every kind of bad input with exit code 2 and a
// message naming it (label grpc).
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "coordinator/server.h"
#include "gtest/gtest.h"
#include "tests/common/subprocess.h"
#include "tests/coordinator/fixtures.h"

namespace switchyard::coordinator {
namespace {

using namespace test::job;  // NOLINT: the test job

const std::string kCli = SWITCHYARD_CLI;

class AdminCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_.File("token")) << "t0ken\n";
    ServerOptions options;
    options.auth_token = "t0ken";
    auto server = CoordinatorServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = server_->address();
  }
  void StartJob() {
    for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(server_->core().Register(Registration(r)).ok());
    for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(server_->core().ReportLoad(Report(r, 0, 10)).ok());
  }
  // Runs `switchyard ARGS --coordinator ADDRESS` (with the token unless `anonymous`).
  test::RunResult Cli(std::vector<std::string> args, bool anonymous = false) {
    args.insert(args.begin(), kCli);
    args.insert(args.end(), {"--coordinator", address_});
    if (!anonymous) args.insert(args.end(), {"--token-file", dir_.File("token")});
    return test::RunCommand(args, std::chrono::seconds(30));
  }

  test::TempDir dir_;
  std::unique_ptr<CoordinatorServer> server_;
  std::string address_;
};

TEST_F(AdminCliTest, ReadsTheCluster) {
  test::RunResult r = Cli({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("job: (none yet)"), std::string::npos) << r.out;
  r = Cli({"placement"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no worker has registered"), std::string::npos) << r.err;

  StartJob();
  r = Cli({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("job: test-moe, 4 ranks on 2 nodes, epoch shares; 4 registered, 4 healthy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("epoch 0 committed, 0 target; step 10; 1 load windows"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("balancedness (last window, layer:value): 1:0."), std::string::npos) << r.out;
  r = Cli({"status", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json status = nlohmann::json::parse(r.out);
  EXPECT_EQ(status.value("registered", 0), kRanks);
  EXPECT_EQ(status["workers"].size(), 4u);

  r = Cli({"placement", "--layer", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("epoch 0: 4 ranks x 6 slots (2 nodes), 16 experts"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layer 2\n  rank   0: 0 1 2 3\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("layer 1"), std::string::npos) << r.out;
  r = Cli({"placement", "--layer", "9"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown layer 9"), std::string::npos) << r.err;
  r = Cli({"placement", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["layers"].size(), 2u);

  r = Cli({"load"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("hottest experts"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0:160.0"), std::string::npos) << r.out;  // expert 0: 160 pairs per step

  r = Cli({"events"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("job_started"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("worker_joined"), std::string::npos) << r.out;

  // Reading needs no token.
  r = Cli({"status"}, /*anonymous=*/true);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(AdminCliTest, ChangesTheCluster) {
  StartJob();
  test::RunResult r = Cli({"rebalance", "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("plan (dry run) for epoch 1"), std::string::npos) << r.out;
  EXPECT_EQ(server_->core().Status().target_epoch(), 0);
  r = Cli({"rebalance", "--max-moves", "2"}, /*anonymous=*/true);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("authorization: Bearer"), std::string::npos) << r.err;
  r = Cli({"rebalance", "--max-moves", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json plan = nlohmann::json::parse(r.out);
  EXPECT_TRUE(plan.value("applied", false));
  EXPECT_EQ(plan.value("movedReplicas", 0), 2);
  EXPECT_EQ(server_->core().Status().target_epoch(), 1);

  r = Cli({"pin", "--expert", "3", "--rank", "1", "--layer", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("pins: expert 3 -> rank 1 (layer 1)"), std::string::npos) << r.out;
  r = Cli({"drain", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("drained ranks: 2"), std::string::npos) << r.out;
  r = Cli({"policy", "auto_rebalance=true", "min_gain=0.1", "planner=eplb"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("auto_rebalance     true"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("planner            eplb"), std::string::npos) << r.out;
  EXPECT_EQ(server_->core().GetPolicy().min_gain(), 0.1);
  r = Cli({"undrain", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Cli({"unpin", "--expert", "3", "--rank", "1", "--layer", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("pins: none"), std::string::npos) << r.out;
}

TEST_F(AdminCliTest, BadInputIsNamedAndChangesNothing) {
  StartJob();
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"pin", "--expert", "3"}, "pin needs --expert E and --rank R"},
      {{"pin", "--expert", "99", "--rank", "0"}, "pinned expert 99 out of range"},
      {{"pin", "--expert", "1", "--rank", "7"}, "rank out of range"},
      {{"unpin", "--expert", "1", "--rank", "0"}, "no pin of expert 1 to rank 0"},
      {{"drain", "x"}, "usage: switchyard drain RANK"},
      {{"drain", "11"}, "unknown rank 11"},
      {{"undrain", "1"}, "rank 1 is not drained"},
      {{"policy", "min_gain"}, "policy setting 'min_gain': use key=value"},
      {{"policy", "colour=blue"}, "unknown policy key 'colour'"},
      {{"policy", "min_gain=lots"}, "policy min_gain='lots': not a number"},
      {{"policy", "smoothing=0"}, "policy smoothing = 0: must be in (0, 1]"},
      {{"policy", "planner=magic"}, "policy planner = 'magic'"},
      {{"status", "extra"}, "unexpected argument 'extra'"},
      {{"rebalance", "--max-moves", "-5"}, "max_moves -5 must be >= 0"},
      {{"placement", "--layer", "-5"}, "layer -5: must be -1 (every layer) or a layer id >= 0"},
      {{"load", "--layer", "-2"}, "layer -2: must be -1 (every layer) or a layer id >= 0"},
      {{"pin", "--expert", "1", "--rank", "0", "--layer", "-3"}, "pin layer -3"},
      {{"status", "--timeout-s", "nan"}, "--timeout-s nan: must be in [0, 1e+06]"},
      {{"policy", std::string(100000, 'k') + "=1"}, "... (100000 bytes)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    const test::RunResult r = Cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
  EXPECT_EQ(server_->core().GetPolicy().DebugString(), DefaultPolicy().DebugString());
  EXPECT_EQ(server_->core().Status().target_epoch(), 0);
  EXPECT_EQ(server_->core().Status().pins_size(), 0);
  EXPECT_EQ(server_->core().Status().drained_ranks_size(), 0);

  // No coordinator there: a clear message, exit code 1; the address comes from the
  // environment when no flag names it.
  test::RunResult r = test::RunCommand({kCli, "status"}, std::chrono::seconds(30), {"SWITCHYARD_COORDINATOR=127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("coordinator at 127.0.0.1:1 is unreachable"), std::string::npos) << r.err;
  r = test::RunCommand({kCli, "status", "--timeout-s", "5"}, std::chrono::seconds(30), {"SWITCHYARD_COORDINATOR=" + address_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Cli({"status", "--token-file", dir_.File("nope")}, true);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("nope"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace switchyard::coordinator
