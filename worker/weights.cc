#include "worker/weights.h"

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
    return kernels::PackExpert(shape, gate_.data(), up_.data(), down_.data(), packed);
  }

  model::ModelConfig model_;
  uint64_t seed_;
  std::vector<float> gate_, up_, down_;
};

// Hugging Face tensor names of one expert (gate empty for ReLU^2 experts).
struct ExpertNames {
  std::string gate, up, down;
};

class FromCheckpoint : public WeightSource {
 public:
  FromCheckpoint(const model::ModelConfig& model, std::unique_ptr<Checkpoint> ckpt) : model_(model), ckpt_(std::move(ckpt)) {}

  absl::Status PackExpert(int layer_id, int expert, void* packed) override {
    return Pack(model_.ExpertShape(), Routed(layer_id, expert), packed);
  }
  absl::Status PackShared(int layer_id, void* packed) override {
    return Pack(model_.SharedShape(), Shared(layer_id), packed);
  }
  absl::Status RouterBias(int layer_id, float* bias) override {
    const std::string name = Prefix(layer_id) + "gate.e_score_correction_bias";
    SY_ASSIGN_OR_RETURN(const TensorView t, ckpt_->Tensor(name));
    if (t.shape.size() != 1 || t.shape[0] != model_.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": expected shape [", model_.num_experts, "]"));
    }
    return ToFloat(t, name, bias);
  }

 private:
  // The module holding a layer's experts.
  std::string Prefix(int layer) const {
    const std::string& t = model_.model_type;
    if (t == "mixtral") return absl::StrCat("model.layers.", layer, ".block_sparse_moe.");
    if (t == "nemotron_h") return absl::StrCat("backbone.layers.", layer, ".mixer.");
    return absl::StrCat("model.layers.", layer, ".mlp.");
  }
  ExpertNames Routed(int layer, int e) const {
    const std::string p = absl::StrCat(Prefix(layer), "experts.", e, ".");
    if (model_.model_type == "mixtral") return {p + "w1.weight", p + "w3.weight", p + "w2.weight"};
    if (model_.model_type == "nemotron_h") return {"", p + "up_proj.weight", p + "down_proj.weight"};
    return {p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"};
  }
  ExpertNames Shared(int layer) const {
    const std::string& t = model_.model_type;
    const std::string p = Prefix(layer) + (t == "qwen2_moe" ? "shared_expert." : "shared_experts.");
    if (t == "nemotron_h") return {"", p + "up_proj.weight", p + "down_proj.weight"};
    return {p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"};
  }

  // fp32 copy of a tensor (F32, BF16 or F16).
  static absl::Status ToFloat(const TensorView& t, const std::string& name, float* out) {
    size_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    if (t.dtype == "F32") {
      std::memcpy(out, t.data, n * 4);
    } else if (t.dtype == "BF16") {
      for (size_t i = 0; i < n; ++i) {
        kernels::bf16 h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = kernels::Bf16ToFloat(h);
      }
    } else if (t.dtype == "F16") {
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
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
      return absl::InvalidArgumentError(absl::StrCat(name, ": dtype ", t.dtype,
                                                     " is not supported (F32, BF16, F16; convert FP8 checkpoints to bf16)"));
    }
    // A NaN or infinity in an expert would poison every token routed to it, silently.
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(out[i])) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": element ", i, " is ", out[i], " (expert weights must be finite)"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Matrix(const std::string& name, int64_t rows, int64_t cols, std::vector<float>& out) {
    SY_ASSIGN_OR_RETURN(const TensorView t, ckpt_->Tensor(name));
    if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols) {
      std::string shape;
      for (int64_t d : t.shape) absl::StrAppend(&shape, shape.empty() ? "" : ", ", d);
      return absl::InvalidArgumentError(absl::StrCat(name, ": shape [", shape, "], the model needs [", rows, ", ", cols, "]"));
    }
    out.resize(static_cast<size_t>(rows * cols));
    return ToFloat(t, name, out.data());
  }

  absl::Status Pack(const kernels::FfnShape& shape, const ExpertNames& names, void* packed) {
    const bool gated = shape.activation == kernels::Activation::kSwiGlu;
    if (gated) SY_RETURN_IF_ERROR(Matrix(names.gate, shape.ffn, shape.hidden, gate_));
    SY_RETURN_IF_ERROR(Matrix(names.up, shape.ffn, shape.hidden, up_));
    SY_RETURN_IF_ERROR(Matrix(names.down, shape.hidden, shape.ffn, down_));
    return kernels::PackExpert(shape, gated ? gate_.data() : nullptr, up_.data(), down_.data(), packed);
  }

  model::ModelConfig model_;
  std::unique_ptr<Checkpoint> ckpt_;
  std::vector<float> gate_, up_, down_;
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
      bias_(layer_ids_.size()) {}

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

void WeightStore::SetSlots(int layer_index, std::vector<int> experts, std::vector<std::shared_ptr<ExpertBuffer>> buffers) {
  SY_CHECK(experts.size() == buffers.size());
  auto& slots = slots_[layer_index];
  slots.clear();
  for (size_t i = 0; i < experts.size(); ++i) slots.push_back({experts[i], std::move(buffers[i])});
}

}  // namespace switchyard::worker
