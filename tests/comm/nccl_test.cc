// The NCCL backend (label gpu): a communicator over the GPUs of this machine — with one GPU a
// 1-rank communicator, which still runs every code path (self all-to-all-v, small
// collectives, point-to-point to itself). Skips, saying why, without a usable GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "cluster/file_bootstrap.h"
#include "comm/nccl/factory.h"
#include "kernels/cuda_kernels.h"
#include "tests/common/subprocess.h"

namespace switchyard::comm {
namespace {

namespace cu = kernels::cuda;

TEST(NcclCommunicatorTest, OneRankRunsEveryCall) {
  if (cu::DeviceCount() == 0) GTEST_SKIP() << cu::NoGpuReason();
  test::TempDir dir;
  auto bootstrap = cluster::CreateFileBootstrap(dir.File("rdv"), {0, 1, 0, 1, "switchyard"});
  auto comm = CreateNcclCommunicator(*bootstrap);
  ASSERT_TRUE(comm.ok()) << comm.status();
  Communicator& c = **comm;
  EXPECT_TRUE(c.Supports(MemoryKind::kCuda));
  EXPECT_TRUE(c.Supports(MemoryKind::kHost));  // staged through device memory
  EXPECT_NE(c.cuda_stream(), nullptr);
  const int64_t bytes = (int64_t{1} << 20) + 5;
  std::vector<char> host(bytes), back(bytes);
  std::iota(host.begin(), host.end(), 0);
  auto send = *cu::DeviceBuffer::Allocate(bytes);
  auto recv = *cu::DeviceBuffer::Allocate(bytes);
  ASSERT_TRUE(cu::CopyToDevice(send.data(), host.data(), bytes).ok());
  const int64_t counts[1] = {bytes}, offsets[1] = {0};
  ASSERT_TRUE(c.AllToAllV(send.data(), counts, offsets, recv.data(), counts, offsets, MemoryKind::kCuda).ok());
  ASSERT_TRUE(cu::CopyToHost(back.data(), recv.data(), bytes).ok());
  EXPECT_EQ(back, host);
  int64_t v = 7;
  ASSERT_TRUE(c.AllReduce(&v, 1, ReduceOp::kSum).ok());
  EXPECT_EQ(v, 7);
  ASSERT_TRUE(c.Barrier().ok());
  auto r = c.Irecv(recv.data(), bytes, 0, 1, MemoryKind::kCuda);
  auto s = c.Isend(send.data(), bytes, 0, 1, MemoryKind::kCuda);
  ASSERT_TRUE(r.ok() && s.ok());
  ASSERT_TRUE((*s)->Wait(absl::Seconds(30)).ok());
  ASSERT_TRUE((*r)->Wait(absl::Seconds(30)).ok());
  // Host buffers: staged through device memory, collectives and point-to-point alike.
  std::vector<char> host_back(bytes, 0);
  ASSERT_TRUE(c.AllToAllV(host.data(), counts, offsets, host_back.data(), counts, offsets, MemoryKind::kHost).ok());
  EXPECT_EQ(host_back, host);
  int64_t pair[2] = {3, 4}, got[2] = {0, 0};
  ASSERT_TRUE(c.AllToAll(pair, sizeof pair, got, MemoryKind::kHost).ok());
  EXPECT_EQ(got[0], 3);
  EXPECT_EQ(got[1], 4);
  std::fill(host_back.begin(), host_back.end(), 0);
  auto hr = c.Irecv(host_back.data(), bytes, 0, 2, MemoryKind::kHost);
  auto hs = c.Isend(host.data(), bytes, 0, 2, MemoryKind::kHost);
  ASSERT_TRUE(hr.ok() && hs.ok());
  ASSERT_TRUE((*hs)->Wait(absl::Seconds(30)).ok());
  ASSERT_TRUE((*hr)->Wait(absl::Seconds(30)).ok());
  EXPECT_EQ(host_back, host);
  // A request destroyed before it was posted is cancelled for real: the next pair still matches.
  {
    char byte = 1;
    auto dropped = c.Isend(&byte, 1, 0, 3, MemoryKind::kHost);
    ASSERT_TRUE(dropped.ok());
  }
  char in = 0, out = 42;
  auto r2 = c.Irecv(&in, 1, 0, 3, MemoryKind::kHost);
  auto s2 = c.Isend(&out, 1, 0, 3, MemoryKind::kHost);
  ASSERT_TRUE(r2.ok() && s2.ok());
  ASSERT_TRUE((*r2)->Wait(absl::Seconds(30)).ok());
  ASSERT_TRUE((*s2)->Wait(absl::Seconds(30)).ok());
  EXPECT_EQ(in, 42);
}

}  // namespace
}  // namespace switchyard::comm
