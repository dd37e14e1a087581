// The membership of a joined job over its life: a lost member makes the others regroup at
// once, a newcomer or a removal at their next step; survivors keep their origins; lost and
// removed processes are refused; a restarted coordinator takes a regroup over.
#include "coordinator/rendezvous.h"

#include <gtest/gtest.h>

#include <thread>

namespace switchyard::coordinator {
namespace {

namespace control = switchyard::control::v1;

class FakeClock {
 public:
  absl::Time Now() const { return now_; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
};

control::JoinRequest Fresh(const std::string& instance, int world = 3, const std::string& node = "n") {
  control::JoinRequest r;
  r.set_job_key("job");
  r.set_world_size(world);
  r.set_instance(instance);
  r.set_node_name(node);
  return r;
}

control::JoinRequest Again(const control::JoinResponse& member, const std::string& instance) {
  control::JoinRequest r = Fresh(instance);
  r.set_regroup(true);
  r.set_generation(member.generation());
  r.set_job_id(member.job_id());
  *r.mutable_members() = member.members();
  r.set_reason("a peer failed");
  return r;
}

// Joins every request from its own thread until each answer is complete (or refused).
std::vector<absl::StatusOr<control::JoinResponse>> JoinAll(Rendezvous& rdv, const std::vector<control::JoinRequest>& requests) {
  std::vector<absl::StatusOr<control::JoinResponse>> out(requests.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int tries = 0; tries < 100; ++tries) {
        out[i] = rdv.Join(requests[i], absl::Milliseconds(50));
        if (!out[i].ok() || out[i]->complete()) return;
      }
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

std::map<std::string, control::JoinResponse> Form(Rendezvous& rdv) {
  auto answers = JoinAll(rdv, {Fresh("a"), Fresh("b"), Fresh("c")});
  std::map<std::string, control::JoinResponse> out;
  for (auto& a : answers) {
    EXPECT_TRUE(a.ok() && a->complete());
    out[a->members(a->rank()).instance()] = *a;
  }
  return out;
}

TEST(RendezvousGenerations, ALostMemberMakesTheOthersRegroupKeepingTheirOrigins) {
  FakeClock clock;
  Rendezvous rdv([&] { return clock.Now(); });
  auto g0 = Form(rdv);
  EXPECT_EQ(g0["a"].generation(), 0);
  EXPECT_EQ(g0["b"].members(g0["b"].rank()).origin(), 1);  // origin = rank at formation (a, b, c)
  EXPECT_EQ(rdv.Signal("job", "a").generation, 0);
  rdv.MarkLost("job", "b", 0, "no heartbeat for 2s");
  const RegroupSignal now = rdv.Signal("job", "a");
  EXPECT_EQ(now.generation, 1);
  EXPECT_TRUE(now.now);
  EXPECT_TRUE(rdv.Signal("job", "b").now);  // lost: stop at once (its Join is refused)
  auto g1 = JoinAll(rdv, {Again(g0["a"], "a"), Again(g0["c"], "c")});
  ASSERT_TRUE(g1[0].ok() && g1[0]->complete()) << g1[0].status();
  ASSERT_TRUE(g1[1].ok() && g1[1]->complete());
  EXPECT_EQ(g1[0]->generation(), 1);
  EXPECT_EQ(g1[0]->world_size(), 2);
  EXPECT_EQ(g1[0]->job_world_size(), 3);
  EXPECT_EQ(g1[0]->rank(), 0);
  EXPECT_EQ(g1[1]->rank(), 1);
  EXPECT_EQ(g1[1]->members(1).origin(), 2);         // c keeps origin 2
  EXPECT_EQ(g1[1]->members(1).previous_rank(), 2);  // and says where it was
  EXPECT_EQ(g1[0]->job_id(), g0["a"].job_id());
  // The lost process is refused from now on, also as a "new" one.
  auto lost = rdv.Join(Again(g0["b"], "b"), absl::ZeroDuration());
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(lost.status().message().find("start it again to join as a new worker"), std::string::npos) << lost.status();
  EXPECT_EQ(rdv.Join(Fresh("b"), absl::ZeroDuration()).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(rdv.Lost("job").size(), 1u);
  EXPECT_EQ(rdv.Lost("job")[0].generation, 1);
  EXPECT_EQ(rdv.Lost("job")[0].origin, 1);
  // An exchange of the generation that is over is refused.
  control::ExchangeRequest x;
  x.set_job_key("job");
  x.set_instance("a");
  x.set_generation(0);
  EXPECT_EQ(rdv.Exchange(x, absl::ZeroDuration()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RendezvousGenerations, ANewcomerTakesTheFreeOriginAtTheMembersNextStep) {
  FakeClock clock;
  Rendezvous rdv([&] { return clock.Now(); });
  auto g0 = Form(rdv);
  // Full: a fourth process is refused.
  auto full = rdv.Join(Fresh("d"), absl::ZeroDuration());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("is full: its 3 ranks are running"), std::string::npos) << full.status();
  rdv.MarkLost("job", "a", 0, "gone");
  auto g1 = JoinAll(rdv, {Again(g0["b"], "b"), Again(g0["c"], "c")});
  ASSERT_TRUE(g1[0].ok() && g1[0]->complete());
  // A newcomer: the members are told to regroup after their step (not now).
  auto pending = rdv.Join(Fresh("d", 3, "m"), absl::ZeroDuration());
  ASSERT_TRUE(pending.ok());
  EXPECT_FALSE(pending->complete());
  const RegroupSignal signal = rdv.Signal("job", "b");
  EXPECT_EQ(signal.generation, 2);
  EXPECT_FALSE(signal.now);
  auto g2 = JoinAll(rdv, {Again(*g1[0], "b"), Again(*g1[1], "c"), Fresh("d", 3, "m")});
  for (auto& a : g2) ASSERT_TRUE(a.ok() && a->complete()) << a.status();
  EXPECT_EQ(g2[2]->generation(), 2);
  EXPECT_EQ(g2[2]->members(g2[2]->rank()).origin(), 0);  // a's free origin
  EXPECT_EQ(g2[2]->members(g2[2]->rank()).previous_rank(), -1);
  EXPECT_EQ(g2[2]->rank(), 0);  // node "m" sorts before "n": node by node
  EXPECT_EQ(g2[2]->nodes(), 2);
}

TEST(RendezvousGenerations, RemovalSilenceAndBadJoins) {
  FakeClock clock;
  Rendezvous rdv([&] { return clock.Now(); });
  auto g0 = Form(rdv);
  // World size mismatch; a duplicate id from another node; an unknown generation.
  EXPECT_NE(rdv.Join(Fresh("z", 4), absl::ZeroDuration()).status().message().find("has world size 3, this worker says 4"),
            std::string::npos);
  auto duplicate = rdv.Join(Fresh("a", 3, "elsewhere"), absl::ZeroDuration());
  EXPECT_NE(duplicate.status().message().find("a duplicate worker id"), std::string::npos) << duplicate.status();
  // A process that runs something else (another model scale, other steps...) is refused by name.
  control::JoinRequest other = Fresh("y");
  other.set_fingerprint("model deepseek-v3 x0.125");
  control::JoinRequest first = Fresh("x");
  first.set_job_key("fp");
  first.set_fingerprint("model deepseek-v3 x0.0625");
  ASSERT_TRUE(rdv.Join(first, absl::ZeroDuration()).ok());
  other.set_job_key("fp");
  auto mismatch = rdv.Join(other, absl::ZeroDuration());
  EXPECT_NE(mismatch.status().message().find("runs model deepseek-v3 x0.0625; this worker runs model deepseek-v3 x0.125"),
            std::string::npos)
      << mismatch.status();
  control::JoinRequest future = Again(g0["a"], "a");
  future.set_generation(7);
  EXPECT_EQ(rdv.Join(future, absl::ZeroDuration()).status().code(), absl::StatusCode::kInvalidArgument);
  // The operator removes rank 1 (b): told removed, the others regroup after their step.
  EXPECT_EQ(rdv.Remove("job", 5).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(rdv.Remove("job", 1).ok());
  EXPECT_EQ(rdv.Remove("job", 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(rdv.Signal("job", "b").removed);
  EXPECT_FALSE(rdv.Signal("job", "a").now);
  // c never comes back: after the timeout it is lost too, and a forms generation 1 alone.
  rdv.Touch("job", "a");
  auto pending = rdv.Join(Again(g0["a"], "a"), absl::ZeroDuration());
  ASSERT_TRUE(pending.ok());
  EXPECT_FALSE(pending->complete());
  clock.Advance(absl::Seconds(3));
  rdv.Touch("job", "b");  // b runs its last step, still heartbeating
  const std::vector<LostMember> expired = rdv.Expire(absl::Seconds(2));
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].instance, "c");
  auto g1 = rdv.Join(Again(g0["a"], "a"), absl::ZeroDuration());
  ASSERT_TRUE(g1.ok() && g1->complete()) << g1.status();
  EXPECT_EQ(g1->world_size(), 1);
  // The removed worker asking to regroup is told it was removed (it leaves cleanly); the
  // lost one is refused.
  auto removed = rdv.Join(Again(g0["b"], "b"), absl::ZeroDuration());
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_TRUE(removed->removed());
  EXPECT_FALSE(removed->complete());
  EXPECT_EQ(rdv.Join(Again(g0["c"], "c"), absl::ZeroDuration()).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Members that finished their run are not judged by their silence, and a newcomer that comes
// after the last step is refused (instead of forming a job of newcomers alone).
TEST(RendezvousGenerations, AFinishedJobTakesNoNewcomer) {
  FakeClock clock;
  Rendezvous rdv([&] { return clock.Now(); });
  auto g0 = Form(rdv);
  for (const char* i : {"a", "b", "c"}) rdv.Touch("job", i);
  rdv.Leave("job", "a");
  rdv.MarkLost("job", "b", 0, "gone");  // lost at the very end: c regroups alone and finishes
  auto g1 = JoinAll(rdv, {Again(g0["c"], "c")});
  ASSERT_TRUE(g1[0].ok() && g1[0]->complete()) << g1[0].status();
  EXPECT_EQ(g1[0]->world_size(), 1);
  rdv.Leave("job", "c");
  clock.Advance(absl::Seconds(10));
  EXPECT_TRUE(rdv.Expire(absl::Seconds(2)).empty());
  auto late = rdv.Join(Fresh("d"), absl::ZeroDuration());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(late.status().message().find("finished"), std::string::npos) << late.status();
}

TEST(RendezvousGenerations, ASilentMemberThatHeartbeatsIsLostAndARestartedCoordinatorTakesOver) {
  FakeClock clock;
  auto first = std::make_unique<Rendezvous>([&] { return clock.Now(); });
  auto g0 = Form(*first);
  for (const char* i : {"a", "b", "c"}) first->Touch("job", i);
  clock.Advance(absl::Seconds(1));
  first->Touch("job", "a");
  first->Touch("job", "c");
  clock.Advance(absl::Seconds(1.5));
  const auto lost = first->Expire(absl::Seconds(2));
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].instance, "b");
  EXPECT_TRUE(first->Signal("job", "a").now);
  // The coordinator restarts before the survivors rejoin: the new one takes the regroup over
  // from what they say.
  first.reset();
  Rendezvous second([&] { return clock.Now(); });
  auto pending = second.Join(Again(g0["a"], "a"), absl::ZeroDuration());
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_FALSE(pending->complete());  // b and c are members it has not heard of since
  second.Touch("job", "c");
  clock.Advance(absl::Seconds(2.5));
  second.Touch("job", "c");
  // b has not been heard from since the take-over: its retries were backing off while no
  // coordinator answered, so it gets kAdoptedGrace on top of the timeout.
  EXPECT_TRUE(second.Expire(absl::Seconds(2)).empty());
  for (int i = 0; i < 3; ++i) {
    clock.Advance(absl::Seconds(1.5));
    second.Touch("job", "c");
  }
  const auto silent = second.Expire(absl::Seconds(2));  // b: silent 7 s since the take-over; c: alive, not yet joined
  ASSERT_EQ(silent.size(), 1u);
  EXPECT_EQ(silent[0].instance, "b");
  auto g1 = JoinAll(second, {Again(g0["a"], "a"), Again(g0["c"], "c")});
  for (auto& a : g1) ASSERT_TRUE(a.ok() && a->complete()) << a.status();
  EXPECT_EQ(g1[0]->generation(), 1);
  EXPECT_EQ(g1[0]->world_size(), 2);
  EXPECT_EQ(g1[0]->job_id(), g0["a"].job_id());
}

}  // namespace
}  // namespace switchyard::coordinator
