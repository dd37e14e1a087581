// Model shapes: presets carry the published values; Hugging Face config.json files parse
// for every supported model type; bad configs name the key.
#include "model/model.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace switchyard::model {
namespace {

TEST(ModelTest, PresetsCarryThePublishedShapes) {
  auto v3 = *PresetModel("deepseek-v3");
  EXPECT_EQ(v3.num_experts, 256);
  EXPECT_EQ(v3.top_k, 8);
  EXPECT_EQ(v3.hidden, 7168);
  EXPECT_EQ(v3.expert_ffn, 2048);
  EXPECT_EQ(v3.shared_ffn, 2048);
  EXPECT_EQ(v3.num_groups, 8);
  EXPECT_EQ(v3.top_groups, 4);
  EXPECT_FLOAT_EQ(v3.routed_scaling_factor, 2.5f);
  EXPECT_EQ(v3.score, kernels::ScoreFunction::kSigmoid);
  EXPECT_TRUE(v3.router_bias);
  ASSERT_EQ(v3.moe_layers.size(), 58u);
  EXPECT_EQ(v3.moe_layers.front(), 3);
  EXPECT_EQ(v3.moe_layers.back(), 60);
  auto v2 = *PresetModel("deepseek-v2");
  EXPECT_EQ(v2.num_experts, 160);
  EXPECT_EQ(v2.top_k, 6);
  EXPECT_EQ(v2.shared_ffn, 2 * 1536);
  EXPECT_EQ(v2.group_score, kernels::GroupScore::kMax);
  auto q235 = *PresetModel("qwen3-235b-a22b");
  EXPECT_EQ(q235.moe_layers.size(), 94u);
  EXPECT_EQ(q235.expert_ffn, 1536);
  auto q30 = *PresetModel("qwen3-30b-a3b");
  EXPECT_EQ(q30.hidden, 2048);
  EXPECT_EQ(q30.expert_ffn, 768);
  EXPECT_EQ(q30.moe_layers.size(), 48u);
  auto nemo = *PresetModel("nemotron-3-nano-30b-a3b");
  EXPECT_EQ(nemo.activation, kernels::Activation::kReluSquared);
  EXPECT_EQ(nemo.top_k, 6);
  EXPECT_EQ(nemo.hidden, 2688);
  EXPECT_EQ(nemo.expert_ffn, 1856);
  EXPECT_EQ(nemo.moe_layers.size(), 23u);
  EXPECT_EQ(PresetModel("nemotron-cascade-2-30b-a3b")->expert_ffn, 1856);
  auto mixtral = *PresetModel("mixtral-8x7b");
  EXPECT_EQ(mixtral.num_experts, 8);
  EXPECT_EQ(mixtral.expert_ffn, 14336);
  for (const std::string& name : PresetNames()) EXPECT_TRUE(PresetModel(name)->Validate().ok()) << name;
  EXPECT_NE(PresetModel("gpt-5").status().message().find("unknown model preset 'gpt-5'"), absl::string_view::npos);
}

// The seed models' presets (docs/worker.md cites each value's source).
TEST(ModelTest, NewPresetsCarryThePublishedShapes) {
  struct Want {
    const char* name;
    const char* type;
    int experts, top_k;
    int64_t hidden, ffn, shared;
    int first_layer, last_layer;
    kernels::ScoreFunction score;
    bool bias;
    float scaling;
  };
  using kernels::ScoreFunction;
  for (const Want& w : {Want{"glm-5", "glm_moe_dsa", 256, 8, 6144, 2048, 2048, 3, 77, ScoreFunction::kSigmoid, true, 2.5f},
                        Want{"glm-4.5", "glm4_moe", 160, 8, 5120, 1536, 1536, 3, 91, ScoreFunction::kSigmoid, true, 2.5f},
                        Want{"qwen3.5-397b-a17b", "qwen3_5_moe", 512, 10, 4096, 1024, 1024, 0, 59, ScoreFunction::kSoftmax, false, 1.0f},
                        Want{"minimax-m2", "minimax_m2", 256, 8, 3072, 1536, 0, 0, 61, ScoreFunction::kSigmoid, true, 1.0f},
                        Want{"kimi-k2", "kimi_k2", 384, 8, 7168, 2048, 2048, 1, 60, ScoreFunction::kSigmoid, true, 2.827f},
                        Want{"gpt-oss-120b", "gpt_oss", 128, 4, 2880, 2880, 0, 0, 35, ScoreFunction::kSoftmax, false, 1.0f}}) {
    SCOPED_TRACE(w.name);
    auto m = PresetModel(w.name);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->model_type, w.type);
    EXPECT_EQ(m->num_experts, w.experts);
    EXPECT_EQ(m->top_k, w.top_k);
    EXPECT_EQ(m->hidden, w.hidden);
    EXPECT_EQ(m->expert_ffn, w.ffn);
    EXPECT_EQ(m->shared_ffn, w.shared);
    EXPECT_EQ(m->moe_layers.front(), w.first_layer);
    EXPECT_EQ(m->moe_layers.back(), w.last_layer);
    EXPECT_EQ(m->moe_layers.size(), static_cast<size_t>(w.last_layer - w.first_layer + 1));
    EXPECT_EQ(m->score, w.score);
    EXPECT_EQ(m->router_bias, w.bias);
    EXPECT_FLOAT_EQ(m->routed_scaling_factor, w.scaling);
    EXPECT_TRUE(m->renormalize);
    EXPECT_EQ(m->shared_gate, std::string(w.type) == "qwen3_5_moe");
    EXPECT_EQ(m->activation == kernels::Activation::kGptOssSwiGlu, std::string(w.type) == "gpt_oss");
  }
}

// Configs shaped like the published ones parse to the presets' MoE shapes.
TEST(ModelTest, ParsesTheNewModelTypes) {
  auto same = [](const char* json, const char* preset) {
    SCOPED_TRACE(preset);
    auto parsed = ParseHfConfig(json, "config.json");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    const ModelConfig want = *PresetModel(preset);
    EXPECT_EQ(parsed->model_type, want.model_type);
    EXPECT_EQ(parsed->num_experts, want.num_experts);
    EXPECT_EQ(parsed->top_k, want.top_k);
    EXPECT_EQ(parsed->hidden, want.hidden);
    EXPECT_EQ(parsed->expert_ffn, want.expert_ffn);
    EXPECT_EQ(parsed->shared_ffn, want.shared_ffn);
    EXPECT_EQ(parsed->moe_layers, want.moe_layers);
    EXPECT_EQ(parsed->score, want.score);
    EXPECT_EQ(parsed->router_bias, want.router_bias);
    EXPECT_EQ(parsed->renormalize, want.renormalize);
    EXPECT_EQ(parsed->num_groups, want.num_groups);
    EXPECT_FLOAT_EQ(parsed->routed_scaling_factor, want.routed_scaling_factor);
    EXPECT_EQ(parsed->shared_gate, want.shared_gate);
    EXPECT_EQ(parsed->activation, want.activation);
  };
  same(R"({"model_type": "glm_moe_dsa", "hidden_size": 6144, "num_hidden_layers": 78, "n_routed_experts": 256,
    "num_experts_per_tok": 8, "moe_intermediate_size": 2048, "n_shared_experts": 1, "first_k_dense_replace": 3,
    "n_group": 1, "topk_group": 1, "norm_topk_prob": true, "routed_scaling_factor": 2.5})", "glm-5");
  same(R"({"model_type": "glm4_moe", "hidden_size": 5120, "num_hidden_layers": 92, "n_routed_experts": 160,
    "num_experts_per_tok": 8, "moe_intermediate_size": 1536, "n_shared_experts": 1, "first_k_dense_replace": 3,
    "n_group": 1, "topk_group": 1, "norm_topk_prob": true, "routed_scaling_factor": 2.5})", "glm-4.5");
  same(R"({"model_type": "kimi_k2", "hidden_size": 7168, "num_hidden_layers": 61, "n_routed_experts": 384,
    "num_experts_per_tok": 8, "moe_intermediate_size": 2048, "n_shared_experts": 1, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "scoring_func": "sigmoid", "topk_method": "noaux_tc", "n_group": 1, "topk_group": 1,
    "norm_topk_prob": true, "routed_scaling_factor": 2.827,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}})", "kimi-k2");
  same(R"({"model_type": "qwen3_5_moe", "architectures": ["Qwen3_5MoeForConditionalGeneration"],
    "text_config": {"model_type": "qwen3_5_moe_text", "hidden_size": 4096, "num_hidden_layers": 60, "num_experts": 512,
    "num_experts_per_tok": 10, "moe_intermediate_size": 1024, "shared_expert_intermediate_size": 1024,
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"]}})", "qwen3.5-397b-a17b");
  same(R"({"model_type": "minimax_m2", "hidden_size": 3072, "num_hidden_layers": 62, "num_local_experts": 256,
    "num_experts_per_tok": 8, "intermediate_size": 1536, "scoring_func": "sigmoid", "use_routing_bias": true,
    "shared_intermediate_size": 0, "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}})",
       "minimax-m2");
  same(R"({"model_type": "gpt_oss", "hidden_size": 2880, "num_hidden_layers": 36, "num_local_experts": 128,
    "num_experts_per_tok": 4, "experts_per_token": 4, "intermediate_size": 2880, "swiglu_limit": 7.0})", "gpt-oss-120b");

  auto block = ParseHfConfig(R"({"model_type": "minimax_m2", "hidden_size": 64, "num_hidden_layers": 2,
    "num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 32,
    "quantization_config": {"weight_block_size": [64, 32]}})", "c.json");
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ(block->fp8_block_rows, 64);
  EXPECT_EQ(block->fp8_block_cols, 32);
  auto bad_block = ParseHfConfig(R"({"model_type": "minimax_m2", "hidden_size": 64, "num_hidden_layers": 2,
    "num_local_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 32,
    "quantization_config": {"weight_block_size": [0, 32]}})", "c.json");
  ASSERT_FALSE(bad_block.ok());
  EXPECT_NE(bad_block.status().message().find("weight_block_size"), absl::string_view::npos) << bad_block.status();
}

// An unsupported model_type is named (before any key it lacks), with the supported ones.
TEST(ModelTest, UnsupportedModelTypeIsNamed) {
  for (const char* json : {R"({"model_type": "llama", "hidden_size": 4096})", R"({"model_type": "qwen4_moe"})"}) {
    auto m = ParseHfConfig(json, "dir/config.json");
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(m.status().message());
    EXPECT_NE(message.find("dir/config.json: model_type '"), std::string::npos) << message;
    EXPECT_NE(message.find("qwen3_5_moe"), std::string::npos) << message;
  }
}

TEST(ModelTest, ParsesHuggingFaceConfigs) {
  auto v3 = ParseHfConfig(R"({"model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61,
    "num_experts_per_tok": 8, "n_routed_experts": 256, "moe_intermediate_size": 2048, "n_shared_experts": 1,
    "scoring_func": "sigmoid", "n_group": 8, "topk_group": 4, "topk_method": "noaux_tc", "norm_topk_prob": true,
    "routed_scaling_factor": 2.5, "first_k_dense_replace": 3, "moe_layer_freq": 1})", "v3.json");
  ASSERT_TRUE(v3.ok()) << v3.status();
  const ModelConfig preset = *PresetModel("deepseek-v3");
  EXPECT_EQ(v3->moe_layers, preset.moe_layers);
  EXPECT_EQ(v3->num_groups, 8);
  EXPECT_TRUE(v3->router_bias);
  auto v2 = ParseHfConfig(R"({"model_type": "deepseek_v2", "hidden_size": 5120, "num_hidden_layers": 60,
    "num_experts_per_tok": 6, "n_routed_experts": 160, "moe_intermediate_size": 1536, "n_shared_experts": 2,
    "scoring_func": "softmax", "n_group": 8, "topk_group": 3, "topk_method": "group_limited_greedy",
    "norm_topk_prob": false, "routed_scaling_factor": 16.0, "first_k_dense_replace": 1})", "v2.json");
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->group_score, kernels::GroupScore::kMax);
  EXPECT_EQ(v2->moe_layers.size(), 59u);
  auto qwen = ParseHfConfig(R"({"model_type": "qwen3_moe", "hidden_size": 2048, "num_hidden_layers": 48,
    "num_experts_per_tok": 8, "num_experts": 128, "moe_intermediate_size": 768, "norm_topk_prob": true,
    "decoder_sparse_step": 1, "mlp_only_layers": [0, 5]})", "q.json");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->moe_layers.size(), 46u);
  EXPECT_EQ(qwen->moe_layers.front(), 1);
  auto mixtral = ParseHfConfig(R"({"model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32,
    "num_experts_per_tok": 2, "num_local_experts": 8, "intermediate_size": 14336})", "m.json");
  ASSERT_TRUE(mixtral.ok()) << mixtral.status();
  EXPECT_TRUE(mixtral->renormalize);
  auto nemo = ParseHfConfig(R"({"model_type": "nemotron_h", "hidden_size": 2688, "num_hidden_layers": 6,
    "num_experts_per_tok": 6, "n_routed_experts": 128, "moe_intermediate_size": 1856,
    "moe_shared_expert_intermediate_size": 3712, "mlp_hidden_act": "relu2", "norm_topk_prob": true,
    "routed_scaling_factor": 2.5, "hybrid_override_pattern": "MEM*EE"})", "n.json");
  ASSERT_TRUE(nemo.ok()) << nemo.status();
  EXPECT_EQ(nemo->moe_layers, (std::vector<int>{1, 4, 5}));
  EXPECT_EQ(nemo->shared_ffn, 3712);
}

TEST(ModelTest, BadConfigsNameFileAndKey) {
  struct Case {
    const char* json;
    const char* message;
  };
  for (const Case& c : {Case{"{", "bad.json: not valid JSON"},
                        Case{R"({"model_type": "llama", "hidden_size": 1, "num_hidden_layers": 1, "num_experts_per_tok": 1})",
                             "model_type 'llama' is not a supported MoE model"},
                        Case{R"({"model_type": "mixtral", "num_hidden_layers": 2, "num_experts_per_tok": 2})",
                             "bad.json: $.hidden_size: missing"},
                        Case{R"({"model_type": "mixtral", "hidden_size": "big", "num_hidden_layers": 2, "num_experts_per_tok": 2})",
                             "bad.json: $.hidden_size: expected an integer, got string \"big\""},
                        Case{R"({"model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 2, "num_experts_per_tok": 9,
                                "num_local_experts": 8, "intermediate_size": 32})",
                             "top_k 9 must be in 1..8"}}) {
    auto m = ParseHfConfig(c.json, "bad.json");
    ASSERT_FALSE(m.ok()) << c.json;
    EXPECT_NE(m.status().message().find(c.message), absl::string_view::npos) << m.status().message();
  }
}

// Every integer key is range-checked as 64-bit before it is narrowed: 2^32 + 8 must not
// become 8, and huge in-range values are refused before anything is sized by them.
TEST(ModelTest, IntegersAreRangeCheckedBeforeNarrowing) {
  const std::string v3 = R"({"model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61,
      "num_experts_per_tok": 8, "n_routed_experts": 256, "moe_intermediate_size": 2048, "n_shared_experts": 1,
      "n_group": 8, "topk_group": 4, "first_k_dense_replace": 3, "routed_scaling_factor": 2.5)";
  const std::string qwen = R"({"model_type": "qwen3_moe", "hidden_size": 4096, "num_hidden_layers": 94,
      "num_experts_per_tok": 8, "num_experts": 128, "moe_intermediate_size": 1536)";
  ASSERT_TRUE(ParseHfConfig(v3 + "}", "v3.json").ok());
  ASSERT_TRUE(ParseHfConfig(qwen + "}", "qwen.json").ok());
  const std::string big = "4294967304";  // 2^32 + 8
  // The base config with `key` set to the JSON `value`.
  auto with = [](const std::string& base, const std::string& key, const std::string& value) {
    nlohmann::json j = nlohmann::json::parse(base + "}");
    j[key] = nlohmann::json::parse(value);
    return j.dump();
  };
  struct Case {
    std::string json, message;
  };
  const std::vector<Case> cases = {
      {with(v3, "n_routed_experts", "4294967552"), "$.n_routed_experts: 4294967552 is out of range"},
      {with(v3, "n_routed_experts", "2000000000"), "$.n_routed_experts: 2000000000 is out of range"},
      {with(v3, "num_experts_per_tok", big), "$.num_experts_per_tok: 4294967304 is out of range"},
      {with(v3, "n_group", big), "$.n_group: " + big + " is out of range"},
      {with(v3, "topk_group", big), "$.topk_group: " + big + " is out of range"},
      {with(v3, "topk_group", "9"), "$.topk_group: 9 is out of range"},
      {with(v3, "first_k_dense_replace", big), "$.first_k_dense_replace: " + big + " is out of range"},
      {with(v3, "first_k_dense_replace", "-1"), "$.first_k_dense_replace: -1 is out of range"},
      {with(v3, "routed_scaling_factor", "-2"), "$.routed_scaling_factor: -2 is out of range"},
      {with(v3, "num_hidden_layers", "18446744073709551615"), "$.num_hidden_layers: 18446744073709551615 is out of range"},
      {with(qwen, "mlp_only_layers", "[0, " + big + "]"), "$.mlp_only_layers[1]: " + big + " is out of range"},
      {with(qwen, "mlp_only_layers", "[-3]"), "$.mlp_only_layers[0]: -3 is out of range"},
      {with(qwen, "mlp_only_layers", "[\"3\"]"), "$.mlp_only_layers[0]: expected an integer, got string"},
      {with(qwen, "mlp_only_layers", "3"), "$.mlp_only_layers: expected an array"},
      {with(qwen, "decoder_sparse_step", "0"), "$.decoder_sparse_step: 0 is out of range"},
      {with(qwen, "hidden_size", "1e3"), "$.hidden_size: expected an integer, got number"},
      {qwen + R"(, "hidden_size": 64})", "key \"hidden_size\" appears twice in one object"},
  };
  for (const Case& c : cases) {
    auto m = ParseHfConfig(c.json, "c.json");
    ASSERT_FALSE(m.ok()) << c.json;
    EXPECT_NE(m.status().message().find(c.message), absl::string_view::npos) << m.status().message();
  }
}

TEST(ModelTest, ScaleShrinksOnlyWidths) {
  auto v3 = *ScaleModel(*PresetModel("deepseek-v3"), 0.0625);
  EXPECT_EQ(v3.hidden, 448);
  EXPECT_EQ(v3.expert_ffn, 128);
  EXPECT_EQ(v3.num_experts, 256);
  EXPECT_EQ(v3.top_k, 8);
  EXPECT_EQ(v3.num_groups, 8);
  EXPECT_FALSE(ScaleModel(v3, 0).ok());
  ModelConfig tiny = v3;
  tiny.hidden = 4, tiny.expert_ffn = 8;
  EXPECT_EQ(ScaleModel(tiny, 0.5)->hidden, 4);  // never grows past the model's own size
  EXPECT_EQ(ScaleModel(tiny, 0.5)->expert_ffn, 8);
  EXPECT_FALSE(ScaleModel(v3, 1.5).ok());
}

}  // namespace
}  // namespace switchyard::model
