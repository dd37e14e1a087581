#include "worker/weights.h"

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "common/status.h"
#include "kernels/types.h"
#include "worker/safetensors.h"

namespace switchyard::worker {
namespace {

// n values uniform in [-a, a], a = sqrt(3 / fan_in) (variance 1 / fan_in).
void Fill(std::vector<float>& out, size_t n, int64_t fan_in, uint64_t stream) {
  out.resize(n);
  const float a = std::sqrt(3.0f / static_cast<float>(fan_in));
  for (size_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(SplitMix64(stream + i * kGoldenGamma) >> 11) * 0x1.0p-53;
    out[i] = static_cast<float>((2 * u - 1) * a);
  }
}

class Seeded : public WeightSource {
 public:
  Seeded(const model::ModelConfig& model, uint64_t seed) : model_(model), seed_(seed) {}

  absl::Status PackExpert(int layer_id, int expert, void* packed) override {
    return Pack(model_.ExpertShape(), Stream(layer_id, expert), packed);
  }
  absl::Status PackShared(int layer_id, void* packed) override {
    return Pack(model_.SharedShape(), Stream(layer_id, -1), packed);
  }
  absl::Status RouterBias(int, float* bias) override {
    std::fill(bias, bias + model_.num_experts, 0.0f);
    return absl::OkStatus();
  }
  absl::Status SharedGate(int layer_id, float* gate) override {
    Fill(gate_, static_cast<size_t>(model_.hidden), model_.hidden, Stream(layer_id, -2));
    std::copy(gate_.begin(), gate_.end(), gate);
    return absl::OkStatus();
  }

 private:
  uint64_t Stream(int layer, int expert) const {
    const uint64_t s = seed_ * 0x100000001b3ULL + static_cast<uint64_t>(layer) * 0x9e3779b1ULL +
                 static_cast<uint64_t>(expert + 1) * 0x85ebca6bULL;
    return SplitMix64(s);
  }
  absl::Status Pack(const kernels::FfnShape& shape, uint64_t stream, void* packed) {
    const size_t fh = static_cast<size_t>(shape.ffn * shape.hidden);
    Fill(gate_, fh, shape.hidden, stream + 1);
    Fill(up_, fh, shape.hidden, stream + 2);
    Fill(down_, fh, shape.ffn, stream + 3);
    if (shape.activation != kernels::Activation::kGptOssSwiGlu) {
      return kernels::PackExpert(shape, gate_.data(), up_.data(), down_.data(), packed);
    }
    Fill(gate_bias_, static_cast<size_t>(shape.ffn), 1, stream + 4);  // uniform in [-sqrt(3), sqrt(3)]
    Fill(up_bias_, static_cast<size_t>(shape.ffn), 1, stream + 5);
    Fill(down_bias_, static_cast<size_t>(shape.hidden), 1, stream + 6);
    const kernels::ExpertBiases biases{gate_bias_.data(), up_bias_.data(), down_bias_.data()};
    return kernels::PackExpert(shape, gate_.data(), up_.data(), down_.data(), packed, &biases);
  }

  model::ModelConfig model_;
  uint64_t seed_;
  std::vector<float> gate_, up_, down_, gate_bias_, up_bias_, down_bias_;
};

// Hugging Face tensor names of one expert (gate empty for ReLU^2 experts).
struct ExpertNames {
  std::string gate, up, down;
};

// float8 e4m3fn (sign, 4 exponent bits with bias 7, 3 mantissa bits; 0x7f/0xff NaN, no
// infinities) -> float, exactly.
float E4m3ToFloat(uint8_t code) {
  const int exp = (code >> 3) & 0xf, mant = code & 0x7;
  float v;
  if ((code & 0x7f) == 0x7f) {
    v = NAN;
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant / 8 * 2^-6
  } else {
    v = std::ldexp(static_cast<float>(8 + mant), exp - 10);  // (1 + mant / 8) * 2^(exp - 7)
  }
  return (code & 0x80) ? -v : v;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string out;
  for (int64_t d : shape) absl::StrAppend(&out, out.empty() ? "" : ", ", d);
  return absl::StrCat("[", out, "]");
}

class FromCheckpoint : public WeightSource {
 public:
  FromCheckpoint(const model::ModelConfig& model, std::unique_ptr<Checkpoint> ckpt) : model_(model), ckpt_(std::move(ckpt)) {}

  absl::Status PackExpert(int layer_id, int expert, void* packed) override {
    const kernels::FfnShape shape = model_.ExpertShape();
    if (model_.model_type == "gpt_oss") return PackGptOss(shape, layer_id, expert, packed);
    const ExpertNames names = Routed(layer_id, expert);
    if (model_.model_type == "qwen3_5_moe" && !ckpt_->Tensor(names.up).ok()) {
      return PackFused(shape, layer_id, expert, packed);  // experts.gate_up_proj / experts.down_proj
    }
    return Pack(shape, names, packed);
  }
  absl::Status PackShared(int layer_id, void* packed) override {
    return Pack(model_.SharedShape(), Shared(layer_id), packed);
  }
  absl::Status RouterBias(int layer_id, float* bias) override {
    // MiniMax M2 keeps it on the MoE block, the DeepSeek-V3 family on the gate.
    const std::string name =
        Prefix(layer_id) + (model_.model_type == "minimax_m2" ? "e_score_correction_bias" : "gate.e_score_correction_bias");
    SY_ASSIGN_OR_RETURN(const TensorView t, ckpt_->Tensor(name));
    if (t.shape.size() != 1 || t.shape[0] != model_.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeText(t.shape), ", expected [", model_.num_experts, "]"));
    }
    return ToFloat(t, name, bias);
  }
  absl::Status SharedGate(int layer_id, float* gate) override {
    const std::string name = Prefix(layer_id) + "shared_expert_gate.weight";
    SY_ASSIGN_OR_RETURN(const TensorView t, ckpt_->Tensor(name));
    const bool ok = (t.shape.size() == 2 && t.shape[0] == 1 && t.shape[1] == model_.hidden) ||
                    (t.shape.size() == 1 && t.shape[0] == model_.hidden);
    if (!ok) return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeText(t.shape), ", expected [1, ", model_.hidden, "]"));
    return ToFloat(t, name, gate);
  }

 private:
  // The module holding a layer's experts.
  std::string Prefix(int layer) const {
    const std::string& t = model_.model_type;
    if (t == "mixtral" || t == "minimax_m2") return absl::StrCat("model.layers.", layer, ".block_sparse_moe.");
    if (t == "nemotron_h") return absl::StrCat("backbone.layers.", layer, ".mixer.");
    if (t == "qwen3_5_moe") {  // the multimodal checkpoint's language model, or a text-only export
      const std::string multimodal = absl::StrCat("model.language_model.layers.", layer, ".mlp.");
      for (const char* probe : {"experts.gate_up_proj", "experts.0.up_proj.weight", "shared_expert.up_proj.weight", "gate.weight"}) {
        if (ckpt_->Tensor(multimodal + probe).ok()) return multimodal;
      }
    }
    return absl::StrCat("model.layers.", layer, ".mlp.");
  }
  ExpertNames Routed(int layer, int e) const {
    const std::string p = absl::StrCat(Prefix(layer), "experts.", e, ".");
    const std::string& t = model_.model_type;
    if (t == "mixtral" || t == "minimax_m2") return {p + "w1.weight", p + "w3.weight", p + "w2.weight"};
    if (t == "nemotron_h") return {"", p + "up_proj.weight", p + "down_proj.weight"};
    return {p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"};
  }
  ExpertNames Shared(int layer) const {
    const std::string& t = model_.model_type;
    const bool single = t == "qwen2_moe" || t == "qwen3_5_moe";
    const std::string p = Prefix(layer) + (single ? "shared_expert." : "shared_experts.");
    if (t == "nemotron_h") return {"", p + "up_proj.weight", p + "down_proj.weight"};
    return {p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"};
  }

  // fp32 copy of n elements of a tensor (F32, BF16 or F16) starting at element `first`.
  static absl::Status ToFloat(const TensorView& t, const std::string& name, float* out, size_t first = 0,
                              size_t n = SIZE_MAX) {
    if (n == SIZE_MAX) {
      n = 1;
      for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    }
    if (t.dtype == "F32") {
      std::memcpy(out, t.data + 4 * first, n * 4);
    } else if (t.dtype == "BF16") {
      for (size_t i = 0; i < n; ++i) {
        kernels::bf16 h;
        std::memcpy(&h, t.data + 2 * (first + i), 2);
        out[i] = kernels::Bf16ToFloat(h);
      }
    } else if (t.dtype == "F16") {
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * (first + i), 2);
        const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
        float f;
        if (exp == 0) {
          f = std::ldexp(static_cast<float>(mant), -24);
        } else if (exp == 31) {
          f = mant ? NAN : INFINITY;
        } else {
          f = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
        }
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        bits |= sign;
        std::memcpy(&out[i], &bits, 4);
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": dtype ", t.dtype, " is not supported here (F32, BF16 or F16; F8_E4M3 only as a 2-D weight with its weight_scale_inv)"));
    }
    return CheckFinite(name, out, n);
  }

  // A NaN or infinity in a weight would poison every token routed to it, silently.
  static absl::Status CheckFinite(const std::string& name, const float* x, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(x[i])) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": element ", i, " is ", x[i], " (weights must be finite)"));
      }
    }
    return absl::OkStatus();
  }

  // FP8 [rows, cols] with its block scales `name`_scale_inv [ceil(rows / br), ceil(cols / bc)]:
  // out = bf16(e4m3 x scale), widened.
  absl::Status DequantFp8(const TensorView& t, const std::string& name, int64_t rows, int64_t cols, float* out) {
    const std::string scale_name = name + "_scale_inv";
    auto scales = ckpt_->Tensor(scale_name);
    if (!scales.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": an F8_E4M3 weight needs its block scales ", scale_name, " (",
                                                     scales.status().message(), ")"));
    }
    const int64_t br = model_.fp8_block_rows, bc = model_.fp8_block_cols;
    const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    if (scales->shape != std::vector<int64_t>{sr, sc}) {
      return absl::InvalidArgumentError(absl::StrCat(scale_name, ": shape ", ShapeText(scales->shape), ", expected [", sr, ", ", sc,
                                                     "] (", br, " x ", bc, " blocks of ", name, " ", ShapeText(t.shape), ")"));
    }
    scale_.resize(static_cast<size_t>(sr * sc));
    SY_RETURN_IF_ERROR(ToFloat(*scales, scale_name, scale_.data()));
    for (size_t i = 0; i < scale_.size(); ++i) {
      if (!(scale_[i] > 0)) {
        return absl::InvalidArgumentError(absl::StrCat(scale_name, ": block ", i, " has scale ", scale_[i], " (block scales must be > 0)"));
      }
    }
    static const std::array<float, 256> kE4m3 = [] {
      std::array<float, 256> table{};
      for (int c = 0; c < 256; ++c) table[c] = E4m3ToFloat(static_cast<uint8_t>(c));
      return table;
    }();
    const auto* codes = reinterpret_cast<const uint8_t*>(t.data);
    for (int64_t r = 0; r < rows; ++r) {
      const float* srow = &scale_[(r / br) * sc];
      for (int64_t c = 0; c < cols; ++c) {
        const float v = kE4m3[codes[r * cols + c]] * srow[c / bc];
        out[r * cols + c] = kernels::Bf16ToFloat(kernels::FloatToBf16(v));
      }
    }
    return CheckFinite(name, out, static_cast<size_t>(rows * cols));
  }

  absl::Status Matrix(const std::string& name, int64_t rows, int64_t cols, std::vector<float>& out) {
    SY_ASSIGN_OR_RETURN(const TensorView t, ckpt_->Tensor(name));
    if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeText(t.shape), ", the model needs [", rows, ", ", cols, "]"));
    }
    out.resize(static_cast<size_t>(rows * cols));
    if (t.dtype == "F8_E4M3") return DequantFp8(t, name, rows, cols, out.data());
    return ToFloat(t, name, out.data());
  }

  absl::Status Pack(const kernels::FfnShape& shape, const ExpertNames& names, void* packed) {
    const bool gated = kernels::IsGated(shape.activation);
    if (gated) SY_RETURN_IF_ERROR(Matrix(names.gate, shape.ffn, shape.hidden, gate_));
    SY_RETURN_IF_ERROR(Matrix(names.up, shape.ffn, shape.hidden, up_));
    SY_RETURN_IF_ERROR(Matrix(names.down, shape.hidden, shape.ffn, down_));
    return kernels::PackExpert(shape, gated ? gate_.data() : nullptr, up_.data(), down_.data(), packed);
  }

  // Qwen3.5's fused experts: gate_up_proj [E, 2F, H] (gate rows first, then up), down_proj [E, H, F].
  absl::Status PackFused(const kernels::FfnShape& shape, int layer, int e, void* packed) {
    const std::string gu_name = Prefix(layer) + "experts.gate_up_proj", down_name = Prefix(layer) + "experts.down_proj";
    const int64_t E = model_.num_experts, F = shape.ffn, H = shape.hidden;
    auto gu = ckpt_->Tensor(gu_name);
    if (!gu.ok()) {
      return absl::NotFoundError(absl::StrCat("neither ", Routed(layer, e).up, " nor ", gu_name, " is in the checkpoint (",
                                              gu.status().message(), ")"));
    }
    SY_ASSIGN_OR_RETURN(const TensorView down, ckpt_->Tensor(down_name));
    if (gu->shape != std::vector<int64_t>{E, 2 * F, H}) {
      return absl::InvalidArgumentError(absl::StrCat(gu_name, ": shape ", ShapeText(gu->shape), ", the model needs [", E, ", ", 2 * F, ", ", H, "]"));
    }
    if (down.shape != std::vector<int64_t>{E, H, F}) {
      return absl::InvalidArgumentError(absl::StrCat(down_name, ": shape ", ShapeText(down.shape), ", the model needs [", E, ", ", H, ", ", F, "]"));
    }
    const size_t fh = static_cast<size_t>(F * H);
    gate_.resize(fh), up_.resize(fh), down_.resize(fh);
    const std::string of = absl::StrCat("[", e, "]");  // errors name the expert's slice
    SY_RETURN_IF_ERROR(ToFloat(*gu, gu_name + of + " (gate)", gate_.data(), e * 2 * fh, fh));
    SY_RETURN_IF_ERROR(ToFloat(*gu, gu_name + of + " (up)", up_.data(), e * 2 * fh + fh, fh));
    SY_RETURN_IF_ERROR(ToFloat(down, down_name + of, down_.data(), e * fh, fh));
    return kernels::PackExpert(shape, gate_.data(), up_.data(), down_.data(), packed);
  }

  // A [E, ...] tensor of exactly `dims`; InvalidArgument naming it otherwise.
  absl::StatusOr<TensorView> Shaped(const std::string& name, const std::vector<int64_t>& dims, const char* dtype = nullptr) {
    SY_ASSIGN_OR_RETURN(const TensorView t, ckpt_->Tensor(name));
    if (t.shape != dims) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeText(t.shape), ", the model needs ", ShapeText(dims)));
    }
    if (dtype != nullptr && t.dtype != dtype) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": dtype ", t.dtype, ", expected ", dtype));
    }
    return t;
  }

  // MXFP4 rows (transformers' layout): blocks [E, R, C/32, 16] U8, two e2m1 values per byte
  // (low nibble first), scales [E, R, C/32] U8 (E8M0: 2^(s - 127)). Row r of expert e -> out[C].
  static void Mxfp4Row(const TensorView& blocks, const TensorView& scales, int64_t e, int64_t rows, int64_t r, int64_t cols,
                       float* out) {
    static constexpr float kE2m1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                        -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
    const int64_t groups = cols / 32;
    const auto* b = reinterpret_cast<const uint8_t*>(blocks.data) + ((e * rows + r) * groups) * 16;
    const auto* sc = reinterpret_cast<const uint8_t*>(scales.data) + (e * rows + r) * groups;
    for (int64_t g = 0; g < groups; ++g) {
      const int exponent = static_cast<int>(sc[g]) - 127;
      for (int i = 0; i < 16; ++i) {
        const uint8_t byte = b[g * 16 + i];
        out[g * 32 + 2 * i] = std::ldexp(kE2m1[byte & 0xf], exponent);
        out[g * 32 + 2 * i + 1] = std::ldexp(kE2m1[byte >> 4], exponent);
      }
    }
  }

  // gpt-oss's fused experts, as published (MXFP4 *_blocks / *_scales) or dequantised
  // (gate_up_proj [E, H, 2F] with gate and up interleaved along 2F, down_proj [E, F, H]);
  // biases gate_up_proj_bias [E, 2F] (interleaved) and down_proj_bias [E, H].
  absl::Status PackGptOss(const kernels::FfnShape& shape, int layer, int e, void* packed) {
    const std::string p = Prefix(layer) + "experts.";
    const int64_t E = model_.num_experts, F = shape.ffn, H = shape.hidden;
    const size_t fh = static_cast<size_t>(F * H);
    gate_.resize(fh), up_.resize(fh), down_.resize(fh);
    const std::string of = absl::StrCat("[", e, "]");
    if (ckpt_->Tensor(p + "gate_up_proj_blocks").ok()) {
      if (H % 32 != 0 || F % 32 != 0) {
        return absl::InvalidArgumentError(absl::StrCat(p, "gate_up_proj_blocks: MXFP4 needs hidden and FFN sizes that are multiples of 32 (",
                                                       H, ", ", F, ")"));
      }
      SY_ASSIGN_OR_RETURN(const TensorView gub, Shaped(p + "gate_up_proj_blocks", {E, 2 * F, H / 32, 16}, "U8"));
      SY_ASSIGN_OR_RETURN(const TensorView gus, Shaped(p + "gate_up_proj_scales", {E, 2 * F, H / 32}, "U8"));
      SY_ASSIGN_OR_RETURN(const TensorView db, Shaped(p + "down_proj_blocks", {E, H, F / 32, 16}, "U8"));
      SY_ASSIGN_OR_RETURN(const TensorView ds, Shaped(p + "down_proj_scales", {E, H, F / 32}, "U8"));
      for (int64_t f = 0; f < F; ++f) {
        Mxfp4Row(gub, gus, e, 2 * F, 2 * f, H, &gate_[f * H]);
        Mxfp4Row(gub, gus, e, 2 * F, 2 * f + 1, H, &up_[f * H]);
      }
      for (int64_t h = 0; h < H; ++h) Mxfp4Row(db, ds, e, H, h, F, &down_[h * F]);
      SY_RETURN_IF_ERROR(CheckFinite(p + "gate_up_proj_blocks" + of, gate_.data(), fh));
      SY_RETURN_IF_ERROR(CheckFinite(p + "gate_up_proj_blocks" + of, up_.data(), fh));
      SY_RETURN_IF_ERROR(CheckFinite(p + "down_proj_blocks" + of, down_.data(), fh));
    } else {
      SY_ASSIGN_OR_RETURN(const TensorView gu, Shaped(p + "gate_up_proj", {E, H, 2 * F}));
      SY_ASSIGN_OR_RETURN(const TensorView d, Shaped(p + "down_proj", {E, F, H}));
      scale_.resize(2 * fh);
      SY_RETURN_IF_ERROR(ToFloat(gu, p + "gate_up_proj" + of, scale_.data(), e * 2 * fh, 2 * fh));
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t f = 0; f < F; ++f) {
          gate_[f * H + h] = scale_[h * 2 * F + 2 * f];
          up_[f * H + h] = scale_[h * 2 * F + 2 * f + 1];
        }
      }
      SY_RETURN_IF_ERROR(ToFloat(d, p + "down_proj" + of, scale_.data(), e * fh, fh));
      for (int64_t f = 0; f < F; ++f) {
        for (int64_t h = 0; h < H; ++h) down_[h * F + f] = scale_[f * H + h];
      }
    }
    SY_ASSIGN_OR_RETURN(const TensorView gub, Shaped(p + "gate_up_proj_bias", {E, 2 * F}));
    SY_ASSIGN_OR_RETURN(const TensorView dbias, Shaped(p + "down_proj_bias", {E, H}));
    std::vector<float> interleaved(2 * F), gate_bias(F), up_bias(F), down_bias(H);
    SY_RETURN_IF_ERROR(ToFloat(gub, p + "gate_up_proj_bias" + of, interleaved.data(), e * 2 * F, 2 * F));
    for (int64_t f = 0; f < F; ++f) gate_bias[f] = interleaved[2 * f], up_bias[f] = interleaved[2 * f + 1];
    SY_RETURN_IF_ERROR(ToFloat(dbias, p + "down_proj_bias" + of, down_bias.data(), e * H, H));
    const kernels::ExpertBiases biases{gate_bias.data(), up_bias.data(), down_bias.data()};
    return kernels::PackExpert(shape, gate_.data(), up_.data(), down_.data(), packed, &biases);
  }

  model::ModelConfig model_;
  std::unique_ptr<Checkpoint> ckpt_;
  std::vector<float> gate_, up_, down_, scale_;
};

}  // namespace

std::unique_ptr<WeightSource> SeededWeights(const model::ModelConfig& model, uint64_t seed) {
  return std::make_unique<Seeded>(model, seed);
}

absl::StatusOr<std::unique_ptr<WeightSource>> CheckpointWeights(const model::ModelConfig& model, const std::string& path) {
  SY_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(path));
  return std::make_unique<FromCheckpoint>(model, std::move(ckpt));
}

absl::StatusOr<std::shared_ptr<ExpertBuffer>> ExpertBuffer::Create(size_t bytes) {
  void* data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (data == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes for an expert's weights"));
  }
  return std::shared_ptr<ExpertBuffer>(new ExpertBuffer(data, bytes));
}
ExpertBuffer::~ExpertBuffer() { std::free(data_); }

WeightStore::WeightStore(const model::ModelConfig& model, std::vector<int> layer_ids)
    : model_(model),
      layer_ids_(std::move(layer_ids)),
      expert_bytes_(kernels::PackedExpertBytes(model.ExpertShape())),
      slots_(layer_ids_.size()),
      shared_(layer_ids_.size()),
      bias_(layer_ids_.size()),
      shared_gate_(layer_ids_.size()) {}

absl::Status WeightStore::Load(const placement::Placement& placement, int rank, WeightSource& source, int* packed) {
  if (packed != nullptr) *packed = 0;
  std::vector<std::vector<Slot>> next(layer_ids_.size());
  for (size_t li = 0; li < layer_ids_.size(); ++li) {
    const int layer_id = layer_ids_[li];
    const placement::LayerPlacement* layer = placement.FindLayer(layer_id);
    if (layer == nullptr) return absl::InvalidArgumentError(absl::StrCat("placement has no layer ", layer_id));
    if (rank < 0 || rank >= static_cast<int>(layer->ranks.size())) {
      return absl::InvalidArgumentError(absl::StrCat("placement has no rank ", rank));
    }
    std::map<int, std::shared_ptr<ExpertBuffer>> loaded;
    for (const Slot& held : slots_[li]) loaded.emplace(held.expert, held.weights);  // kept across a regroup
    for (const placement::Replica& rep : layer->ranks[rank]) {
      auto& buffer = loaded[rep.expert];
      if (!buffer) {
        SY_ASSIGN_OR_RETURN(buffer, ExpertBuffer::Create(expert_bytes_));
        SY_RETURN_IF_ERROR(source.PackExpert(layer_id, rep.expert, buffer->data()));
        if (packed != nullptr) ++*packed;
      }
      next[li].push_back({rep.expert, buffer});
    }
  }
  for (size_t li = 0; li < layer_ids_.size(); ++li) slots_[li] = std::move(next[li]);
  if (extras_loaded_) return absl::OkStatus();
  for (size_t li = 0; li < layer_ids_.size(); ++li) {
    const int layer_id = layer_ids_[li];
    if (model_.shared_ffn > 0) {
      SY_ASSIGN_OR_RETURN(shared_[li], ExpertBuffer::Create(kernels::PackedExpertBytes(model_.SharedShape())));
      SY_RETURN_IF_ERROR(source.PackShared(layer_id, shared_[li]->data()));
    }
    if (model_.router_bias) {
      bias_[li].resize(model_.num_experts);
      SY_RETURN_IF_ERROR(source.RouterBias(layer_id, bias_[li].data()));
    }
    if (model_.shared_ffn > 0 && model_.shared_gate) {
      shared_gate_[li].resize(model_.hidden);
      SY_RETURN_IF_ERROR(source.SharedGate(layer_id, shared_gate_[li].data()));
    }
  }
  extras_loaded_ = true;
  return absl::OkStatus();
}

const void* WeightStore::shared_weights(int layer_index) const {
  return shared_[layer_index] ? shared_[layer_index]->data() : nullptr;
}

const float* WeightStore::router_bias(int layer_index) const {
  return bias_[layer_index].empty() ? nullptr : bias_[layer_index].data();
}

const float* WeightStore::shared_gate(int layer_index) const {
  return shared_gate_[layer_index].empty() ? nullptr : shared_gate_[layer_index].data();
}

void WeightStore::SetSlots(int layer_index, std::vector<int> experts, std::vector<std::shared_ptr<ExpertBuffer>> buffers) {
  SY_CHECK(experts.size() == buffers.size());
  auto& slots = slots_[layer_index];
  slots.clear();
  for (size_t i = 0; i < experts.size(); ++i) slots.push_back({experts[i], std::move(buffers[i])});
}

}  // namespace switchyard::worker
