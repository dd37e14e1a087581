// The conformance suite on the in-process backend: each case on worlds of 1 to 4 thread
// ranks. Plus what only threads make easy to provoke: a hung peer in a collective.
#include <gtest/gtest.h>

#include <thread>

#include "comm/inprocess/factory.h"
#include "tests/comm/conformance.h"

namespace switchyard::comm::test {
namespace {

void RunOnWorld(int size, const std::function<void(Communicator&)>& body) {
  auto world = CreateInProcessWorld(size, 2);
  std::vector<std::thread> threads;
  for (auto& c : world) threads.emplace_back([&body, &c] { body(*c); });
  for (auto& t : threads) t.join();
}

class InProcessConformance : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(InProcessConformance, Case) {
  const auto [index, size] = GetParam();
  RunOnWorld(size, ConformanceCases()[index].body);
}

// Every case on worlds of 1..4 ranks, but the 2 GiB case on 2 ranks only (it copies 2 GiB
// three times through the in-process mailboxes).
std::vector<std::tuple<int, int>> Worlds() {
  std::vector<std::tuple<int, int>> out;
  const auto cases = ConformanceCases();
  for (int i = 0; i < static_cast<int>(cases.size()); ++i) {
    for (int size = 1; size <= 4; ++size) {
      if (cases[i].name != "LargeMessages" || size == 2) out.emplace_back(i, size);
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(
    AllCases, InProcessConformance, ::testing::ValuesIn(Worlds()),
    [](const auto& info) {
      return ConformanceCases()[std::get<0>(info.param)].name + "_" + std::to_string(std::get<1>(info.param)) + "ranks";
    });

TEST(InProcessCommunicatorTest, HungPeerEndsInTimeoutAndBreaksTheCommunicator) {
  auto world = CreateInProcessWorld(3);
  for (auto& c : world) c->set_timeout(absl::Milliseconds(300));
  std::vector<absl::Status> results(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {  // rank 2 never joins
    threads.emplace_back([&, r] {
      std::vector<int64_t> counts(3, 8), offsets = {0, 8, 16};
      std::vector<char> send(24), recv(24);
      results[r] = world[r]->AllToAllV(send.data(), counts.data(), offsets.data(), recv.data(), counts.data(), offsets.data());
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(absl::IsDeadlineExceeded(results[r])) << results[r];
    EXPECT_NE(results[r].message().find("timed out waiting for rank 2"), absl::string_view::npos) << results[r];
    absl::Status after = world[r]->Barrier();
    EXPECT_EQ(after.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(after.message().find("broken by an earlier error"), absl::string_view::npos);
  }
}

}  // namespace
}  // namespace switchyard::comm::test
