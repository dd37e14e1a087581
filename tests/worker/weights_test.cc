// Checkpoint weights: Hugging Face tensor names per model type, F32 and BF16 tensors, the
// same packed bytes as packing the matrices directly; bad checkpoints name the tensor.
#include "worker/weights.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "tests/common/subprocess.h"
#include "worker/safetensors.h"

namespace switchyard::worker {
namespace {

std::string Bytes(const std::vector<float>& v, const std::string& dtype) {
  if (dtype == "F32") return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  std::string out(v.size() * 2, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    const kernels::bf16 h = kernels::FloatToBf16(v[i]);
    std::memcpy(&out[2 * i], &h, 2);
  }
  return out;
}

struct Matrices {
  std::vector<float> gate, up, down;
};

Matrices Random(int64_t hidden, int64_t ffn, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 0.1f);
  Matrices m{std::vector<float>(ffn * hidden), std::vector<float>(ffn * hidden), std::vector<float>(hidden * ffn)};
  for (auto* v : {&m.gate, &m.up, &m.down}) for (float& x : *v) x = n(rng);
  return m;
}

class CheckpointTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(CheckpointTest, PacksTheSameBytesAsTheMatrices) {
  const auto [type, dtype] = GetParam();
  model::ModelConfig model;
  model.name = type;
  model.model_type = type;
  model.num_experts = 3, model.top_k = 2, model.hidden = 40, model.expert_ffn = 24;
  model.activation = type == "nemotron_h" ? kernels::Activation::kReluSquared : kernels::Activation::kSwiGlu;
  model.moe_layers = {2};
  const bool mixtral = type == "mixtral" || type == "minimax_m2";
  const std::string prefix = mixtral ? "model.layers.2.block_sparse_moe.experts."
                             : type == "nemotron_h" ? "backbone.layers.2.mixer.experts."
                                                    : "model.layers.2.mlp.experts.";
  std::vector<TensorData> tensors;
  std::vector<Matrices> experts;
  for (int e = 0; e < 3; ++e) {
    experts.push_back(Random(40, 24, e));
    const std::string p = absl::StrCat(prefix, e, ".");
    if (model.activation == kernels::Activation::kSwiGlu) {
      tensors.push_back({p + (mixtral ? "w1.weight" : "gate_proj.weight"), dtype, {24, 40}, Bytes(experts[e].gate, dtype)});
    }
    tensors.push_back({p + (mixtral ? "w3.weight" : "up_proj.weight"), dtype, {24, 40}, Bytes(experts[e].up, dtype)});
    tensors.push_back({p + (mixtral ? "w2.weight" : "down_proj.weight"), dtype, {40, 24}, Bytes(experts[e].down, dtype)});
  }
  test::TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir.File("model.safetensors"), tensors).ok());
  auto source = CheckpointWeights(model, dir.path());
  ASSERT_TRUE(source.ok()) << source.status();
  const size_t bytes = kernels::PackedExpertBytes(model.ExpertShape());
  for (int e = 0; e < 3; ++e) {
    std::vector<char> from_file(bytes), direct(bytes);
    ASSERT_TRUE((*source)->PackExpert(2, e, from_file.data()).ok());
    Matrices m = experts[e];
    if (dtype == "BF16") {  // what the file holds
      for (auto* v : {&m.gate, &m.up, &m.down}) for (float& x : *v) x = kernels::Bf16ToFloat(kernels::FloatToBf16(x));
    }
    ASSERT_TRUE(kernels::PackExpert(model.ExpertShape(), m.gate.data(), m.up.data(), m.down.data(), direct.data()).ok());
    EXPECT_EQ(from_file, direct) << "expert " << e;
  }
  // A missing expert names the tensor.
  std::vector<char> buffer(bytes);
  absl::Status missing = (*source)->PackExpert(2, 7, buffer.data());
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find(absl::StrCat(prefix, 7)), absl::string_view::npos) << missing.message();
}

INSTANTIATE_TEST_SUITE_P(ModelTypes, CheckpointTest,
                         ::testing::Combine(::testing::Values("deepseek_v3", "mixtral", "nemotron_h", "qwen3_moe", "glm4_moe",
                                                              "glm_moe_dsa", "kimi_k2", "minimax_m2", "qwen3_5_moe"),
                                            ::testing::Values("F32", "BF16")));

// FP8 as published (e4m3 + 128 x 128 block scales, here 16 x 8 blocks over ragged edges)
// packs exactly the bytes of the same weights converted to bf16 (bf16(e4m3 x scale)).
TEST(CheckpointFp8Test, DequantisesToTheBf16Conversion) {
  model::ModelConfig model = *model::PresetModel("minimax-m2");
  model.hidden = 40, model.expert_ffn = 24, model.num_experts = 2, model.top_k = 1;
  model.fp8_block_rows = 16, model.fp8_block_cols = 8;
  std::mt19937 rng(3);
  std::vector<TensorData> fp8, bf16;
  for (const auto& [name, rows, cols] : {std::tuple<const char*, int64_t, int64_t>{"w1", 24, 40}, {"w3", 24, 40}, {"w2", 40, 24}}) {
    const std::string weight = absl::StrCat("model.layers.0.block_sparse_moe.experts.1.", name, ".weight");
    const int64_t sr = (rows + 15) / 16, sc = (cols + 7) / 8;
    std::string codes(rows * cols, '\0');
    std::vector<float> scales(sr * sc), converted(rows * cols);
    for (char& c : codes) {
      do c = static_cast<char>(rng() & 0xff); while ((c & 0x7f) == 0x7f);  // no NaN codes
    }
    for (float& x : scales) x = std::ldexp(1.0f + (rng() % 1000) / 1000.0f, -8 + static_cast<int>(rng() % 6));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const uint8_t code = static_cast<uint8_t>(codes[r * cols + c]);
        const int exp = (code >> 3) & 0xf, mant = code & 7;
        float v = exp == 0 ? mant / 8.0f * std::ldexp(1.0f, -6) : (1 + mant / 8.0f) * std::ldexp(1.0f, exp - 7);
        if (code & 0x80) v = -v;
        converted[r * cols + c] = v * scales[(r / 16) * sc + c / 8];
      }
    }
    fp8.push_back({weight, "F8_E4M3", {rows, cols}, codes});
    fp8.push_back({weight + "_scale_inv", "F32", {sr, sc}, Bytes(scales, "F32")});
    bf16.push_back({weight, "BF16", {rows, cols}, Bytes(converted, "BF16")});
  }
  test::TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir.File("fp8.safetensors"), fp8).ok());
  ASSERT_TRUE(WriteSafetensors(dir.File("bf16.safetensors"), bf16).ok());
  for (kernels::WeightType type : {kernels::WeightType::kF32, kernels::WeightType::kBF16}) {
    model.weights = type;
    const size_t bytes = kernels::PackedExpertBytes(model.ExpertShape());
    std::vector<char> a(bytes), b(bytes);
    auto from_fp8 = CheckpointWeights(model, dir.File("fp8.safetensors"));
    auto from_bf16 = CheckpointWeights(model, dir.File("bf16.safetensors"));
    ASSERT_TRUE(from_fp8.ok() && from_bf16.ok());
    ASSERT_TRUE((*from_fp8)->PackExpert(0, 1, a.data()).ok());
    ASSERT_TRUE((*from_bf16)->PackExpert(0, 1, b.data()).ok());
    EXPECT_EQ(a, b) << "weight type " << static_cast<int>(type);
  }
  // Scales of the wrong shape are named with the block size.
  fp8[1].shape = {1, 5};
  fp8[1].bytes = Bytes(std::vector<float>(5, 1.0f), "F32");
  ASSERT_TRUE(WriteSafetensors(dir.File("bad.safetensors"), fp8).ok());
  std::vector<char> buffer(kernels::PackedExpertBytes(model.ExpertShape()));
  const absl::Status bad = (*CheckpointWeights(model, dir.File("bad.safetensors")))->PackExpert(0, 1, buffer.data());
  EXPECT_NE(bad.message().find("w1.weight_scale_inv: shape [1, 5], expected [2, 5] (16 x 8 blocks"), absl::string_view::npos) << bad;
}

TEST(CheckpointErrorsTest, ShapesDtypesAndFiles) {
  model::ModelConfig model = *model::PresetModel("mixtral-8x7b");
  model.hidden = 16, model.expert_ffn = 8;
  test::TempDir dir;
  const std::vector<float> wrong(16 * 16, 0.0f);
  ASSERT_TRUE(WriteSafetensors(dir.File("a.safetensors"),
                               {{"model.layers.0.block_sparse_moe.experts.0.w1.weight", "F32", {16, 16}, Bytes(wrong, "F32")},
                                {"model.layers.0.block_sparse_moe.experts.1.w1.weight", "F8_E4M3", {8, 16}, std::string(128, '\0')}})
                  .ok());
  auto source = *CheckpointWeights(model, dir.File("a.safetensors"));
  std::vector<char> buffer(kernels::PackedExpertBytes(model.ExpertShape()));
  EXPECT_NE(source->PackExpert(0, 0, buffer.data()).message().find("shape [16, 16], the model needs [8, 16]"), absl::string_view::npos);
  EXPECT_NE(source->PackExpert(0, 1, buffer.data()).message().find("needs its block scales model.layers.0.block_sparse_moe.experts.1.w1.weight_scale_inv"),
            absl::string_view::npos);
  EXPECT_EQ(CheckpointWeights(model, dir.File("nope.safetensors")).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir.File("junk.safetensors")) << "not a safetensors file at all";
  EXPECT_EQ(CheckpointWeights(model, dir.File("junk.safetensors")).status().code(), absl::StatusCode::kInvalidArgument);

  // Non-finite weights are refused, naming the tensor.
  std::vector<float> poisoned(8 * 16, 0.5f);
  poisoned[37] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(WriteSafetensors(dir.File("nan.safetensors"),
                               {{"model.layers.0.block_sparse_moe.experts.0.w1.weight", "F32", {8, 16}, Bytes(poisoned, "F32")}})
                  .ok());
  auto nan = *CheckpointWeights(model, dir.File("nan.safetensors"));
  EXPECT_NE(nan->PackExpert(0, 0, buffer.data()).message().find("experts.0.w1.weight: element 37 is nan"), absl::string_view::npos)
      << nan->PackExpert(0, 0, buffer.data());

  // A sharded checkpoint whose index lists nothing, or names a FIFO as a shard (it must not
  // block the open), is refused.
  std::filesystem::create_directories(dir.File("empty"));
  std::ofstream(dir.File("empty/model.safetensors.index.json")) << R"({"weight_map": {}})";
  auto empty = CheckpointWeights(model, dir.File("empty"));
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("$.weight_map: lists no tensors"), std::string::npos) << empty.status();
  std::filesystem::create_directories(dir.File("fifo"));
  ASSERT_EQ(mkfifo(dir.File("fifo/pipe").c_str(), 0600), 0);
  std::ofstream(dir.File("fifo/model.safetensors.index.json"))
      << R"({"weight_map": {"model.layers.0.block_sparse_moe.experts.0.w1.weight": "pipe"}})";
  auto fifo = *CheckpointWeights(model, dir.File("fifo"));
  const absl::Status blocked = fifo->PackExpert(0, 0, buffer.data());
  EXPECT_NE(blocked.message().find("pipe: not a regular file"), absl::string_view::npos) << blocked;
}

// Safetensors headers of the wrong shape name the file, the tensor and the field, and never
// throw (they used to abort the worker with an uncaught JSON exception).
TEST(CheckpointErrorsTest, HeadersOfTheWrongShapeAreNamed) {
  auto file = [](const std::string& header, const std::string& data = "abcd") {
    std::string out(8, '\0');
    const uint64_t len = header.size();
    std::memcpy(out.data(), &len, 8);
    return out + header + data;
  };
  struct Case {
    std::string bytes, message;
  };
  const std::vector<Case> cases = {
      {file(R"({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})"), "w.safetensors header: $.w.dtype: expected a string, got number"},
      {file(R"({"w": {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]}})"), "$.w.shape[0]: expected an integer, got string"},
      {file(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})"), "$.w.shape[0]: -1 is out of range"},
      {file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})"), "$.w.data_offsets: expected [begin, end]"},
      {file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}})"), "is not within the 4 data bytes"},
      {file(R"({"w": {"dtype": "F32", "shape": [1099511627776, 1099511627776, 1099511627776], "data_offsets": [0, 4]}})"),
       "4 bytes do not match its shape and dtype F32"},
      {file(R"({"w": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})"), "$.w.shape: expected an array"},
      {file(R"({"w": 5})"), "$.w: expected an object, got number"},
      {file(R"([1, 2])"), "$: expected an object, got array"},
      {file(R"({"w": )"), "not valid JSON"},
      {std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10), "header length 9223372036854775807 beyond the file"},
      {"abc", "too short for a safetensors file"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseSafetensors(c.bytes, "w.safetensors");
    ASSERT_FALSE(parsed.ok()) << c.message;
    EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << parsed.status();
    EXPECT_NE(parsed.status().message().find(c.message), std::string::npos) << parsed.status() << " vs " << c.message;
  }
  auto fine = ParseSafetensors(file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "__metadata__": {"a": "b"}})"),
                               "w.safetensors");
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->at("w").bytes, 4u);
}

TEST(SeededWeightsTest, SameExpertSameBytesEverywhere) {
  model::ModelConfig model = *model::ScaleModel(*model::PresetModel("qwen3-30b-a3b"), 0.125);
  auto a = SeededWeights(model, 5), b = SeededWeights(model, 5), c = SeededWeights(model, 6);
  const size_t bytes = kernels::PackedExpertBytes(model.ExpertShape());
  std::vector<char> x(bytes), y(bytes), z(bytes), w(bytes);
  ASSERT_TRUE(a->PackExpert(3, 17, x.data()).ok());
  ASSERT_TRUE(b->PackExpert(3, 17, y.data()).ok());
  ASSERT_TRUE(c->PackExpert(3, 17, z.data()).ok());
  ASSERT_TRUE(a->PackExpert(3, 18, w.data()).ok());
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  EXPECT_NE(x, w);
  EXPECT_TRUE(kernels::CheckPackedExpert(model.ExpertShape(), x.data(), bytes).ok());
}

}  // namespace
}  // namespace switchyard::worker
