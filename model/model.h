// The MoE shape of a model: experts, router, expert FFN, shared experts, which layers are MoE.
// From a Hugging Face config.json (the path users take) or a preset with the published values.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/ffn.h"
#include "kernels/gating.h"
#include "placement/placement.h"

namespace switchyard::model {

// Ranges a model shape must lie in (config.json values outside are refused before anything
// is allocated from them): beyond every published MoE model, small enough that the arrays
// sized by them fit in memory.
inline constexpr int64_t kMaxExperts = placement::kMaxExperts;  // routed experts per layer
inline constexpr int64_t kMaxTopK = 1 << 10;
inline constexpr int64_t kMaxLayers = 1 << 12;    // num_hidden_layers
inline constexpr int64_t kMaxHidden = 1 << 17;
inline constexpr int64_t kMaxFfn = 1 << 20;       // one expert's (or all shared experts') intermediate size

struct ModelConfig {
  std::string name;
  std::string model_type;             // Hugging Face model_type
  int num_experts = 0;                // routed experts per MoE layer
  int top_k = 0;
  int64_t hidden = 0;
  int64_t expert_ffn = 0;             // one routed expert's intermediate size
  int64_t shared_ffn = 0;             // all shared experts together (0: none)
  kernels::Activation activation = kernels::Activation::kSwiGlu;
  kernels::ScoreFunction score = kernels::ScoreFunction::kSoftmax;
  kernels::GroupScore group_score = kernels::GroupScore::kTopTwoSum;
  bool renormalize = false;
  int num_groups = 1;
  int top_groups = 1;
  float routed_scaling_factor = 1.0f;
  bool router_bias = false;           // e_score_correction_bias (selection-only)
  // The shared experts' output is scaled per token by sigmoid(hidden . shared_expert_gate)
  // (Qwen2-MoE, Qwen3.5-MoE); otherwise it is added as is.
  bool shared_gate = false;
  std::vector<int> moe_layers;        // model layer ids that are MoE, ascending
  kernels::WeightType weights = kernels::WeightType::kF32;
  // FP8 checkpoints: the block of weights one weight_scale_inv entry covers
  // (quantization_config.weight_block_size; DeepSeek-V3, MiniMax M2: 128 x 128).
  int fp8_block_rows = 128, fp8_block_cols = 128;

  // InvalidArgument naming the field (e.g. top_k > experts, groups not dividing experts).
  absl::Status Validate() const;
  kernels::FfnShape ExpertShape() const;
  kernels::FfnShape SharedShape() const;  // valid only when shared_ffn > 0
  // The router; `bias` ([num_experts]) is used when router_bias.
  kernels::GatingConfig Gating(const float* bias) const;
};

// "deepseek-v3", "deepseek-v2", "kimi-k2", "glm-5", "glm-4.5", "qwen3.5-397b-a17b",
// "qwen3-235b-a22b", "qwen3-30b-a3b", "minimax-m2", "gpt-oss-120b", "nemotron-3-nano-30b-a3b"
// (alias "nemotron-cascade-2-30b-a3b"), "mixtral-8x7b". Sources: docs/worker.md.
absl::StatusOr<ModelConfig> PresetModel(absl::string_view name);
std::vector<std::string> PresetNames();

// A Hugging Face config.json (model_type deepseek_v2, deepseek_v3, kimi_k2, glm4_moe,
// glm_moe_dsa, qwen2_moe, qwen3_moe, qwen3_5_moe (its text_config), minimax_m2, gpt_oss,
// mixtral, nemotron_h). Errors name the file and the missing or bad key; an unsupported
// model_type names it and the supported ones.
absl::StatusOr<ModelConfig> ParseHfConfig(absl::string_view json, absl::string_view file);

// "preset:NAME", or a path to config.json (or to the directory holding it).
absl::StatusOr<ModelConfig> LoadModel(const std::string& spec);

// hidden and FFN sizes times `scale` (rounded to multiples of 16, at least 16); experts,
// top-k and groups unchanged. InvalidArgument unless 0 < scale <= 1.
absl::StatusOr<ModelConfig> ScaleModel(const ModelConfig& model, double scale);

}  // namespace switchyard::model
