// Runs every fuzz target (fuzz_target.h) over its committed corpus (tests/fuzz/corpus/NAME/)
// and regression cases (tests/fuzz/regressions/NAME/: inputs that once crashed), then mutates
// the corpus for SY_FUZZ_SECONDS seconds per target (default 2; seeded, so a run is
// repeatable). The libFuzzer build (scripts/fuzz.sh) explores far more; this keeps every
// known input and a quick exploration in CI on every compiler.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "tests/fuzz/fuzz_target.h"

namespace switchyard::fuzz {
namespace {

const std::filesystem::path kFuzzDir = std::filesystem::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fuzz";

std::vector<std::string> ReadDir(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    out.push_back(s.str());
  }
  return out;
}

// Byte strings that make readers take their edge paths.
const std::vector<std::string> kTokens = {
    "0", "-1", "4294967304", "2147483648", "18446744073709551615", "9223372036854775808", "1e308", "-1e308", "1e23",
    "NaN", "nan", "inf", "null", "[]", "{}", "\"\"", "true", "\"x\"", ",", ":", "\n", "\"", "[", "]", "{", "}", "\xff",
    std::string(1, '\0'), std::string(8, '\xff'), "1.5", "65536", "\\u0000", "__metadata__"};

std::string Mutate(const std::vector<std::string>& corpus, std::mt19937_64& rng) {
  std::string s = corpus.empty() ? std::string() : corpus[rng() % corpus.size()];
  const int ops = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < ops; ++i) {
    const size_t at = s.empty() ? 0 : rng() % (s.size() + 1);
    switch (rng() % 7) {
      case 0:  // flip a bit
        if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // a random byte
        if (!s.empty()) s[rng() % s.size()] = static_cast<char>(rng());
        break;
      case 2:  // insert a token
        s.insert(at, kTokens[rng() % kTokens.size()]);
        break;
      case 3: {  // erase a range
        if (s.empty()) break;
        const size_t from = rng() % s.size();
        s.erase(from, 1 + rng() % std::min<size_t>(16, s.size() - from));
        break;
      }
      case 4: {  // replace a run of digits with a token
        const size_t d = s.find_first_of("0123456789", at);
        if (d == std::string::npos) break;
        const size_t e = s.find_first_not_of("0123456789", d);
        s.replace(d, (e == std::string::npos ? s.size() : e) - d, kTokens[rng() % 9]);
        break;
      }
      case 5: {  // splice in part of another corpus entry
        if (corpus.empty()) break;
        const std::string& o = corpus[rng() % corpus.size()];
        if (o.empty()) break;
        const size_t from = rng() % o.size();
        s.insert(at, o.substr(from, 1 + rng() % 64));
        break;
      }
      default:  // truncate
        if (!s.empty()) s.resize(rng() % s.size());
        break;
    }
  }
  return s;
}

class FuzzCorpusTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FuzzCorpusTest, CorpusRegressionsAndMutationsNeverCrash) {
  const std::string& name = GetParam();
  const TargetFn fn = Targets().at(name);
  const std::vector<std::string> corpus = ReadDir(kFuzzDir / "corpus" / name);
  EXPECT_FALSE(corpus.empty()) << "no corpus in " << (kFuzzDir / "corpus" / name);
  for (const std::string& input : corpus) fn(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  for (const std::string& input : ReadDir(kFuzzDir / "regressions" / name)) {
    fn(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  double seconds = 2;
  if (const char* env = std::getenv("SY_FUZZ_SECONDS")) seconds = std::atof(env);
  std::mt19937_64 rng(std::hash<std::string>()(name));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int64_t runs = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string input = Mutate(corpus, rng);
    fn(reinterpret_cast<const uint8_t*>(input.data()), input.size());
    ++runs;
  }
  RecordProperty("runs", static_cast<int>(runs));
}

std::vector<std::string> Names() {
  std::vector<std::string> out;
  for (const auto& [name, fn] : Targets()) out.push_back(name);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzCorpusTest, ::testing::ValuesIn(Names()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace switchyard::fuzz
