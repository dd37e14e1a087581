#include "tests/comm/conformance.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"

namespace switchyard::comm::test {
namespace {

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

// Bytes from `from` to `to` in iteration `it`: uneven, some peers (and sometimes self) zero.
int64_t PairBytes(int from, int to, int it, int size) {
  const uint64_t h = Mix(uint64_t(from) * 1315423911u + to * 2654435761u + it * 97 + size);
  if (h % 5 == 0) return 0;
  return static_cast<int64_t>(h % 70000) + 1;
}

void RunAllToAllV(Communicator& c, int it, const std::function<int64_t(int, int)>& bytes) {
  const int n = c.size(), me = c.rank();
  std::vector<int64_t> sc(n), so(n), rc(n), ro(n);
  int64_t st = 0, rt = 0;
  for (int p = 0; p < n; ++p) {
    sc[p] = bytes(me, p);
    so[p] = st;
    st += sc[p] + 13;  // gaps between segments: offsets are honoured
    rc[p] = bytes(p, me);
    ro[p] = rt;
    rt += rc[p] + 7;
  }
  std::vector<char> send(st), recv(rt, '\x5a');
  for (int p = 0; p < n; ++p) Fill(send.data() + so[p], sc[p], me, p, it);
  ASSERT_TRUE(c.AllToAllV(send.data(), sc.data(), so.data(), recv.data(), rc.data(), ro.data()).ok());
  for (int p = 0; p < n; ++p) {
    EXPECT_TRUE(Check(recv.data() + ro[p], rc[p], p, me, it)) << "from rank " << p << " iteration " << it;
    if (rc[p] > 0) {
      EXPECT_EQ(recv[ro[p] + rc[p]], '\x5a') << "wrote past the segment from " << p;
    }
  }
}

void UnevenCounts(Communicator& c) {
  for (int it = 0; it < 20; ++it) {
    RunAllToAllV(c, it, [&](int from, int to) { return PairBytes(from, to, it, c.size()); });
  }
}

void ZeroSizePeersAndSelf(Communicator& c) {
  RunAllToAllV(c, 1, [](int, int) { return int64_t{0}; });                       // nothing at all
  RunAllToAllV(c, 2, [](int from, int to) { return from == to ? int64_t{4096} : 0; });  // self only
  RunAllToAllV(c, 3, [](int from, int to) { return to == 0 && from != 0 ? int64_t{100} : 0; });  // incast on 0
}

void CountExchangeThenAllToAllV(Communicator& c) {
  const int n = c.size();
  std::vector<int64_t> send_counts(n), recv_counts(n);
  for (int p = 0; p < n; ++p) send_counts[p] = PairBytes(c.rank(), p, 99, n);
  ASSERT_TRUE(c.AllToAll(send_counts.data(), sizeof(int64_t), recv_counts.data()).ok());
  for (int p = 0; p < n; ++p) EXPECT_EQ(recv_counts[p], PairBytes(p, c.rank(), 99, n));
  RunAllToAllV(c, 99, [&](int from, int to) { return PairBytes(from, to, 99, n); });
}

void SmallCollectives(Communicator& c) {
  const int n = c.size(), me = c.rank();
  std::vector<int64_t> ints = {me, 1, -me};
  ASSERT_TRUE(c.AllReduce(ints.data(), 3, ReduceOp::kSum).ok());
  EXPECT_EQ(ints, (std::vector<int64_t>{int64_t(n) * (n - 1) / 2, n, -int64_t(n) * (n - 1) / 2}));
  std::vector<double> doubles = {0.5 * me, -1.0 * me};
  ASSERT_TRUE(c.AllReduce(doubles.data(), 2, ReduceOp::kMax).ok());
  EXPECT_EQ(doubles, (std::vector<double>{0.5 * (n - 1), 0.0}));
  std::vector<int32_t> mine = {me * 10, me * 10 + 1}, all(2 * n);
  ASSERT_TRUE(c.AllGather(mine.data(), sizeof(int32_t) * 2, all.data()).ok());
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(all[2 * r], r * 10);
    EXPECT_EQ(all[2 * r + 1], r * 10 + 1);
  }
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(c.Barrier().ok());
  EXPECT_GE(c.local_size(), 1);
  EXPECT_LT(c.local_rank(), c.local_size());
}

// > 2 GiB from rank 0 to rank 1 in one AllToAllV, and one Isend/Irecv (MPI's int counts).
void LargeMessages(Communicator& c) {
  if (c.size() < 2) return;
  const int64_t big = (int64_t{2} << 30) + 4096 + 3;
  const int n = c.size(), me = c.rank();
  std::vector<int64_t> sc(n, 0), so(n, 0), rc(n, 0), ro(n, 0);
  std::unique_ptr<char[]> buffer;
  if (me == 0) sc[1] = big;
  if (me == 1) rc[0] = big;
  if (me <= 1) {
    buffer.reset(new char[big]);
    std::memset(buffer.get(), me == 0 ? 0x11 : 0, big);
    buffer[0] = 7;
    buffer[big - 1] = 9;
    if (me == 1) buffer[0] = buffer[big - 1] = 0;
  }
  char* send = me == 0 ? buffer.get() : nullptr;
  char* recv = me == 1 ? buffer.get() : nullptr;
  ASSERT_TRUE(c.AllToAllV(send, sc.data(), so.data(), recv, rc.data(), ro.data()).ok());
  if (me == 1) {
    EXPECT_EQ(buffer[0], 7);
    EXPECT_EQ(buffer[big / 2], 0x11);
    EXPECT_EQ(buffer[big - 1], 9);
    std::memset(buffer.get(), 0, big);
  }
  // The same bytes back, point-to-point.
  if (me == 1) {
    buffer[0] = 3;
    buffer[big - 1] = 4;
    auto s = c.Isend(buffer.get(), big, 0, 5);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->Wait(absl::Seconds(120)).ok());
  } else if (me == 0) {
    std::memset(buffer.get(), 0, big);
    auto r = c.Irecv(buffer.get(), big, 1, 5);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->Wait(absl::Seconds(120)).ok());
    EXPECT_EQ(buffer[0], 3);
    EXPECT_EQ(buffer[big - 1], 4);
  }
  buffer.reset();
  ASSERT_TRUE(c.Barrier().ok());
}

// A transfer thread moves 48 MiB around the ring in 1 MiB chunks (tags = chunk index) while
// the step thread runs all-to-alls.
void BackgroundTransferDuringAllToAlls(Communicator& c) {
  const int n = c.size(), me = c.rank();
  const int chunks = 48;
  const int64_t chunk = 1 << 20;
  const int to = (me + 1) % n, from = (me - 1 + n) % n;
  std::vector<char> out(chunks * chunk), in(chunks * chunk, 0);
  for (int i = 0; i < chunks; ++i) Fill(out.data() + i * chunk, chunk, me, to, i);
  std::atomic<bool> ok{true};
  std::thread transfer([&] {
    std::vector<std::unique_ptr<Request>> pending;
    for (int i = 0; i < chunks; ++i) {
      auto r = c.Irecv(in.data() + i * chunk, chunk, from, i);
      auto s = c.Isend(out.data() + i * chunk, chunk, to, i);
      if (!r.ok() || !s.ok()) {
        ok = false;
        return;
      }
      pending.push_back(*std::move(r));
      pending.push_back(*std::move(s));
      if (pending.size() >= 8) {  // a bounded number in flight, polled with Test
        while (true) {
          auto done = pending.front()->Test();
          if (!done.ok()) {
            ok = false;
            return;
          }
          if (*done) break;
          std::this_thread::yield();
        }
        pending.erase(pending.begin());
      }
    }
    for (auto& r : pending) ok = ok && r->Wait(absl::Seconds(60)).ok();
  });
  for (int it = 0; it < 30; ++it) {
    RunAllToAllV(c, 1000 + it, [&](int a, int b) { return PairBytes(a, b, 1000 + it, n); });
  }
  transfer.join();
  EXPECT_TRUE(ok);
  for (int i = 0; i < chunks; ++i) EXPECT_TRUE(Check(in.data() + i * chunk, chunk, from, me, i)) << "chunk " << i;
  ASSERT_TRUE(c.Barrier().ok());
}

// Many small messages, several tags per peer in flight at once: each (peer, tag) stream keeps
// its order and nothing crosses between tags.
void ManyMessagesNoTagMixups(Communicator& c) {
  const int n = c.size(), me = c.rank();
  const int rounds = 200, tags = 4;
  std::vector<std::unique_ptr<Request>> requests;
  std::vector<std::vector<int64_t>> got(n * tags, std::vector<int64_t>(rounds, -1));
  std::vector<int64_t> sent(static_cast<size_t>(n) * tags * rounds);
  for (int round = 0; round < rounds; ++round) {
    for (int p = 0; p < n; ++p) {
      for (int t = 0; t < tags; ++t) {
        auto r = c.Irecv(&got[p * tags + t][round], 8, p, 100 + t);
        ASSERT_TRUE(r.ok()) << r.status();
        requests.push_back(*std::move(r));
        int64_t& v = sent[(static_cast<size_t>(p) * tags + t) * rounds + round];
        v = int64_t{me} * 1000000 + t * 10000 + round;
        auto s = c.Isend(&v, 8, p, 100 + t);
        ASSERT_TRUE(s.ok()) << s.status();
        requests.push_back(*std::move(s));
      }
    }
    if (requests.size() > 512) {
      for (auto& r : requests) ASSERT_TRUE(r->Wait(absl::Seconds(60)).ok());
      requests.clear();
    }
  }
  for (auto& r : requests) ASSERT_TRUE(r->Wait(absl::Seconds(60)).ok());
  for (int p = 0; p < n; ++p) {
    for (int t = 0; t < tags; ++t) {
      for (int round = 0; round < rounds; ++round) {
        ASSERT_EQ(got[p * tags + t][round], int64_t{p} * 1000000 + t * 10000 + round);
      }
    }
  }
  ASSERT_TRUE(c.Barrier().ok());
}

// Several receives posted for one (peer, tag) match the messages in the order the receives
// were posted, whatever order they are tested in (MPI's and UCX's matching rule; chunked
// weight transfers rely on it).
void SameTagReceivesMatchInPostingOrder(Communicator& c) {
  const int n = c.size(), me = c.rank();
  const int to = (me + 1) % n, from = (me - 1 + n) % n;
  constexpr int kMessages = 8;
  constexpr int64_t kBytes = 4096;
  std::vector<char> in(kMessages * kBytes, 0), out(kMessages * kBytes);
  std::vector<std::unique_ptr<Request>> recvs, sends;
  for (int i = 0; i < kMessages; ++i) {
    auto r = c.Irecv(in.data() + i * kBytes, kBytes, from, 55);
    ASSERT_TRUE(r.ok()) << r.status();
    recvs.push_back(*std::move(r));
  }
  ASSERT_TRUE(c.Barrier().ok());
  for (int i = 0; i < kMessages; ++i) {
    Fill(out.data() + i * kBytes, kBytes, me, to, 300 + i);
    auto s = c.Isend(out.data() + i * kBytes, kBytes, to, 55);
    ASSERT_TRUE(s.ok()) << s.status();
    sends.push_back(*std::move(s));
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (int left = kMessages; left > 0 && absl::Now() < deadline;) {
    left = 0;
    for (int i = kMessages - 1; i >= 0; --i) {  // the last posted is tested first
      auto done = recvs[i]->Test();
      ASSERT_TRUE(done.ok()) << done.status();
      if (!*done) ++left;
    }
  }
  for (auto& s : sends) ASSERT_TRUE(s->Wait(absl::Seconds(60)).ok());
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(recvs[i]->Wait(absl::Seconds(1)).ok()) << "receive " << i;
    EXPECT_TRUE(Check(in.data() + i * kBytes, kBytes, from, me, 300 + i)) << "receive " << i << " got another message";
  }
  ASSERT_TRUE(c.Barrier().ok());
}

// A receive nobody sends to times out, stays pending, and cancelled leaves no trace: the next
// message with that tag goes to the next receive.
void PointToPointTimeoutAndCancel(Communicator& c) {
  const int n = c.size(), me = c.rank();
  const int peer = (me + 1) % n, from = (me - 1 + n) % n;
  int64_t value = -1;
  {
    auto r = c.Irecv(&value, 8, from, 777);
    ASSERT_TRUE(r.ok());
    const absl::Time start = absl::Now();
    absl::Status s = (*r)->Wait(absl::Milliseconds(300));
    EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
    EXPECT_LT(absl::Now() - start, absl::Seconds(10));
    auto done = (*r)->Test();
    ASSERT_TRUE(done.ok());
    EXPECT_FALSE(*done);
  }  // destroyed: cancelled
  ASSERT_TRUE(c.Barrier().ok());
  int64_t payload = 4200 + me;
  auto s = c.Isend(&payload, 8, peer, 777);
  auto r = c.Irecv(&value, 8, from, 777);
  ASSERT_TRUE(s.ok() && r.ok());
  ASSERT_TRUE((*r)->Wait(absl::Seconds(30)).ok());
  ASSERT_TRUE((*s)->Wait(absl::Seconds(30)).ok());
  EXPECT_EQ(value, 4200 + from);
  ASSERT_TRUE(c.Barrier().ok());
}

void BadArgumentsNameTheProblem(Communicator& c) {
  char byte = 0;
  auto bad_peer = c.Isend(&byte, 1, c.size(), 0);
  EXPECT_EQ(bad_peer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_peer.status().message().find(absl::StrCat("peer ", c.size(), " out of range")), absl::string_view::npos);
  auto bad_tag = c.Irecv(&byte, 1, 0, -3);
  EXPECT_NE(bad_tag.status().message().find("tag -3 out of range"), absl::string_view::npos);
  if (!c.Supports(MemoryKind::kCuda)) {
    auto device = c.Isend(&byte, 1, 0, 0, MemoryKind::kCuda);
    EXPECT_NE(device.status().message().find("does not take cuda memory"), absl::string_view::npos);
    std::vector<int64_t> zeros(c.size(), 0);
    EXPECT_EQ(c.AllToAllV(&byte, zeros.data(), zeros.data(), &byte, zeros.data(), zeros.data(), MemoryKind::kCuda).code(),
              absl::StatusCode::kInvalidArgument);
  }
  ASSERT_TRUE(c.Barrier().ok());  // argument errors do not break the communicator
}

}  // namespace

void Fill(char* data, int64_t n, int a, int b, int c) {
  const uint64_t seed = Mix(uint64_t(a) << 40 ^ uint64_t(b) << 20 ^ uint64_t(c));
  for (int64_t i = 0; i < n; ++i) data[i] = static_cast<char>(Mix(seed + i / 8) >> ((i % 8) * 8));
}

bool Check(const char* data, int64_t n, int a, int b, int c) {
  std::vector<char> want(n);
  Fill(want.data(), n, a, b, c);
  return std::memcmp(want.data(), data, n) == 0;
}

std::vector<ConformanceCase> ConformanceCases() {
  return {
      {"UnevenCounts", UnevenCounts},
      {"ZeroSizePeersAndSelf", ZeroSizePeersAndSelf},
      {"CountExchangeThenAllToAllV", CountExchangeThenAllToAllV},
      {"SmallCollectives", SmallCollectives},
      {"BackgroundTransferDuringAllToAlls", BackgroundTransferDuringAllToAlls},
      {"ManyMessagesNoTagMixups", ManyMessagesNoTagMixups},
      {"SameTagReceivesMatchInPostingOrder", SameTagReceivesMatchInPostingOrder},
      {"PointToPointTimeoutAndCancel", PointToPointTimeoutAndCancel},
      {"BadArgumentsNameTheProblem", BadArgumentsNameTheProblem},
      {"LargeMessages", LargeMessages},
  };
}

}  // namespace switchyard::comm::test
