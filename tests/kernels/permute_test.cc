// Permute / group / combine: exact against direct references.
#include "kernels/permute.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

namespace switchyard::kernels {
namespace {

TEST(PermuteTest, DispatchLayoutGroupsByRankStably) {
  const std::vector<int32_t> dest = {2, 0, 2, 1, 0, 2, 2, 0};  // 4 tokens x top-2
  std::vector<int64_t> counts(4), offsets(4);
  std::vector<int32_t> position(8), send_pair(8);
  ASSERT_TRUE(DispatchLayout(dest.data(), 8, 4, counts.data(), offsets.data(), position.data(), send_pair.data()).ok());
  EXPECT_EQ(counts, (std::vector<int64_t>{3, 1, 4, 0}));
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 3, 4, 8}));
  EXPECT_EQ(send_pair, (std::vector<int32_t>{1, 4, 7, 3, 0, 2, 5, 6}));
  for (int p = 0; p < 8; ++p) EXPECT_EQ(send_pair[position[p]], p);
  // Zero pairs; a bad rank.
  EXPECT_TRUE(DispatchLayout(dest.data(), 0, 4, counts.data(), offsets.data(), position.data(), send_pair.data()).ok());
  EXPECT_EQ(counts, (std::vector<int64_t>{0, 0, 0, 0}));
  const int32_t bad[] = {0, 4};
  absl::Status s = DispatchLayout(bad, 2, 4, counts.data(), offsets.data(), position.data(), send_pair.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("pair 1 goes to rank 4"), absl::string_view::npos);
}

TEST(PermuteTest, GroupBySlotAndRoundTripOfRows) {
  std::mt19937 rng(3);
  const int rows = 1000, slots = 37, width = 13;
  std::vector<int32_t> slot(rows);
  for (auto& s : slot) s = std::uniform_int_distribution<int>(0, slots - 1)(rng);
  slot[5] = 36;
  std::vector<int64_t> counts(slots), offsets(slots);
  std::vector<int32_t> order(rows);
  ASSERT_TRUE(GroupBySlot(slot.data(), rows, slots, counts.data(), offsets.data(), order.data()).ok());
  std::vector<float> src(rows * width), grouped(rows * width), back(rows * width);
  for (size_t i = 0; i < src.size(); ++i) src[i] = float(i);
  ScatterRows(src.data(), grouped.data(), order.data(), rows, width * sizeof(float));
  for (int s = 0; s < slots; ++s) {
    int32_t last = -1;
    for (int64_t g = offsets[s]; g < offsets[s] + counts[s]; ++g) {
      const int32_t i = int32_t(grouped[g * width] / width);
      EXPECT_EQ(slot[i], s);
      EXPECT_GT(i, last);  // stable
      last = i;
    }
  }
  GatherRows(grouped.data(), back.data(), order.data(), rows, width * sizeof(float));
  EXPECT_EQ(back, src);
  const int32_t bad = 37;
  EXPECT_FALSE(GroupBySlot(&bad, 1, slots, counts.data(), offsets.data(), order.data()).ok());
}

// Every ISA path against the scalar definition (multiply, then add, in k order), bit for bit:
// hidden sizes below, at and between the paths' register blocks (4 vectors of 4, 8 or 16).
TEST(PermuteTest, CombineSumsInKOrderExactlyOnEveryPath) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0, 1);
  for (CpuIsa isa : SupportedCpuIsas()) {
    for (int k : {1, 2, 8}) {
      for (int hidden : {1, 7, 64, 67, 1000}) {
        const int tokens = 33, pairs = tokens * k;
        std::vector<float> rows(pairs * hidden), w(pairs), out(tokens * hidden);
        for (float& v : rows) v = n(rng);
        for (float& v : w) v = n(rng);
        std::vector<int32_t> position(pairs);
        for (int p = 0; p < pairs; ++p) position[p] = p;
        std::shuffle(position.begin(), position.end(), rng);
        Combine(rows.data(), position.data(), w.data(), tokens, k, hidden, out.data(), 1, isa);
        for (int t = 0; t < tokens; ++t) {
          for (int h = 0; h < hidden; ++h) {
            float ref = w[t * k] * rows[position[t * k] * hidden + h];
            for (int j = 1; j < k; ++j) ref = ref + w[t * k + j] * rows[position[t * k + j] * hidden + h];
            ASSERT_EQ(std::memcmp(&ref, &out[t * hidden + h], 4), 0)
                << CpuIsaName(isa) << " k=" << k << " hidden=" << hidden << " at " << t << "," << h;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace switchyard::kernels

namespace switchyard::kernels {
namespace {

// Threads share rows (tokens) only: every result is the same bits at 1 and 3 threads, above
// and below the size where threads start.
TEST(PermuteTest, ThreadsChangeNoBit) {
  for (int64_t tokens : {int64_t{5}, int64_t{1200}}) {
    const int k = 8;
    const int64_t hidden = 131, pairs = tokens * k;  // 1200 x 8 x 131 floats: above kParallelBytes
    std::vector<float> rows(pairs * hidden), w(pairs);
    std::vector<int32_t> position(pairs);
    for (int64_t i = 0; i < pairs * hidden; ++i) rows[i] = static_cast<float>((i * 2654435761u) % 1000) / 7.0f;
    for (int64_t p = 0; p < pairs; ++p) {
      position[p] = static_cast<int32_t>((p * 7919) % pairs);
      w[p] = 1.0f / static_cast<float>(1 + p % 5);
    }
    std::vector<float> one(tokens * hidden), three(tokens * hidden);
    Combine(rows.data(), position.data(), w.data(), tokens, k, hidden, one.data(), 1);
    Combine(rows.data(), position.data(), w.data(), tokens, k, hidden, three.data(), 3);
    EXPECT_EQ(std::memcmp(one.data(), three.data(), one.size() * 4), 0) << tokens;
    std::vector<float> g1(pairs * hidden), g3(pairs * hidden), s1(pairs * hidden), s3(pairs * hidden);
    GatherRows(rows.data(), g1.data(), position.data(), pairs, hidden * 4, 1, 1);
    GatherRows(rows.data(), g3.data(), position.data(), pairs, hidden * 4, 1, 3);
    EXPECT_EQ(g1, g3);
    ScatterRows(rows.data(), s1.data(), position.data(), pairs, hidden * 4, 1);
    ScatterRows(rows.data(), s3.data(), position.data(), pairs, hidden * 4, 3);
    EXPECT_EQ(s1, s3);
  }
}

}  // namespace
}  // namespace switchyard::kernels
