// Live migration on in-process ranks (DESIGN.md section 6 invariants): outputs bit-identical
// with and without a migration, every migrated replica byte-identical to its source, every
// step under one epoch on all ranks, tokens conserved; the start waits for every rank's
// orders; the byte budget spreads the copy over steps; a failed transfer aborts everywhere
// at one step; orders that do not match the placement are ignored.
#include "worker/migration.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include <atomic>
#include <random>
#include <thread>

#include "comm/inprocess/factory.h"
#include "placement/metrics.h"
#include "placement/planner.h"
#include "rpc/convert.h"
#include "worker/driver.h"

namespace switchyard::worker {
namespace {

const std::string kTrace = std::string(SWITCHYARD_SOURCE_DIR) + "/data/traces/deepseek_v3_sglang_decode_in1000out1000.csv";
constexpr int kRanks = 4, kSteps = 14;
constexpr int64_t kTokens = 24;

struct World {
  model::ModelConfig model;
  std::vector<int> layers;
  std::unique_ptr<Workload> workload;
  placement::Placement start, target;
  control::Orders orders;
};

World MakeWorld() {
  World w;
  w.model = *model::ScaleModel(*model::PresetModel("deepseek-v3"), 0.0625);
  w.layers = {w.model.moe_layers[0], w.model.moe_layers[1]};
  w.workload = *Workload::Create({"trace:" + kTrace}, w.model, w.layers, 5);
  const int E = w.model.num_experts;
  const auto topo = *placement::Topology::Create(kRanks, 2, E / kRanks + 2);
  w.start = *placement::ContiguousPlacement(topo, E, w.layers);
  placement::LoadMatrix load{w.layers, w.workload->Expected(0)};
  for (auto& row : load.values) for (double& x : row) x *= 1e5;
  placement::PlanRequest request{topo, load, &w.start, {}, {}};
  request.options.max_moves = 40;
  w.target = *(*placement::CreatePlanner("incremental"))->Plan(request);
  *w.orders.mutable_placement() = rpc::ToProto(w.target, 1);
  w.orders.set_base_epoch(0);
  for (const placement::Transfer& t : placement::PlanTransfers(w.start, w.target)) {
    auto* x = w.orders.add_transfers();
    x->set_layer(t.layer_id);
    x->set_expert(t.expert);
    x->set_from(t.from);
    x->set_to(t.to);
  }
  return w;
}

struct RunOptions {
  bool migrate = true;
  std::vector<int> offer_step = {2, 2, 2, 2};  // the step boundary at which each rank gets the orders
  MigrationOptions migration{};
  std::function<void(control::Orders&)> tamper{};
  std::atomic<int>* refused = nullptr;  // counts "refused" updates
};

// Runs the world on in-process ranks; every rank's report.
std::vector<RunReport> RunRanks(const World& w, const RunOptions& o) {
  auto comms = comm::CreateInProcessWorld(kRanks, 2);
  control::Orders orders = w.orders;
  if (o.tamper) o.tamper(orders);
  std::vector<RunReport> reports(kRanks);
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      WeightStore store(w.model, w.layers);
      auto source = SeededWeights(w.model, 9);
      ASSERT_TRUE(store.Load(w.start, r, *source).ok());
      auto table = std::make_shared<placement::RoutingTable>(*placement::RoutingTable::Build(w.start, 0));
      Driver driver(w.model, *comms[r], *w.workload, store, table, {kSteps, kTokens, 0, nullptr});
      std::unique_ptr<EpochManager> epochs;
      int step = 0;
      if (o.migrate) {
        epochs = std::make_unique<EpochManager>(*comms[r], store, driver.layer(), w.start, 0, o.migration);
        epochs->set_on_update([&](const MigrationUpdate& u) {
          if (u.phase == "refused" && o.refused) ++*o.refused;
        });
        // Offered at every boundary after step offer_step[r] (the control thread re-polls).
        driver.set_epochs(epochs.get(), [&, r]() -> std::optional<control::Orders> {
          return ++step > o.offer_step[r] ? std::optional<control::Orders>(orders) : std::nullopt;
        });
      }
      auto report = driver.Run();
      ASSERT_TRUE(report.ok()) << report.status();
      reports[r] = *report;
    });
  }
  for (auto& t : threads) t.join();
  return reports;
}

// Orders are checked before anything acts on them (ValidateOrders): a transfer for a layer
// this rank does not run (it used to index past the weight store's slots), transfers that do
// not match the placements, and a target of another shape are refused, naming the problem.
TEST(Migration, OrdersAreValidatedBeforeUse) {
  World w = MakeWorld();
  ASSERT_TRUE(ValidateOrders(w.orders, w.start, w.layers).ok()) << ValidateOrders(w.orders, w.start, w.layers).status();
  ASSERT_GT(w.orders.transfers_size(), 0);
  auto refused = [&](const control::Orders& orders, const std::string& message) {
    auto v = ValidateOrders(orders, w.start, w.layers);
    ASSERT_FALSE(v.ok()) << message;
    EXPECT_TRUE(absl::IsInvalidArgument(v.status()));
    EXPECT_NE(v.status().message().find(message), std::string::npos) << v.status();
  };
  control::Orders other_layer = w.orders;
  other_layer.mutable_transfers(0)->set_layer(w.layers.back() + 1000);
  refused(other_layer, "this job does not run that layer");
  // The same against a rank that runs only the first layer while the placement has both.
  auto only_first = ValidateOrders(w.orders, w.start, {w.layers[0]});
  bool second_layer_moves = false;
  for (const auto& t : w.orders.transfers()) second_layer_moves |= t.layer() == w.layers[1];
  if (second_layer_moves) {
    ASSERT_FALSE(only_first.ok());
    EXPECT_NE(only_first.status().message().find("this job does not run that layer"), std::string::npos);
  }
  control::Orders wrong_rank = w.orders;
  wrong_rank.mutable_transfers(0)->set_to(kRanks + 3);
  refused(wrong_rank, "is out of range");
  control::Orders missing = w.orders;
  missing.mutable_transfers()->RemoveLast();
  refused(missing, "with no transfer");
  // A second transfer of the same expert to the same rank (from another holder or the same
  // one) would replace the staging buffer the first one's receives write into.
  control::Orders twice = w.orders;
  *twice.add_transfers() = w.orders.transfers(0);
  refused(twice, "has more than one transfer to rank");
  control::Orders shape = w.orders;
  shape.mutable_placement()->set_experts(shape.placement().experts() + 1);
  EXPECT_FALSE(ValidateOrders(shape, w.start, w.layers).ok());
}

TEST(Migration, OutputsAreBitIdenticalAndReplicasByteIdentical) {
  const World w = MakeWorld();
  ASSERT_GT(w.orders.transfers_size(), 0);
  const std::vector<RunReport> off = RunRanks(w, {.migrate = false});
  const std::vector<RunReport> on = RunRanks(w, {});
  for (int r = 0; r < kRanks; ++r) {
    SCOPED_TRACE(r);
    EXPECT_EQ(on[r].output_checksum, off[0].output_checksum);
    EXPECT_TRUE(on[r].tokens_conserved);
    ASSERT_EQ(on[r].migrations.size(), 1u);
    const MigrationRecord& m = on[r].migrations[0];
    EXPECT_EQ(m.epoch, 1);
    EXPECT_EQ(m.start_step, 3);  // orders at the boundary after step 2
    EXPECT_GT(m.commit_step, m.start_step);
    EXPECT_TRUE(m.error.empty()) << m.error;
    EXPECT_EQ(m.moved_replicas, w.orders.transfers_size());
    EXPECT_EQ(m.commit_step, on[0].migrations[0].commit_step);  // every rank switched at one step
    EXPECT_EQ(on[r].final_epoch, 1);
    EXPECT_TRUE(on[r].weights_identical);
  }
  // Every rank ends holding what the target places on it; and the migration helped.
  for (int r = 0; r < kRanks; ++r) {
    int target = 0;
    for (const auto& layer : w.target.layers) target += static_cast<int>(layer.ranks[r].size());
    EXPECT_EQ(on[0].held_replicas[r], target) << r;
  }
  EXPECT_EQ(on[0].replicas_checked, [&] {
    int n = 0;
    for (const auto& l : w.target.layers) for (const auto& slots : l.ranks) n += static_cast<int>(slots.size());
    return n;
  }());
  const auto& by_step = on[0].worst_balancedness_by_step;
  ASSERT_EQ(by_step.size(), static_cast<size_t>(kSteps));
  EXPECT_GT(by_step.back().second, off[0].worst_balancedness_by_step.back().second + 0.1);
}

TEST(Migration, StartsOnlyOnceEveryRankHoldsTheOrders) {
  const World w = MakeWorld();
  const std::vector<RunReport> on = RunRanks(w, {.offer_step = {1, 4, 2, 6}});
  for (int r = 0; r < kRanks; ++r) {
    ASSERT_EQ(on[r].migrations.size(), 1u);
    EXPECT_EQ(on[r].migrations[0].start_step, 7);
    EXPECT_EQ(on[r].migrations[0].commit_step, on[0].migrations[0].commit_step);
    EXPECT_EQ(on[r].final_epoch, 1);
  }
}

TEST(Migration, TheByteBudgetSpreadsTheCopyOverSteps) {
  const World w = MakeWorld();
  const int64_t expert = static_cast<int64_t>(kernels::PackedExpertBytes(w.model.ExpertShape()));
  // The busiest rank's bytes (sent + received) over the budget: at least that many steps.
  std::vector<int64_t> moved(kRanks, 0);
  for (const auto& t : w.orders.transfers()) {
    moved[t.from()] += expert;
    moved[t.to()] += expert;
  }
  const int64_t most = *std::max_element(moved.begin(), moved.end());
  RunOptions o;
  o.migration.bytes_per_step = most / 4;
  o.migration.chunk_bytes = expert / 4;
  const std::vector<RunReport> on = RunRanks(w, o);
  ASSERT_EQ(on[0].migrations.size(), 1u);
  const MigrationRecord& m = on[0].migrations[0];
  EXPECT_GE(m.commit_step - m.start_step, 3) << "budget " << o.migration.bytes_per_step << " of " << most;
  EXPECT_EQ(on[0].final_epoch, 1);
  EXPECT_GE(on[0].migration_steps, 4);
}

// Rank 1's transfers hang (test hook: its transfer thread posts nothing); no rank completes
// a transfer for the stall timeout, so every rank aborts at the same step, keeps epoch 0 and
// never retries the same orders.
TEST(Migration, AStalledTransferAbortsOnEveryRankAtOneStep) {
  const World w = MakeWorld();
  const std::vector<RunReport> off = RunRanks(w, {.migrate = false});
  RunOptions o;
  o.migration.timeout = absl::Milliseconds(30);
  ASSERT_EQ(setenv("SWITCHYARD_TEST_HOLD_TRANSFERS", "1", 1), 0);
  const std::vector<RunReport> on = RunRanks(w, o);
  ASSERT_EQ(unsetenv("SWITCHYARD_TEST_HOLD_TRANSFERS"), 0);
  for (int r = 0; r < kRanks; ++r) {
    SCOPED_TRACE(r);
    ASSERT_EQ(on[r].migrations.size(), 1u);  // aborted once, the same orders never retried
    EXPECT_EQ(on[r].migrations[0].commit_step, -1);
    EXPECT_NE(on[r].migrations[0].error.find("stalled"), std::string::npos) << on[r].migrations[0].error;
    EXPECT_EQ(on[r].migrations[0].abort_step, on[0].migrations[0].abort_step);
    EXPECT_GT(on[r].migrations[0].abort_step, on[r].migrations[0].start_step);
    EXPECT_EQ(on[r].final_epoch, 0);
    EXPECT_EQ(on[r].output_checksum, off[0].output_checksum);
    EXPECT_TRUE(on[r].tokens_conserved);
    EXPECT_TRUE(on[r].weights_identical);
  }
}

// A budget far too small to finish within the stall timeout is slow, not stalled: the
// migration completes.
TEST(Migration, ASlowMigrationIsNotAStall) {
  const World w = MakeWorld();
  const std::vector<RunReport> off = RunRanks(w, {.migrate = false});
  const int64_t expert = static_cast<int64_t>(kernels::PackedExpertBytes(w.model.ExpertShape()));
  std::vector<int64_t> moved(kRanks, 0);
  for (const auto& t : w.orders.transfers()) {
    moved[t.from()] += expert;
    moved[t.to()] += expert;
  }
  RunOptions o;
  // Spread over about 6 steps with a stall timeout shorter than the whole copy.
  o.migration.bytes_per_step = *std::max_element(moved.begin(), moved.end()) / 6;
  o.migration.chunk_bytes = expert / 4;
  o.migration.timeout = absl::Milliseconds(10);
  const std::vector<RunReport> on = RunRanks(w, o);
  for (int r = 0; r < kRanks; ++r) {
    SCOPED_TRACE(r);
    ASSERT_GE(on[r].migrations.size(), 1u);
    EXPECT_GE(on[r].migrations[0].commit_step - on[r].migrations[0].start_step, 4);
    EXPECT_GE(on[r].migrations[0].commit_step, 0) << on[r].migrations[0].error;
    EXPECT_EQ(on[r].final_epoch, 1);
    EXPECT_EQ(on[r].output_checksum, off[0].output_checksum);
  }
}

TEST(Migration, OrdersThatDoNotMatchThePlacementAreIgnored) {
  const World w = MakeWorld();
  RunOptions wrong_source;
  wrong_source.tamper = [](control::Orders& o) { o.mutable_transfers(0)->set_from(o.transfers(0).to()); };
  RunOptions missing;
  missing.tamper = [](control::Orders& o) { o.mutable_transfers()->RemoveLast(); };
  RunOptions stale;
  stale.tamper = [](control::Orders& o) { o.set_base_epoch(3); };
  RunOptions bad_shares;
  bad_shares.tamper = [](control::Orders& o) {
    o.mutable_placement()->mutable_layers(0)->mutable_ranks(0)->mutable_replicas(0)->set_share(0.5);
  };
  for (RunOptions* o : {&wrong_source, &missing, &bad_shares}) {
    std::atomic<int> refused{0};
    o->refused = &refused;
    const std::vector<RunReport> on = RunRanks(w, *o);
    EXPECT_TRUE(on[0].migrations.empty());
    EXPECT_EQ(on[0].final_epoch, 0);
    EXPECT_EQ(refused.load(), kRanks);  // each rank reports them once, though offered every step
  }
  // Orders for another base epoch are not refused, just not for now.
  std::atomic<int> refused{0};
  stale.refused = &refused;
  const std::vector<RunReport> on = RunRanks(w, stale);
  EXPECT_TRUE(on[0].migrations.empty());
  EXPECT_EQ(refused.load(), 0);
}

// The transfer thread's posting rule (ChoosePost) on a simulated cluster, where a piece
// completes once both its ranks have posted it: every step's grant completes at least one
// piece, whatever the transfers, windows, chunk sizes and budgets (at least one chunk, as
// EpochManager clamps them). Receiving first broke this: with a budget of one chunk, every
// rank posted only receives for the first steps, and a slow migration looked stalled.
TEST(Migration, EveryGrantCompletesAPieceSomewhereInTheCluster) {
  std::mt19937 rng(11);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 2000; ++trial) {
    const int ranks = uniform(2, 8), transfers = uniform(1, 40);
    const int64_t chunk = uniform(1, 4), expert = uniform(1, 12), budget = chunk * uniform(1, 3);
    const size_t window = static_cast<size_t>(uniform(1, 4));
    struct Piece {
      int64_t order, bytes;
      int from, to;
    };
    std::vector<Piece> pieces;  // in the cluster-wide order
    for (int i = 0; i < transfers; ++i) {
      const int from = uniform(0, ranks - 1), to = (from + uniform(1, ranks - 1)) % ranks;
      for (int64_t off = 0, c = 0; off < expert; off += chunk, ++c) {
        pieces.push_back({(int64_t{i} << 32) + c, std::min(chunk, expert - off), from, to});
      }
    }
    struct Rank {
      std::vector<size_t> recvs, sends;  // indices into `pieces`, ascending
      size_t next_recv = 0, next_send = 0, recv_in_flight = 0, send_in_flight = 0;
      int64_t credit = 0;
    };
    std::vector<Rank> rank(static_cast<size_t>(ranks));
    for (size_t p = 0; p < pieces.size(); ++p) {
      rank[static_cast<size_t>(pieces[p].to)].recvs.push_back(p);
      rank[static_cast<size_t>(pieces[p].from)].sends.push_back(p);
    }
    std::vector<int> posted(pieces.size(), 0);  // by how many of its two ranks
    std::vector<bool> complete(pieces.size(), false);
    size_t done = 0;
    for (int step = 0; done < pieces.size(); ++step) {
      SCOPED_TRACE(::testing::Message() << "trial " << trial << " step " << step << ": " << ranks << " ranks, " << transfers
                                        << " transfers, chunk " << chunk << ", budget " << budget << ", window " << window);
      ASSERT_LE(static_cast<size_t>(step), pieces.size());
      for (Rank& r : rank) r.credit = step == 0 ? budget : std::min(2 * budget, r.credit + budget);
      const size_t done_before = done;
      for (bool moved = true; moved;) {  // post, complete matched pieces, post again into freed windows
        moved = false;
        for (Rank& r : rank) {
          auto queue = [&](const std::vector<size_t>& list, size_t next, size_t in_flight) {
            return next < list.size() ? PostQueue{false, pieces[list[next]].order, pieces[list[next]].bytes, in_flight}
                                      : PostQueue{true, 0, 0, in_flight};
          };
          while (true) {
            const PostNext next = ChoosePost(queue(r.recvs, r.next_recv, r.recv_in_flight),
                                             queue(r.sends, r.next_send, r.send_in_flight), window, r.credit);
            if (next == PostNext::kNone) break;
            const bool recv = next == PostNext::kRecv;
            const size_t p = recv ? r.recvs[r.next_recv++] : r.sends[r.next_send++];
            r.credit -= pieces[p].bytes;
            ASSERT_GE(r.credit, 0);
            ++(recv ? r.recv_in_flight : r.send_in_flight);
            ++posted[p];
            moved = true;
          }
        }
        for (size_t p = 0; p < pieces.size(); ++p) {
          if (posted[p] == 2 && !complete[p]) {
            complete[p] = true;
            ++done;
            --rank[static_cast<size_t>(pieces[p].to)].recv_in_flight;
            --rank[static_cast<size_t>(pieces[p].from)].send_in_flight;
          }
        }
      }
      ASSERT_GT(done, done_before) << "no piece completed in this step";
    }
  }
}

}  // namespace
}  // namespace switchyard::worker
