// The MoE layer on a CUDA device (label gpu): one rank over a 1-rank NCCL communicator
// against the same layer on the CPU (bf16 weights on both). The GPU gate's exp may differ
// from the CPU's by an ulp, which can flip a near-tie: nearly every token must choose the
// same experts, and the tokens that do must give outputs within bf16 GEMM tolerance (cuBLAS
// sums in another order than the CPU kernels). Then the driver runs steps on the GPU with the
// hidden states kept there. Skips, saying why, without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "cluster/file_bootstrap.h"
#include "comm/inprocess/factory.h"
#include "comm/nccl/factory.h"
#include "kernels/cuda_kernels.h"
#include "kernels/gating.h"
#include "placement/placement.h"
#include "tests/common/subprocess.h"
#include "worker/driver.h"
#include "worker/moe_layer.h"

namespace switchyard::worker {
namespace {

namespace cu = kernels::cuda;

// A 1-rank NCCL communicator (met through a rendezvous file).
struct OneGpuRank {
  test::TempDir dir;
  std::unique_ptr<comm::Bootstrap> bootstrap = cluster::CreateFileBootstrap(dir.File("rdv"), {0, 1, 0, 1, "switchyard"});
  absl::StatusOr<std::unique_ptr<comm::Communicator>> comm = comm::CreateNcclCommunicator(*bootstrap);
  // The CUDA device on the communicator's stream.
  absl::StatusOr<std::unique_ptr<LayerDevice>> Device(const model::ModelConfig& model) {
    return CreateLayerDevice(worker::Device::kCuda, model, 1, (*comm)->cuda_stream());
  }
};

class CudaLayerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaLayerTest, MatchesTheCpuLayer) {
  if (cu::DeviceCount() == 0) GTEST_SKIP() << cu::NoGpuReason();
  model::ModelConfig model = *model::ScaleModel(*model::PresetModel(GetParam()), 0.0625);
  model.weights = kernels::WeightType::kBF16;
  const int layer = model.moe_layers[0], E = model.num_experts, k = model.top_k;
  const int64_t T = 96, H = model.hidden;
  auto workload = *Workload::Create({"zipf:1.1"}, model, {layer}, 4);
  const auto topo = *placement::Topology::Create(1, 1, E);
  const placement::Placement p = *placement::ContiguousPlacement(topo, E, {layer});
  auto table = std::make_shared<placement::RoutingTable>(*placement::RoutingTable::Build(p, 0));
  WeightStore store(model, {layer});
  ASSERT_TRUE(store.Load(p, 0, *SeededWeights(model, 3)).ok());
  std::vector<float> h(T * H), logits(T * E), cpu_out(T * H), gpu_out(T * H);
  workload->Hidden(0, 0, T, h.data());
  workload->Logits(0, 0, 0, T, logits.data());

  auto world = comm::CreateInProcessWorld(1);
  MoeLayer cpu(model, *world[0], store, table);
  ASSERT_TRUE(cpu.Forward(layer, h.data(), logits.data(), T, cpu_out.data()).ok());

  OneGpuRank rank;
  ASSERT_TRUE(rank.comm.ok()) << rank.comm.status();
  comm::Communicator& nccl = **rank.comm;
  auto device = rank.Device(model);
  ASSERT_TRUE(device.ok()) << device.status();
  MoeLayer gpu(model, nccl, store, table, *std::move(device));
  LayerDevice& dev = gpu.device();
  auto d_h = *dev.Allocate(h.size() * 4), d_logits = *dev.Allocate(logits.size() * 4), d_out = *dev.Allocate(h.size() * 4);
  ASSERT_TRUE(dev.Upload(d_h, h.data(), h.size() * 4).ok());
  ASSERT_TRUE(dev.Upload(d_logits, logits.data(), logits.size() * 4).ok());
  ASSERT_TRUE(gpu.Forward(layer, static_cast<float*>(d_h), static_cast<float*>(d_logits), T, static_cast<float*>(d_out)).ok());
  ASSERT_TRUE(dev.Download(gpu_out.data(), d_out, gpu_out.size() * 4).ok());

  // Each side's choices: the CPU gate, and the GPU device's (ids come back to the host).
  std::vector<int32_t> cpu_ids(T * k), gpu_ids(T * k);
  std::vector<float> cpu_w(T * k);
  ASSERT_TRUE(kernels::GateCpu(model.Gating(store.router_bias(0)), logits.data(), T, cpu_ids.data(), cpu_w.data()).ok());
  ASSERT_TRUE(dev.Gate(model.Gating(store.router_bias(0)), static_cast<float*>(d_logits), T, gpu_ids.data()).ok());
  std::vector<bool> same(T, true);
  int64_t differing = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < k; ++j) same[t] = same[t] && cpu_ids[t * k + j] == gpu_ids[t * k + j];
    differing += same[t] ? 0 : 1;
  }
  EXPECT_LE(differing, T / 50) << differing << " of " << T << " tokens chose other experts on the GPU";
  if (differing == 0) {
    EXPECT_EQ(gpu.counters().layer(0).processed, cpu.counters().layer(0).processed);
  }
  double max_diff = 0, max_abs = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < H; ++i) {
      ASSERT_TRUE(std::isfinite(gpu_out[t * H + i])) << t << "," << i;
      if (!same[t]) continue;
      max_diff = std::max(max_diff, std::fabs(double(gpu_out[t * H + i]) - cpu_out[t * H + i]));
      max_abs = std::max(max_abs, std::fabs(double(cpu_out[t * H + i])));
    }
  }
  EXPECT_GT(max_abs, 0.0);
  EXPECT_LE(max_diff, 2e-2 * max_abs) << "max |gpu - cpu| " << max_diff << " of max |cpu| " << max_abs;

  // A non-finite logit is refused by position, as on the CPU.
  logits[5 * E + 3] = std::nanf("");
  ASSERT_TRUE(dev.Upload(d_logits, logits.data(), logits.size() * 4).ok());
  const absl::Status bad = gpu.Forward(layer, static_cast<float*>(d_h), static_cast<float*>(d_logits), T, static_cast<float*>(d_out));
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("router_logits[5, 3] is nan"), std::string::npos) << bad;
}

// DeepSeek-V3 (sigmoid, groups, bias, shared expert), Qwen3 (softmax, no shared expert),
// Nemotron (ReLU^2 experts, shared expert).
INSTANTIATE_TEST_SUITE_P(Models, CudaLayerTest, ::testing::Values("deepseek-v3", "qwen3-30b-a3b", "nemotron-3-nano-30b-a3b"));

TEST(CudaDriverTest, RunsStepsWithTheHiddenStatesOnTheGpu) {
  if (cu::DeviceCount() == 0) GTEST_SKIP() << cu::NoGpuReason();
  model::ModelConfig model = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  model.weights = kernels::WeightType::kBF16;
  const std::vector<int> layers(model.moe_layers.begin(), model.moe_layers.begin() + 2);
  auto workload = *Workload::Create({"zipf:1.2"}, model, layers, 3);
  const auto topo = *placement::Topology::Create(1, 1, model.num_experts);
  const placement::Placement p = *placement::ContiguousPlacement(topo, model.num_experts, layers);
  auto table = std::make_shared<placement::RoutingTable>(*placement::RoutingTable::Build(p, 0));
  WeightStore store(model, layers);
  ASSERT_TRUE(store.Load(p, 0, *SeededWeights(model, 11)).ok());
  OneGpuRank rank;
  ASSERT_TRUE(rank.comm.ok()) << rank.comm.status();
  comm::Communicator& nccl = **rank.comm;
  auto device = rank.Device(model);
  ASSERT_TRUE(device.ok()) << device.status();
  DriverOptions options;
  options.steps = 3;
  options.tokens_per_rank = 128;
  options.log_every = 0;
  Driver driver(model, nccl, *workload, store, table, options, *std::move(device));
  auto report = driver.Run();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->tokens_conserved);
  EXPECT_EQ(report->steps, 3);
  EXPECT_NE(report->output_checksum, 0u);
  // The same run again gives the same bits (the GPU path is deterministic for a fixed setup).
  Driver again(model, nccl, *workload, store, table, options, *rank.Device(model));
  auto second = again.Run();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->output_checksum, report->output_checksum);
}

}  // namespace
}  // namespace switchyard::worker
