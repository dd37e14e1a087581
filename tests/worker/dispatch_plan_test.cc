// DispatchPlan, the host-side bookkeeping every device shares: a hand-computed step (dedup,
// layouts, expansion, grouping by slot), and every count or index a peer could get wrong.
#include "worker/dispatch_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

namespace switchyard::worker {
namespace {

using ::testing::HasSubstr;

// 3 tokens, top-2, 2 ranks. Pairs (token, j) -> (rank, slot):
//   t0: (1, 0) (1, 1)   t1: (0, 2) (1, 0)   t2: (0, 1) (0, 1)
DispatchPlan HandPlan() {
  const std::vector<int32_t> dest = {1, 1, 0, 1, 0, 0}, slot = {0, 1, 2, 0, 1, 1};
  DispatchPlan plan;
  EXPECT_TRUE(plan.PlanSend(dest.data(), slot.data(), 3, 2, 2).ok());
  return plan;
}

TEST(DispatchPlanTest, SendsATokenOncePerRankWithEachPairsSlotAndRow) {
  const DispatchPlan plan = HandPlan();
  EXPECT_EQ(plan.send_counts, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(plan.send_offsets, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(plan.send_pair, (std::vector<int32_t>{2, 4, 5, 0, 1, 3}));  // stable per rank
  EXPECT_EQ(plan.position, (std::vector<int32_t>{3, 4, 0, 5, 1, 2}));
  // Rank 0 gets t1 and t2 once each, rank 1 t0 and t1.
  EXPECT_EQ(plan.uniq_token, (std::vector<int32_t>{1, 2, 0, 1}));
  EXPECT_EQ(plan.send_uniq_counts, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(plan.sent_rows(), 4);
  // (slot, row in the destination's block) per sent pair.
  EXPECT_EQ(plan.send_meta, (std::vector<int32_t>{2, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1}));
  EXPECT_EQ(plan.count_pairs, (std::vector<int64_t>{3, 2, 3, 2}));
}

TEST(DispatchPlanTest, ExpandsReceivedRowsToPairsGroupedBySlot) {
  DispatchPlan plan = HandPlan();
  // As rank 0: its own block (3 pairs in 2 rows) and 1 pair in 1 row from rank 1.
  const std::vector<int64_t> counts = {3, 2, 1, 1};
  ASSERT_TRUE(plan.PlanReceive(counts.data()).ok());
  EXPECT_EQ(plan.received_pairs(), 4);
  EXPECT_EQ(plan.received_rows(), 3);
  const std::vector<int32_t> meta = {2, 0, 1, 1, 1, 1, 0, 0};
  ASSERT_TRUE(plan.Expand(meta.data(), 3).ok());
  EXPECT_EQ(plan.recv_slot, (std::vector<int32_t>{2, 1, 1, 0}));
  EXPECT_EQ(plan.recv_row_of, (std::vector<int32_t>{0, 1, 1, 2}));  // rank 1's rows start at 2
  EXPECT_EQ(plan.slot_counts, (std::vector<int64_t>{1, 2, 1}));
  EXPECT_EQ(plan.slot_offsets, (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(plan.order, (std::vector<int32_t>{3, 1, 2, 0}));
  EXPECT_EQ(plan.grouped_row, (std::vector<int32_t>{2, 1, 1, 0}));

  const ExchangeLayout rows = plan.DispatchRows(8);
  EXPECT_EQ(rows.send_counts, (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(rows.send_offsets, (std::vector<int64_t>{0, 16}));
  EXPECT_EQ(rows.recv_counts, (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(rows.recv_offsets, (std::vector<int64_t>{0, 16}));
  EXPECT_EQ(rows.sent_bytes(), 32);
  const ExchangeLayout meta_layout = plan.DispatchMeta();
  EXPECT_EQ(meta_layout.send_counts, (std::vector<int64_t>{24, 24}));
  EXPECT_EQ(meta_layout.recv_counts, (std::vector<int64_t>{24, 8}));
  const ExchangeLayout back = plan.ReturnRows(8);  // each received pair goes back to its sender
  EXPECT_EQ(back.send_counts, (std::vector<int64_t>{24, 8}));
  EXPECT_EQ(back.recv_counts, (std::vector<int64_t>{24, 24}));
  EXPECT_EQ(back.recv_offsets, (std::vector<int64_t>{0, 24}));
}

TEST(DispatchPlanTest, RefusesCountsNoPeerCouldSend) {
  for (const std::vector<int64_t>& counts : std::vector<std::vector<int64_t>>{
           {3, 2, -1, 0},   // negative
           {3, 2, 1, 2},    // more rows than pairs
           {3, 2, 5, 2},    // more pairs than k per row
           {3, 2, int64_t{1} << 40, int64_t{1} << 40}}) {
    DispatchPlan plan = HandPlan();
    const absl::Status s = plan.PlanReceive(counts.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << counts[2] << " " << counts[3];
    EXPECT_THAT(s.message(), HasSubstr("rank 1 announced"));
  }
}

TEST(DispatchPlanTest, RefusesSlotsAndRowIndicesOutOfRange) {
  const std::vector<int64_t> counts = {3, 2, 1, 1};
  {
    DispatchPlan plan = HandPlan();
    ASSERT_TRUE(plan.PlanReceive(counts.data()).ok());
    const std::vector<int32_t> meta = {2, 0, 1, 1, 1, 1, 3, 0};
    const absl::Status s = plan.Expand(meta.data(), 3);
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(s.message(), HasSubstr("rank 1 sent slot 3 of 3"));
  }
  {
    DispatchPlan plan = HandPlan();
    ASSERT_TRUE(plan.PlanReceive(counts.data()).ok());
    const std::vector<int32_t> meta = {2, 0, 1, 2, 1, 1, 0, 0};  // rank 0 sent 2 rows: index 2 is past them
    const absl::Status s = plan.Expand(meta.data(), 3);
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(s.message(), HasSubstr("rank 0 sent row index 2 of 2"));
  }
}

TEST(DispatchPlanTest, RefusesADestinationOutsideTheRanks) {
  const std::vector<int32_t> dest = {0, 2}, slot = {0, 0};
  DispatchPlan plan;
  EXPECT_EQ(plan.PlanSend(dest.data(), slot.data(), 1, 2, 2).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::worker
