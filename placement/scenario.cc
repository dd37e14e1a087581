#include "placement/scenario.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/hash.h"
#include "common/json_reader.h"

namespace switchyard::placement {
namespace {

using Stream = SplitMix64Stream;

constexpr double kMaxDraws = 1e9;
constexpr int kMaxMisses = 16;

uint64_t Mix(uint64_t seed, uint64_t a, uint64_t b) { return SplitMix64(SplitMix64(seed ^ 0x5ce7a210ULL) ^ a) ^ b; }


}  // namespace

absl::StatusOr<Burst> ParseBurst(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("burst '", EchoValue(text), "': ", why,
                                                   " (expected EXPERTS:SHARE@START..END, e.g. 3:0.35@20..35)"));
  };
  const size_t colon = text.find(':'), at = text.find('@');
  if (colon == absl::string_view::npos || at == absl::string_view::npos || at < colon) return bad("malformed");
  const absl::string_view range = text.substr(at + 1);
  const size_t dots = range.find("..");
  if (dots == absl::string_view::npos) return bad("the steps must read START..END");
  Burst b;
  if (!absl::SimpleAtoi(text.substr(0, colon), &b.experts) || b.experts < 1) return bad("EXPERTS must be an integer >= 1");
  if (!absl::SimpleAtod(text.substr(colon + 1, at - colon - 1), &b.share) || !(b.share > 0 && b.share < 1)) {
    return bad("SHARE must be a number in (0, 1)");
  }
  if (!absl::SimpleAtoi(range.substr(0, dots), &b.start) || !absl::SimpleAtoi(range.substr(dots + 2), &b.end) ||
      b.start < 0 || b.end <= b.start) {
    return bad("START..END must be integers with 0 <= START < END");
  }
  return b;
}

absl::StatusOr<std::vector<int>> HotExperts(const Burst& burst, int num_experts, int layer_index, uint64_t seed) {
  if (burst.experts > num_experts) {
    return absl::FailedPreconditionError(
        absl::StrCat("burst of ", burst.experts, " hot experts per layer, the model has ", num_experts));
  }
  std::vector<int> order(num_experts);
  std::iota(order.begin(), order.end(), 0);
  Stream rng(Mix(seed, 0xb0b57, static_cast<uint64_t>(layer_index)));
  for (int i = 0; i < burst.experts; ++i) {  // partial Fisher-Yates: the first `experts`
    const int j = i + static_cast<int>(rng.Next() % static_cast<uint64_t>(num_experts - i));
    std::swap(order[i], order[j]);
  }
  order.resize(burst.experts);
  return order;
}

std::vector<double> ApplyBurst(const std::vector<double>& p, const std::vector<int>& hot, double share) {
  std::vector<double> out(p.size());
  for (size_t e = 0; e < p.size(); ++e) out[e] = (1 - share) * p[e];
  for (int e : hot) out[e] += share / static_cast<double>(hot.size());
  return out;
}

absl::StatusOr<std::vector<LoadMatrix>> SampleWindows(const LoadMatrix& profile, const LoadMatrix& drift_to,
                                                      const WindowSpec& spec) {
  if (absl::Status valid = profile.Validate(); !valid.ok()) return valid;
  const int L = profile.num_layers(), E = profile.num_experts();
  const bool drift = !drift_to.values.empty();
  if (drift && (drift_to.num_layers() != L || drift_to.num_experts() != E)) {
    return absl::InvalidArgumentError(absl::StrCat("drift target has ", drift_to.num_layers(), " layers x ",
                                                   drift_to.num_experts(), " experts, the profile ", L, " x ", E));
  }
  if (spec.windows < 1 || spec.tokens < 1) return absl::InvalidArgumentError("windows and tokens must be >= 1");
  if (spec.top_k < 1 || spec.top_k > E) {
    return absl::InvalidArgumentError(absl::StrCat("top-k ", spec.top_k, " must be in 1..", E));
  }
  // About 50 million draws a second: refuse what would run for more than about a minute.
  const double draws = static_cast<double>(spec.windows) * L * static_cast<double>(spec.tokens) * spec.top_k;
  if (draws > kMaxDraws) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d windows x %d layers x %d tokens x top-%d is %.3g draws; at most %.0e (fewer windows, tokens or layers)",
        spec.windows, L, spec.tokens, spec.top_k, draws, kMaxDraws));
  }
  // Hot experts of each burst and layer, drawn once.
  std::vector<std::vector<std::vector<int>>> hot(spec.bursts.size());
  for (size_t b = 0; b < spec.bursts.size(); ++b) {
    for (int l = 0; l < L; ++l) {
      auto h = HotExperts(spec.bursts[b], E, l, spec.seed + b);
      if (!h.ok()) return h.status();
      hot[b].push_back(*std::move(h));
    }
  }
  std::vector<LoadMatrix> windows;
  std::vector<int> chosen;
  std::vector<double> cumulative(E);
  std::vector<char> taken(E);
  for (int l = 0; l < L; ++l) {
    int positive = 0;
    for (double x : profile.values[l]) positive += x > 0;
    if (positive < spec.top_k) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", profile.layer_ids[l], " has ", positive,
                                                     " experts with load, fewer than top-k ", spec.top_k));
    }
  }
  for (int w = 0; w < spec.windows; ++w) {
    LoadMatrix out{profile.layer_ids, std::vector<std::vector<double>>(L, std::vector<double>(E, 0.0))};
    const double alpha = drift && spec.windows > 1 ? static_cast<double>(w) / (spec.windows - 1) : 0.0;
    for (int l = 0; l < L; ++l) {
      std::vector<double> p = Probabilities(profile.values[l]);
      if (drift) {
        const std::vector<double> q = Probabilities(drift_to.values[l]);
        for (int e = 0; e < E; ++e) p[e] = (1 - alpha) * p[e] + alpha * q[e];
      }
      for (size_t b = 0; b < spec.bursts.size(); ++b) {
        if (spec.bursts[b].ActiveAt(w)) p = ApplyBurst(p, hot[b][l], spec.bursts[b].share);
      }
      std::partial_sum(p.begin(), p.end(), cumulative.begin());
      const double total = cumulative.back();
      Stream rng(Mix(spec.seed, static_cast<uint64_t>(w), static_cast<uint64_t>(l)));
      for (int64_t t = 0; t < spec.tokens; ++t) {
        // top_k distinct experts, each drawn in proportion to p among those not yet taken:
        // redraw a taken one (exact sampling without replacement), and after a few misses in
        // a row (a dominant expert) draw from the remaining mass directly.
        chosen.clear();
        int misses = 0;
        while (static_cast<int>(chosen.size()) < spec.top_k) {
          int e = -1;
          if (misses < kMaxMisses) {
            const double u = rng.Uniform() * total;
            e = static_cast<int>(std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
            e = std::min(e, E - 1);
            if (taken[e] || p[e] <= 0) {
              ++misses;
              continue;
            }
          } else {
            double rest = 0;
            for (int x = 0; x < E; ++x) rest += taken[x] ? 0 : p[x];
            double u = rng.Uniform() * rest;
            for (int x = 0; x < E; ++x) {
              if (taken[x] || p[x] <= 0) continue;
              e = x;
              if ((u -= p[x]) < 0) break;
            }
          }
          misses = 0;
          taken[e] = 1;
          out.values[l][e] += 1;
          chosen.push_back(e);
        }
        for (int e : chosen) taken[e] = 0;
      }
    }
    windows.push_back(std::move(out));
  }
  return windows;
}

}  // namespace switchyard::placement
