// CUDA kernels against the CPU kernels (label gpu). Each test skips, saying why, on a
// machine without a usable GPU; on a GPU machine they all run.
#include "kernels/cuda_kernels.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "kernels/ffn.h"
#include "kernels/permute.h"

namespace switchyard::kernels::cuda {
namespace {

class CudaKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DeviceCount() == 0) GTEST_SKIP() << NoGpuReason();
  }

  template <typename T>
  DeviceBuffer Upload(const std::vector<T>& host) {
    auto buffer = DeviceBuffer::Allocate(host.size() * sizeof(T));
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    EXPECT_TRUE(CopyToDevice(buffer->data(), host.data(), host.size() * sizeof(T)).ok());
    return std::move(*buffer);
  }
  template <typename T>
  std::vector<T> Download(const DeviceBuffer& buffer, size_t n) {
    std::vector<T> host(n);
    EXPECT_TRUE(CopyToHost(host.data(), buffer.data(), n * sizeof(T)).ok());
    return host;
  }
};

TEST_F(CudaKernelsTest, GatingMatchesCpu) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0, 2);
  const int64_t T = 333;
  std::vector<float> bias(256);
  for (float& b : bias) b = n(rng) * 0.05f;
  DeviceBuffer bias_dev = Upload(bias);
  for (GatingConfig c : {GatingConfig{256, 8, ScoreFunction::kSigmoid, true, 8, 4, 2.5f, nullptr},
                         GatingConfig{8, 2, ScoreFunction::kSoftmax, true},
                         GatingConfig{128, 6, ScoreFunction::kSigmoid, true}}) {
    std::vector<float> logits(T * c.num_experts);
    for (float& v : logits) v = n(rng);
    std::vector<int32_t> ids(T * c.top_k);
    std::vector<float> w(T * c.top_k);
    GatingConfig cpu = c;
    if (c.num_experts == 256) cpu.expert_bias = bias.data();
    ASSERT_TRUE(GateCpu(cpu, logits.data(), T, ids.data(), w.data()).ok());
    DeviceBuffer x = Upload(logits);
    auto ids_dev = *DeviceBuffer::Allocate(ids.size() * 4);
    auto w_dev = *DeviceBuffer::Allocate(w.size() * 4);
    GatingConfig gpu = c;
    if (c.num_experts == 256) gpu.expert_bias = bias_dev.as<float>();
    ASSERT_TRUE(GateCuda(gpu, x.as<float>(), T, ids_dev.as<int32_t>(), w_dev.as<float>(), nullptr).ok());
    ASSERT_TRUE(Synchronize(nullptr).ok());
    EXPECT_EQ(Download<int32_t>(ids_dev, ids.size()), ids);
    const auto gw = Download<float>(w_dev, w.size());
    for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(gw[i], w[i], 1e-5f * std::max(1.0f, std::abs(w[i])));
  }
}

TEST_F(CudaKernelsTest, PermuteAndCombineAreBitIdenticalToCpu) {
  std::mt19937 rng(2);
  std::normal_distribution<float> n(0, 1);
  const int64_t T = 300, k = 8, H = 1000, pairs = T * k;
  std::vector<float> hidden(T * H), w(pairs);
  for (float& v : hidden) v = n(rng);
  for (float& v : w) v = n(rng);
  std::vector<int32_t> index(pairs);
  for (int64_t p = 0; p < pairs; ++p) index[p] = static_cast<int32_t>(p);
  std::shuffle(index.begin(), index.end(), rng);
  std::vector<float> gathered(pairs * H), combined(T * H);
  GatherRows(hidden.data(), gathered.data(), index.data(), pairs, H * 4, k);
  Combine(gathered.data(), index.data(), w.data(), T, k, H, combined.data());

  DeviceBuffer hidden_dev = Upload(hidden), w_dev = Upload(w), index_dev = Upload(index);
  auto gathered_dev = *DeviceBuffer::Allocate(gathered.size() * 4);
  auto combined_dev = *DeviceBuffer::Allocate(combined.size() * 4);
  ASSERT_TRUE(GatherRowsCuda(hidden_dev.data(), gathered_dev.data(), index_dev.as<int32_t>(), pairs, H * 4, k, nullptr).ok());
  ASSERT_TRUE(CombineCuda(gathered_dev.as<float>(), index_dev.as<int32_t>(), w_dev.as<float>(), T, k, H,
                          combined_dev.as<float>(), nullptr).ok());
  ASSERT_TRUE(Synchronize(nullptr).ok());
  EXPECT_EQ(Download<float>(gathered_dev, gathered.size()), gathered);
  const auto got = Download<float>(combined_dev, combined.size());
  EXPECT_EQ(std::memcmp(got.data(), combined.data(), combined.size() * 4), 0);
}

TEST_F(CudaKernelsTest, Bf16FfnMatchesCpuBf16) {
  const FfnShape shape{256, 128, Activation::kSwiGlu, WeightType::kBF16};
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 0.06f);
  const int slots = 3;
  const std::vector<int64_t> counts = {40, 0, 77}, offsets = {0, 40, 40};
  const int64_t rows = 117;
  std::vector<float> x(rows * shape.hidden);
  for (float& v : x) v = n(rng) * 10;
  std::vector<std::vector<char>> packed(slots);
  std::vector<DeviceBuffer> gate_up, down;
  std::vector<CudaExpert> experts(slots);
  std::vector<const void*> cpu_weights(slots);
  for (int s = 0; s < slots; ++s) {
    std::vector<float> g(shape.ffn * shape.hidden), u(g.size()), d(shape.hidden * shape.ffn);
    for (auto* m : {&g, &u, &d}) for (float& v : *m) v = n(rng);
    packed[s].resize(PackedExpertBytes(shape));
    ASSERT_TRUE(PackExpert(shape, g.data(), u.data(), d.data(), packed[s].data()).ok());
    cpu_weights[s] = packed[s].data();
    std::vector<bf16> gu16, d16;
    for (float v : g) gu16.push_back(FloatToBf16(v));
    for (float v : u) gu16.push_back(FloatToBf16(v));
    for (float v : d) d16.push_back(FloatToBf16(v));
    gate_up.push_back(Upload(gu16));
    down.push_back(Upload(d16));
    experts[s] = {gate_up.back().as<bf16>(), down.back().as<bf16>()};
  }
  std::vector<float> ref(rows * shape.hidden);
  FfnWorkspace ws(CpuIsa::kPortable);
  ASSERT_TRUE(GroupedFfnCpu(shape, cpu_weights.data(), offsets.data(), counts.data(), slots, x.data(), ref.data(), ws).ok());
  std::vector<bf16> x16;
  for (float v : x) x16.push_back(FloatToBf16(v));
  DeviceBuffer x_dev = Upload(x16);
  auto y_dev = *DeviceBuffer::Allocate(ref.size() * 4);
  auto ffn = CudaFfn::Create(shape, nullptr);
  ASSERT_TRUE(ffn.ok()) << ffn.status();
  ASSERT_TRUE((*ffn)->Run(experts.data(), offsets.data(), counts.data(), slots, x_dev.as<bf16>(), y_dev.as<float>()).ok());
  ASSERT_TRUE(Synchronize(nullptr).ok());
  const auto y = Download<float>(y_dev, ref.size());
  double scale = 0, err = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    scale = std::max(scale, double(std::abs(ref[i])));
    err = std::max(err, double(std::abs(ref[i] - y[i])));
  }
  EXPECT_LE(err, 2e-2 * scale);  // bf16 tolerance, as the CPU bf16 tests
}

}  // namespace
}  // namespace switchyard::kernels::cuda
