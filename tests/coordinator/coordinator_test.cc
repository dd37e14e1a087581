// The coordinator through its real gRPC services, in process on port 0: every control and
// admin RPC, every validation error (with the state checked unchanged), hostile load reports,
// auth and TLS on and off, /metrics over HTTP, persistence across a restart.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/server.h"
#include "gtest/gtest.h"
#include "placement/metrics.h"
#include "placement/placement.h"
#include "rpc/convert.h"
#include "rpc/rpc_util.h"
#include "switchyard/admin/v1/admin.grpc.pb.h"
#include "switchyard/control/v1/control.grpc.pb.h"
#include "coordinator/reflection_probe.pb.h"  // generated from tests/coordinator/
#include <grpcpp/generic/generic_stub.h>
#include "tests/common/subprocess.h"
#include "tests/coordinator/fixtures.h"

namespace switchyard::coordinator {
namespace {

using test::TempDir;
using namespace test::job;  // NOLINT: the test job

struct Options {
  std::string token{}, cert{}, key{}, state_dir{};
  int metrics_port = -1;
  absl::Duration heartbeat_timeout = absl::Seconds(5);
  int listen_port = 0;
};

// A coordinator server with stubs for both services.
class Harness {
 public:
  explicit Harness(const Options& o, const std::string& ca = "", const std::string& token = "") {
    ServerOptions options;
    options.listen = absl::StrCat("127.0.0.1:", o.listen_port);
    options.auth_token = o.token;
    options.tls_cert_pem = o.cert;
    options.tls_key_pem = o.key;
    options.metrics_port = o.metrics_port;
    options.core.state_dir = o.state_dir;
    options.core.heartbeat_timeout = o.heartbeat_timeout;
    auto server = CoordinatorServer::Start(options);
    start_status = server.status();
    if (!server.ok()) return;
    server_ = *std::move(server);
    token_ = token;
    auto channel = rpc::MakeChannel(o.cert.empty() ? server_->address() : absl::StrCat("localhost:", server_->port()), ca);
    control_ = control::Control::NewStub(channel);
    admin_ = admin::Admin::NewStub(channel);
  }
  CoordinatorServer& server() { return *server_; }
  std::unique_ptr<grpc::ClientContext> Ctx() const { return rpc::CallContext(absl::Seconds(10), token_); }

  grpc::Status Register(int rank, const std::string& job = "job-a") {
    control::RegisterResponse out;
    return control_->Register(Ctx().get(), Registration(rank, job), &out);
  }
  void RegisterAll() {
    for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(Register(r).ok());
  }
  grpc::Status ReportLoad(const control::LoadReport& r) {
    control::LoadReportResponse out;
    return control_->ReportLoad(Ctx().get(), r, &out);
  }
  void ReportWindow(int64_t first, int64_t end, int64_t hot = 400) {
    for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(ReportLoad(Report(r, first, end, hot)).ok());
  }
  admin::ClusterStatus Status() {
    admin::ClusterStatus s;
    EXPECT_TRUE(admin_->GetStatus(Ctx().get(), {}, &s).ok());
    return s;
  }
  grpc::Status Placement(int layer, types::Placement* out) {
    admin::GetPlacementRequest r;
    r.set_layer(layer);
    r.set_all_layers(layer < 0);
    admin::GetPlacementResponse response;
    grpc::Status s = admin_->GetPlacement(Ctx().get(), r, &response);
    *out = response.placement();
    return s;
  }
  grpc::Status Load(int layer, admin::GetLoadResponse* out) {
    admin::GetLoadRequest r;
    r.set_layer(layer);
    r.set_all_layers(layer < 0);
    return admin_->GetLoad(Ctx().get(), r, out);
  }
  grpc::Status Rebalance(bool dry_run, int max_moves, admin::RebalanceResponse* out) {
    admin::RebalanceRequest r;
    r.set_dry_run(dry_run);
    r.set_max_moves(max_moves);
    return admin_->Rebalance(Ctx().get(), r, out);
  }
  grpc::Status Pin(int layer, int expert, int rank, bool unpin = false) {
    admin::PinRequest r;
    r.mutable_pin()->set_layer(layer);
    r.mutable_pin()->set_expert(expert);
    r.mutable_pin()->set_rank(rank);
    admin::ConstraintsResponse out;
    return unpin ? admin_->Unpin(Ctx().get(), r, &out) : admin_->Pin(Ctx().get(), r, &out);
  }
  grpc::Status Drain(int rank, bool undrain = false) {
    admin::DrainRequest r;
    r.set_rank(rank);
    admin::ConstraintsResponse out;
    return undrain ? admin_->Undrain(Ctx().get(), r, &out) : admin_->Drain(Ctx().get(), r, &out);
  }
  types::Policy Policy() {
    types::Policy p;
    EXPECT_TRUE(admin_->GetPolicy(Ctx().get(), {}, &p).ok());
    return p;
  }
  grpc::Status SetPolicy(const types::Policy& p) {
    admin::SetPolicyRequest r;
    *r.mutable_policy() = p;
    types::Policy out;
    return admin_->SetPolicy(Ctx().get(), r, &out);
  }
  grpc::Status Poll(int rank, int64_t epoch, int wait_ms, control::Orders* out) {
    control::PollOrdersRequest r;
    r.set_rank(rank);
    r.set_epoch(epoch);
    r.set_wait_ms(wait_ms);
    return control_->PollOrders(Ctx().get(), r, out);
  }
  std::vector<admin::Event> Events(int64_t after = 0) {
    admin::WatchEventsRequest r;
    r.set_after_seq(after);
    auto ctx = Ctx();
    auto reader = admin_->WatchEvents(ctx.get(), r);
    std::vector<admin::Event> out;
    admin::Event e;
    while (reader->Read(&e)) out.push_back(e);
    EXPECT_TRUE(reader->Finish().ok());
    return out;
  }
  // Everything an admin can see, minus clocks: equal snapshots = unchanged state.
  std::string Snapshot() {
    std::string out;
    admin::ClusterStatus s = Status();
    for (auto& w : *s.mutable_workers()) {
      w.clear_seconds_since_heartbeat();
      w.clear_seconds_since_report();
    }
    s.clear_coordinator_id();
    out += s.DebugString();
    types::Placement p;
    if (Placement(-1, &p).ok()) out += p.DebugString();
    admin::GetLoadResponse load;
    if (Load(-1, &load).ok()) out += load.DebugString();
    out += Policy().DebugString();
    return out;
  }

  absl::Status start_status;
  std::unique_ptr<control::Control::Stub> control_;
  std::unique_ptr<admin::Admin::Stub> admin_;

 private:
  std::unique_ptr<CoordinatorServer> server_;
  std::string token_;
};

#define EXPECT_CODE(call, code)                                       \
  do {                                                               \
    const grpc::Status _s = (call);                                  \
    EXPECT_EQ(_s.error_code(), grpc::StatusCode::code) << _s.error_message(); \
  } while (0)

TEST(Coordinator, RegistersWorkersAndReportsStatus) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok()) << h.start_status;
  admin::ClusterStatus s = h.Status();
  EXPECT_EQ(s.registered(), 0);
  EXPECT_EQ(s.ranks(), 0);
  types::Placement p;
  EXPECT_CODE(h.Placement(-1, &p), FAILED_PRECONDITION);  // no job yet
  h.RegisterAll();
  s = h.Status();
  EXPECT_EQ(s.registered(), kRanks);
  EXPECT_EQ(s.healthy(), kRanks);
  EXPECT_EQ(s.ranks(), kRanks);
  EXPECT_EQ(s.nodes(), 2);
  EXPECT_EQ(s.model(), "test-moe");
  EXPECT_EQ(s.committed_epoch(), 0);
  ASSERT_EQ(s.workers_size(), kRanks);
  EXPECT_EQ(s.workers(3).node(), 1);
  EXPECT_EQ(s.workers(3).seconds_since_report(), -1);
  ASSERT_TRUE(h.Placement(-1, &p).ok());
  EXPECT_EQ(rpc::FromProto(p).value(), StartPlacement());
  ASSERT_TRUE(h.Placement(2, &p).ok());
  ASSERT_EQ(p.layers_size(), 1);
  EXPECT_EQ(p.layers(0).layer(), 2);

  // Heartbeats: known ranks progress, unknown ones are told to register.
  control::HeartbeatRequest hb;
  hb.set_rank(1);
  hb.set_step(42);
  control::HeartbeatResponse hr;
  ASSERT_TRUE(h.control_->Heartbeat(h.Ctx().get(), hb, &hr).ok());
  EXPECT_TRUE(hr.registered());
  EXPECT_EQ(h.Status().step(), 42);
  hb.set_rank(7);
  ASSERT_TRUE(h.control_->Heartbeat(h.Ctx().get(), hb, &hr).ok());
  EXPECT_FALSE(hr.registered());

  // A rank that finishes leaves: neither waited for nor lost.
  control::LeaveRequest leave;
  leave.set_rank(3);
  leave.set_step(50);
  control::LeaveResponse lr;
  ASSERT_TRUE(h.control_->Leave(h.Ctx().get(), leave, &lr).ok());
  EXPECT_TRUE(h.Status().workers(3).left());
  EXPECT_EQ(h.Status().healthy(), kRanks - 1);
  leave.set_rank(9);
  EXPECT_CODE(h.control_->Leave(h.Ctx().get(), leave, &lr), FAILED_PRECONDITION);

  std::vector<std::string> kinds;
  for (const admin::Event& e : h.Events()) kinds.push_back(e.kind());
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "worker_joined"), kRanks);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "job_started"), 1);
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "worker_left"), 1);
}

TEST(Coordinator, RejectsBadRegistrations) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  control::RegisterResponse out;
  auto bad = Registration(4);  // rank >= world size
  EXPECT_CODE(h.control_->Register(h.Ctx().get(), bad, &out), INVALID_ARGUMENT);
  bad = Registration(0);
  bad.mutable_model()->clear_moe_layers();
  EXPECT_CODE(h.control_->Register(h.Ctx().get(), bad, &out), INVALID_ARGUMENT);
  bad = Registration(0);
  bad.mutable_placement()->mutable_layers(0)->mutable_ranks(0)->clear_replicas();  // experts 0-3 lost
  EXPECT_CODE(h.control_->Register(h.Ctx().get(), bad, &out), INVALID_ARGUMENT);
  bad = Registration(0);
  bad.mutable_model()->set_num_experts(32);  // the placement has 16
  EXPECT_CODE(h.control_->Register(h.Ctx().get(), bad, &out), INVALID_ARGUMENT);
  bad = Registration(0);
  bad.mutable_model()->add_moe_layers(9);  // not in the placement
  EXPECT_CODE(h.control_->Register(h.Ctx().get(), bad, &out), INVALID_ARGUMENT);
  EXPECT_EQ(h.Status().registered(), 0);
}

TEST(Coordinator, AggregatesLoadAndRejectsHostileReports) {
  Harness h({.metrics_port = 0});
  ASSERT_TRUE(h.start_status.ok());
  h.RegisterAll();
  // Before registering nothing else counts; a report from an unknown rank is refused.
  EXPECT_CODE(h.ReportLoad(Report(5, 0, 10)), FAILED_PRECONDITION);

  // One window of 10 steps from the 4 ranks: expert 0 gets 4 x 400 pairs = 160 per step.
  for (int r = 0; r < kRanks - 1; ++r) ASSERT_TRUE(h.ReportLoad(Report(r, 0, 10)).ok());
  EXPECT_EQ(h.Status().windows(), 0);  // rank 3 still owes it
  ASSERT_TRUE(h.ReportLoad(Report(kRanks - 1, 0, 10)).ok());
  admin::GetLoadResponse load;
  ASSERT_TRUE(h.Load(-1, &load).ok());
  EXPECT_EQ(load.windows(), 1);
  ASSERT_EQ(load.layers_size(), 2);
  EXPECT_DOUBLE_EQ(load.layers(0).smoothed(0), 160.0);
  EXPECT_DOUBLE_EQ(load.layers(0).smoothed(5), 8.0);
  EXPECT_EQ(load.layers(0).last_window(0), 1600);
  // Rank 0 computed 1600 + 3 x 80, the others 4 x 80: balancedness = mean / max.
  const double r0 = 1600 + 3 * 80, other = 4 * 80;
  EXPECT_NEAR(load.layers(0).balancedness(), (r0 + 3 * other) / 4 / r0, 1e-9);
  EXPECT_NEAR(h.Status().layer_balancedness(1), (r0 + 3 * other) / 4 / r0, 1e-9);
  ASSERT_TRUE(h.Load(2, &load).ok());
  EXPECT_EQ(load.layers_size(), 1);
  EXPECT_CODE(h.Load(3, &load), INVALID_ARGUMENT);

  // Hostile and malformed reports: each rejected with a message, the aggregate untouched.
  const std::string before = h.Snapshot();
  std::vector<control::LoadReport> bad;
  bad.push_back(Report(0, 10, 20));
  bad.back().mutable_layers(0)->mutable_chosen()->RemoveLast();  // wrong size
  bad.push_back(Report(0, 10, 20));
  bad.back().mutable_layers(1)->set_processed(3, -5);  // negative count
  bad.push_back(Report(0, 10, 20));
  bad.back().mutable_layers(0)->set_chosen(1, int64_t{1} << 50);  // absurd count
  bad.push_back(Report(0, 10, 20));
  bad.back().mutable_layers(0)->set_layer(7);  // unknown layer
  bad.push_back(Report(0, 10, 20));
  bad.back().mutable_layers()->RemoveLast();  // a layer missing
  bad.push_back(Report(0, 20, 10));  // empty window
  bad.push_back(Report(0, -5, 10));  // negative step
  for (const control::LoadReport& r : bad) EXPECT_CODE(h.ReportLoad(r), INVALID_ARGUMENT);
  EXPECT_EQ(h.Snapshot(), before);
  // The same window twice from one rank is refused too.
  ASSERT_TRUE(h.ReportLoad(Report(0, 10, 20)).ok());
  EXPECT_CODE(h.ReportLoad(Report(0, 10, 20)), INVALID_ARGUMENT);
  int rejected = 0;
  for (const admin::Event& e : h.Events()) rejected += e.kind() == "report_rejected";
  // + the repeat; the unknown rank's report is not counted (it registers and sends it again).
  EXPECT_EQ(rejected, static_cast<int>(bad.size()) + 1);

  // Smoothing: the next window with expert 0 at 800 per rank -> EMA(0.5) of 160 and 320.
  for (int r = 1; r < kRanks; ++r) ASSERT_TRUE(h.ReportLoad(Report(r, 10, 20)).ok());  // completes [10,20)
  h.ReportWindow(20, 30, 800);
  ASSERT_TRUE(h.Load(1, &load).ok());
  EXPECT_EQ(load.windows(), 3);
  EXPECT_DOUBLE_EQ(load.layers(0).smoothed(0), 0.5 * 160 + 0.5 * 320);
}

// On an injected clock (no sleeping): ranks 0-2 keep beating, rank 3 goes silent past the
// heartbeat timeout and is declared lost at the next tick; the windows then complete without
// it, and it recovers with a heartbeat.
TEST(Coordinator, LostRanksDoNotHoldWindowsBack) {
  absl::Time now = absl::FromUnixSeconds(1000000);
  auto c = *Coordinator::Create({.heartbeat_timeout = absl::Seconds(5), .clock = [&now] { return now; }});
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(c->Register(Registration(r)).ok());
  control::HeartbeatRequest hb;
  for (int i = 0; i < 12; ++i) {
    for (int r = 0; r < 3; ++r) {
      hb.set_rank(r);
      ASSERT_TRUE(c->Heartbeat(hb).ok());
    }
    now += absl::Seconds(1);
    c->Tick();
    EXPECT_EQ(c->Status().healthy(), i < 5 ? kRanks : 3) << "after " << i + 1 << " s";
  }
  admin::ClusterStatus s = c->Status();
  EXPECT_FALSE(s.workers(3).healthy());
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(c->ReportLoad(Report(r, 0, 10)).ok());
  EXPECT_EQ(c->Status().windows(), 1);
  // It comes back with a heartbeat.
  hb.set_rank(3);
  ASSERT_TRUE(c->Heartbeat(hb).ok());
  EXPECT_EQ(c->Status().healthy(), kRanks);
  std::vector<std::string> kinds;
  for (const admin::Event& e : c->WaitEvents(0, absl::ZeroDuration())) kinds.push_back(e.kind());
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "worker_lost"), kinds.end());
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "worker_recovered"), kinds.end());
}

int ConnectLocal(int port);
std::pair<std::string, std::string> HttpGet(int port, const std::string& path);
std::map<std::string, double> ParseMetrics(const std::string& text);

// Each transfer brings an expert to a rank that did not hold it, from a rank that did.
void ExpectTransfersConsistent(const types::Placement& from_proto, const control::Orders& orders) {
  const placement::Placement now = rpc::FromProto(from_proto).value();
  const placement::Placement next = rpc::FromProto(orders.placement()).value();
  int moved = 0;
  for (const control::Transfer& t : orders.transfers()) {
    auto holds = [&](const placement::Placement& p, int rank) {
      for (const placement::Replica& r : p.FindLayer(t.layer())->ranks[rank]) {
        if (r.expert == t.expert()) return true;
      }
      return false;
    };
    EXPECT_TRUE(holds(now, t.from())) << t.DebugString();
    EXPECT_FALSE(holds(now, t.to())) << t.DebugString();
    EXPECT_TRUE(holds(next, t.to())) << t.DebugString();
    ++moved;
  }
  EXPECT_EQ(moved, placement::MovedReplicas(now, next));
}

TEST(Coordinator, RebalanceDryRunAndApply) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  admin::RebalanceResponse plan;
  EXPECT_CODE(h.Rebalance(true, 0, &plan), FAILED_PRECONDITION);  // no job
  h.RegisterAll();
  h.ReportWindow(0, 10);
  const std::string before = h.Snapshot();
  ASSERT_TRUE(h.Rebalance(true, 0, &plan).ok());
  EXPECT_FALSE(plan.applied());
  EXPECT_GT(plan.moved_replicas(), 0);
  EXPECT_GT(plan.worst_after(), plan.worst_before());
  EXPECT_EQ(plan.target_epoch(), 1);
  EXPECT_EQ(h.Snapshot(), before);  // a dry run changes nothing
  control::Orders orders;
  ASSERT_TRUE(h.Poll(0, 0, 0, &orders).ok());
  EXPECT_FALSE(orders.has_placement());

  EXPECT_CODE(h.Rebalance(false, -1, &plan), INVALID_ARGUMENT);
  EXPECT_EQ(h.Snapshot(), before);
  ASSERT_TRUE(h.Rebalance(false, 1, &plan).ok());  // a budget of one move
  EXPECT_TRUE(plan.applied());
  EXPECT_EQ(plan.moved_replicas(), 1);
  admin::ClusterStatus s = h.Status();
  EXPECT_EQ(s.committed_epoch(), 0);
  EXPECT_EQ(s.target_epoch(), 1);
  types::Placement committed;
  ASSERT_TRUE(h.Placement(-1, &committed).ok());
  EXPECT_EQ(committed.epoch(), 0);
  for (int r = 0; r < kRanks; ++r) {
    ASSERT_TRUE(h.Poll(r, 0, 0, &orders).ok());
    ASSERT_TRUE(orders.has_placement());
    EXPECT_EQ(orders.placement().epoch(), 1);
    ExpectTransfersConsistent(committed, orders);
  }
  // A worker already at the target gets nothing; an unknown rank is refused.
  ASSERT_TRUE(h.Poll(0, 1, 0, &orders).ok());
  EXPECT_FALSE(orders.has_placement());
  EXPECT_CODE(h.Poll(9, 0, 0, &orders), FAILED_PRECONDITION);
  EXPECT_CODE(h.Poll(0, 0, 5000, &orders), INVALID_ARGUMENT);
}

TEST(Coordinator, MigrationReportsCommitOrDropTheTarget) {
  Harness h({.metrics_port = 0});
  ASSERT_TRUE(h.start_status.ok());
  h.RegisterAll();
  h.ReportWindow(0, 10);
  admin::RebalanceResponse plan;
  ASSERT_TRUE(h.Rebalance(false, 0, &plan).ok());
  EXPECT_GT(plan.scratch_moved_replicas(), plan.moved_replicas());  // EPLB from scratch moves more
  control::Orders orders;
  ASSERT_TRUE(h.Poll(0, 0, 0, &orders).ok());
  EXPECT_EQ(orders.scratch_moved_replicas(), plan.scratch_moved_replicas());
  auto report = [&](int rank, const std::string& phase, int64_t epoch) {
    control::MigrationReport r;
    r.set_rank(rank);
    r.set_epoch(epoch);
    r.set_phase(phase);
    r.set_step(20);
    r.set_moved_replicas(plan.moved_replicas());
    r.set_bytes(1000);
    r.set_seconds(0.5);
    r.set_error(phase == "aborted" ? "weight transfer timed out" : "");
    control::MigrationReportResponse out;
    return h.control_->ReportMigration(h.Ctx().get(), r, &out);
  };
  EXPECT_CODE(report(0, "finished", 1), INVALID_ARGUMENT);
  EXPECT_CODE(report(9, "started", 1), FAILED_PRECONDITION);
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(report(r, "started", 1).ok());
  // Every rank aborted: the cluster stays on epoch 0, the target is gone, once.
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(report(r, "aborted", 1).ok());
  admin::ClusterStatus s = h.Status();
  EXPECT_EQ(s.committed_epoch(), 0);
  EXPECT_EQ(s.target_epoch(), 0);
  int started = 0, failed = 0;
  for (const admin::Event& e : h.Events()) {
    started += e.kind() == "migration_started";
    failed += e.kind() == "migration_failed";
  }
  EXPECT_EQ(started, 1);
  EXPECT_EQ(failed, 1);
  // Published again (after the cooldown window); this time every rank commits it.
  h.ReportWindow(10, 20);
  ASSERT_TRUE(h.Rebalance(false, 0, &plan).ok());
  EXPECT_EQ(plan.target_epoch(), 1);
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(report(r, "committed", 1).ok());
  s = h.Status();
  EXPECT_EQ(s.committed_epoch(), 1);
  EXPECT_EQ(s.target_epoch(), 1);
  const auto m = ParseMetrics(HttpGet(h.server().metrics_port(), "/metrics").second);
  EXPECT_EQ(m.at("switchyard_migrations_failed_total"), 1);
  EXPECT_EQ(m.at("switchyard_migrations_committed_total"), 1);
  EXPECT_EQ(m.at("switchyard_migration_bytes_total"), 1000);
  EXPECT_EQ(m.at("switchyard_last_migration_seconds"), 0.5);
  types::Placement committed;
  ASSERT_TRUE(h.Placement(-1, &committed).ok());
  EXPECT_EQ(committed.epoch(), 1);
  // Orders a rank refuses are dropped too; publishing again makes a new attempt (nonce).
  ASSERT_TRUE(h.Drain(1).ok());
  control::Orders first;
  ASSERT_TRUE(h.Poll(0, 1, 0, &first).ok());
  ASSERT_TRUE(report(2, "refused", 2).ok());
  EXPECT_EQ(h.Status().target_epoch(), 1);
  ASSERT_TRUE(h.Rebalance(false, 0, &plan).ok());
  control::Orders second;
  ASSERT_TRUE(h.Poll(0, 1, 0, &second).ok());
  EXPECT_EQ(second.placement().epoch(), 2);
  EXPECT_NE(second.nonce(), first.nonce());
}

TEST(Coordinator, LongPollReturnsWhenAPlanIsPublished) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  h.RegisterAll();
  h.ReportWindow(0, 10);
  control::Orders orders;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(h.Poll(0, 0, 200, &orders).ok());  // nothing published: waits it out
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(190));
  EXPECT_FALSE(orders.has_placement());
  std::thread publisher([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    admin::RebalanceResponse plan;
    EXPECT_TRUE(h.Rebalance(false, 0, &plan).ok());
  });
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(h.Poll(0, 0, 1000, &orders).ok());
  const auto waited = std::chrono::steady_clock::now() - t1;
  publisher.join();
  EXPECT_TRUE(orders.has_placement());
  EXPECT_LT(waited, std::chrono::milliseconds(900));
}

TEST(Coordinator, PinsAndDrainsAreValidatedAndPlanned) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  EXPECT_CODE(h.Drain(0), FAILED_PRECONDITION);  // no job
  h.RegisterAll();
  const std::string before = h.Snapshot();
  EXPECT_CODE(h.Pin(1, 99, 0), INVALID_ARGUMENT);   // unknown expert
  EXPECT_CODE(h.Pin(1, 3, 9), INVALID_ARGUMENT);    // unknown rank
  EXPECT_CODE(h.Pin(5, 3, 1), INVALID_ARGUMENT);    // unknown layer
  EXPECT_CODE(h.Pin(1, 3, 1, true), NOT_FOUND);     // unpin what is not pinned
  EXPECT_CODE(h.Drain(4), INVALID_ARGUMENT);        // unknown rank
  EXPECT_CODE(h.Drain(-1), INVALID_ARGUMENT);
  EXPECT_CODE(h.Drain(2, true), FAILED_PRECONDITION);  // not drained
  EXPECT_EQ(h.Snapshot(), before);

  // Pin expert 3 to rank 1 in layer 1: published as epoch 1 with the pin honoured.
  ASSERT_TRUE(h.Pin(1, 3, 1).ok());
  admin::ClusterStatus s = h.Status();
  ASSERT_EQ(s.pins_size(), 1);
  EXPECT_EQ(s.target_epoch(), 1);
  control::Orders orders;
  ASSERT_TRUE(h.Poll(1, 0, 0, &orders).ok());
  const placement::Placement next = rpc::FromProto(orders.placement()).value();
  bool has = false;
  for (const placement::Replica& r : next.FindLayer(1)->ranks[1]) has = has || r.expert == 3;
  EXPECT_TRUE(has);

  // Changes while epoch 1 is in flight are validated now and planned once it commits.
  ASSERT_TRUE(h.Drain(2).ok());
  EXPECT_EQ(h.Status().target_epoch(), 1);
  const std::string one = h.Snapshot();
  EXPECT_CODE(h.Pin(-1, 5, 2), FAILED_PRECONDITION);  // pin to a drained rank
  EXPECT_CODE(h.Drain(3), FAILED_PRECONDITION);       // 2 ranks x 6 slots cannot hold 16 experts
  EXPECT_EQ(h.Snapshot(), one);
  admin::RebalanceResponse plan;
  EXPECT_CODE(h.Rebalance(false, 0, &plan), FAILED_PRECONDITION);  // one migration at a time
  EXPECT_TRUE(h.Rebalance(true, 0, &plan).ok());                   // a dry run always works
  s = h.Status();
  ASSERT_EQ(s.drained_ranks_size(), 1);
  EXPECT_TRUE(s.workers(2).drained());
  // The workers reach epoch 1 (heartbeat): it commits, and epoch 2 empties rank 2.
  control::HeartbeatRequest hb;
  hb.set_rank(0);
  hb.set_epoch(1);
  control::HeartbeatResponse hr;
  ASSERT_TRUE(h.control_->Heartbeat(h.Ctx().get(), hb, &hr).ok());
  s = h.Status();
  EXPECT_EQ(s.committed_epoch(), 1);
  EXPECT_EQ(s.target_epoch(), 2);
  ASSERT_TRUE(h.Poll(0, 1, 0, &orders).ok());
  EXPECT_EQ(orders.base_epoch(), 1);
  const placement::Placement after = rpc::FromProto(orders.placement()).value();
  for (const auto& layer : after.layers) EXPECT_TRUE(layer.ranks[2].empty());
  hb.set_epoch(2);
  ASSERT_TRUE(h.control_->Heartbeat(h.Ctx().get(), hb, &hr).ok());
  ASSERT_TRUE(h.Drain(2, true).ok());
  ASSERT_TRUE(h.Pin(1, 3, 1, true).ok());
  s = h.Status();
  EXPECT_EQ(s.pins_size(), 0);
  EXPECT_EQ(s.drained_ranks_size(), 0);
}

TEST(Coordinator, PolicyIsValidated) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  const types::Policy defaults = h.Policy();
  EXPECT_EQ(defaults.planner(), "incremental");
  const std::string before = h.Snapshot();
  std::vector<std::function<void(types::Policy&)>> bad = {
      [](types::Policy& p) { p.set_min_gain(-0.1); },
      [](types::Policy& p) { p.set_hysteresis_windows(0); },
      [](types::Policy& p) { p.set_cooldown_windows(-1); },
      [](types::Policy& p) { p.set_max_moves(-3); },
      [](types::Policy& p) { p.set_smoothing(0); },
      [](types::Policy& p) { p.set_smoothing(1.5); },
      [](types::Policy& p) { p.set_noise_z(-1); },
      [](types::Policy& p) { p.set_planner("random"); },
  };
  for (const auto& change : bad) {
    types::Policy p = defaults;
    change(p);
    const grpc::Status s = h.SetPolicy(p);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << p.DebugString();
    EXPECT_NE(s.error_message().find("policy "), std::string::npos) << s.error_message();
  }
  EXPECT_EQ(h.Snapshot(), before);
  types::Policy p = defaults;
  p.set_auto_rebalance(true);
  p.set_planner("eplb");
  ASSERT_TRUE(h.SetPolicy(p).ok());
  EXPECT_EQ(h.Policy().DebugString(), p.DebugString());
}

TEST(Coordinator, AutoRebalancePublishesAfterHysteresis) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  h.RegisterAll();
  types::Policy p = h.Policy();
  p.set_auto_rebalance(true);
  p.set_hysteresis_windows(2);
  ASSERT_TRUE(h.SetPolicy(p).ok());
  h.ReportWindow(0, 10);
  EXPECT_EQ(h.Status().target_epoch(), 0);  // one window is not enough
  h.ReportWindow(10, 20);
  EXPECT_EQ(h.Status().target_epoch(), 1);
  // Balanced load never triggers a plan.
  Harness calm({});
  calm.RegisterAll();
  ASSERT_TRUE(calm.SetPolicy(p).ok());
  for (int w = 0; w < 4; ++w) calm.ReportWindow(10 * w, 10 * w + 10, 20);
  EXPECT_EQ(calm.Status().target_epoch(), 0);
}

// After an aborted migration the automatic rebalancer waits longer (the cooldown doubles with
// each failure in a row) and plans at most half the failed plan's moves, instead of retrying
// the same doomed migration; a commit resets it.
TEST(Coordinator, AbortedMigrationBacksOffAndShrinksTheNextPlan) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  h.RegisterAll();
  types::Policy p = h.Policy();
  p.set_auto_rebalance(true);
  p.set_hysteresis_windows(1);
  p.set_cooldown_windows(1);
  ASSERT_TRUE(h.SetPolicy(p).ok());
  h.ReportWindow(0, 10);
  ASSERT_EQ(h.Status().target_epoch(), 1);
  control::Orders orders;
  ASSERT_TRUE(h.Poll(0, 0, 0, &orders).ok());
  const int failed_moves = orders.transfers_size();
  ASSERT_GT(failed_moves, 1);
  for (int r = 0; r < kRanks; ++r) {
    control::MigrationReport m;
    m.set_rank(r);
    m.set_epoch(1);
    m.set_phase(r == 0 ? "started" : "aborted");
    m.set_step(30);
    m.set_moved_replicas(failed_moves);
    m.set_error("weight transfer stalled");
    control::MigrationReportResponse out;
    ASSERT_TRUE(h.control_->ReportMigration(h.Ctx().get(), m, &out).ok());
  }
  std::string failed;
  for (const admin::Event& e : h.Events()) {
    if (e.kind() == "migration_failed") failed = e.message();
  }
  EXPECT_NE(failed.find("aborted at step 30"), std::string::npos) << failed;
  EXPECT_NE(failed.find("next automatic plan in 2 windows"), std::string::npos) << failed;
  // The cooldown (2 windows): no plan yet.
  h.ReportWindow(10, 20);
  h.ReportWindow(20, 30);
  EXPECT_EQ(h.Status().target_epoch(), 0);
  // Then a smaller plan.
  h.ReportWindow(30, 40);
  ASSERT_EQ(h.Status().target_epoch(), 1);
  ASSERT_TRUE(h.Poll(0, 0, 0, &orders).ok());
  EXPECT_LE(orders.transfers_size(), failed_moves / 2);
  EXPECT_GT(orders.transfers_size(), 0);
}

TEST(Coordinator, WatchEventsStreamsNewEvents) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  h.RegisterAll();
  const std::vector<admin::Event> first = h.Events();
  ASSERT_FALSE(first.empty());
  EXPECT_TRUE(h.Events(first.back().seq()).empty());
  // Follow: a drain made while streaming arrives on the stream.
  admin::WatchEventsRequest r;
  r.set_after_seq(first.back().seq());
  r.set_follow(true);
  auto ctx = rpc::CallContext(absl::Seconds(10), "");
  auto reader = h.admin_->WatchEvents(ctx.get(), r);
  std::thread drainer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(h.Drain(1).ok());
  });
  admin::Event e;
  bool seen = false;
  while (!seen && reader->Read(&e)) seen = e.kind() == "constraints_changed";
  drainer.join();
  EXPECT_TRUE(seen);
  ctx->TryCancel();
  (void)reader->Finish();
}

TEST(Coordinator, AuthTokenGuardsChangesAndWorkers) {
  // Without a token everything is open (the default listens on 127.0.0.1 only).
  {
    Harness open({});
    ASSERT_TRUE(open.start_status.ok());
    EXPECT_TRUE(open.Register(0).ok());
  }
  Options o{.token = "s3cret"};
  Harness anon(o);  // a client without the token
  ASSERT_TRUE(anon.start_status.ok());
  EXPECT_CODE(anon.Register(0), UNAUTHENTICATED);
  auto wrong_channel = rpc::MakeChannel(anon.server().address(), "");
  auto wrong_admin = admin::Admin::NewStub(wrong_channel);
  admin::DrainRequest drain;
  drain.set_rank(0);
  admin::ConstraintsResponse cr;
  EXPECT_CODE(wrong_admin->Drain(rpc::CallContext(absl::Seconds(5), "guess").get(), drain, &cr), UNAUTHENTICATED);

  auto channel = rpc::MakeChannel(anon.server().address(), "");
  auto control = control::Control::NewStub(channel);
  for (int r = 0; r < kRanks; ++r) {
    control::RegisterResponse out;
    ASSERT_TRUE(control->Register(rpc::CallContext(absl::Seconds(5), "s3cret").get(), Registration(r), &out).ok());
  }
  // Reading needs no token; changing does.
  EXPECT_EQ(anon.Status().registered(), kRanks);
  admin::RebalanceResponse plan;
  EXPECT_TRUE(anon.Rebalance(true, 0, &plan).ok());
  EXPECT_CODE(anon.Rebalance(false, 0, &plan), UNAUTHENTICATED);
  EXPECT_CODE(anon.Drain(1), UNAUTHENTICATED);
  EXPECT_CODE(anon.Pin(1, 2, 3), UNAUTHENTICATED);
  EXPECT_CODE(anon.SetPolicy(anon.Policy()), UNAUTHENTICATED);
  EXPECT_EQ(anon.Status().target_epoch(), 0);
  auto admin_stub = admin::Admin::NewStub(channel);
  ASSERT_TRUE(admin_stub->Drain(rpc::CallContext(absl::Seconds(5), "s3cret").get(), drain, &cr).ok());
  EXPECT_EQ(cr.drained_ranks_size(), 1);
}

// A self-signed certificate for localhost / 127.0.0.1 made with the openssl CLI.
struct Cert {
  std::string cert, key;
};
Cert MakeCert(const TempDir& dir) {
  const auto r = test::RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                                   "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout",
                                   dir.File("key.pem"), "-out", dir.File("cert.pem")});
  EXPECT_EQ(r.exit_code, 0) << "openssl (installed by scripts/setup.sh) failed: " << r.err;
  return {test::Slurp(dir.File("cert.pem")), test::Slurp(dir.File("key.pem"))};
}

TEST(Coordinator, ServesTls) {
  TempDir dir;
  const Cert c = MakeCert(dir);
  ASSERT_FALSE(c.cert.empty());
  Harness tls({.cert = c.cert, .key = c.key}, c.cert);
  ASSERT_TRUE(tls.start_status.ok()) << tls.start_status;
  ASSERT_TRUE(tls.Register(0).ok());
  EXPECT_EQ(tls.Status().registered(), 1);
  // A plaintext client cannot talk to it, nor a client trusting another CA.
  auto plain = admin::Admin::NewStub(rpc::MakeChannel(absl::StrCat("localhost:", tls.server().port()), ""));
  admin::ClusterStatus s;
  EXPECT_CODE(plain->GetStatus(rpc::CallContext(absl::Seconds(3), "").get(), {}, &s), UNAVAILABLE);
  TempDir other;
  const Cert stranger = MakeCert(other);
  auto untrusting = admin::Admin::NewStub(rpc::MakeChannel(absl::StrCat("localhost:", tls.server().port()), stranger.cert));
  EXPECT_CODE(untrusting->GetStatus(rpc::CallContext(absl::Seconds(3), "").get(), {}, &s), UNAVAILABLE);
  // Half a key pair is a configuration error.
  ServerOptions half;
  half.tls_cert_pem = c.cert;
  EXPECT_TRUE(absl::IsInvalidArgument(CoordinatorServer::Start(half).status()));
}

// GET over a plain socket: the status line and body.
// A TCP connection to 127.0.0.1:port.
int ConnectLocal(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

std::pair<std::string, std::string> HttpGet(int port, const std::string& path) {
  const int fd = ConnectLocal(port);
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: localhost\r\n\r\n");
  EXPECT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) response.append(buf, n);
  close(fd);
  const size_t head = response.find("\r\n\r\n");
  if (head == std::string::npos) return {response, ""};
  return {response.substr(0, response.find("\r\n")), response.substr(head + 4)};
}

// Prometheus text: "name{labels} value" -> value; checks every sample line parses and every
// metric has HELP and TYPE.
std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  std::set<std::string> typed;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "# TYPE ")) {
      typed.insert(std::string(std::vector<absl::string_view>(absl::StrSplit(line, ' '))[2]));
      continue;
    }
    if (absl::StartsWith(line, "#")) continue;
    const size_t space = line.rfind(' ');
    EXPECT_NE(space, absl::string_view::npos) << line;
    double v = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &v)) << line;
    const std::string key(line.substr(0, space));
    std::string family = key.substr(0, key.find('{'));
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {  // a histogram's series
      if (!typed.count(family) && absl::EndsWith(family, suffix)) family.resize(family.size() - strlen(suffix));
    }
    EXPECT_TRUE(typed.count(family)) << "no TYPE line before " << key;
    out[key] = v;
  }
  return out;
}

TEST(Coordinator, ServesPrometheusMetrics) {
  Harness h({.metrics_port = 0});
  ASSERT_TRUE(h.start_status.ok());
  const int port = h.server().metrics_port();
  ASSERT_GT(port, 0);
  h.RegisterAll();
  h.ReportWindow(0, 10);
  control::LoadReport bad = Report(0, 10, 20);
  bad.mutable_layers(0)->set_chosen(0, -1);
  EXPECT_CODE(h.ReportLoad(bad), INVALID_ARGUMENT);
  admin::RebalanceResponse plan;
  ASSERT_TRUE(h.Rebalance(false, 0, &plan).ok());

  const auto [status, body] = HttpGet(port, "/metrics");
  EXPECT_EQ(status, "HTTP/1.1 200 OK");
  const auto m = ParseMetrics(body);
  EXPECT_EQ(m.at("switchyard_workers_registered"), kRanks);
  EXPECT_EQ(m.at("switchyard_committed_epoch"), 0);
  EXPECT_EQ(m.at("switchyard_target_epoch"), 1);
  EXPECT_EQ(m.at("switchyard_worker_up{rank=\"2\"}"), 1);
  EXPECT_EQ(m.at("switchyard_reports_rejected_total"), 1);
  EXPECT_EQ(m.at("switchyard_load_windows_total"), 1);
  EXPECT_EQ(m.at("switchyard_epochs_published_total"), 1);
  EXPECT_EQ(m.at("switchyard_migrations_committed_total"), 0);
  EXPECT_EQ(m.at("switchyard_moved_replicas_total"), plan.moved_replicas());
  const double r0 = 1600 + 3 * 80, other = 4 * 80;
  EXPECT_NEAR(m.at("switchyard_layer_balancedness{layer=\"1\"}"), (r0 + 3 * other) / 4 / r0, 1e-6);
  EXPECT_EQ(m.at("switchyard_rank_load{rank=\"0\"}"), 2 * r0);  // two layers
  EXPECT_GE(m.at("switchyard_report_lag_seconds{rank=\"3\"}"), 0);
  EXPECT_EQ(HttpGet(port, "/other").first, "HTTP/1.1 404 Not Found");
}

// A client that sends one byte every 1.5 s, and others that connect and send nothing, do not
// stall the endpoint: scrapes made meanwhile answer at once (they used to wait behind the
// slow client for as long as it liked).
TEST(Coordinator, SlowMetricsClientsStallNoScrape) {
  Harness h({.metrics_port = 0});
  ASSERT_TRUE(h.start_status.ok());
  const int port = h.server().metrics_port();
  ASSERT_GT(port, 0);
  std::vector<int> silent;
  for (int i = 0; i < 3; ++i) silent.push_back(ConnectLocal(port));
  std::atomic<bool> done{false};
  std::thread slow([&] {
    const int fd = ConnectLocal(port);
    const std::string request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for (size_t i = 0; i < request.size() && !done; ++i) {
      if (write(fd, &request[i], 1) != 1) break;
      for (int t = 0; t < 15 && !done; ++t) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    close(fd);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const auto [status, body] = HttpGet(port, "/metrics");
    EXPECT_EQ(status, "HTTP/1.1 200 OK");
    EXPECT_NE(body.find("switchyard_committed_epoch"), std::string::npos);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1000));
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  }
  done = true;
  slow.join();
  for (int fd : silent) close(fd);
}

TEST(Coordinator, RestartRestoresStateAndWorkersRegisterAgain) {
  TempDir dir;
  int port = 0;
  types::Policy policy;
  types::Placement target;
  {
    Harness h({.state_dir = dir.path()});
    ASSERT_TRUE(h.start_status.ok());
    port = h.server().port();
    h.RegisterAll();
    h.ReportWindow(0, 10);
    ASSERT_TRUE(h.Pin(-1, 6, 0).ok());
    ASSERT_TRUE(h.Drain(3).ok());
    policy = h.Policy();
    policy.set_min_gain(0.2);
    policy.set_max_moves(3);
    ASSERT_TRUE(h.SetPolicy(policy).ok());
    control::Orders orders;
    ASSERT_TRUE(h.Poll(0, 0, 0, &orders).ok());
    target = orders.placement();
    EXPECT_EQ(h.Status().target_epoch(), 1);  // the pin's epoch; the drain waits for it to commit
  }
  // The file is complete JSON of our format, written atomically.
  const std::string state = test::Slurp(dir.File("state.json"));
  EXPECT_NE(state.find("switchyard.coordinator-state/v1"), std::string::npos);

  Harness h({.state_dir = dir.path(), .listen_port = port});
  ASSERT_TRUE(h.start_status.ok()) << h.start_status;
  admin::ClusterStatus s = h.Status();
  EXPECT_EQ(s.registered(), 0);  // workers have to come back
  EXPECT_EQ(s.target_epoch(), 1);
  ASSERT_EQ(s.pins_size(), 1);
  EXPECT_EQ(s.pins(0).expert(), 6);
  ASSERT_EQ(s.drained_ranks_size(), 1);
  EXPECT_EQ(s.drained_ranks(0), 3);
  EXPECT_EQ(h.Policy().DebugString(), policy.DebugString());
  // A heartbeat tells a worker to register again; it rejoins the same job.
  control::HeartbeatRequest hb;
  hb.set_rank(0);
  control::HeartbeatResponse hr;
  ASSERT_TRUE(h.control_->Heartbeat(h.Ctx().get(), hb, &hr).ok());
  EXPECT_FALSE(hr.registered());
  h.RegisterAll();
  h.ReportWindow(100, 110);  // load is measured afresh
  s = h.Status();
  EXPECT_EQ(s.registered(), kRanks);
  EXPECT_EQ(s.windows(), 1);
  EXPECT_EQ(s.target_epoch(), 1);  // the same job: nothing reset
  EXPECT_EQ(s.pins_size(), 1);
  control::Orders orders;
  ASSERT_TRUE(h.Poll(1, 0, 0, &orders).ok());
  EXPECT_EQ(orders.placement().DebugString(), target.DebugString());
  // The workers reach epoch 1 after the restart: it commits and the deferred drain is planned.
  control::HeartbeatRequest at1;
  at1.set_rank(2);
  at1.set_epoch(1);
  ASSERT_TRUE(h.control_->Heartbeat(h.Ctx().get(), at1, &hr).ok());
  s = h.Status();
  EXPECT_EQ(s.committed_epoch(), 1);
  EXPECT_EQ(s.target_epoch(), 2);
  // A different job replaces it (and keeps constraints that still fit).
  ASSERT_TRUE(h.Register(0, "job-b").ok());
  s = h.Status();
  EXPECT_EQ(s.registered(), 1);
  EXPECT_EQ(s.target_epoch(), 0);
}

TEST(Coordinator, AChangeThatCannotBePersistedIsUndone) {
  TempDir dir;
  const std::string state = dir.File("state");
  Harness h({.state_dir = state});
  ASSERT_TRUE(h.start_status.ok());
  h.RegisterAll();
  // The state directory turns into a file: every write fails.
  std::filesystem::remove_all(state);
  { std::ofstream(state) << "in the way"; }
  EXPECT_FALSE(h.Pin(1, 3, 1).ok());
  EXPECT_FALSE(h.Drain(2).ok());
  types::Policy p = h.Policy();
  p.set_min_gain(0.3);
  EXPECT_FALSE(h.SetPolicy(p).ok());
  admin::RebalanceResponse plan;
  h.ReportWindow(0, 10);
  EXPECT_FALSE(h.Rebalance(false, 0, &plan).ok());
  admin::ClusterStatus s = h.Status();
  EXPECT_EQ(s.pins_size(), 0);
  EXPECT_EQ(s.drained_ranks_size(), 0);
  EXPECT_EQ(s.target_epoch(), 0);
  EXPECT_EQ(h.Policy().min_gain(), DefaultPolicy().min_gain());
  // Writable again: the same changes go through.
  std::filesystem::remove(state);
  std::filesystem::create_directories(state);
  EXPECT_TRUE(h.Pin(1, 3, 1).ok());
  EXPECT_TRUE(h.SetPolicy(p).ok());
  EXPECT_EQ(h.Status().pins_size(), 1);
}

TEST(Coordinator, RefusesAMalformedStateFile) {
  TempDir dir;
  {
    std::FILE* f = std::fopen(dir.File("state.json").c_str(), "w");
    std::fputs("{\"format\": \"switchyard.coordinator-state/v1\", \"pins\": [{\"expert\": \"x\"}]}", f);
    std::fclose(f);
  }
  ServerOptions options;
  options.core.state_dir = dir.path();
  auto server = CoordinatorServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("state.json"), std::string::npos) << server.status();
  std::FILE* f = std::fopen(dir.File("state.json").c_str(), "w");
  std::fputs("not json", f);
  std::fclose(f);
  server = CoordinatorServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("not valid JSON"), std::string::npos) << server.status();
}

// Server reflection lists both services (what grpcurl and grpc_cli rely on).
TEST(Coordinator, ServerReflectionListsTheServices) {
  Harness h({});
  ASSERT_TRUE(h.start_status.ok());
  grpc::GenericStub stub(rpc::MakeChannel(h.server().address(), ""));
  grpc::CompletionQueue cq;
  auto ctx = rpc::CallContext(absl::Seconds(10), "");
  auto call = stub.PrepareCall(ctx.get(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](int expect) {
    ASSERT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(tag, reinterpret_cast<void*>(expect));
  };
  call->StartCall(reinterpret_cast<void*>(1));
  step(1);
  test::reflection::ServerReflectionRequest request;
  request.set_list_services("*");
  const std::string bytes = request.SerializeAsString();
  grpc::Slice slice(bytes);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  step(2);
  ASSERT_TRUE(ok);
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  step(3);
  ASSERT_TRUE(ok);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(in.Dump(&slices).ok());
  std::string response_bytes;
  for (const grpc::Slice& s : slices) response_bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  test::reflection::ServerReflectionResponse response;
  ASSERT_TRUE(response.ParseFromString(response_bytes));
  std::set<std::string> names;
  for (const auto& service : response.list_services_response().service()) names.insert(service.name());
  EXPECT_TRUE(names.count("switchyard.admin.v1.Admin"));
  EXPECT_TRUE(names.count("switchyard.control.v1.Control"));
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace switchyard::coordinator
