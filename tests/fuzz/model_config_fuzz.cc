// Hugging Face config.json (worker/model.h): an accepted model validates, and its sizes are
// within the documented ranges (nothing is sized from an unchecked number).
#include "common/status.h"
#include "tests/fuzz/fuzz_target.h"
#include "model/model.h"

SY_FUZZ_TARGET(model_config) {
  using namespace switchyard::model;
  auto m = ParseHfConfig(std::string(reinterpret_cast<const char*>(data), size), "config.json");
  if (!m.ok()) return 0;
  SY_CHECK(m->Validate().ok());
  SY_CHECK(m->num_experts >= 1 && m->num_experts <= kMaxExperts && m->hidden <= kMaxHidden && m->expert_ffn <= kMaxFfn);
  SY_CHECK(!m->moe_layers.empty() && m->moe_layers.back() < kMaxLayers);
  return 0;
}
