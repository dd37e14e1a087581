// The coordinator against bad input (label grpc): state.json files of the wrong shape or with
// impossible contents are refused and left as they are; control-plane messages that lie
// (steps, counts, epochs) are rejected even without auth; admin arguments out of range are
// INVALID_ARGUMENT; echoed values are capped.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "coordinator/coordinator.h"
#include "coordinator/rendezvous.h"
#include "coordinator/state_store.h"
#include "gtest/gtest.h"
#include "rpc/validate.h"
#include "tests/common/subprocess.h"
#include "tests/coordinator/fixtures.h"

namespace switchyard::coordinator {
namespace {

using namespace test::job;  // NOLINT: the test job
using Json = nlohmann::json;

const std::string kCorpus = std::string(SWITCHYARD_SOURCE_DIR) + "/tests/fuzz/corpus/state_json/";

Json ValidState() {
  std::ifstream in(kCorpus + "pinned.json");  // written by a real coordinator (a job, a pin, a target)
  return Json::parse(in);
}

// Every malformed or impossible state.json is refused by Coordinator::Create with an error
// naming the file and the field, and the file is left untouched.
TEST(StateStoreTest, MalformedOrImpossibleStateIsRefusedAndKept) {
  ASSERT_TRUE(ParseState(ValidState().dump(), "state.json").ok()) << ParseState(ValidState().dump(), "state.json").status();
  struct Case {
    std::string text, message;
  };
  auto with = [](const std::function<void(Json&)>& change) {
    Json j = ValidState();
    change(j);
    return j.dump();
  };
  const std::vector<Case> cases = {
      {"null", "$: expected an object, got null"},
      {"[]", "$: expected an object, got array"},
      {"\"state\"", "$: expected an object, got string"},
      {"{\"format\": 5}", "$.format: expected a string, got number"},
      {with([](Json& j) { j["job_id"] = 7; }), "$.job_id: expected a string, got number"},
      {with([](Json& j) { j["drained"] = {99}; }), "drained rank 99 out of range"},
      {with([](Json& j) { j["drained"] = {-1}; }), "$.drained[0]: -1 is out of range"},
      {with([](Json& j) { j["drained"] = "1"; }), "$.drained: expected an array"},
      {with([](Json& j) { j["pins"][0]["expert"] = 9999; }), "pinned expert 9999 out of range"},
      {with([](Json& j) { j["pins"][0]["layer"] = -5; }), "pin layer -5"},
      {with([](Json& j) { j["pins"][0]["rank"] = "zero"; }), "$.pins[0]"},
      {with([](Json& j) { j["committed"]["epoch"] = "-3"; }), "committed.epoch: -3 is negative"},
      {with([](Json& j) { j["committed"]["experts"] = "many"; }), "$.committed"},
      {with([](Json& j) { j["target"]["epoch"] = "0"; }), "target.epoch: 0 is not after the committed epoch 0"},
      {with([](Json& j) { j["transfers"] = Json::array({{{"layer", 0}, {"expert", 1}, {"from", 0}, {"to", 7}}}); }),
       "is not a transfer of this job"},
      {with([](Json& j) { j.erase("target"); }), "transfers: listed without a target epoch"},
      {with([](Json& j) { j["policy"]["smoothing"] = 0; }), "policy smoothing = 0"},
      {with([](Json& j) { j["policy"]["planner"] = std::string(5000, 'x'); }), "... (5000 bytes)"},
      {with([](Json& j) { j["target_nonce"] = "-1"; }), "$.target_nonce"},
      {with([](Json& j) { j.erase("committed"); }), "a job needs both its model and its committed placement"},
      {with([](Json& j) { j["extra"] = 1; }), "$.extra: unknown key"},
      {"{\"format\": \"switchyard.coordinator-state/v1\", \"job_id\": \"a\", \"job_id\": \"b\"}", "key \"job_id\" appears twice"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    test::TempDir dir;
    std::filesystem::create_directories(dir.File("state"));
    std::ofstream(dir.File("state/state.json")) << c.text;
    auto created = Coordinator::Create({.state_dir = dir.File("state")});
    ASSERT_FALSE(created.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(created.status())) << created.status();
    EXPECT_NE(created.status().message().find("state.json"), std::string::npos) << created.status();
    EXPECT_NE(created.status().message().find(c.message), std::string::npos) << created.status();
    EXPECT_LT(created.status().message().size(), 1000u);  // values are echoed capped
    EXPECT_EQ(test::Slurp(dir.File("state/state.json")), c.text);  // not rewritten
  }
}

std::unique_ptr<Coordinator> JobWithReports() {
  auto c = *Coordinator::Create({});
  for (int r = 0; r < kRanks; ++r) {
    control::RegisterRequest reg = Registration(r);
    reg.set_tokens_per_step(100);
    EXPECT_TRUE(c->Register(reg).ok());
  }
  for (int r = 0; r < kRanks; ++r) EXPECT_TRUE(c->ReportLoad(Report(r, 0, 10, 100)).ok());
  return c;
}

std::string Snapshot(Coordinator& c) {
  admin::ClusterStatus s = c.Status();
  for (admin::WorkerStatus& w : *s.mutable_workers()) {
    w.clear_seconds_since_heartbeat();
    w.clear_seconds_since_report();
  }
  return s.SerializeAsString() + c.GetLoad(std::nullopt)->SerializeAsString();
}

// Without auth, lies are still refused: a step 2^62 ahead, counts no window of 10 steps x 100
// tokens could hold, epochs never published; each with INVALID_ARGUMENT and the state as it was.
TEST(CoordinatorHardening, ImplausibleControlMessagesAreRejected) {
  auto c = JobWithReports();
  const std::string before = Snapshot(*c);
  control::LoadReport far = Report(0, int64_t{1} << 62, (int64_t{1} << 62) + 10, 100);
  EXPECT_TRUE(absl::IsInvalidArgument(c->ReportLoad(far)));
  control::LoadReport heavy = Report(1, 10, 20, 100);
  heavy.mutable_layers(0)->set_chosen(3, 1000000000);
  const absl::Status counts = c->ReportLoad(heavy);
  EXPECT_TRUE(absl::IsInvalidArgument(counts)) << counts;
  EXPECT_NE(counts.message().find("more than 10 steps of 100 tokens could give"), std::string::npos) << counts;
  control::LoadReport future = Report(2, 10, 20, 100);
  future.set_epoch(7);
  EXPECT_TRUE(absl::IsInvalidArgument(c->ReportLoad(future)));
  control::LoadReport overlap = Report(3, 5, 15, 100);  // steps 5..9 were reported
  EXPECT_TRUE(absl::IsInvalidArgument(c->ReportLoad(overlap)));

  control::HeartbeatRequest hb;
  hb.set_rank(0);
  hb.set_epoch(-5);
  EXPECT_TRUE(absl::IsInvalidArgument(c->Heartbeat(hb).status()));
  hb.set_epoch(0);
  hb.set_step(int64_t{1} << 62);
  EXPECT_TRUE(absl::IsInvalidArgument(c->Heartbeat(hb).status()));

  control::MigrationReport commit;
  commit.set_rank(0);
  commit.set_epoch(9);  // never published
  commit.set_phase("committed");
  commit.set_step(10);
  const absl::Status unknown = c->ReportMigration(commit);
  EXPECT_TRUE(absl::IsInvalidArgument(unknown)) << unknown;
  EXPECT_NE(unknown.message().find("epoch 9 was never published"), std::string::npos) << unknown;
  commit.set_phase(std::string(10000, 'p'));
  commit.set_epoch(1);
  const absl::Status phase = c->ReportMigration(commit);
  EXPECT_LT(phase.message().size(), 300u);  // the 10,000-byte phase is not echoed whole

  control::LeaveRequest leave;
  leave.set_rank(1);
  leave.set_epoch(3);
  EXPECT_TRUE(absl::IsInvalidArgument(c->Leave(leave)));
  control::RegisterRequest reg = Registration(0);
  reg.set_host(std::string(100000, 'h'));
  EXPECT_TRUE(absl::IsInvalidArgument(c->Register(reg).status()));
  reg = Registration(0);
  reg.mutable_model()->set_num_experts(2000000000);
  EXPECT_TRUE(absl::IsInvalidArgument(c->Register(reg).status()));
  EXPECT_EQ(Snapshot(*c), before);

  // Honest messages still go through.
  EXPECT_TRUE(c->ReportLoad(Report(1, 10, 20, 100)).ok());
  hb.set_step(20);
  EXPECT_TRUE(c->Heartbeat(hb).ok());
}

TEST(CoordinatorHardening, AdminArgumentsOutOfRangeAreInvalid) {
  auto c = JobWithReports();
  EXPECT_TRUE(absl::IsInvalidArgument(c->Undrain(-7).status())) << c->Undrain(-7).status();
  EXPECT_TRUE(absl::IsInvalidArgument(c->Undrain(4).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(c->Undrain(2).status()));  // a real rank, not drained
  types::Pin pin;
  pin.set_layer(1);
  pin.set_expert(-1);
  pin.set_rank(0);
  EXPECT_TRUE(absl::IsInvalidArgument(c->Unpin(pin).status())) << c->Unpin(pin).status();
  pin.set_expert(3);
  EXPECT_TRUE(absl::IsNotFound(c->Unpin(pin).status()));  // well-formed, just not pinned
  pin.set_layer(-5);
  EXPECT_TRUE(absl::IsInvalidArgument(c->Pin(pin).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(rpc::SelectedLayer(false, -5).status()));
  EXPECT_EQ(*rpc::SelectedLayer(false, -1), std::nullopt);
  EXPECT_EQ(*rpc::SelectedLayer(true, 3), std::nullopt);
  EXPECT_EQ(*rpc::SelectedLayer(false, 2), std::optional<int>(2));
}

// A restarted coordinator knows no worker yet: the reports that arrive before the workers
// register again are refused (FAILED_PRECONDITION: register, then resend), not counted as
// rejected or logged as events.
TEST(CoordinatorHardening, ReportsBeforeReRegistrationAreNotRejections) {
  test::TempDir dir;
  {
    auto c = *Coordinator::Create({.state_dir = dir.path()});
    for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(c->Register(Registration(r)).ok());
  }
  auto restarted = *Coordinator::Create({.state_dir = dir.path()});
  for (int r = 0; r < kRanks; ++r) EXPECT_TRUE(absl::IsFailedPrecondition(restarted->ReportLoad(Report(r, 0, 10))));
  EXPECT_NE(restarted->MetricsText().find("switchyard_reports_rejected_total 0\n"), std::string::npos);
  for (const admin::Event& e : restarted->WaitEvents(0, absl::ZeroDuration())) EXPECT_NE(e.kind(), "report_rejected");
}


control::ResumeRequest ResumeOf(const control::RegisterRequest& r) {
  control::ResumeRequest q;
  *q.mutable_model() = r.model();
  q.set_world_size(kRanks);
  q.set_nodes(2);
  q.set_slots_per_rank(kSlots);
  return q;
}

std::vector<std::string> EventKinds(Coordinator& c) {
  std::vector<std::string> kinds;
  for (const admin::Event& e : c.WaitEvents(0, absl::ZeroDuration())) kinds.push_back(e.kind());
  return kinds;
}

// Resume answers the committed placement for the same shape only; a job that registers with
// it and says it resumed continues the old one (epoch, pins), one that does not is a new job.
TEST(CoordinatorResume, AnswersTheCommittedPlacementForTheSameShapeOnly) {
  test::TempDir dir;
  auto c = *Coordinator::Create({.state_dir = dir.path()});
  auto nothing = c->Resume(ResumeOf(Registration(0)));
  ASSERT_TRUE(nothing.ok());
  EXPECT_FALSE(nothing->found());
  EXPECT_EQ(nothing->reason(), "the coordinator holds no placement yet");
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(c->Register(Registration(r)).ok());
  auto found = c->Resume(ResumeOf(Registration(0)));
  ASSERT_TRUE(found.ok());
  ASSERT_TRUE(found->found());
  EXPECT_EQ(found->placement().epoch(), 0);
  struct Mismatch {
    std::function<void(control::ResumeRequest&)> change;
    std::string reason;
  };
  const std::vector<Mismatch> mismatches = {
      {[](auto& q) { q.mutable_model()->set_name("other"); }, "is for model test-moe, the job has other"},
      {[](auto& q) { q.mutable_model()->add_moe_layers(3); }, "is for MoE layers 1,2, the job has 1,2,3"},
      {[](auto& q) { q.set_world_size(8); }, "is for ranks 4, the job has 8"},
      {[](auto& q) { q.set_nodes(1); }, "is for nodes 2, the job has 1"},
      {[](auto& q) { q.set_slots_per_rank(7); }, "is for slots per rank 6, the job has 7"},
      {[](auto& q) { q.mutable_model()->set_expert_bytes(1); }, "is for expert bytes"},
  };
  for (const Mismatch& m : mismatches) {
    control::ResumeRequest q = ResumeOf(Registration(0));
    m.change(q);
    auto answer = c->Resume(q);
    ASSERT_TRUE(answer.ok());
    EXPECT_FALSE(answer->found()) << m.reason;
    EXPECT_NE(answer->reason().find(m.reason), std::string::npos) << answer->reason();
  }
  control::ResumeRequest bad = ResumeOf(Registration(0));
  bad.mutable_model()->set_num_experts(-1);
  EXPECT_TRUE(absl::IsInvalidArgument(c->Resume(bad).status()));

  // The same placement under another job id: resumed only when the worker says so.
  control::RegisterRequest again = Registration(0, "job-b");
  ASSERT_TRUE(c->Register(again).ok());
  EXPECT_EQ(EventKinds(*c).back(), "worker_joined");
  std::vector<std::string> kinds = EventKinds(*c);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "job_replaced"), kinds.end());
  EXPECT_EQ(std::find(kinds.begin(), kinds.end(), "job_resumed"), kinds.end());
  // The replaced job's state is kept beside the new one.
  EXPECT_NE(test::Slurp(dir.File("state.replaced.json")).find("\"job-a\""), std::string::npos);
  control::RegisterRequest resumed = Registration(0, "job-c");
  resumed.set_resumed(true);
  ASSERT_TRUE(c->Register(resumed).ok());
  kinds = EventKinds(*c);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "job_resumed"), kinds.end());
}

// One coordinator per state directory; a state that cannot be written is an error and an
// event, never a "checkpoint".
TEST(CoordinatorResume, StateDirectoryIsLockedAndCheckpointFailuresSaySo) {
  test::TempDir dir;
  const std::string state = dir.File("state");
  {
    auto first = *Coordinator::Create({.state_dir = state});
    auto second = Coordinator::Create({.state_dir = state});
    ASSERT_FALSE(second.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(second.status()));
    EXPECT_NE(second.status().message().find(absl::StrCat("in use by another coordinator (pid ", getpid(), ")")),
              std::string::npos)
        << second.status();
    ASSERT_TRUE(first->Register(Registration(0)).ok());
    ASSERT_TRUE(first->Checkpoint("test").ok());
    std::filesystem::remove_all(state);
    std::ofstream(state) << "a file where the directory was";
    const absl::Status failed = first->Checkpoint("SIGUSR1");
    EXPECT_FALSE(failed.ok());
    const std::vector<std::string> kinds = EventKinds(*first);
    EXPECT_EQ(kinds.back(), "checkpoint_failed");
    EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "checkpoint"), 1);
  }
  std::filesystem::remove(state);
  auto after = Coordinator::Create({.state_dir = state});  // the lock went with its holder
  EXPECT_TRUE(after.ok()) << after.status();
}


// The workers' per-step balancedness reaches Prometheus per layer; values outside [0, 1] are
// refused like any other lie.
TEST(CoordinatorMetrics, StepBalancednessPerLayer) {
  auto c = *Coordinator::Create({});
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(c->Register(Registration(r)).ok());
  control::LoadReport report = Report(0, 0, 10);
  report.mutable_layers(0)->set_step_balancedness_p50(0.9);
  report.mutable_layers(0)->set_step_balancedness_p99(0.8);
  ASSERT_TRUE(c->ReportLoad(report).ok());
  const std::string text = c->MetricsText();
  EXPECT_NE(text.find("switchyard_step_balancedness{layer=\"1\",quantile=\"0.5\"} 0.9\n"), std::string::npos) << text;
  EXPECT_NE(text.find("switchyard_step_balancedness{layer=\"1\",quantile=\"0.01\"} 0.8\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("switchyard_step_balancedness{layer=\"2\""), std::string::npos) << text;  // not measured
  control::LoadReport lie = Report(1, 0, 10);
  lie.mutable_layers(1)->set_step_balancedness_p99(1.5);
  const absl::Status refused = c->ReportLoad(lie);
  EXPECT_TRUE(absl::IsInvalidArgument(refused));
  EXPECT_NE(refused.message().find("step balancedness 1.5 is not in [0, 1]"), std::string::npos) << refused;
  control::LoadReport upside_down = Report(1, 0, 10);
  upside_down.mutable_layers(0)->set_step_balancedness_p50(0.4);
  upside_down.mutable_layers(0)->set_step_balancedness_p99(0.9);
  EXPECT_NE(c->ReportLoad(upside_down).message().find("with p99 <= p50"), std::string::npos);
  // A new job starts without the old one's figures.
  ASSERT_TRUE(c->Register(Registration(0, "job-b")).ok());
  EXPECT_EQ(c->MetricsText().find("switchyard_step_balancedness{"), std::string::npos);
}


// A registration whose state cannot be written changes nothing (no member, no job, no event):
// the worker's retry is the first registration again.
TEST(CoordinatorHardening, ARegistrationThatCannotBePersistedChangesNothing) {
  test::TempDir dir;
  const std::string state = dir.File("state");
  auto c = *Coordinator::Create({.state_dir = state});
  ASSERT_TRUE(c->Register(Registration(0)).ok());
  std::filesystem::remove_all(state);
  std::ofstream(state) << "in the way";
  const size_t events_before = c->WaitEvents(0, absl::ZeroDuration()).size();
  EXPECT_FALSE(c->Register(Registration(1)).ok());                 // same job, a new rank
  EXPECT_FALSE(c->Register(Registration(0, "job-b")).ok());        // a new job (its backup fails first)
  const admin::ClusterStatus s = c->Status();
  EXPECT_EQ(s.registered(), 1);
  EXPECT_EQ(c->WaitEvents(0, absl::ZeroDuration()).size(), events_before);
  std::filesystem::remove(state);
  std::filesystem::create_directories(state);
  ASSERT_TRUE(c->Register(Registration(1)).ok());
  EXPECT_EQ(c->Status().registered(), 2);
}


// Workers that join without a launcher get ranks node by node (node name, then id), with
// local ranks and node indexes to match; the exchange gives every rank every value in rank
// order; bad requests are refused.
TEST(Rendezvous, AssignsRanksNodeByNodeAndExchanges) {
  Rendezvous rdv;
  {  // an incomplete job's join is a long poll of the asked length (not a busy loop)
    switchyard::control::v1::JoinRequest alone;
    alone.set_job_key("lonely");
    alone.set_world_size(2);
    alone.set_instance("only");
    const absl::Time start = absl::Now();
    auto a = rdv.Join(alone, absl::Milliseconds(300));
    ASSERT_TRUE(a.ok());
    EXPECT_FALSE(a->complete());
    EXPECT_EQ(a->joined(), 1);
    EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  }
  const std::vector<std::pair<std::string, std::string>> workers = {{"d", "nodeB"}, {"a", "nodeB"}, {"c", "nodeA"}, {"b", "nodeA"}};
  std::vector<switchyard::control::v1::JoinResponse> answers(workers.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < workers.size(); ++i) {
    threads.emplace_back([&, i] {
      switchyard::control::v1::JoinRequest r;
      r.set_job_key("job");
      r.set_world_size(4);
      r.set_instance(workers[i].first);
      r.set_node_name(workers[i].second);
      for (int tries = 0; tries < 50 && !answers[i].complete(); ++tries) {
        auto a = rdv.Join(r, absl::Milliseconds(200));
        ASSERT_TRUE(a.ok()) << a.status();
        answers[i] = *a;
      }
    });
  }
  for (auto& t : threads) t.join();
  // nodeA: b, c (ranks 0, 1); nodeB: a, d (ranks 2, 3).
  const int expected_rank[] = {3, 2, 1, 0};
  for (size_t i = 0; i < workers.size(); ++i) {
    ASSERT_TRUE(answers[i].complete());
    EXPECT_EQ(answers[i].rank(), expected_rank[i]) << workers[i].first;
    EXPECT_EQ(answers[i].local_rank(), expected_rank[i] % 2);
    EXPECT_EQ(answers[i].local_size(), 2);
    EXPECT_EQ(answers[i].node(), expected_rank[i] / 2);
    EXPECT_EQ(answers[i].nodes(), 2);
  }
  threads.clear();
  std::vector<std::vector<std::string>> got(workers.size());
  for (size_t i = 0; i < workers.size(); ++i) {
    threads.emplace_back([&, i] {
      switchyard::control::v1::ExchangeRequest r;
      r.set_job_key("job");
      r.set_instance(workers[i].first);
      r.set_round(0);
      r.set_value(workers[i].first);
      for (int tries = 0; tries < 50 && got[i].empty(); ++tries) {
        auto a = rdv.Exchange(r, absl::Milliseconds(200));
        ASSERT_TRUE(a.ok()) << a.status();
        if (a->complete()) got[i].assign(a->values().begin(), a->values().end());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& values : got) EXPECT_EQ(values, (std::vector<std::string>{"b", "c", "a", "d"}));

  switchyard::control::v1::JoinRequest bad;
  bad.set_job_key("job");
  bad.set_instance("e");
  bad.set_world_size(5);
  EXPECT_NE(rdv.Join(bad, absl::ZeroDuration()).status().message().find("has world size 4, this worker says 5"), std::string::npos);
  bad.set_world_size(4);
  EXPECT_NE(rdv.Join(bad, absl::ZeroDuration()).status().message().find("is full"), std::string::npos);
  bad.set_job_key("");
  EXPECT_TRUE(absl::IsInvalidArgument(rdv.Join(bad, absl::ZeroDuration()).status()));
  switchyard::control::v1::ExchangeRequest stranger;
  stranger.set_job_key("job");
  stranger.set_instance("zz");
  EXPECT_NE(rdv.Exchange(stranger, absl::ZeroDuration()).status().message().find("is not a rank of job"), std::string::npos);
}

}  // namespace
}  // namespace switchyard::coordinator
