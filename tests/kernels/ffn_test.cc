// Grouped FFN against a direct double-precision reference; determinism across row grouping
// and position; the same bits on every ISA path and thread count, and a committed golden
// fingerprint for the paths this CPU lacks; the path selection; edge cases.
#include "kernels/ffn.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/hash.h"

namespace switchyard::kernels {
namespace {

struct Expert {
  std::vector<float> gate, up, down;  // HF layout
  std::vector<float> gate_bias, up_bias, down_bias;  // gpt-oss only
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
  ExpertBiases biases;
  if (shape.activation == Activation::kGptOssSwiGlu) {  // large enough to reach the clamps
    std::normal_distribution<float> nb(0, 4.0f);
    for (auto* v : {&e.gate_bias, &e.up_bias}) {
      v->resize(shape.ffn);
      for (float& x : *v) x = nb(rng);
    }
    e.down_bias.resize(shape.hidden);
    for (float& x : e.down_bias) x = nb(rng);
    biases = {e.gate_bias.data(), e.up_bias.data(), e.down_bias.data()};
  }
  e.packed.resize(PackedExpertBytes(shape));
  EXPECT_TRUE(PackExpert(shape, e.gate.data(), e.up.data(), e.down.data(), e.packed.data(),
                         shape.activation == Activation::kGptOssSwiGlu ? &biases : nullptr)
                  .ok());
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
    double a;
    if (s.activation == Activation::kGptOssSwiGlu) {  // biases are fp32 in every weight type
      g = std::min(g + e.gate_bias[f], 7.0);
      u = std::clamp(u + e.up_bias[f], -7.0, 7.0);
      a = (u + 1) * g / (1 + std::exp(-1.702 * g));
    } else {
      a = s.activation == Activation::kSwiGlu ? g / (1 + std::exp(-g)) * u : std::pow(std::max(u, 0.0), 2);
    }
    act[f] = Round(float(a), b);
  }
  for (int64_t h = 0; h < s.hidden; ++h) {
    for (int64_t f = 0; f < s.ffn; ++f) y[h] += act[f] * Round(e.down[h * s.ffn + f], b);
    if (s.activation == Activation::kGptOssSwiGlu) y[h] += e.down_bias[h];
  }
  return y;
}

// Every path this CPU runs (the portable one included), for every weight type.
std::vector<CpuIsa> Isas(const FfnShape&) { return SupportedCpuIsas(); }

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
    SCOPED_TRACE(std::string(CpuIsaName(isa)));
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
TEST(FfnTest, GptOssF32MatchesReference) { CheckAgainstReference({96, 40, Activation::kGptOssSwiGlu, WeightType::kF32}, 1e-5); }
TEST(FfnTest, GptOssBf16MatchesReference) { CheckAgainstReference({37, 23, Activation::kGptOssSwiGlu, WeightType::kBF16}, 2e-2); }

TEST(FfnTest, BiasesOnlyForGptOss) {
  const float w[16 * 16] = {}, b[16] = {};
  const ExpertBiases biases{b, b, b};
  std::vector<char> packed(PackedExpertBytes({16, 16, Activation::kGptOssSwiGlu, WeightType::kF32}));
  EXPECT_NE(PackExpert({16, 16, Activation::kGptOssSwiGlu, WeightType::kF32}, w, w, w, packed.data()).message().find("need"),
            absl::string_view::npos);
  EXPECT_NE(PackExpert({16, 16, Activation::kSwiGlu, WeightType::kF32}, w, w, w, packed.data(), &biases).message().find("only"),
            absl::string_view::npos);
  EXPECT_GT(PackedExpertBytes({16, 16, Activation::kGptOssSwiGlu, WeightType::kF32}),
            PackedExpertBytes({16, 16, Activation::kSwiGlu, WeightType::kF32}));
}

// Unpacking gives the Hugging Face layout back: bf16 experts bit for bit, fp32 ones rounded to
// bf16; odd sizes (partial panels) included.
TEST(FfnTest, UnpackGivesTheHuggingFaceLayoutBack) {
  for (const FfnShape& shape : {FfnShape{37, 23, Activation::kSwiGlu, WeightType::kBF16},
                                FfnShape{37, 23, Activation::kSwiGlu, WeightType::kF32},
                                FfnShape{64, 48, Activation::kReluSquared, WeightType::kBF16}}) {
    SCOPED_TRACE(absl::StrCat(shape.hidden, "x", shape.ffn, " activation ", static_cast<int>(shape.activation), " weights ",
                              static_cast<int>(shape.weights)));
    const Expert e = MakeExpert(shape, 5);
    const bool gated = shape.activation == Activation::kSwiGlu;
    const int64_t H = shape.hidden, F = shape.ffn;
    std::vector<bf16> gate_up((gated ? 2 : 1) * F * H, 0xFFFF), down(H * F, 0xFFFF);
    ASSERT_TRUE(UnpackExpertBf16(shape, e.packed.data(), gate_up.data(), down.data()).ok());
    for (int64_t f = 0; f < F; ++f) {
      for (int64_t h = 0; h < H; ++h) {
        if (gated) {
          ASSERT_EQ(gate_up[f * H + h], FloatToBf16(e.gate[f * H + h])) << f << "," << h;
          ASSERT_EQ(gate_up[(F + f) * H + h], FloatToBf16(e.up[f * H + h])) << f << "," << h;
        } else {
          ASSERT_EQ(gate_up[f * H + h], FloatToBf16(e.up[f * H + h])) << f << "," << h;
        }
        ASSERT_EQ(down[h * F + f], FloatToBf16(e.down[h * F + f])) << h << "," << f;
      }
    }
  }
  const FfnShape gpt{16, 16, Activation::kGptOssSwiGlu, WeightType::kBF16};
  const Expert e = MakeExpert(gpt, 1);
  std::vector<bf16> gate_up(2 * 16 * 16), down(16 * 16);
  EXPECT_EQ(UnpackExpertBf16(gpt, e.packed.data(), gate_up.data(), down.data()).code(), absl::StatusCode::kInvalidArgument);
  const FfnShape other{32, 16, Activation::kSwiGlu, WeightType::kBF16};  // not the packed expert's shape
  EXPECT_EQ(UnpackExpertBf16(other, e.packed.data(), gate_up.data(), down.data()).code(), absl::StatusCode::kInvalidArgument);
}

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

// Inputs drawn from SplitMix64 (portable across standard libraries, unlike
// std::normal_distribution): uniform in [-scale, scale).
std::vector<float> Uniform(size_t n, uint64_t seed, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(SplitMix64(seed + i * kGoldenGamma) >> 11) * 0x1.0p-53;
    v[i] = static_cast<float>((2 * u - 1) * scale);
  }
  return v;
}

// A grouped call over skewed slots: 1 row, 0 rows, 300 rows, 9 rows, 64 rows.
struct GroupedCase {
  FfnShape shape;
  std::vector<std::vector<char>> packed;
  std::vector<const void*> weights;
  std::vector<int64_t> offsets, counts;
  std::vector<float> x;
  int64_t rows = 0;

  explicit GroupedCase(const FfnShape& s) : shape(s), counts{1, 0, 300, 9, 64} {
    const size_t slots = counts.size();
    for (size_t e = 0; e < slots; ++e) {
      const float w = 1.0f / std::sqrt(static_cast<float>(shape.hidden));
      auto gate = Uniform(shape.ffn * shape.hidden, 100 + e, w);
      auto up = Uniform(shape.ffn * shape.hidden, 200 + e, w);
      auto down = Uniform(shape.hidden * shape.ffn, 300 + e, 1.0f / std::sqrt(static_cast<float>(shape.ffn)));
      auto gb = Uniform(shape.ffn, 400 + e, 8.0f), ub = Uniform(shape.ffn, 500 + e, 8.0f), db = Uniform(shape.hidden, 600 + e, 1.0f);
      const ExpertBiases biases{gb.data(), ub.data(), db.data()};
      packed.emplace_back(PackedExpertBytes(shape));
      EXPECT_TRUE(PackExpert(shape, gate.data(), up.data(), down.data(), packed.back().data(),
                             shape.activation == Activation::kGptOssSwiGlu ? &biases : nullptr)
                      .ok());
      weights.push_back(counts[e] == 0 ? nullptr : packed.back().data());
      offsets.push_back(rows);
      rows += counts[e];
    }
    x = Uniform(rows * shape.hidden, 7, 2.0f);
  }

  std::vector<float> Run(CpuIsa isa, int threads) const {
    FfnWorkspace ws(isa, threads);
    std::vector<float> y(rows * shape.hidden, -1.0f);
    const absl::Status st = GroupedFfnCpu(shape, weights.data(), offsets.data(), counts.data(),
                                          static_cast<int>(counts.size()), x.data(), y.data(), ws);
    EXPECT_TRUE(st.ok()) << st;
    return y;
  }
};

const FfnShape kBitShapes[] = {
    {96, 48, Activation::kSwiGlu, WeightType::kF32},       // multiples of every vector width
    {37, 23, Activation::kSwiGlu, WeightType::kF32},       // neither is a multiple of 4
    {33, 70, Activation::kReluSquared, WeightType::kF32},  // odd hidden, ffn over 2 panels
    {96, 48, Activation::kSwiGlu, WeightType::kBF16},
    {37, 23, Activation::kSwiGlu, WeightType::kBF16},      // odd: bf16 pairs padded
    {33, 70, Activation::kReluSquared, WeightType::kBF16},
    {37, 70, Activation::kGptOssSwiGlu, WeightType::kF32},   // gpt-oss: biases, clamps, odd sizes
    {37, 70, Activation::kGptOssSwiGlu, WeightType::kBF16},
};

// Sets an environment variable for one scope, restoring the previous value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value == nullptr) {
      unsetenv(name);
    } else {
      setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The $SWITCHYARD_BF16_DOT values that pick each of `isa`'s kernels for `shape`: on the
// avx512 path of a CPU with AVX-512 BF16, bf16 weights run through vdpbf16ps ("1") or widen
// to fp32 ("0"); elsewhere there is one kernel.
std::vector<const char*> KernelChoices(CpuIsa isa, const FfnShape& shape) {
  if (isa == CpuIsa::kAvx512 && shape.weights == WeightType::kBF16 && CpuSupportsBf16Dot()) return {"1", "0"};
  return {nullptr};
}

// Every path (and bf16 kernel) this CPU supports, at 1, 2 and 3 threads, gives the portable
// path's bits.
TEST(FfnTest, SameBitsOnEveryPathAndThreadCount) {
  for (const FfnShape& shape : kBitShapes) {
    SCOPED_TRACE(absl::StrCat("hidden ", shape.hidden, " ffn ", shape.ffn, " ", ActivationName(shape.activation), " ",
                              WeightTypeName(shape.weights)));
    const GroupedCase c(shape);
    const std::vector<float> want = c.Run(CpuIsa::kPortable, 1);
    for (CpuIsa isa : SupportedCpuIsas()) {
      for (const char* choice : KernelChoices(isa, shape)) {
        const ScopedEnv kernel(kBf16DotEnv, choice);
        for (int threads : {1, 2, 3}) {
          const std::vector<float> got = c.Run(isa, threads);
          ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * 4), 0)
              << FfnKernelName(isa, shape.weights) << " x " << threads << " threads";
        }
      }
    }
  }
}

// The fingerprint every path must produce (FNV-1a of the output bytes of the cases above),
// computed once and committed: it checks the paths this CPU lacks (NEON, AVX-512 on an AVX2
// machine, ...) when the suite runs on their CPUs, and catches any change of the arithmetic.
TEST(FfnTest, GoldenBitsOnEveryPath) {
  const uint64_t golden[] = {
      0xc5b2a83e8c55d163ULL, 0x9ea321c6150078beULL, 0xcfc17763e572f8ccULL,
      0x0df49a43db4a03f6ULL, 0xcd2bae91826cfe38ULL, 0x1300910a2b0f2ab9ULL,
      0xf7c08add21d74e81ULL, 0x465c04db8dba0da6ULL,
  };
  int i = 0;
  for (const FfnShape& shape : kBitShapes) {
    const GroupedCase c(shape);
    for (CpuIsa isa : SupportedCpuIsas()) {
      for (const char* choice : KernelChoices(isa, shape)) {
        const ScopedEnv kernel(kBf16DotEnv, choice);
        const std::vector<float> y = c.Run(isa, 2);
        EXPECT_EQ(Fnv1a(y.data(), y.size() * 4), golden[i]) << absl::StrFormat(
            "case %d on %s: 0x%016xULL", i, FfnKernelName(isa, shape.weights), Fnv1a(y.data(), y.size() * 4));
      }
    }
    ++i;
  }
}

TEST(FfnTest, PathSelection) {
  const ScopedEnv no_forcing(kCpuIsaEnv, nullptr);  // the suite may run with a forced path
  const std::vector<CpuIsa> isas = SupportedCpuIsas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), CpuIsa::kPortable);
  EXPECT_EQ(BestCpuIsa(), isas.back());
#if defined(__x86_64__)
  // Every x86-64 CPU since 2013 has AVX2 + FMA; the dispatcher must find it.
  EXPECT_EQ(CpuSupports(CpuIsa::kAvx2), static_cast<bool>(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
  EXPECT_EQ(CpuSupports(CpuIsa::kAvx512), static_cast<bool>(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                                           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")));
  EXPECT_FALSE(CpuSupports(CpuIsa::kNeon));
#endif
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kNeon}) {
    const auto parsed = ParseCpuIsa(CpuIsaName(isa));
    if (CpuSupports(isa)) {
      ASSERT_TRUE(parsed.ok()) << parsed.status();
      EXPECT_EQ(*parsed, isa);
    } else {
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_NE(parsed.status().message().find("not available on this CPU"), std::string::npos) << parsed.status();
    }
  }
  EXPECT_EQ(ParseCpuIsa("sse9").status().code(), absl::StatusCode::kInvalidArgument);
}

// $SWITCHYARD_CPU_ISA forces a path; a path this CPU lacks is refused, naming the setting.
TEST(FfnTest, EnvironmentForcesAPath) {
  const ScopedEnv restore(kCpuIsaEnv, nullptr);
  ASSERT_EQ(setenv(kCpuIsaEnv, "portable", 1), 0);
  EXPECT_EQ(*CpuIsaFromEnvironment(), CpuIsa::kPortable);
  EXPECT_EQ(BestCpuIsa(), CpuIsa::kPortable);
  EXPECT_EQ(FfnWorkspace().isa(), CpuIsa::kPortable);
  ASSERT_EQ(setenv(kCpuIsaEnv, "bogus", 1), 0);
  EXPECT_NE(CpuIsaFromEnvironment().status().message().find("SWITCHYARD_CPU_ISA"), std::string::npos);
  EXPECT_EQ(BestCpuIsa(), SupportedCpuIsas().back());  // library default falls back
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kNeon}) {
    if (CpuSupports(isa)) continue;
    ASSERT_EQ(setenv(kCpuIsaEnv, std::string(CpuIsaName(isa)).c_str(), 1), 0);
    EXPECT_EQ(CpuIsaFromEnvironment().status().code(), absl::StatusCode::kFailedPrecondition);
  }
  ASSERT_EQ(unsetenv(kCpuIsaEnv), 0);
  EXPECT_EQ(*CpuIsaFromEnvironment(), SupportedCpuIsas().back());
}

// $SWITCHYARD_BF16_DOT picks the avx512 path's bf16 kernel: 1 vdpbf16ps (refused without
// AVX-512 BF16), 0 widening, unset or auto the measured choice; anything else is refused.
TEST(FfnTest, EnvironmentPicksTheBf16Kernel) {
  const ScopedEnv restore(kBf16DotEnv, nullptr);
  EXPECT_EQ(*Bf16DotFromEnvironment(), std::nullopt);
  ASSERT_EQ(setenv(kBf16DotEnv, "auto", 1), 0);
  EXPECT_EQ(*Bf16DotFromEnvironment(), std::nullopt);
  ASSERT_EQ(setenv(kBf16DotEnv, "0", 1), 0);
  EXPECT_EQ(*Bf16DotFromEnvironment(), false);
  if (CpuSupports(CpuIsa::kAvx512)) {
    EXPECT_EQ(FfnKernelName(CpuIsa::kAvx512, WeightType::kBF16), "avx512_bf16widen");
  }
  ASSERT_EQ(setenv(kBf16DotEnv, "1", 1), 0);
  if (CpuSupportsBf16Dot()) {
    EXPECT_EQ(*Bf16DotFromEnvironment(), true);
    EXPECT_EQ(FfnKernelName(CpuIsa::kAvx512, WeightType::kBF16), "avx512_bf16dot");
  } else {
    EXPECT_EQ(Bf16DotFromEnvironment().status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(Bf16DotFromEnvironment().status().message().find("no AVX-512 BF16"), std::string::npos);
  }
  // The other paths have one bf16 kernel, whatever the setting.
  EXPECT_EQ(FfnKernelName(CpuIsa::kPortable, WeightType::kBF16), "portable_bf16widen");
  EXPECT_EQ(FfnKernelName(CpuIsa::kAvx2, WeightType::kF32), "avx2");
  ASSERT_EQ(setenv(kBf16DotEnv, "yes", 1), 0);
  EXPECT_EQ(Bf16DotFromEnvironment().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Bf16DotFromEnvironment().status().message().find("SWITCHYARD_BF16_DOT='yes'"), std::string::npos)
      << Bf16DotFromEnvironment().status();
}

// A workspace of a path this CPU lacks is refused, not run.
TEST(FfnTest, UnsupportedPathIsRefused) {
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kNeon}) {
    if (CpuSupports(isa)) continue;
    const GroupedCase c({32, 16, Activation::kSwiGlu, WeightType::kF32});
    FfnWorkspace ws(isa);
    std::vector<float> y(c.rows * 32);
    EXPECT_EQ(GroupedFfnCpu(c.shape, c.weights.data(), c.offsets.data(), c.counts.data(), 5, c.x.data(), y.data(), ws).code(),
              absl::StatusCode::kFailedPrecondition);
  }
}

TEST(FfnTest, DefaultThreadsFollowOmpNumThreads) {
  const ScopedEnv three("OMP_NUM_THREADS", "3");
  EXPECT_EQ(DefaultCpuThreads(), 3);
  for (const char* ignored : {"0", "-3", "abc", "4,1", "100000"}) {
    const ScopedEnv bad("OMP_NUM_THREADS", ignored);
    EXPECT_GE(DefaultCpuThreads(), 1) << ignored;
    EXPECT_LE(DefaultCpuThreads(), 1024) << ignored;
  }
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
