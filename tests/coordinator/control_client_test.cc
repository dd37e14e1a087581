// The worker's control thread (worker/control_client.h) against a real coordinator server:
// registration, reports, orders, leaving; a coordinator that is down at first (also until the
// rank stops), and one that restarts and has forgotten the ranks.
#include <thread>

#include "coordinator/server.h"
#include "gtest/gtest.h"
#include "switchyard/admin/v1/admin.grpc.pb.h"
#include "tests/coordinator/fixtures.h"
#include "worker/control_client.h"

namespace switchyard::worker {
namespace {

using namespace test::job;  // NOLINT: the test job
using coordinator::CoordinatorServer;
using coordinator::ServerOptions;

// Polls `done` every 20 ms for up to `timeout`.
bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

std::unique_ptr<CoordinatorServer> StartServer(int port) {
  ServerOptions options;
  options.listen = absl::StrCat("127.0.0.1:", port);
  auto server = CoordinatorServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

// A free port: bind port 0, note it, release it.
int FreePort() {
  auto server = StartServer(0);
  return server ? server->port() : 0;
}

ControlOptions Options(int port) {
  ControlOptions o;
  o.address = absl::StrCat("127.0.0.1:", port);
  o.heartbeat_interval = absl::Milliseconds(100);
  o.max_backoff = absl::Milliseconds(200);
  o.max_queued_reports = 3;
  return o;
}

std::vector<std::unique_ptr<ControlClient>> StartClients(int port) {
  std::vector<std::unique_ptr<ControlClient>> clients;
  for (int r = 0; r < kRanks; ++r) clients.push_back(std::make_unique<ControlClient>(Options(port), Registration(r)));
  return clients;
}

TEST(ControlClient, RegistersReportsAndReceivesOrders) {
  auto server = StartServer(0);
  ASSERT_TRUE(server);
  auto clients = StartClients(server->port());
  ASSERT_TRUE(WaitFor([&] { return server->core().Status().registered() == kRanks; }));
  for (int w = 0; w < 2; ++w) {
    for (int r = 0; r < kRanks; ++r) clients[r]->SubmitReport(Report(r, 10 * w, 10 * w + 10));
  }
  ASSERT_TRUE(WaitFor([&] { return server->core().Status().windows() == 2; }));
  for (int r = 0; r < kRanks; ++r) clients[r]->SetProgress(20, 0);
  ASSERT_TRUE(WaitFor([&] { return server->core().Status().step() == 20; }));

  for (auto& c : clients) EXPECT_FALSE(c->TakeOrders().has_value());
  auto plan = server->core().Rebalance(false, 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (auto& c : clients) {
    std::optional<control::Orders> orders;
    ASSERT_TRUE(WaitFor([&] { return (orders = c->TakeOrders()).has_value(); }, absl::Seconds(3)));
    EXPECT_EQ(orders->placement().epoch(), 1);
    EXPECT_EQ(orders->transfers_size(), plan->moved_replicas());
    EXPECT_FALSE(c->TakeOrders().has_value());  // handed over once
  }
  for (auto& c : clients) {
    const ControlStats stats = c->stats();
    EXPECT_EQ(stats.registrations, 1);
    EXPECT_EQ(stats.reports_sent, 2);
    EXPECT_EQ(stats.reports_dropped, 0);
    EXPECT_EQ(stats.coordinator_id, server->core().id());
    c->Stop(absl::Seconds(2), /*leave=*/true);
  }
  const auto status = server->core().Status();
  for (const auto& w : status.workers()) EXPECT_TRUE(w.left()) << w.rank();
}

TEST(ControlClient, WaitsForTheCoordinatorAndSurvivesItsRestart) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  auto clients = StartClients(port);
  // Nobody listens yet: reports queue up to the bound, the oldest dropped.
  for (int w = 0; w < 5; ++w) clients[0]->SubmitReport(Report(0, 10 * w, 10 * w + 10));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(clients[0]->stats().registered);
  EXPECT_GT(clients[0]->stats().rpc_failures, 0);
  EXPECT_EQ(clients[0]->stats().reports_dropped, 2);

  auto server = StartServer(port);
  ASSERT_TRUE(server);
  ASSERT_TRUE(WaitFor([&] { return server->core().Status().registered() == kRanks; }));
  for (int w = 2; w < 5; ++w) {
    for (int r = 1; r < kRanks; ++r) clients[r]->SubmitReport(Report(r, 10 * w, 10 * w + 10));
  }
  ASSERT_TRUE(WaitFor([&] { return server->core().Status().windows() == 3; }));  // windows 2-4

  // The coordinator restarts without state: the clients notice and register again.
  const std::string first_id = server->core().id();
  server.reset();
  server = StartServer(port);
  ASSERT_TRUE(server);
  ASSERT_TRUE(WaitFor([&] { return server->core().Status().registered() == kRanks; }));
  for (int r = 0; r < kRanks; ++r) clients[r]->SubmitReport(Report(r, 50, 60));
  ASSERT_TRUE(WaitFor([&] { return server->core().Status().windows() == 1; }));
  for (auto& c : clients) {
    ASSERT_TRUE(WaitFor([&] { return c->stats().coordinator_id == server->core().id(); }));
    EXPECT_NE(c->stats().coordinator_id, first_id);
    EXPECT_EQ(c->stats().registrations, 2);
  }
}

// A rank stopping before it could register (the coordinator came up late, or its attempts
// failed on a loaded machine) and with nothing queued still registers within the flush time,
// then leaves: the coordinator's record lists every rank that ran.
TEST(ControlClient, StopWithLeaveRegistersARankThatHasNotYet) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  ControlClient client(Options(port), Registration(0));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_FALSE(client.stats().registered);
  auto server = StartServer(port);
  ASSERT_TRUE(server);
  client.Stop(absl::Seconds(5), /*leave=*/true);
  EXPECT_EQ(client.stats().registrations, 1);
  const auto status = server->core().Status();
  ASSERT_EQ(status.workers_size(), 1);
  EXPECT_TRUE(status.workers(0).left());
}

TEST(ControlClient, StopGivesUpOnAnAbsentCoordinator) {
  const int port = FreePort();
  ControlClient client(Options(port), Registration(0));
  client.SubmitReport(Report(0, 0, 10));
  const absl::Time t0 = absl::Now();
  client.Stop(absl::Milliseconds(300), true);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
  EXPECT_EQ(client.stats().reports_sent, 0);
}

}  // namespace
}  // namespace switchyard::worker
