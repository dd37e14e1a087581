#include "worker/workload.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/hash.h"
#include "common/json_reader.h"
#include "common/status.h"
#include "placement/io/load_csv.h"

namespace switchyard::worker {
namespace {

// Uniform in (0, 1) from a key.
double Uniform(uint64_t key) { return (static_cast<double>(SplitMix64(key) >> 11) + 0.5) * 0x1.0p-53; }

uint64_t Key(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  return SplitMix64(SplitMix64(SplitMix64(seed ^ 0x51ed27) ^ a) ^ b) ^ c;
}


}  // namespace

absl::StatusOr<std::unique_ptr<Workload>> Workload::Create(const std::vector<std::string>& specs,
                                                          const model::ModelConfig& model,
                                                          const std::vector<int>& layer_ids, uint64_t seed) {
  auto w = std::unique_ptr<Workload>(new Workload(model, layer_ids, seed));
  if (specs.empty()) return absl::InvalidArgumentError("no --workload given");
  const int E = model.num_experts;
  const int L = static_cast<int>(layer_ids.size());
  for (const std::string& full : specs) {
    if (full.rfind("burst:", 0) == 0) {
      auto burst = placement::ParseBurst(absl::string_view(full).substr(6));
      if (!burst.ok()) return absl::InvalidArgumentError(absl::StrCat("--workload '", full, "': ", burst.status().message()));
      BurstPhase b{*burst, {}};
      for (int l = 0; l < L; ++l) {
        auto hot = placement::HotExperts(*burst, E, l, seed + w->bursts_.size());
        if (!hot.ok()) return absl::InvalidArgumentError(absl::StrCat("--workload '", full, "': ", hot.status().message()));
        b.hot.push_back(*std::move(hot));
      }
      w->bursts_.push_back(std::move(b));
      continue;
    }
    Phase phase;
    phase.spec = full;
    std::string spec = full;
    if (const size_t at = full.rfind('@'); at != std::string::npos) {
      if (!absl::SimpleAtoi(full.substr(at + 1), &phase.start_step) || phase.start_step < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--workload '", full, "': '@' must be followed by a step >= 0",
            full.find("..") != std::string::npos ? " (a comma separates --workload specs: give each burst as its own burst:K:SHARE@A..B)" : ""));
      }
      spec = full.substr(0, at);
    }
    const std::vector<std::string> parts = absl::StrSplit(spec, ':');
    const std::string& kind = parts[0];
    if (kind == "uniform" && parts.size() == 1) {
      phase.probabilities.push_back(std::vector<std::vector<double>>(L, std::vector<double>(E, 1.0 / E)));
    } else if (kind == "zipf" && (parts.size() == 2 || parts.size() == 3)) {
      double s = 0;
      if (!absl::SimpleAtod(parts[1], &s) || !(s >= 0 && s <= 100)) {
        return absl::InvalidArgumentError(absl::StrCat("--workload '", full, "': zipf skew must be a number in [0, 100]"));
      }
      if (parts.size() == 3 && (!absl::SimpleAtoi(parts[2], &phase.drift_every) || phase.drift_every < 1)) {
        return absl::InvalidArgumentError(absl::StrCat("--workload '", full, "': drift must be a step count >= 1"));
      }
      std::vector<std::vector<double>> layers;
      for (int l = 0; l < L; ++l) {
        std::vector<int> order(E);
        std::iota(order.begin(), order.end(), 0);
        for (int i = E - 1; i > 0; --i) {  // seeded shuffle: this layer's hot set
          std::swap(order[i], order[SplitMix64(Key(seed, 7, l, i)) % (i + 1)]);
        }
        std::vector<double> p(E);
        for (int r = 0; r < E; ++r) p[order[r]] = std::pow(r + 1.0, -s);
        layers.push_back(placement::Probabilities(p));
      }
      phase.probabilities.push_back(layers);
    } else if (kind == "trace" && (parts.size() == 2 || parts.size() == 3)) {
      placement::LoadCsvOptions csv;
      if (parts.size() == 3) csv.select = parts[2];
      std::vector<std::string> keys;
      if (!csv.select) {
        SY_ASSIGN_OR_RETURN(keys, placement::ReadLoadCsvKeys(parts[1]));
      }
      if (keys.empty()) keys.push_back(csv.select.value_or(""));
      for (const std::string& key : keys) {
        placement::LoadCsvOptions one = csv;
        if (!key.empty()) one.select = key;
        SY_ASSIGN_OR_RETURN(const placement::LoadMatrix load, placement::ReadLoadCsv(parts[1], one));
        if (load.num_experts() != E) {
          return absl::InvalidArgumentError(absl::StrCat("--workload '", full, "': the trace has ", load.num_experts(),
                                                         " experts, the model has ", E));
        }
        // The trace's rows for the model's layer ids when it has them, else in order.
        std::vector<std::vector<double>> layers;
        for (int l = 0; l < L; ++l) {
          const int row = load.IndexOf(layer_ids[l]);
          const std::vector<double>& counts = load.values[row >= 0 ? row : l % load.num_layers()];
          if (std::all_of(counts.begin(), counts.end(), [](double x) { return x == 0; })) {
            return absl::InvalidArgumentError(absl::StrCat("--workload '", EchoValue(full), "': the trace has no tokens for layer ",
                                                           layer_ids[l], key.empty() ? "" : absl::StrCat(" (", key, ")")));
          }
          layers.push_back(placement::Probabilities(load.values[row >= 0 ? row : l % load.num_layers()]));
        }
        phase.probabilities.push_back(std::move(layers));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--workload '", full, "': expected trace:FILE[:KEY], zipf:S[:DRIFT] or uniform, optionally @STEP"));
    }
    w->phases_.push_back(std::move(phase));
  }
  std::stable_sort(w->phases_.begin(), w->phases_.end(),
                   [](const Phase& a, const Phase& b) { return a.start_step < b.start_step; });
  if (w->phases_.empty()) {
    return absl::InvalidArgumentError("--workload: a burst needs a workload to act on (e.g. --workload trace:FILE --workload burst:3:0.35@40..60)");
  }
  if (w->phases_.front().start_step != 0) {
    return absl::InvalidArgumentError("the first --workload must start at step 0 (no @STEP, or @0)");
  }
  for (const Phase& phase : w->phases_) {
    auto& logs = w->log_p_.emplace_back();
    for (const auto& step : phase.probabilities) {
      auto& layers = logs.emplace_back();
      for (const auto& p : step) {
        auto& lp = layers.emplace_back(p.size());
        for (size_t e = 0; e < p.size(); ++e) lp[e] = p[e] > 0 ? std::log(p[e]) : -1e30;
      }
    }
  }
  return w;
}

const Workload::Phase& Workload::PhaseAt(int step) const {
  size_t i = 0;
  while (i + 1 < phases_.size() && phases_[i + 1].start_step <= step) ++i;
  return phases_[i];
}

const std::string& Workload::SpecAt(int step) const { return PhaseAt(step).spec; }

const std::vector<double>& Workload::Probabilities(int step, int layer_index) const {
  const Phase& phase = PhaseAt(step);
  return phase.probabilities[(step - phase.start_step) % phase.probabilities.size()][layer_index];
}

std::vector<double> Workload::EffectiveProbabilities(int step, int layer_index) const {
  const Phase& phase = PhaseAt(step);
  const int E = model_.num_experts;
  std::vector<double> p = Probabilities(step, layer_index);
  if (phase.drift_every > 0) {
    const int shift = ((step - phase.start_step) / phase.drift_every) % E;
    std::rotate(p.begin(), p.begin() + (E - shift) % E, p.end());
  }
  for (const BurstPhase& b : bursts_) {
    if (b.burst.ActiveAt(step)) p = placement::ApplyBurst(p, b.hot[layer_index], b.burst.share);
  }
  return p;
}

std::vector<int> Workload::HotExpertsAt(int step, int layer_index) const {
  std::vector<int> hot;
  for (const BurstPhase& b : bursts_) {
    if (b.burst.ActiveAt(step)) hot.insert(hot.end(), b.hot[layer_index].begin(), b.hot[layer_index].end());
  }
  return hot;
}

std::vector<std::vector<double>> Workload::Expected(int step) const {
  std::vector<std::vector<double>> out;
  for (size_t l = 0; l < layer_ids_.size(); ++l) out.push_back(EffectiveProbabilities(step, static_cast<int>(l)));
  return out;
}

void Workload::Logits(int step, int layer_index, int64_t first_token, int64_t tokens, float* logits) const {
  const Phase& phase = PhaseAt(step);
  const size_t phase_index = static_cast<size_t>(&phase - phases_.data());
  const auto& per_step = log_p_[phase_index];
  const std::vector<double>* lp_ptr = &per_step[(step - phase.start_step) % per_step.size()][layer_index];
  const int E = model_.num_experts;
  int shift = phase.drift_every > 0 ? ((step - phase.start_step) / phase.drift_every) % E : 0;
  // Under a burst: the log of the effective distribution, once per call (shift applied).
  std::vector<double> burst_lp;
  if (std::any_of(bursts_.begin(), bursts_.end(), [&](const BurstPhase& b) { return b.burst.ActiveAt(step); })) {
    const std::vector<double> p = EffectiveProbabilities(step, layer_index);
    burst_lp.resize(E);
    for (int e = 0; e < E; ++e) burst_lp[e] = p[e] > 0 ? std::log(p[e]) : -1e30;
    lp_ptr = &burst_lp;
    shift = 0;
  }
  const std::vector<double>& lp = *lp_ptr;
  for (int64_t t = 0; t < tokens; ++t) {
    const uint64_t token_key = Key(seed_, static_cast<uint64_t>(step), static_cast<uint64_t>(layer_index),
                                   static_cast<uint64_t>(first_token + t));
    float* row = logits + t * E;
    for (int e = 0; e < E; ++e) {
      const double gumbel = -std::log(-std::log(Uniform(token_key + static_cast<uint64_t>(e))));
      row[e] = static_cast<float>(lp[(e - shift + E) % E] + gumbel);
    }
  }
}

void Workload::Hidden(int step, int64_t first_token, int64_t tokens, float* hidden) const {
  const int64_t H = model_.hidden;
  for (int64_t t = 0; t < tokens; ++t) {
    const uint64_t token_key = Key(seed_, 0xabcdef, static_cast<uint64_t>(step), static_cast<uint64_t>(first_token + t));
    for (int64_t h = 0; h < H; ++h) {
      hidden[t * H + h] = static_cast<float>(2 * Uniform(token_key + static_cast<uint64_t>(h)) - 1);
    }
  }
}

}  // namespace switchyard::worker
