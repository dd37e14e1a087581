// LayerDevice selection and the CPU device's contract; the CUDA device's run on a GPU is
// tests/worker/cuda_layer_test.cc (label gpu).
#include "worker/layer_device.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "model/model.h"

namespace switchyard::worker {
namespace {

using ::testing::HasSubstr;

TEST(LayerDeviceTest, ParsesDeviceNames) {
  EXPECT_EQ(*ParseDevice("cpu"), Device::kCpu);
  EXPECT_EQ(*ParseDevice("cuda"), Device::kCuda);
  const auto bad = ParseDevice("gpu");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown device 'gpu' (cpu or cuda)"));
  EXPECT_STREQ(DeviceName(Device::kCuda), "cuda");
}

// Without a GPU (or a CUDA build) the cuda device is refused with the reason, before anything
// is allocated; with one, a model of fp32 experts is refused by name.
TEST(LayerDeviceTest, CudaNeedsAGpuAndBf16Weights) {
  model::ModelConfig model = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  const absl::Status usable = CudaDeviceUsable();
  auto device = CreateLayerDevice(Device::kCuda, model, 1);
  if (!usable.ok()) {
    EXPECT_EQ(usable.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(usable.message(), ::testing::AnyOf(HasSubstr("no usable GPU"), HasSubstr("this build has no CUDA")));
    EXPECT_EQ(device.status(), usable);
    return;
  }
  model.weights = kernels::WeightType::kF32;
  device = CreateLayerDevice(Device::kCuda, model, 1);
  EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(device.status().message(), HasSubstr("bf16"));
}

TEST(LayerDeviceTest, CpuGateRefusesTheFirstNonFiniteLogitByPosition) {
  const model::ModelConfig model = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  auto device = CreateLayerDevice(Device::kCpu, model, 1);
  ASSERT_TRUE(device.ok());
  EXPECT_EQ((*device)->memory(), comm::MemoryKind::kHost);
  const int E = model.num_experts;
  std::vector<float> logits(3 * E, 0.5f);
  logits[2 * E + 7] = std::numeric_limits<float>::infinity();
  logits[2 * E + 9] = std::nanf("");
  std::vector<int32_t> ids(3 * model.top_k, -5);
  const absl::Status s = (*device)->Gate(model.Gating(nullptr), logits.data(), 3, ids.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("router_logits[2, 7] is inf (logits must be finite)"));
  EXPECT_EQ(ids, std::vector<int32_t>(3 * model.top_k, -5));  // nothing written
  logits[2 * E + 7] = logits[2 * E + 9] = 0.25f;
  ASSERT_TRUE((*device)->Gate(model.Gating(nullptr), logits.data(), 3, ids.data()).ok());
  for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < E);
}

}  // namespace
}  // namespace switchyard::worker
