#include "model/model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/json_reader.h"
#include "common/status.h"

namespace switchyard::model {
namespace {

using kernels::Activation;
using kernels::GroupScore;
using kernels::ScoreFunction;

std::vector<int> Range(int first, int last) {  // [first, last)
  std::vector<int> out;
  for (int i = first; i < last; ++i) out.push_back(i);
  return out;
}

// Layers marked 'E' in a Nemotron-H hybrid_override_pattern.
std::vector<int> PatternLayers(absl::string_view pattern) {
  std::vector<int> out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == 'E') out.push_back(static_cast<int>(i));
  }
  return out;
}

// Nemotron-3-Nano-30B-A3B: 52 layers, 23 Mamba-2 (M), 23 MoE (E), 6 attention (*).
constexpr absl::string_view kNemotron3NanoPattern = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME";

// Typed, range-checked access to config.json's top-level keys (common/json_reader.h): errors
// name the file, the key and the value. Every integer is read as 64-bit and checked against
// its range before it is narrowed.
class Keys {
 public:
  Keys(const Json& j, absl::string_view file, std::string path = "$") : j_(j), rd_(file), path_(std::move(path)) {}
  bool Has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  absl::StatusOr<int64_t> Int(const char* key, int64_t lo, int64_t hi) const { return rd_.IntField(j_, key, path_, lo, hi); }
  absl::StatusOr<int64_t> IntOr(const char* key, int64_t fallback, int64_t lo, int64_t hi) const {
    return rd_.IntFieldOr(j_, key, path_, fallback, lo, hi);
  }
  absl::StatusOr<double> NumberOr(const char* key, double fallback, double lo, double hi) const {
    return rd_.NumberFieldOr(j_, key, path_, fallback, lo, hi);
  }
  absl::StatusOr<bool> BoolOr(const char* key, bool fallback) const { return rd_.BoolFieldOr(j_, key, path_, fallback); }
  absl::StatusOr<std::string> StringOr(const char* key, const std::string& fallback) const {
    return rd_.StringFieldOr(j_, key, path_, fallback);
  }
  absl::StatusOr<const Json*> ArrayOr(const char* key) const { return rd_.ArrayFieldOr(j_, key, path_); }
  const JsonReader& reader() const { return rd_; }
  const std::string& path() const { return path_; }
  absl::Status Error(absl::string_view key, absl::string_view problem) const { return rd_.Error(JsonPath(path_, key), problem); }

 private:
  const Json& j_;
  JsonReader rd_;
  std::string path_;
};

// The quantization_config's FP8 block size (weight_block_size [rows, cols]), when given.
// Other quantisations (AWQ, GPTQ, ...) are refused, naming quant_method; gpt_oss's MXFP4 is read
// by the checkpoint loader.
absl::Status ReadFp8Block(const Json& j, absl::string_view file, ModelConfig& m) {
  if (!j.contains("quantization_config") || j["quantization_config"].is_null()) return absl::OkStatus();
  if (!j["quantization_config"].is_object()) return Keys(j, file).Error("quantization_config", "expected an object");
  const Keys q(j["quantization_config"], file, "$.quantization_config");
  SY_ASSIGN_OR_RETURN(const std::string method, q.StringOr("quant_method", "fp8"));
  if (method != "fp8" && !(method == "mxfp4" && m.model_type == "gpt_oss")) {
    return q.Error("quant_method", absl::StrCat("'", EchoValue(method), "' is not supported (fp8 with block scales, or an "
                                                                        "unquantised checkpoint)"));
  }
  SY_ASSIGN_OR_RETURN(const Json* block, q.ArrayOr("weight_block_size"));
  if (block == nullptr) return absl::OkStatus();
  if (block->size() != 2) return q.Error("weight_block_size", "expected [rows, cols]");
  SY_ASSIGN_OR_RETURN(const int64_t rows, q.reader().Int((*block)[0], JsonPath("$.quantization_config.weight_block_size", 0), 1, kMaxFfn));
  SY_ASSIGN_OR_RETURN(const int64_t cols, q.reader().Int((*block)[1], JsonPath("$.quantization_config.weight_block_size", 1), 1, kMaxFfn));
  m.fp8_block_rows = static_cast<int>(rows);
  m.fp8_block_cols = static_cast<int>(cols);
  return absl::OkStatus();
}

constexpr std::array<absl::string_view, 12> kModelTypes = {
    "deepseek_v2", "deepseek_v3", "kimi_k2", "glm4_moe", "glm_moe_dsa", "qwen2_moe",
    "qwen3_moe",   "qwen3_5_moe", "minimax_m2", "gpt_oss", "mixtral",     "nemotron_h"};

absl::Status UnsupportedType(absl::string_view type, absl::string_view file) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": model_type '", EchoValue(type),
                                                 "' is not a supported MoE model (supported: ", absl::StrJoin(kModelTypes, ", "),
                                                 ")"));
}


}  // namespace

absl::Status ModelConfig::Validate() const {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("model ", name, ": ", what));
  };
  if (num_experts < 1 || num_experts > kMaxExperts) return bad(absl::StrCat("num_experts ", num_experts, " must be in 1..", kMaxExperts));
  if (top_k < 1 || top_k > std::min<int64_t>(num_experts, kMaxTopK)) {
    return bad(absl::StrCat("top_k ", top_k, " must be in 1..", std::min<int64_t>(num_experts, kMaxTopK)));
  }
  if (hidden < 1 || hidden > kMaxHidden) return bad(absl::StrCat("hidden size ", hidden, " must be in 1..", kMaxHidden));
  if (expert_ffn < 1 || expert_ffn > kMaxFfn) return bad(absl::StrCat("expert FFN size ", expert_ffn, " must be in 1..", kMaxFfn));
  if (shared_ffn < 0 || shared_ffn > kMaxFfn) return bad(absl::StrCat("shared FFN size ", shared_ffn, " must be in 0..", kMaxFfn));
  if (moe_layers.empty()) return bad("no MoE layers");
  if (moe_layers.front() < 0 || moe_layers.back() >= kMaxLayers) return bad(absl::StrCat("MoE layer ids must be in 0..", kMaxLayers - 1));
  for (size_t i = 1; i < moe_layers.size(); ++i) {
    if (moe_layers[i] <= moe_layers[i - 1]) return bad("MoE layer ids must ascend");
  }
  return Gating(nullptr).Validate();
}

kernels::FfnShape ModelConfig::ExpertShape() const { return {hidden, expert_ffn, activation, weights}; }
kernels::FfnShape ModelConfig::SharedShape() const { return {hidden, shared_ffn, activation, weights}; }

kernels::GatingConfig ModelConfig::Gating(const float* bias) const {
  kernels::GatingConfig g{num_experts, top_k, score, renormalize, num_groups, top_groups,
                          routed_scaling_factor, router_bias ? bias : nullptr};
  g.group_score = group_score;
  return g;
}

std::vector<std::string> PresetNames() {
  return {"deepseek-v3", "deepseek-v2", "kimi-k2", "glm-5", "glm-4.5", "qwen3.5-397b-a17b", "qwen3-235b-a22b",
          "qwen3-30b-a3b", "minimax-m2", "gpt-oss-120b", "nemotron-3-nano-30b-a3b", "nemotron-cascade-2-30b-a3b",
          "mixtral-8x7b"};
}

// Values from the models' published config.json files.
absl::StatusOr<ModelConfig> PresetModel(absl::string_view name) {
  ModelConfig m;
  m.name = std::string(name);
  if (name == "deepseek-v3") {  // deepseek-ai/DeepSeek-V3
    m.model_type = "deepseek_v3";
    m.num_experts = 256, m.top_k = 8, m.hidden = 7168, m.expert_ffn = 2048, m.shared_ffn = 2048;
    m.score = ScoreFunction::kSigmoid, m.renormalize = true, m.num_groups = 8, m.top_groups = 4;
    m.routed_scaling_factor = 2.5f, m.router_bias = true;
    m.moe_layers = Range(3, 61);  // 61 layers, first_k_dense_replace 3
  } else if (name == "kimi-k2") {  // moonshotai/Kimi-K2-Instruct (DeepSeek-V3 architecture, 384 experts)
    m.model_type = "kimi_k2";
    m.num_experts = 384, m.top_k = 8, m.hidden = 7168, m.expert_ffn = 2048, m.shared_ffn = 2048;
    m.score = ScoreFunction::kSigmoid, m.renormalize = true;  // n_group 1, topk_group 1
    m.routed_scaling_factor = 2.827f, m.router_bias = true;
    m.moe_layers = Range(1, 61);  // 61 layers, first_k_dense_replace 1
  } else if (name == "glm-5") {  // zai-org/GLM-5 (glm_moe_dsa)
    m.model_type = "glm_moe_dsa";
    m.num_experts = 256, m.top_k = 8, m.hidden = 6144, m.expert_ffn = 2048, m.shared_ffn = 2048;
    m.score = ScoreFunction::kSigmoid, m.renormalize = true, m.routed_scaling_factor = 2.5f, m.router_bias = true;
    m.moe_layers = Range(3, 78);  // 78 layers, first_k_dense_replace 3
  } else if (name == "glm-4.5") {  // zai-org/GLM-4.5 (glm4_moe)
    m.model_type = "glm4_moe";
    m.num_experts = 160, m.top_k = 8, m.hidden = 5120, m.expert_ffn = 1536, m.shared_ffn = 1536;
    m.score = ScoreFunction::kSigmoid, m.renormalize = true, m.routed_scaling_factor = 2.5f, m.router_bias = true;
    m.moe_layers = Range(3, 92);  // 92 layers, first_k_dense_replace 3
  } else if (name == "qwen3.5-397b-a17b") {  // Qwen/Qwen3.5-397B-A17B (qwen3_5_moe, text_config)
    m.model_type = "qwen3_5_moe";
    m.num_experts = 512, m.top_k = 10, m.hidden = 4096, m.expert_ffn = 1024, m.shared_ffn = 1024;
    m.renormalize = true, m.shared_gate = true;
    m.moe_layers = Range(0, 60);  // every layer's FFN is MoE (attention alternates, not ours)
  } else if (name == "minimax-m2") {  // MiniMaxAI/MiniMax-M2
    m.model_type = "minimax_m2";
    m.num_experts = 256, m.top_k = 8, m.hidden = 3072, m.expert_ffn = 1536;
    m.score = ScoreFunction::kSigmoid, m.renormalize = true, m.router_bias = true;
    m.moe_layers = Range(0, 62);
  } else if (name == "gpt-oss-120b") {  // openai/gpt-oss-120b
    m.model_type = "gpt_oss";
    m.num_experts = 128, m.top_k = 4, m.hidden = 2880, m.expert_ffn = 2880;
    m.renormalize = true;  // softmax over the top-k logits
    m.activation = Activation::kGptOssSwiGlu;  // clamped at swiglu_limit 7, alpha 1.702, expert biases
    m.moe_layers = Range(0, 36);
  } else if (name == "deepseek-v2") {  // deepseek-ai/DeepSeek-V2
    m.model_type = "deepseek_v2";
    m.num_experts = 160, m.top_k = 6, m.hidden = 5120, m.expert_ffn = 1536, m.shared_ffn = 2 * 1536;
    m.score = ScoreFunction::kSoftmax, m.group_score = GroupScore::kMax, m.renormalize = false;
    m.num_groups = 8, m.top_groups = 3, m.routed_scaling_factor = 16.0f;
    m.moe_layers = Range(1, 60);  // 60 layers, first_k_dense_replace 1
  } else if (name == "qwen3-235b-a22b") {  // Qwen/Qwen3-235B-A22B
    m.model_type = "qwen3_moe";
    m.num_experts = 128, m.top_k = 8, m.hidden = 4096, m.expert_ffn = 1536;
    m.renormalize = true;
    m.moe_layers = Range(0, 94);
  } else if (name == "qwen3-30b-a3b") {  // Qwen/Qwen3-30B-A3B
    m.model_type = "qwen3_moe";
    m.num_experts = 128, m.top_k = 8, m.hidden = 2048, m.expert_ffn = 768;
    m.renormalize = true;
    m.moe_layers = Range(0, 48);
  } else if (name == "nemotron-3-nano-30b-a3b" || name == "nemotron-cascade-2-30b-a3b") {
    // nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B (Nemotron-Cascade-2-30B-A3B shares it)
    m.model_type = "nemotron_h";
    m.num_experts = 128, m.top_k = 6, m.hidden = 2688, m.expert_ffn = 1856, m.shared_ffn = 3712;
    m.activation = Activation::kReluSquared;
    m.score = ScoreFunction::kSigmoid, m.renormalize = true, m.routed_scaling_factor = 2.5f;
    m.router_bias = true;
    m.moe_layers = PatternLayers(kNemotron3NanoPattern);
  } else if (name == "mixtral-8x7b") {  // mistralai/Mixtral-8x7B-v0.1
    m.model_type = "mixtral";
    m.num_experts = 8, m.top_k = 2, m.hidden = 4096, m.expert_ffn = 14336;
    m.renormalize = true;
    m.moe_layers = Range(0, 32);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown model preset '", EchoValue(name), "' (choose one of: ",
                                                   absl::StrJoin(PresetNames(), ", "), ")"));
  }
  return m;
}

absl::StatusOr<ModelConfig> ParseHfConfig(absl::string_view text, absl::string_view file) {
  SY_ASSIGN_OR_RETURN(const Json top, ParseJson(text, file));
  if (!top.is_object()) return absl::InvalidArgumentError(absl::StrCat(file, ": expected a JSON object"));
  ModelConfig m;
  m.name = std::string(file);
  SY_ASSIGN_OR_RETURN(m.model_type, Keys(top, file).StringOr("model_type", ""));
  const std::string& type = m.model_type;
  if (std::find(kModelTypes.begin(), kModelTypes.end(), type) == kModelTypes.end()) return UnsupportedType(type, file);
  SY_RETURN_IF_ERROR(ReadFp8Block(top, file, m));
  // Multimodal configs (Qwen3.5) keep the language model's keys under text_config.
  const bool nested = type == "qwen3_5_moe" && top.contains("text_config");
  if (nested && !top["text_config"].is_object()) return Keys(top, file).Error("text_config", "expected an object");
  const Json& j = nested ? top["text_config"] : top;
  const Keys k(j, file, nested ? "$.text_config" : "$");
  SY_ASSIGN_OR_RETURN(m.hidden, k.Int("hidden_size", 1, kMaxHidden));
  SY_ASSIGN_OR_RETURN(const int64_t layers, k.Int("num_hidden_layers", 1, kMaxLayers));
  SY_ASSIGN_OR_RETURN(const int64_t top_k, k.Int("num_experts_per_tok", 1, kMaxTopK));
  m.top_k = static_cast<int>(top_k);
  SY_ASSIGN_OR_RETURN(m.renormalize, k.BoolOr("norm_topk_prob", false));
  // Group-limited routing (DeepSeek, Nemotron): n_group groups, the best topk_group of them.
  auto read_groups = [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(const int64_t groups, k.IntOr("n_group", 1, 1, m.num_experts));
    SY_ASSIGN_OR_RETURN(const int64_t top_groups, k.IntOr("topk_group", 1, 1, groups));
    m.num_groups = static_cast<int>(groups);
    m.top_groups = static_cast<int>(top_groups);
    SY_ASSIGN_OR_RETURN(const double scaling, k.NumberOr("routed_scaling_factor", 1.0, 1e-6, 1e6));
    m.routed_scaling_factor = static_cast<float>(scaling);
    return absl::OkStatus();
  };
  // DeepSeek-V3's architecture: DeepSeek-V3/V3.2, Kimi K2, GLM-4.5 (glm4_moe), GLM-5 (glm_moe_dsa).
  const bool v3_family = type == "deepseek_v3" || type == "kimi_k2" || type == "glm4_moe" || type == "glm_moe_dsa";
  if (v3_family || type == "deepseek_v2") {
    SY_ASSIGN_OR_RETURN(m.num_experts, k.Int("n_routed_experts", 1, kMaxExperts));
    SY_ASSIGN_OR_RETURN(m.expert_ffn, k.Int("moe_intermediate_size", 1, kMaxFfn));
    SY_ASSIGN_OR_RETURN(const int64_t shared, k.IntOr("n_shared_experts", 0, 0, kMaxFfn / m.expert_ffn));
    m.shared_ffn = shared * m.expert_ffn;
    SY_ASSIGN_OR_RETURN(const std::string scoring, k.StringOr("scoring_func", v3_family ? "sigmoid" : "softmax"));
    if (scoring != "softmax" && scoring != "sigmoid") {
      return k.Error("scoring_func", absl::StrCat("expected softmax or sigmoid, got '", EchoValue(scoring), "'"));
    }
    m.score = scoring == "sigmoid" ? ScoreFunction::kSigmoid : ScoreFunction::kSoftmax;
    SY_RETURN_IF_ERROR(read_groups());
    SY_ASSIGN_OR_RETURN(const std::string method, k.StringOr("topk_method", v3_family ? "noaux_tc" : "greedy"));
    if (method != "greedy" && method != "group_limited_greedy" && method != "noaux_tc") {
      return k.Error("topk_method", absl::StrCat("expected greedy, group_limited_greedy or noaux_tc, got '", EchoValue(method), "'"));
    }
    m.group_score = method == "group_limited_greedy" ? GroupScore::kMax : GroupScore::kTopTwoSum;
    if (method == "greedy") m.num_groups = m.top_groups = 1;  // no group limit
    m.router_bias = method == "noaux_tc";
    SY_ASSIGN_OR_RETURN(const int64_t dense, k.IntOr("first_k_dense_replace", 0, 0, layers));
    SY_ASSIGN_OR_RETURN(const int64_t freq, k.IntOr("moe_layer_freq", 1, 1, layers));
    for (int64_t l = dense; l < layers; ++l) {
      if (l % freq == 0) m.moe_layers.push_back(static_cast<int>(l));
    }
  } else if (type == "qwen3_moe" || type == "qwen2_moe" || type == "qwen3_5_moe") {
    SY_ASSIGN_OR_RETURN(m.num_experts, k.Int("num_experts", 1, kMaxExperts));
    SY_ASSIGN_OR_RETURN(m.expert_ffn, k.Int("moe_intermediate_size", 1, kMaxFfn));
    SY_ASSIGN_OR_RETURN(m.shared_ffn, k.IntOr("shared_expert_intermediate_size", 0, 0, kMaxFfn));
    m.shared_gate = m.shared_ffn > 0;  // Qwen's shared expert has a sigmoid gate (shared_expert_gate)
    if (type == "qwen3_5_moe") {  // its router always renormalises the top-k
      SY_ASSIGN_OR_RETURN(m.renormalize, k.BoolOr("norm_topk_prob", true));
    }
    SY_ASSIGN_OR_RETURN(const int64_t step, k.IntOr("decoder_sparse_step", 1, 1, layers));
    std::vector<int64_t> mlp_only;
    SY_ASSIGN_OR_RETURN(const Json* listed, k.ArrayOr("mlp_only_layers"));
    if (listed != nullptr) {
      for (size_t i = 0; i < listed->size(); ++i) {
        SY_ASSIGN_OR_RETURN(mlp_only.emplace_back(), k.reader().Int((*listed)[i], JsonPath("$.mlp_only_layers", i), 0, layers - 1));
      }
    }
    for (int64_t l = 0; l < layers; ++l) {
      if ((l + 1) % step == 0 && std::find(mlp_only.begin(), mlp_only.end(), l) == mlp_only.end()) {
        m.moe_layers.push_back(static_cast<int>(l));
      }
    }
  } else if (type == "minimax_m2") {
    SY_ASSIGN_OR_RETURN(m.num_experts, k.Int("num_local_experts", 1, kMaxExperts));
    SY_ASSIGN_OR_RETURN(m.expert_ffn, k.Int("intermediate_size", 1, kMaxFfn));
    SY_ASSIGN_OR_RETURN(const int64_t shared, k.IntOr("shared_intermediate_size", 0, 0, kMaxFfn));
    if (shared > 0) return k.Error("shared_intermediate_size", "shared experts are not supported for minimax_m2 (MiniMax M2 has none)");
    SY_ASSIGN_OR_RETURN(const std::string scoring, k.StringOr("scoring_func", "sigmoid"));
    if (scoring != "softmax" && scoring != "sigmoid") {
      return k.Error("scoring_func", absl::StrCat("expected softmax or sigmoid, got '", EchoValue(scoring), "'"));
    }
    m.score = scoring == "sigmoid" ? ScoreFunction::kSigmoid : ScoreFunction::kSoftmax;
    SY_ASSIGN_OR_RETURN(m.router_bias, k.BoolOr("use_routing_bias", true));
    SY_ASSIGN_OR_RETURN(const double scaling, k.NumberOr("routed_scaling_factor", 1.0, 1e-6, 1e6));
    m.routed_scaling_factor = static_cast<float>(scaling);
    m.renormalize = true;
    m.moe_layers = Range(0, static_cast<int>(layers));
  } else if (type == "gpt_oss") {
    SY_ASSIGN_OR_RETURN(m.num_experts, k.Int("num_local_experts", 1, kMaxExperts));
    SY_ASSIGN_OR_RETURN(m.expert_ffn, k.Int("intermediate_size", 1, kMaxFfn));
    m.renormalize = true;  // softmax over the top-k logits
    m.activation = Activation::kGptOssSwiGlu;
    SY_ASSIGN_OR_RETURN(const double limit, k.NumberOr("swiglu_limit", kernels::kGptOssSwiGluLimit, -1e9, 1e9));
    if (limit != kernels::kGptOssSwiGluLimit) {
      return k.Error("swiglu_limit", absl::StrCat(limit, " is not supported (gpt-oss's experts clamp at ", kernels::kGptOssSwiGluLimit, ")"));
    }
    m.moe_layers = Range(0, static_cast<int>(layers));
  } else if (type == "mixtral") {
    SY_ASSIGN_OR_RETURN(m.num_experts, k.Int("num_local_experts", 1, kMaxExperts));
    SY_ASSIGN_OR_RETURN(m.expert_ffn, k.Int("intermediate_size", 1, kMaxFfn));
    m.renormalize = true;  // softmax over the top-k logits
    m.moe_layers = Range(0, static_cast<int>(layers));
  } else if (type == "nemotron_h") {
    SY_ASSIGN_OR_RETURN(m.num_experts, k.Int("n_routed_experts", 1, kMaxExperts));
    SY_ASSIGN_OR_RETURN(m.expert_ffn, k.Int("moe_intermediate_size", 1, kMaxFfn));
    SY_ASSIGN_OR_RETURN(m.shared_ffn, k.IntOr("moe_shared_expert_intermediate_size", 0, 0, kMaxFfn));
    SY_ASSIGN_OR_RETURN(const std::string act, k.StringOr("mlp_hidden_act", "relu2"));
    if (act != "relu2") return k.Error("mlp_hidden_act", "only relu2 experts are supported for nemotron_h");
    m.activation = Activation::kReluSquared;
    m.score = ScoreFunction::kSigmoid;
    m.router_bias = true;
    SY_RETURN_IF_ERROR(read_groups());
    SY_ASSIGN_OR_RETURN(const std::string pattern, k.StringOr("hybrid_override_pattern", ""));
    if (pattern.empty()) return k.Error("hybrid_override_pattern", "missing (it says which layers are MoE)");
    if (static_cast<int64_t>(pattern.size()) != layers) {
      return k.Error("hybrid_override_pattern", absl::StrCat("has ", pattern.size(), " layers, num_hidden_layers is ", layers));
    }
    if (pattern.find_first_not_of("ME*-") != std::string::npos) {
      return k.Error("hybrid_override_pattern", absl::StrCat("'", EchoValue(pattern), "': expected only M, E, * and -"));
    }
    m.moe_layers = PatternLayers(pattern);
  } else {
    return UnsupportedType(type, file);
  }
  // Validate names the model, which is the file here: "FILE: model FILE: ..." would say it twice.
  if (absl::Status valid = m.Validate(); !valid.ok()) {
    std::string message(valid.message());
    if (const std::string prefix = absl::StrCat("model ", m.name, ": "); absl::StartsWith(message, prefix)) {
      message = message.substr(prefix.size());
    }
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", message));
  }
  return m;
}

absl::StatusOr<ModelConfig> LoadModel(const std::string& spec) {
  if (absl::StartsWith(spec, "preset:")) return PresetModel(spec.substr(7));
  std::string path = spec;
  if (std::filesystem::is_directory(path)) path += "/config.json";
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParseHfConfig(text, path);
}

absl::StatusOr<ModelConfig> ScaleModel(const ModelConfig& model, double scale) {
  if (!(scale > 0 && scale <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--scale ", scale, ": must be in (0, 1]"));
  }
  if (scale == 1) return model;
  auto shrink = [&](int64_t x) {
    return x == 0 ? 0 : std::min<int64_t>(x, std::max<int64_t>(16, std::llround(x * scale / 16) * 16));  // never grows
  };
  ModelConfig m = model;
  m.hidden = shrink(model.hidden);
  m.expert_ffn = shrink(model.expert_ffn);
  m.shared_ffn = shrink(model.shared_ffn);
  m.name = absl::StrCat(model.name, " x", scale);
  return m;
}

}  // namespace switchyard::model
