// The switchyard-coordinator binary under hostile load (label grpc): a connection flood that
// exhausts its file descriptors must not end its service, and an open (token-less) listener
// on a non-loopback address is refused unless asked for.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/common/cluster_util.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

const std::string kCoordinator = SWITCHYARD_COORDINATOR;
const std::string kCli = SWITCHYARD_CLI;

// Opens `count` connections to 127.0.0.1:port, each sending the HTTP/2 preface and garbage;
// closes them all after `hold` (0: each at once).
void Flood(int port, int count, std::chrono::milliseconds hold) {
  static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff garbage";
  std::vector<int> open;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0) << "the test itself ran out of sockets";
    timeval tv{0, 200000};  // connect() gives up after 200 ms (a listener that stopped accepting)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      (void)!write(fd, kPreface, sizeof kPreface - 1);
    }
    if (hold.count() == 0) {
      close(fd);
    } else {
      open.push_back(fd);
    }
  }
  std::this_thread::sleep_for(hold);
  for (int fd : open) close(fd);
}

// Seconds until `switchyard status` answers (or -1 after `limit` seconds).
double SecondsUntilServed(const std::string& address, int limit) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(limit)) {
    if (test::Cli(kCli, address, {"status", "--json"}).exit_code == 0) {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return -1;
}

// 256 descriptors (hard limit, so it cannot raise it): 1,500 connections held open make
// accept() fail with EMFILE, which ends gRPC 1.51's listener for good; the coordinator's
// watchdog must notice and serve again within seconds of the flood ending. Then 5,000
// connect-garbage-close connections in a row: a normal call still succeeds.
TEST(CoordinatorHostile, ServesAgainWithinSecondsAfterAConnectionFlood) {
  test::TempDir dir;
  test::CoordinatorProcess coordinator(kCoordinator, dir, 0, {}, {"prlimit", "--nofile=256:256"});
  ASSERT_GT(coordinator.port(), 0) << coordinator.log();
  ASSERT_GE(SecondsUntilServed(coordinator.address(), 10), 0) << coordinator.log();

  Flood(coordinator.port(), 1500, std::chrono::milliseconds(1500));
  const double held = SecondsUntilServed(coordinator.address(), 15);
  ASSERT_GE(held, 0) << "no answer 15 s after the flood:\n" << coordinator.log();
  EXPECT_LT(held, 10) << coordinator.log();

  Flood(coordinator.port(), 5000, std::chrono::milliseconds(0));
  const double churned = SecondsUntilServed(coordinator.address(), 15);
  EXPECT_GE(churned, 0) << coordinator.log();
  EXPECT_LT(churned, 10) << coordinator.log();
  EXPECT_EQ(coordinator.Stop(), 0) << coordinator.log();
}

// Without a token, a non-loopback address is refused (exit 2, saying why) unless
// --insecure-allow-remote is given, which serves with a warning.
TEST(CoordinatorHostile, RefusesAnOpenNonLoopbackListener) {
  test::TempDir dir;
  test::RunResult r = test::RunCommand({kCoordinator, "--listen", "0.0.0.0:0"}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("without --auth-token-file"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--insecure-allow-remote"), std::string::npos) << r.err;
  r = test::RunCommand({kCoordinator, "--listen", "127.0.0.1:99999"}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("a port in 0..65535"), std::string::npos) << r.err;

  const std::string port_file = dir.File("port");
  test::Process open({kCoordinator, "--listen", "0.0.0.0:0", "--insecure-allow-remote", "--port-file", port_file},
                     dir.File("open.log"));
  std::string port;
  for (int i = 0; i < 100 && port.empty() && open.Running(); ++i) {
    port = test::Slurp(port_file);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(port.empty()) << test::Slurp(dir.File("open.log"));
  EXPECT_GE(SecondsUntilServed(absl::StrCat("127.0.0.1:", port.substr(0, port.find(' '))), 10), 0);
  EXPECT_EQ(open.Stop(), 0);
  EXPECT_NE(test::Slurp(dir.File("open.log")).find("WITHOUT AUTHENTICATION"), std::string::npos);

  // With a token the same address is fine.
  const std::string token = dir.File("token");
  std::ofstream(token) << "s3cret\n";
  test::Process guarded({kCoordinator, "--listen", "0.0.0.0:0", "--auth-token-file", token, "--port-file", dir.File("port2")},
                        dir.File("guarded.log"));
  std::string port2;
  for (int i = 0; i < 100 && port2.empty() && guarded.Running(); ++i) {
    port2 = test::Slurp(dir.File("port2"));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(port2.empty()) << test::Slurp(dir.File("guarded.log"));
  EXPECT_EQ(guarded.Stop(), 0);
}

// A second coordinator on a busy port (gRPC's SO_REUSEPORT would let it start and split the
// workers between the two) or on a state directory in use is refused, exit 2, naming why.
TEST(CoordinatorHostile, SecondCoordinatorOnTheSamePortOrStateIsRefused) {
  test::TempDir dir;
  test::CoordinatorProcess first(kCoordinator, dir, 0, {"--state-dir", dir.File("state")});
  ASSERT_GT(first.port(), 0) << first.log();
  test::RunResult r = test::RunCommand({kCoordinator, "--listen", first.address()}, std::chrono::seconds(20));
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("cannot listen on " + first.address()), std::string::npos) << r.err;
  r = test::RunCommand({kCoordinator, "--listen", "127.0.0.1:0", "--state-dir", dir.File("state")}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("is in use by another coordinator (pid " + std::to_string(first.pid()) + ")"), std::string::npos)
      << r.err;
  EXPECT_EQ(first.Stop(), 0);
}

}  // namespace
}  // namespace switchyard
