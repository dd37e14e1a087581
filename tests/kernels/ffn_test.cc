// Grouped FFN against a direct double-precision reference; determinism across row grouping
// and position; the portable and AVX-512 paths; edge cases.
#include "kernels/ffn.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

namespace switchyard::kernels {
namespace {

struct Expert {
  std::vector<float> gate, up, down;  // HF layout
  std::vector<char> packed;
};

Expert MakeExpert(const FfnShape& shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1.0f / std::sqrt(float(shape.hidden)));
  std::normal_distribution<float> nd(0, 1.0f / std::sqrt(float(shape.ffn)));
  Expert e;
  e.gate.resize(shape.ffn * shape.hidden);
  e.up.resize(shape.ffn * shape.hidden);
  e.down.resize(shape.hidden * shape.ffn);
  for (float& v : e.gate) v = n(rng);
  for (float& v : e.up) v = n(rng);
  for (float& v : e.down) v = nd(rng);
  e.packed.resize(PackedExpertBytes(shape));
  EXPECT_TRUE(PackExpert(shape, e.gate.data(), e.up.data(), e.down.data(), e.packed.data()).ok());
  return e;
}

float Round(float v, bool bf16) { return bf16 ? Bf16ToFloat(FloatToBf16(v)) : v; }

// Reference in double; bf16 shapes see bf16-rounded weights, inputs and activations.
std::vector<double> Reference(const FfnShape& s, const Expert& e, const float* x) {
  const bool b = s.weights == WeightType::kBF16;
  std::vector<double> act(s.ffn), y(s.hidden);
  for (int64_t f = 0; f < s.ffn; ++f) {
    double g = 0, u = 0;
    for (int64_t k = 0; k < s.hidden; ++k) {
      const double xk = Round(x[k], b);
      g += xk * Round(e.gate[f * s.hidden + k], b);
      u += xk * Round(e.up[f * s.hidden + k], b);
    }
    const double a = s.activation == Activation::kSwiGlu ? g / (1 + std::exp(-g)) * u
                                                         : std::pow(std::max(u, 0.0), 2);
    act[f] = Round(float(a), b);
  }
  for (int64_t h = 0; h < s.hidden; ++h) {
    for (int64_t f = 0; f < s.ffn; ++f) y[h] += act[f] * Round(e.down[h * s.ffn + f], b);
  }
  return y;
}

std::vector<CpuIsa> Isas(const FfnShape& shape) {
  std::vector<CpuIsa> isas = {CpuIsa::kPortable};
  if (BestCpuIsa() == CpuIsa::kAvx512 && (shape.weights == WeightType::kF32 || CpuSupportsBf16Dot())) {
    isas.push_back(CpuIsa::kAvx512);
  }
  return isas;
}

// Rows of 3 slots with skewed counts (one slot empty).
void CheckAgainstReference(const FfnShape& shape, double tolerance) {
  std::vector<Expert> experts;
  for (int s = 0; s < 4; ++s) experts.push_back(MakeExpert(shape, 10 + s));
  const std::vector<int64_t> counts = {19, 0, 1, 45};
  std::vector<int64_t> offsets = {0, 19, 19, 20};
  const int64_t rows = 65;
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(rows * shape.hidden);
  for (float& v : x) v = n(rng);
  std::vector<const void*> weights = {experts[0].packed.data(), nullptr, experts[2].packed.data(),
                                      experts[3].packed.data()};
  for (CpuIsa isa : Isas(shape)) {
    SCOPED_TRACE(isa == CpuIsa::kAvx512 ? "avx512" : "portable");
    FfnWorkspace ws(isa);
    std::vector<float> y(rows * shape.hidden, -1.0f);
    ASSERT_TRUE(GroupedFfnCpu(shape, weights.data(), offsets.data(), counts.data(), 4, x.data(), y.data(), ws).ok());
    for (int s = 0; s < 4; ++s) {
      for (int64_t r = offsets[s]; r < offsets[s] + counts[s]; ++r) {
        const auto ref = Reference(shape, experts[s], &x[r * shape.hidden]);
        double scale = 0, err = 0;
        for (int64_t h = 0; h < shape.hidden; ++h) {
          scale = std::max(scale, std::abs(ref[h]));
          err = std::max(err, std::abs(ref[h] - y[r * shape.hidden + h]));
        }
        ASSERT_LE(err, tolerance * scale) << "slot " << s << " row " << r;
      }
    }
  }
}

// Stated tolerances: fp32 within 1e-5 of the largest output (relative); bf16 within 2e-2
// (bf16 keeps 8 bits of mantissa; inputs, weights and the activation are rounded).
TEST(FfnTest, SwiGluF32MatchesReference) { CheckAgainstReference({256, 96, Activation::kSwiGlu, WeightType::kF32}, 1e-5); }
TEST(FfnTest, ReluSquaredF32MatchesReference) { CheckAgainstReference({128, 64, Activation::kReluSquared, WeightType::kF32}, 1e-5); }
TEST(FfnTest, OddSizesF32) { CheckAgainstReference({37, 23, Activation::kSwiGlu, WeightType::kF32}, 1e-5); }
TEST(FfnTest, SwiGluBf16MatchesReference) { CheckAgainstReference({256, 96, Activation::kSwiGlu, WeightType::kBF16}, 2e-2); }
TEST(FfnTest, OddSizesBf16) { CheckAgainstReference({37, 23, Activation::kReluSquared, WeightType::kBF16}, 2e-2); }

// A row's bits do not depend on how many rows share the call or on its position.
TEST(FfnTest, RowResultIndependentOfGroupingAndPosition) {
  for (WeightType type : {WeightType::kF32, WeightType::kBF16}) {
    const FfnShape shape{96, 48, Activation::kSwiGlu, type};
    const Expert e = MakeExpert(shape, 3);
    std::mt19937 rng(9);
    std::normal_distribution<float> n(0, 1);
    std::vector<float> pool(300 * shape.hidden);
    for (float& v : pool) v = n(rng);
    const void* w = e.packed.data();
    for (CpuIsa isa : Isas(shape)) {
      FfnWorkspace ws(isa);
      std::vector<float> alone(shape.hidden);
      const int64_t zero = 0, one = 1;
      ASSERT_TRUE(GroupedFfnCpu(shape, &w, &zero, &one, 1, pool.data() + 17 * shape.hidden, alone.data(), ws).ok());
      for (int64_t m : {2, 7, 8, 9, 16, 31, 64, 300}) {
        // Row 17 of the pool placed at position (m - 1) % ... of an m-row call.
        std::vector<float> in(m * shape.hidden), out(m * shape.hidden);
        const int64_t at = (m * 5 + 3) % m;
        for (int64_t i = 0; i < m; ++i) {
          const int64_t src = i == at ? 17 : (i * 7 + 1) % 300;
          std::memcpy(&in[i * shape.hidden], &pool[src * shape.hidden], shape.hidden * 4);
        }
        ASSERT_TRUE(GroupedFfnCpu(shape, &w, &zero, &m, 1, in.data(), out.data(), ws).ok());
        ASSERT_EQ(std::memcmp(alone.data(), &out[at * shape.hidden], shape.hidden * 4), 0)
            << "m=" << m << " type=" << WeightTypeName(type);
      }
    }
  }
}

TEST(FfnTest, PortableAndAvx512AgreeBitForBitOnFp32Gemms) {
  if (BestCpuIsa() != CpuIsa::kAvx512) GTEST_SKIP() << "this CPU has no AVX-512";
  // ReLU^2 has no exp, so both GEMMs and the epilogue are exact in both paths.
  const FfnShape shape{200, 72, Activation::kReluSquared, WeightType::kF32};
  const Expert e = MakeExpert(shape, 4);
  std::vector<float> x(40 * shape.hidden), a(x.size()), b(x.size());
  std::mt19937 rng(2);
  std::normal_distribution<float> n(0, 1);
  for (float& v : x) v = n(rng);
  const void* w = e.packed.data();
  const int64_t zero = 0, rows = 40;
  FfnWorkspace portable(CpuIsa::kPortable), avx(CpuIsa::kAvx512);
  ASSERT_TRUE(GroupedFfnCpu(shape, &w, &zero, &rows, 1, x.data(), a.data(), portable).ok());
  ASSERT_TRUE(GroupedFfnCpu(shape, &w, &zero, &rows, 1, x.data(), b.data(), avx).ok());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
}

TEST(FfnTest, BadWeightsAreRejected) {
  const FfnShape shape{32, 16, Activation::kSwiGlu, WeightType::kF32};
  const Expert e = MakeExpert(shape, 1);
  EXPECT_TRUE(CheckPackedExpert(shape, e.packed.data(), e.packed.size()).ok());
  EXPECT_FALSE(CheckPackedExpert(shape, e.packed.data(), e.packed.size() - 64).ok());
  const FfnShape other{32, 24, Activation::kSwiGlu, WeightType::kF32};
  EXPECT_NE(CheckPackedExpert(other, e.packed.data(), PackedExpertBytes(other)).message().find("ffn=16"),
            absl::string_view::npos);
  std::vector<float> x(32), y(32);
  const int64_t zero = 0, one = 1;
  const void* none = nullptr;
  FfnWorkspace ws;
  EXPECT_EQ(GroupedFfnCpu(shape, &none, &zero, &one, 1, x.data(), y.data(), ws).code(),
            absl::StatusCode::kInvalidArgument);
  const void* wrong = e.packed.data();
  EXPECT_EQ(GroupedFfnCpu(other, &wrong, &zero, &one, 1, x.data(), y.data(), ws).code(),
            absl::StatusCode::kInvalidArgument);
  // No rows at all: nothing to do, null weights allowed.
  const int64_t none_rows = 0;
  EXPECT_TRUE(GroupedFfnCpu(shape, &none, &zero, &none_rows, 1, x.data(), y.data(), ws).ok());
}

}  // namespace
}  // namespace switchyard::kernels
