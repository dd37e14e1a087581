// Live migration on a worker (DESIGN.md sections 5-7): orders for epoch e+1 arrive from the
// coordinator; all ranks agree to start at one step boundary; a transfer thread copies the
// new replicas' packed bytes from their source ranks into staging buffers through the
// Communicator's point-to-point calls, in chunks and within a per-step byte budget, while
// steps keep running under epoch e; once every rank holds its bytes, all ranks switch to
// e+1 at one agreed step boundary; a failure anywhere makes all ranks drop e+1 at one
// boundary. A step never mixes epochs.
//
// Agreement needs no extra collective: at every step boundary each rank contributes a
// StepVote to the driver's exchange (one AllGather) and EpochManager::Decide reads the same
// votes on every rank, so every rank takes the same decision at the same boundary:
//   start  e+1  when every rank holds the same orders (epoch and hash) for e+1;
//   commit e+1  when every rank's transfers are done;
//   abort  e+1  when any rank's transfers failed (peer error, timeout).
//
// Threads: the step thread calls everything here; the transfer thread (owned) only moves
// bytes into staging buffers no running epoch uses, and reads source slots, which stay
// untouched until the switch. Hand-offs are by message (a job in, a done/failed flag out).
#pragma once

#include <atomic>
#include <condition_variable>
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "comm/communicator.h"
#include "placement/placement.h"
#include "switchyard/control/v1/control.pb.h"
#include "worker/moe_layer.h"
#include "worker/weights.h"

namespace switchyard::worker {

namespace control = switchyard::control::v1;

struct MigrationOptions {
  int64_t bytes_per_step = 4 << 20;  // bytes a rank may start moving (sent + received) per step
  int64_t chunk_bytes = 1 << 20;     // message size (at most bytes_per_step)
  // Stall timeout: a migration is aborted (on every rank, at one step) when no rank completes
  // a transfer for this long (and two step boundaries): a hung or lost peer. A slow one that
  // keeps moving bytes never times out.
  absl::Duration timeout = absl::Seconds(60);
};

// The transfer thread's posting rule (pure; exposed for tests). A rank's pieces (its
// transfers' chunks) carry a cluster-wide order: the transfer's index in the orders, then the
// chunk. Each direction (receives, sends) posts its pieces in that order, and the rule picks
// the direction whose next piece comes first, if its window (`window` messages in flight) is
// open, else the other one; kNone when neither window is open or `credit` (bytes) is short of
// the picked piece, which keeps the credit for the earlier piece.
//
// Liveness: the earliest piece not complete anywhere is then the next one of both its ranks
// (each has posted every earlier piece, and a full window holds only earlier ones, which are
// complete: the thread tests before it posts), so each step's grant (at least one chunk) has
// both ranks post it, and the cluster completes at least one piece per step but for the time
// on the wire. Receiving first instead let every rank spend its budget on receives nobody
// sent: with one chunk per step, nothing moved until the receive windows were full.
struct PostQueue {
  bool empty = true;     // nothing left to post in this direction
  int64_t order = 0;     // the next piece's cluster-wide order
  int64_t bytes = 0;     // its size
  size_t in_flight = 0;  // messages posted and not yet complete
};
enum class PostNext { kNone, kRecv, kSend };
PostNext ChoosePost(const PostQueue& recv, const PostQueue& send, size_t window, int64_t credit);

// What one rank contributes to the step boundary's exchange (doubles: the driver gathers
// them with its own per-step figures). Hashes are 52-bit, so doubles hold them exactly.
struct StepVote {
  double epoch = 0;        // the epoch the step ran under
  double offer_epoch = 0;  // orders held and not started (0: none)
  double offer_hash = 0;
  double ready = 0;        // 1: migrating, and every byte of this rank moved
  double failed = 0;       // 1: this rank's transfers failed
  double completed = 0;    // transfers (pieces) this rank has completed in the migration
  double stalled = 0;      // 1: no rank's count moved for the stall timeout, as this rank saw it
  double pieces = 0;       // transfers (pieces) this rank has in the migration in all
  static constexpr int kSize = 8;
};

// Orders are input from the network: checked before anything acts on them. The target
// placement must be valid and fit this job (cluster shape, experts, every layer in
// `layer_ids`, the layers this rank runs); each transfer must name a layer in `layer_ids` and
// bring an expert from a current holder to a rank that lacks it and holds it in the target;
// every new replica in those layers needs exactly one transfer. Returns the target, or InvalidArgument
// naming the first problem. Pure.
absl::StatusOr<placement::Placement> ValidateOrders(const switchyard::control::v1::Orders& orders,
                                                    const placement::Placement& current, const std::vector<int>& layer_ids);

// One migration, as every rank saw it.
struct MigrationRecord {
  int64_t epoch = 0;
  int64_t start_step = 0;   // the first step run while bytes moved
  int64_t commit_step = -1; // the first step under the new epoch (-1: aborted or unfinished)
  int64_t abort_step = -1;  // aborted: the first step after the abort, still under the old epoch
  int moved_replicas = 0;   // over all ranks
  int64_t bytes = 0;        // over all ranks
  int scratch_moved_replicas = -1;  // what a from-scratch plan would move (coordinator's figure)
  std::string error;        // why it was aborted
};

// A phase change to tell the coordinator about (started, committed, aborted; refused: orders
// that did not validate, never started), and on rank 0 "progress" about twice a second while
// bytes move.
struct MigrationUpdate {
  std::string phase;
  MigrationRecord record;
  int64_t rank_bytes = 0;  // bytes this rank sent + received
  double seconds = 0;      // committed/aborted: since the start; progress: so far
  placement::Placement placement;  // the placement in force after the phase change
  int64_t done_bytes = 0;  // "progress": of record.bytes, moved so far (the cluster's completed pieces)
};

class EpochManager {
 public:
  // `start` is the placement `store` and `layer` run now, as epoch `epoch`.
  EpochManager(comm::Communicator& comm, WeightStore& store, MoeLayer& layer, placement::Placement start,
               int64_t epoch, MigrationOptions options);
  ~EpochManager();
  EpochManager(const EpochManager&) = delete;
  EpochManager& operator=(const EpochManager&) = delete;

  // Newest orders from the coordinator. Orders for the epoch after this one, from this
  // one, are kept until started; others (stale, or an aborted attempt again) are dropped;
  // invalid ones are refused (reported once).
  void Offer(const control::Orders& orders);
  // Grants this step's byte budget to the transfer thread.
  void GrantBudget();
  StepVote Vote() const;
  // Applies the decision the votes of all ranks imply, before the step `next_step`.
  // Errors are only for broken invariants (the job should stop).
  absl::Status Decide(int64_t next_step, const std::vector<StepVote>& votes);
  // CPU seconds the transfer thread used since the last call.
  double TakeTransferCpuSeconds();

  int64_t epoch() const { return epoch_; }
  // The highest epoch this rank has run or been offered: a regroup's epoch goes above every
  // epoch the coordinator may have published.
  int64_t highest_epoch_seen() const { return std::max(epoch_, highest_seen_); }
  const placement::Placement& placement() const { return placement_; }
  bool migrating() const { return active_.has_value(); }
  const std::vector<MigrationRecord>& records() const { return records_; }
  // The migration under way (neither committed nor aborted: commit_step and abort_step -1), if any.
  const MigrationRecord* in_flight() const { return active_ ? &active_->record : nullptr; }
  void set_on_update(std::function<void(const MigrationUpdate&)> f) { on_update_ = std::move(f); }

 private:
  struct Job;  // one migration's transfers on this rank
  class TransferThread;

  uint64_t HashOf(const control::Orders& orders) const;
  absl::Status Start(int64_t next_step);
  absl::Status Commit(int64_t next_step);
  void Abort(int64_t next_step, const std::string& why);

  comm::Communicator& comm_;
  WeightStore& store_;
  MoeLayer& layer_;
  placement::Placement placement_;
  int64_t epoch_;
  int64_t highest_seen_ = 0;
  MigrationOptions options_;
  std::optional<control::Orders> offer_;
  uint64_t offer_hash_ = 0;
  std::vector<uint64_t> refused_;  // hashes of aborted or invalid orders: never started again
  struct Active {
    control::Orders orders;
    placement::Placement target;
    MigrationRecord record;
    std::shared_ptr<Job> job;
    absl::Time started;
    // Stall detection (Decide): the cluster's completed-transfer count last seen, when it
    // last moved, and the step boundaries since.
    double last_completed = -1;
    absl::Time last_change = absl::Now();
    int rounds_unchanged = 0;
    absl::Time last_progress = absl::InfinitePast();  // rank 0's last "progress" update
  };
  std::optional<Active> active_;
  int attempts_ = 0;  // migrations started (the same on every rank): tags of each differ
  std::vector<MigrationRecord> records_;
  std::function<void(const MigrationUpdate&)> on_update_;
  std::unique_ptr<TransferThread> transfer_;
};

}  // namespace switchyard::worker
