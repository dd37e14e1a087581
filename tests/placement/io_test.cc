// Trace CSV and placement JSON: parsing, every rejected input, and the JSON round trip.
#include <regex>
#include <gtest/gtest.h>

#include "placement/io/load_csv.h"
#include "placement/io/placement_json.h"
#include "placement/metrics.h"
#include "placement/planner.h"
#include "tests/placement/test_util.h"

namespace switchyard::placement {
namespace {

TEST(LoadCsvTest, SumsRowsAndSelectsKeys) {
  const char* text =
      "step,layer,expert,tokens\n"
      "0,3,0,5\n0,3,1,7\n0,4,0,1\n0,4,1,2\n"
      "1,3,0,10\n1,3,1,0\n1,4,0,3\n1,4,1,4.5\n";
  auto all = ParseLoadCsv(text, "t.csv");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->layer_ids, (std::vector<int>{3, 4}));
  EXPECT_EQ(all->values[0], (std::vector<double>{15, 7}));
  EXPECT_EQ(all->values[1], (std::vector<double>{4, 6.5}));
  auto step1 = ParseLoadCsv(text, "t.csv", {"1"});
  ASSERT_TRUE(step1.ok());
  EXPECT_EQ(step1->values[0], (std::vector<double>{10, 0}));
}

TEST(LoadCsvTest, RejectsBadInputNamingFileLineAndProblem) {
  struct Case {
    const char* text;
    const char* message;
    std::optional<std::string> select = std::nullopt;
  };
  const Case cases[] = {
      {"layer,expert\n0,0\n", "t.csv line 1: header must be 'layer,expert,tokens'"},
      {"layer,expert,tokens\n0,0,5\n0,1,abc\n", "t.csv line 3: tokens 'abc' is not a number"},
      {"layer,expert,tokens\n0,0,5\n0,1,-2\n", "t.csv line 3: tokens -2 is negative"},
      {"layer,expert,tokens\n0,0,5\n0,x,2\n", "t.csv line 3: expert 'x' is not an integer"},
      {"layer,expert,tokens\n0,0,5,1\n", "t.csv line 2: expected 3 fields, got 4"},
      {"layer,expert,tokens\n0,0,5\n0,2,1\n", "t.csv: layer 0 has no expert 1"},
      {"layer,expert,tokens\n0,0,5\n0,1,1\n1,0,3\n", "t.csv: layer 1 has experts 0..0, layer 0 has 0..1"},
      {"layer,expert,tokens\n", "t.csv: no data rows"},
      {"", "t.csv: empty file"},
      {"layer,expert,tokens\n0,0,1\n", "needs a step or workload column", "3"},
      {"workload,layer,expert,tokens\na,0,0,1\n", "t.csv: no rows with workload 'b'", "b"},
      {"layer,expert,tokens\n0,0,1\n0,1,1e23\n", "t.csv line 3: tokens 1e23 bring layer 0 expert 1 beyond 2^53"},
      {"layer,expert,tokens\n0,0,9e15\n0,0,9e15\n", "t.csv line 3: tokens 9e15 bring layer 0 expert 0 beyond 2^53"},
      {"layer,expert,tokens\n0,0,nan\n", "t.csv line 2: tokens 'nan' is not a number"},
      {"layer,expert,tokens\n0,0,0x10\n", "t.csv line 2: tokens '0x10' is not a number"},
      {"layer,expert,tokens\n0,0,9007199254740991\n0,0,1\n", "beyond 2^53"},
      {"layer,expert,tokens\n0,0,\x01\x1b[31m\n", "tokens '\\x01\\x1b[31m' is not a number"},
      {"layer,expert,tokens\n0,70000,1\n", "t.csv line 2: expert '70000' is not an integer in 0..65535"},
      {"layer,expert,tokens\n4294967296,0,1\n", "t.csv line 2: layer '4294967296' is not an integer in 0..65535"},
  };
  for (const Case& c : cases) {
    auto load = ParseLoadCsv(c.text, "t.csv", {c.select});
    ASSERT_FALSE(load.ok()) << c.text;
    EXPECT_EQ(load.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(load.status().message().find(c.message), absl::string_view::npos)
        << load.status().message() << " vs " << c.message;
  }
}

TEST(LoadCsvTest, AByteOrderMarkIsSkipped) {
  auto load = ParseLoadCsv("\xEF\xBB\xBFlayer,expert,tokens\n0,0,2\n0,1,3\n", "bom.csv", {});
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_EQ(load->values[0][1], 3);
}

TEST(LoadCsvTest, ReadsEverySharedTraceInLayerExpertTokensForm) {
  auto keys = ReadLoadCsvKeys(test::TracePath("qwen15moe_gsm8k_steps.csv"));
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), 128u);
  auto q = ReadLoadCsv(test::TracePath("qwen15moe_gsm8k_steps.csv"), {"5"});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->layer_ids, (std::vector<int>{0, 8, 12, 18, 23}));
  EXPECT_EQ(q->num_experts(), 60);
  auto ds = ReadLoadCsv(test::TracePath("deepseek_v3_sglang_decode_in1000out1000.csv"));
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->num_layers(), 58);
  EXPECT_EQ(ds->layer_ids.front(), 3);
  EXPECT_EQ(ds->num_experts(), 256);
  EXPECT_TRUE(ReadLoadCsv(test::TracePath("switch_base_128_specmoe.csv")).ok());
  EXPECT_EQ(ReadLoadCsv("/nonexistent.csv").status().code(), absl::StatusCode::kNotFound);
}

TEST(PlacementJsonTest, RoundTrip) {
  const LoadMatrix load = test::ZipfLoad(3, 20, 1.0, 1000, 3);
  auto placement = (*CreatePlanner("incremental"))->Plan({*Topology::Create(4, 2, 6), load, nullptr, {}, {}});
  ASSERT_TRUE(placement.ok());
  const std::string json = PlacementToJson(*placement, "incremental", PlacementSummary{0.9, 0.8, 3, 1.5});
  auto back = ParsePlacementJson(json, "p.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *placement);
}

// A lone replica's share renormalised in floating point can be 1 + 2^-52 (files written before
// planners clamped it): read as 1. Anything further above 1 is refused, printed in full.
TEST(PlacementJsonTest, ShareRoundingAboveOneReadsAsOne) {
  const std::string good = PlacementToJson(*ContiguousPlacement(*Topology::Create(2, 1, 2), 3, {0}), "eplb", std::nullopt);
  // The first replica's share, whatever digits the writer used.
  auto with_share = [&](const std::string& value) {
    return std::regex_replace(good, std::regex("\"share\": [0-9.e+-]+"), "\"share\": " + value,
                              std::regex_constants::format_first_only);
  };
  auto read = ParsePlacementJson(with_share("1.0000000000000002"), "p.json");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->layers[0].ranks[0][0].share, 1.0);
  const std::string above = with_share("1.000001");
  auto refused = ParsePlacementJson(above, "p.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("1.0000009999999999 is out of range"), std::string::npos) << refused.status();
}

// Planners never emit a share above 1, however replicas were added and removed.
TEST(PlacementJsonTest, PlannedSharesStayWithinZeroAndOne) {
  for (int seed = 1; seed <= 20; ++seed) {
    const LoadMatrix before = test::ZipfLoad(2, 40, 1.2, 5000, seed), after = test::ZipfLoad(2, 40, 0.6, 5000, seed + 100);
    const Topology topo = *Topology::Create(8, 2, 6);
    auto planner = *CreatePlanner("incremental");
    const Placement first = *planner->Plan({topo, before, nullptr, {}, {}});
    const Placement second = *planner->Plan({topo, after, &first, {}, {}});
    for (const Placement* p : {&first, &second}) {
      for (const LayerPlacement& l : p->layers) {
        for (const auto& rank : l.ranks) {
          for (const Replica& r : rank) {
            ASSERT_GE(r.share, 0.0);
            ASSERT_LE(r.share, 1.0);
          }
        }
      }
      ASSERT_TRUE(ParsePlacementJson(PlacementToJson(*p, "incremental", std::nullopt), "p.json").ok());
    }
  }
}

TEST(PlacementJsonTest, RejectsBadDocuments) {
  const std::string good = PlacementToJson(
      *ContiguousPlacement(*Topology::Create(2, 1, 2), 3, {0}), "eplb", std::nullopt);
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  struct Case {
    std::string text, message;
  };
  const Case cases[] = {
      {"{", "p.json: not valid JSON"},
      {replace("switchyard.placement/v1", "v2"), "$.format: expected \"switchyard.placement/v1\""},
      {replace("\"nodes\": 1", "\"nodes\": 3"), "nodes (3) must divide ranks (2)"},
      {replace("\"share\": 1.0", "\"share\": -1.0"), "$.layers[0].ranks[0][0].share: -1 is out of range"},
      {replace("\"expert\": 2", "\"expert\": 7"), "$.layers[0].ranks[1][0].expert: 7 is out of range"},
      {replace("\"expert\": 2", "\"expert\": 1"), "shares of expert 1 sum to 2, not 1"},
      {replace("\"ranks\": [", "\"ranks\": [[{\"expert\": 0, \"share\": 0.0}],"), "lists 3 ranks, expected 2"},
      {replace("\"layer\": 0", "\"layer\": \"x\""), "$.layers[0].layer: expected an integer"},
  };
  for (const Case& c : cases) {
    auto parsed = ParsePlacementJson(c.text, "p.json");
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_NE(parsed.status().message().find(c.message), absl::string_view::npos)
        << parsed.status().message() << " vs " << c.message;
  }
}

// The largest finite loads give finite metrics: balancedness divides before it sums.
TEST(MetricsTest, HugeLoadsGiveFiniteBalancedness) {
  EXPECT_DOUBLE_EQ(Balancedness(std::vector<double>(4, 1e308)), 1.0);
  EXPECT_DOUBLE_EQ(Balancedness(std::vector<double>{1e308, 1e308, 0, 0}), 0.5);
  EXPECT_DOUBLE_EQ(Balancedness(std::vector<double>{0, 0}), 1.0);
}

}  // namespace
}  // namespace switchyard::placement
