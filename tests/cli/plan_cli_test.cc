// `switchyard plan` as users run it: real binary, real trace, every bad input rejected with
// exit code 2, one line naming the problem, and nothing written.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "placement/io/load_csv.h"
#include "placement/io/placement_json.h"
#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

using test::RunCommand;
using test::TempDir;

const std::string kBinary = SWITCHYARD_CLI;
const std::string kTrace = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_prefill_in1024.csv";

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(PlanCliTest, PlansARealTraceAndRoundTripsThroughCurrent) {
  TempDir dir;
  const std::string out = dir.File("p.json");
  auto r = RunCommand({kBinary, "plan", "--loads", kTrace, "--ranks", "32", "--slots-per-rank", "9",
                "--nodes", "4", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("balancedness    mean 1.0000"), std::string::npos) << r.err;
  auto placement = placement::ReadPlacementJson(out);
  ASSERT_TRUE(placement.ok()) << placement.status();
  EXPECT_EQ(placement->topology.ranks(), 32);
  EXPECT_EQ(placement->layers.size(), 58u);
  EXPECT_EQ(placement->layers.front().layer_id, 3);

  // Same load from the written placement: nothing to move. JSON on stdout.
  auto again = RunCommand({kBinary, "plan", "--loads", kTrace, "--ranks", "32", "--slots-per-rank", "9",
                    "--nodes", "4", "--current", out});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("\"moved_replicas\": 0"), std::string::npos);
  EXPECT_NE(again.out.find("\"format\": \"switchyard.placement/v1\""), std::string::npos);

  auto eplb = RunCommand({kBinary, "plan", "--loads", kTrace, "--ranks", "32", "--slots-per-rank", "9",
                   "--policy", "eplb", "--format", "table"});
  ASSERT_EQ(eplb.exit_code, 0) << eplb.err;
  EXPECT_NE(eplb.out.find("policy eplb"), std::string::npos);
  EXPECT_NE(eplb.out.find("layers, worst first"), std::string::npos);
}

TEST(PlanCliTest, SelectKeepsOneStep) {
  const std::string qwen = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/qwen15moe_gsm8k_steps.csv";
  auto r = RunCommand({kBinary, "plan", "--loads", qwen, "--select", "0", "--ranks", "8", "--slots-per-rank", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("5 layers x 60 experts"), std::string::npos) << r.err;
}

TEST(PlanCliTest, BadInputExitsTwoWithOneLineAndWritesNothing) {
  TempDir dir;
  const std::string out = dir.File("never.json");
  Write(dir.File("missing_col.csv"), "layer,expert\n3,0\n");
  Write(dir.File("bad_tokens.csv"), "layer,expert,tokens\n3,0,12\n3,1,lots\n");
  Write(dir.File("negative.csv"), "layer,expert,tokens\n3,0,12\n3,1,-4\n");
  Write(dir.File("gap.csv"), "layer,expert,tokens\n3,0,12\n3,2,4\n");
  Write(dir.File("small.csv"), "layer,expert,tokens\n3,0,1\n3,1,1\n3,2,1\n3,3,1\n3,4,1\n");
  Write(dir.File("wrong_topology.json"),
        placement::PlacementToJson(*placement::ContiguousPlacement(*placement::Topology::Create(2, 1, 4), 5, {3}),
                                   "x", std::nullopt));
  Write(dir.File("wrong_layers.json"),
        placement::PlacementToJson(*placement::ContiguousPlacement(*placement::Topology::Create(4, 1, 2), 5, {7}),
                                   "x", std::nullopt));
  const std::string small = dir.File("small.csv");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--loads", dir.File("missing_col.csv"), "--ranks", "4", "--slots-per-rank", "2"},
       "missing_col.csv line 1: header must be 'layer,expert,tokens'"},
      {{"--loads", dir.File("bad_tokens.csv"), "--ranks", "4", "--slots-per-rank", "2"},
       "bad_tokens.csv line 3: tokens 'lots' is not a number"},
      {{"--loads", dir.File("negative.csv"), "--ranks", "4", "--slots-per-rank", "2"},
       "negative.csv line 3: tokens -4 is negative"},
      {{"--loads", dir.File("gap.csv"), "--ranks", "4", "--slots-per-rank", "2"},
       "gap.csv: layer 3 has no expert 1"},
      {{"--loads", small, "--ranks", "2", "--slots-per-rank", "2"}, "cannot hold 5 experts"},
      {{"--loads", small, "--ranks", "4", "--nodes", "3", "--slots-per-rank", "2"},
       "nodes (3) must divide ranks (4)"},
      {{"--loads", small, "--ranks", "4", "--slots-per-rank", "2", "--current", dir.File("wrong_topology.json")},
       "current placement is for 2 ranks"},
      {{"--loads", small, "--ranks", "4", "--slots-per-rank", "2", "--current", dir.File("wrong_layers.json")},
       "current placement has no layer 3"},
      {{"--loads", small, "--ranks", "4", "--slots-per-rank", "2", "--policy", "magic"},
       "unknown policy 'magic' (choose one of: incremental, eplb)"},
      {{"--loads", dir.File("nope.csv"), "--ranks", "4", "--slots-per-rank", "2"}, "nope.csv"},
      {{"--loads", small, "--ranks", "four", "--slots-per-rank", "2"}, "--ranks 'four': expected an integer"},
      {{"--loads", small, "--ranks", "4", "--slots-per-rank", "2", "--frobnicate"}, "unknown flag '--frobnicate'"},
      {{"--ranks", "4", "--slots-per-rank", "2"}, "--loads FILE.csv is required"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {kBinary, "plan"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    argv.insert(argv.end(), {"--out", out});
    auto r = RunCommand(argv);
    SCOPED_TRACE(c.message);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty());
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

}  // namespace
}  // namespace switchyard

namespace switchyard {
namespace {

// `switchyard trace synth`: windows with a burst, readable as a per-step trace; the same
// seed gives the same file; bad input exits 2 naming the problem and writes nothing.
// Each command lists its own flags in --help and refuses another command's (it would be
// accepted and ignored otherwise), benchmarks and admin commands included.
TEST(CliFlagsTest, HelpListsAndCommandsTakeOnlyTheirOwnFlags) {
  auto help = [](std::vector<std::string> argv) {
    argv.insert(argv.begin(), kBinary);
    argv.push_back("--help");
    auto r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  const std::string sim = help({"sim"}), kernels = help({"bench", "kernels"}), status = help({"status"});
  EXPECT_NE(sim.find("--sim-burst"), std::string::npos) << sim;
  EXPECT_EQ(sim.find("--coordinator"), std::string::npos) << sim;
  EXPECT_EQ(sim.find("--ffn-rows"), std::string::npos) << sim;
  EXPECT_NE(kernels.find("--ffn-rows"), std::string::npos) << kernels;
  EXPECT_EQ(kernels.find("--trace "), std::string::npos) << kernels;
  EXPECT_NE(status.find("--coordinator"), std::string::npos) << status;
  EXPECT_EQ(status.find("--ranks"), std::string::npos) << status;
  const std::vector<std::pair<std::vector<std::string>, std::string>> foreign = {
      {{"bench", "kernels", "--steps", "5"}, "--steps is not a flag of switchyard bench kernels"},
      {{"bench", "a2a", "--ffn-rows", "5"}, "--ffn-rows is not a flag of switchyard bench a2a"},
      {{"status", "--ranks", "3"}, "--ranks is not a flag of switchyard status"},
      {{"rebalance", "--trace", "x.csv"}, "--trace is not a flag of switchyard rebalance"},
  };
  for (auto [argv, want] : foreign) {
    argv.insert(argv.begin(), kBinary);
    auto r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << want << ": " << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST(TraceCliTest, SynthWritesBurstWindowsAsAPerStepTrace) {
  TempDir dir;
  const std::string decode = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_decode_in1000out1000.csv";
  const std::string out = dir.File("w.csv"), again = dir.File("w2.csv");
  const std::vector<std::string> args = {kBinary, "trace", "synth", "--profile", decode, "--first-layers", "3",
                                         "--windows", "4", "--tokens", "2048", "--burst", "3:0.35@2..4", "--seed", "5"};
  std::vector<std::string> a = args, b = args;
  a.insert(a.end(), {"--out", out});
  b.insert(b.end(), {"--out", again});
  auto r = RunCommand(a);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(RunCommand(b).exit_code, 0);
  std::ifstream f1(out), f2(again);
  const std::string t1((std::istreambuf_iterator<char>(f1)), {}), t2((std::istreambuf_iterator<char>(f2)), {});
  EXPECT_EQ(t1, t2);
  auto keys = placement::ReadLoadCsvKeys(out);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, (std::vector<std::string>{"0", "1", "2", "3"}));
  auto w0 = placement::ReadLoadCsv(out, {std::string("0")}), w3 = placement::ReadLoadCsv(out, {std::string("3")});
  ASSERT_TRUE(w0.ok() && w3.ok());
  EXPECT_EQ(w0->num_layers(), 3);
  double total = 0, top0 = 0, top3 = 0;
  for (double x : w0->values[0]) total += x;
  EXPECT_EQ(total, 2048.0 * 8);
  for (double x : w0->values[0]) top0 = std::max(top0, x);
  for (double x : w3->values[0]) top3 = std::max(top3, x);
  EXPECT_GT(top3, 2 * top0) << "the burst's hot experts dominate window 3";
  // Planning straight from a window of the file works.
  auto plan = RunCommand({kBinary, "plan", "--loads", out, "--select", "3", "--ranks", "32", "--slots-per-rank", "9"});
  EXPECT_EQ(plan.exit_code, 0) << plan.err;

  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--burst", "3:0.35@5"}, {"--burst", "0:0.3@1..2"}, {"--windows", "0"},
        {"--top-k", "300"}, {"--tokens", "-4"}}) {
    std::vector<std::string> c = {kBinary, "trace", "synth", "--profile", decode, "--out", dir.File("bad.csv")};
    c.insert(c.end(), bad.begin(), bad.end());
    auto e = RunCommand(c);
    EXPECT_EQ(e.exit_code, 2) << bad[0] << " " << bad[1] << ": " << e.err;
    EXPECT_NE(e.err.find("switchyard trace synth:"), std::string::npos) << e.err;
    EXPECT_FALSE(std::filesystem::exists(dir.File("bad.csv")));
  }
  EXPECT_EQ(RunCommand({kBinary, "trace", "synth"}).exit_code, 2);
  EXPECT_EQ(RunCommand({kBinary, "trace", "frobnicate"}).exit_code, 2);
}

}  // namespace
}  // namespace switchyard
