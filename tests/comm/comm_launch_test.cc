// Real multi-process runs of the backends beyond the conformance suite (label mpi):
//   - a hung peer under mpirun ends the job with DeadlineExceeded, promptly, for mpi and ucx;
//   - ucx without mpirun: plain processes meeting through a rendezvous directory.
#include <gtest/gtest.h>

#include <fstream>

#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "tests/common/cluster_util.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

const std::string kBinary = COMM_CONFORMANCE_BINARY;

std::vector<std::string> Mpirun(int np) {
  return {MPIEXEC, "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(np),
          "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"};
}

const std::vector<std::string> kMpiEnv = {"OMPI_MCA_mpi_yield_when_idle=1", "UCX_NET_DEVICES=lo"};

class HungPeerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HungPeerTest, EndsInDeadlineExceededNotAHang) {
  auto argv = Mpirun(3);
  argv.insert(argv.end(), {kBinary, "--backend=" + GetParam(), "--hung_peer", "--timeout_ms=1000"});
  const auto start = std::chrono::steady_clock::now();
  const test::RunResult r = test::RunCommand(argv, std::chrono::seconds(90), kMpiEnv);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(r.timed_out) << "the job hung";
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(elapsed, std::chrono::seconds(45));
  const std::string out = r.out + r.err;
  EXPECT_NE(out.find("DEADLINE_EXCEEDED"), std::string::npos) << out;
  EXPECT_NE(out.find("timed out"), std::string::npos) << out;
}

INSTANTIATE_TEST_SUITE_P(Backends, HungPeerTest, ::testing::Values("mpi", "ucx"));

TEST(UcxRendezvousTest, PlainProcessesMeetThroughADirectory) {
  test::TempDir dir;
  const int n = 3;
  std::vector<std::unique_ptr<test::Process>> ranks;
  for (int r = 0; r < n; ++r) {
    ranks.push_back(std::make_unique<test::Process>(
        std::vector<std::string>{kBinary, "--backend=ucx", "--rendezvous_dir=" + dir.File("rdv"),
                                 "--gtest_filter=-*LargeMessages*", "--timeout_ms=30000"},
        dir.File(absl::StrCat("rank", r, ".log")),
        std::vector<std::string>{absl::StrCat("SWITCHYARD_RANK=", r), absl::StrCat("SWITCHYARD_SIZE=", n),
                                 absl::StrCat("SWITCHYARD_LOCAL_RANK=", r), absl::StrCat("SWITCHYARD_LOCAL_SIZE=", n),
                                 "UCX_NET_DEVICES=lo"}));
  }
  for (int r = 0; r < n; ++r) {
    bool timed_out = false;
    const int code = ranks[r]->Wait(std::chrono::milliseconds(120000), &timed_out);
    EXPECT_FALSE(timed_out) << "rank " << r << " hung";
    EXPECT_EQ(code, 0) << test::Slurp(dir.File(absl::StrCat("rank", r, ".log")));
  }
}

// Plain processes (no launcher, no rank given) meet through a coordinator: it assigns the
// ranks and carries the UCX worker addresses; the whole suite passes. A process of another
// world size, one too many, and one with a wrong token are refused with what went wrong.
TEST(UcxRendezvousTest, PlainProcessesJoinThroughTheCoordinator) {
  test::TempDir dir;
  std::ofstream(dir.File("token")) << "s3cret\n";
  std::ofstream(dir.File("wrong")) << "guess\n";
  test::CoordinatorProcess coordinator(SWITCHYARD_COORDINATOR, dir, 0, {"--auth-token-file", dir.File("token")});
  ASSERT_GT(coordinator.port(), 0) << coordinator.log();
  const int n = 3;
  auto args = [&](int size, const std::string& token) {
    return std::vector<std::string>{kBinary, "--backend=ucx", "--coordinator=" + coordinator.address(),
                                    absl::StrCat("--world_size=", size), "--job_key=suite", "--token_file=" + token,
                                    "--gtest_filter=-*LargeMessages*", "--timeout_ms=30000"};
  };
  std::vector<std::unique_ptr<test::Process>> ranks;
  for (int r = 0; r < n; ++r) {
    ranks.push_back(std::make_unique<test::Process>(args(n, dir.File("token")), dir.File(absl::StrCat("rank", r, ".log")),
                                                    std::vector<std::string>{"UCX_NET_DEVICES=lo"}));
  }
  for (int r = 0; r < n; ++r) {
    bool timed_out = false;
    const int code = ranks[r]->Wait(std::chrono::milliseconds(120000), &timed_out);
    EXPECT_FALSE(timed_out) << "rank " << r << " hung";
    EXPECT_EQ(code, 0) << test::Slurp(dir.File(absl::StrCat("rank", r, ".log")));
  }
  const std::vector<std::string> env = {"UCX_NET_DEVICES=lo"};
  test::RunResult r = test::RunCommand(args(n + 1, dir.File("token")), std::chrono::seconds(60), env);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("job 'suite' has world size 3, this worker says 4"), std::string::npos) << r.err;
  r = test::RunCommand(args(n, dir.File("token")), std::chrono::seconds(60), env);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("job 'suite' is full: its 3 ranks are running"), std::string::npos) << r.err;
  r = test::RunCommand(args(n, dir.File("wrong")), std::chrono::seconds(60), env);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("wrong bearer token"), std::string::npos) << r.err;
  EXPECT_EQ(coordinator.Stop(), 0);
}

}  // namespace
}  // namespace switchyard
