// The NCCL backend (label gpu): a communicator over the GPUs of this machine — with one GPU a
// 1-rank communicator, which still runs every code path (self all-to-all-v, small
// collectives, point-to-point to itself). Skips, saying why, without a usable GPU.
#include <gtest/gtest.h>

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
  EXPECT_FALSE(c.Supports(MemoryKind::kHost));
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
  char byte = 0;
  EXPECT_EQ(c.Isend(&byte, 1, 0, 0, MemoryKind::kHost).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::comm
