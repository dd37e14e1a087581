// Expert weights: where they come from (WeightSource) and where a rank keeps them
// (WeightStore).
//
// Sources: a checkpoint (safetensors, Hugging Face tensor names for the supported model
// types) or a seed (demos: every rank generates the same bytes for the same expert). Either
// way a slot holds the packed expert (kernels/ffn.h); those bytes are what migration moves,
// opaque, never regenerated.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ffn.h"
#include "placement/placement.h"
#include "model/model.h"

namespace switchyard::worker {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Packs routed expert `expert` of model layer `layer_id` into `packed`
  // (PackedExpertBytes(model.ExpertShape()) bytes).
  virtual absl::Status PackExpert(int layer_id, int expert, void* packed) = 0;
  // The layer's shared experts as one FFN (model.shared_ffn > 0).
  virtual absl::Status PackShared(int layer_id, void* packed) = 0;
  // The router's selection bias, num_experts floats (model.router_bias).
  virtual absl::Status RouterBias(int layer_id, float* bias) = 0;
  // The shared experts' gate vector, hidden floats (model.shared_gate).
  virtual absl::Status SharedGate(int layer_id, float* gate) = 0;
};

// Uniform weights with the variance of a fan-in init, from (seed, layer, expert, matrix);
// router bias zero.
std::unique_ptr<WeightSource> SeededWeights(const model::ModelConfig& model, uint64_t seed);

// Tensors of a safetensors checkpoint (file or directory), by the model type's Hugging Face
// names. F32, BF16 and F16 tensors, and FP8 (F8_E4M3) weights as published with a
// `<name>_scale_inv` per block (model.fp8_block_rows x cols): dequantised at load time to
// bf16(e4m3 x scale), the bits DeepSeek's fp8_cast_bf16 gives, so an FP8 checkpoint loads the
// same weights as its bf16 conversion. Per-expert tensors, or Qwen3.5's fused 3-D
// experts.gate_up_proj [E, 2F, H] / experts.down_proj [E, H, F].
absl::StatusOr<std::unique_ptr<WeightSource>> CheckpointWeights(const model::ModelConfig& model,
                                                                const std::string& path);

// 64-byte aligned bytes of one packed expert.
class ExpertBuffer {
 public:
  // ResourceExhausted naming the size when the memory is not there.
  static absl::StatusOr<std::shared_ptr<ExpertBuffer>> Create(size_t bytes);
  ~ExpertBuffer();
  ExpertBuffer(const ExpertBuffer&) = delete;
  ExpertBuffer& operator=(const ExpertBuffer&) = delete;
  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  ExpertBuffer(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  void* data_;
  size_t bytes_;
};

// This rank's expert weights for the MoE layers it runs: for each layer, one packed expert
// per slot of its placement, plus the shared expert and the router bias. Owned by the step
// thread; buffers are shared_ptrs so a slot can be handed over without copying.
class WeightStore {
 public:
  WeightStore(const model::ModelConfig& model, std::vector<int> layer_ids);

  // Fills this rank's slots as `placement` lays them out (one buffer per distinct expert),
  // and the shared experts and router bias of every layer. Experts the store already holds
  // keep their buffers (a regroup after a lost rank); the others are packed from `source`,
  // counted in *packed. On error the slots are unchanged.
  absl::Status Load(const placement::Placement& placement, int rank, WeightSource& source, int* packed = nullptr);

  const model::ModelConfig& model() const { return model_; }
  const std::vector<int>& layer_ids() const { return layer_ids_; }
  size_t expert_bytes() const { return expert_bytes_; }
  int num_slots(int layer_index) const { return static_cast<int>(slots_[layer_index].size()); }
  int slot_expert(int layer_index, int slot) const { return slots_[layer_index][slot].expert; }
  const void* slot_weights(int layer_index, int slot) const { return slots_[layer_index][slot].weights->data(); }
  std::shared_ptr<ExpertBuffer> slot_buffer(int layer_index, int slot) const { return slots_[layer_index][slot].weights; }
  const void* shared_weights(int layer_index) const;  // null without shared experts
  const float* router_bias(int layer_index) const;    // null without a router bias
  const float* shared_gate(int layer_index) const;    // null without a shared-expert gate

  // Replaces a layer's slots (an epoch switch): slot i holds experts[i] with buffers[i].
  void SetSlots(int layer_index, std::vector<int> experts, std::vector<std::shared_ptr<ExpertBuffer>> buffers);

 private:
  struct Slot {
    int expert = -1;
    std::shared_ptr<ExpertBuffer> weights;
  };
  model::ModelConfig model_;
  std::vector<int> layer_ids_;
  size_t expert_bytes_;
  std::vector<std::vector<Slot>> slots_;
  std::vector<std::shared_ptr<ExpertBuffer>> shared_;
  std::vector<std::vector<float>> bias_;
  std::vector<std::vector<float>> shared_gate_;
  bool extras_loaded_ = false;  // shared experts and router bias (the same in every placement)
};

}  // namespace switchyard::worker
