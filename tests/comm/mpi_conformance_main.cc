// The conformance suite on a real backend, one process per rank:
//   mpirun -np N comm_conformance --backend=mpi|ucx
//   (or N processes with SWITCHYARD_RANK/SIZE set and --rendezvous_dir for ucx).
// Each case is a gtest test; every rank runs them all, in the same order.
//
// --hung_peer: the last rank never joins an AllToAllV; the others must fail with
// DeadlineExceeded within --timeout_ms and then stop the job (MPI_Abort under MPI), so the
// launcher returns instead of hanging. Used by comm_launch_test.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "cluster/connect.h"
#include "common/flags.h"
#include "switchyard/config.h"
#include "tests/comm/conformance.h"
#if SWITCHYARD_HAVE_MPI
#include "comm/mpi/factory.h"
#endif

ABSL_FLAG(std::string, backend, "mpi", "communicator backend");
ABSL_FLAG(std::string, rendezvous_dir, "", "shared directory for the rendezvous without mpirun");
ABSL_FLAG(std::string, coordinator, "", "HOST:PORT: join through this coordinator (with --world_size and --job_key)");
ABSL_FLAG(int, world_size, 0, "ranks that join through the coordinator");
ABSL_FLAG(std::string, job_key, "conformance", "the job key of the coordinator join");
ABSL_FLAG(std::string, token_file, "", "the coordinator's bearer token");
ABSL_FLAG(bool, hung_peer, false, "run the hung-peer scenario instead of the suite");
ABSL_FLAG(int, timeout_ms, 60000, "communicator timeout");

namespace {

switchyard::comm::Communicator* g_comm = nullptr;

class CaseTest : public ::testing::Test {
 public:
  explicit CaseTest(std::function<void(switchyard::comm::Communicator&)> body) : body_(std::move(body)) {}
  void TestBody() override { body_(*g_comm); }

 private:
  std::function<void(switchyard::comm::Communicator&)> body_;
};

[[noreturn]] void Stop(int code) {
#if SWITCHYARD_HAVE_MPI
  if (switchyard::comm::LaunchedByMpi()) switchyard::comm::AbortMpiJob(code);
#endif
  std::_Exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto parsed = switchyard::ParseFlags(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "%s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  switchyard::cluster::ConnectOptions options;
  options.backend = absl::GetFlag(FLAGS_backend);
  options.rendezvous_dir = absl::GetFlag(FLAGS_rendezvous_dir);
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  if (!absl::GetFlag(FLAGS_coordinator).empty()) {
    options.join.address = absl::GetFlag(FLAGS_coordinator);
    options.join.world_size = absl::GetFlag(FLAGS_world_size);
    options.join.job_key = absl::GetFlag(FLAGS_job_key);
    if (!absl::GetFlag(FLAGS_token_file).empty()) {
      std::ifstream in(absl::GetFlag(FLAGS_token_file));
      std::getline(in, options.join.token);
    }
  }
  auto comm = switchyard::cluster::Connect(options);
  if (!comm.ok()) {
    std::fprintf(stderr, "connect: %s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  g_comm = comm->get();
  if (absl::GetFlag(FLAGS_hung_peer)) {
    const int n = g_comm->size();
    if (g_comm->rank() == n - 1) {  // never joins; the others must not wait for it forever
      std::this_thread::sleep_for(std::chrono::seconds(120));
      Stop(4);
    }
    std::vector<int64_t> counts(n, 64), offsets(n);
    for (int p = 0; p < n; ++p) offsets[p] = 64 * p;
    std::vector<char> send(64 * n), recv(64 * n);
    absl::Status s = g_comm->AllToAllV(send.data(), counts.data(), offsets.data(), recv.data(), counts.data(), offsets.data());
    std::printf("rank %d: %s\n", g_comm->rank(), s.ToString().c_str());
    std::fflush(stdout);
    Stop(absl::IsDeadlineExceeded(s) ? 3 : 5);
  }
  for (const auto& c : switchyard::comm::test::ConformanceCases()) {
    ::testing::RegisterTest("Conformance", c.name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [body = c.body]() -> ::testing::Test* { return new CaseTest(body); });
  }
  const int result = RUN_ALL_TESTS();
  // A failed rank must fail the job, and must not leave the others waiting.
  int64_t failed = result != 0;
  if (!g_comm->AllReduce(&failed, 1, switchyard::comm::ReduceOp::kMax).ok()) Stop(1);
  comm->reset();
  return failed ? 1 : 0;
}
