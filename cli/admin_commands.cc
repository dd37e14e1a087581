// Admin subcommands of `switchyard`: status, placement, load, rebalance, pin, unpin, drain,
// undrain, policy, events — gRPC calls to a coordinator's admin API. Tables by default,
// --json (protobuf JSON) for scripts.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/env.h"
#include "common/flags.h"
#include "rpc/validate.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "cli/commands.h"
#include "common/file_util.h"
#include "common/status.h"
#include "rpc/convert.h"
#include "rpc/rpc_util.h"
#include "switchyard/admin/v1/admin.grpc.pb.h"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int, max_moves);
ABSL_FLAG(std::string, coordinator, "", "admin: coordinator address (default: $SWITCHYARD_COORDINATOR, else 127.0.0.1:7070)");
ABSL_FLAG(std::string, token_file, "", "admin: file with the bearer token for changing calls");
ABSL_FLAG(std::string, tls_ca, "", "admin: PEM CA certificate: talk TLS to the coordinator");
ABSL_FLAG(bool, dry_run, false, "rebalance: show the plan without publishing it");
ABSL_FLAG(int, layer, -1, "admin: layer id (-1: every layer)");
ABSL_FLAG(int, expert, -1, "pin/unpin: expert id");
ABSL_FLAG(int, rank, -1, "pin/unpin: rank");
ABSL_FLAG(bool, follow, false, "events: keep streaming new events");
ABSL_FLAG(bool, remove, false,
          "drain: retire the rank from a job of workers joined through the coordinator (--world-size): after their step "
          "the others regroup without it, its experts re-placed on them, and it leaves");
ABSL_FLAG(double, timeout_s, 10, "admin: seconds to wait for the coordinator (events --follow: stream length, 0: forever)");
ABSL_FLAG(bool, wait, false,
          "rebalance, drain: follow the migration to the published epoch with a progress bar (plain lines when stdout is not a "
          "terminal); exit 0 when it commits, 1 when it aborts");
ABSL_FLAG(double, wait_timeout_s, 0, "rebalance, drain --wait: give up (exit 1) after this many seconds (0: wait as long as it takes)");

namespace switchyard::cli {
namespace {

namespace admin = switchyard::admin::v1;
namespace types = switchyard::types::v1;

struct Client {
  std::string address;
  std::unique_ptr<admin::Admin::Stub> stub;
  std::string token;
  std::unique_ptr<grpc::ClientContext> Context(double seconds) const {
    return rpc::CallContext(seconds > 0 ? absl::Seconds(seconds) : absl::InfiniteDuration(), token);
  }
};

absl::StatusOr<Client> Connect() {
  Client c;
  c.address = absl::GetFlag(FLAGS_coordinator);
  if (c.address.empty()) {
    c.address = GetSetting(Setting::kCoordinator).value_or("127.0.0.1:7070");
  }
  std::string ca;
  if (!absl::GetFlag(FLAGS_tls_ca).empty()) {
    SY_ASSIGN_OR_RETURN(ca, ReadFile(absl::GetFlag(FLAGS_tls_ca)));
  }
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    SY_ASSIGN_OR_RETURN(c.token, rpc::ReadTokenFile(absl::GetFlag(FLAGS_token_file)));
  }
  c.stub = admin::Admin::NewStub(rpc::MakeChannel(c.address, ca, rpc::kAdminConnectTimeout));
  return c;
}

template <typename Message>
void PrintJson(const Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  std::printf("%s", out.c_str());
  if (out.empty() || out.back() != '\n') std::printf("\n");
}

void PrintPlacement(const types::Placement& p) {
  std::printf("epoch %lld: %d ranks x %d slots (%d nodes), %d experts\n", static_cast<long long>(p.epoch()), p.ranks(),
              p.slots_per_rank(), p.nodes(), p.experts());
  for (const types::LayerPlacement& l : p.layers()) {
    std::printf("layer %d\n", l.layer());
    for (int r = 0; r < l.ranks_size(); ++r) {
      std::vector<std::string> items;
      for (const types::Replica& x : l.ranks(r).replicas()) {
        items.push_back(x.share() >= 1 - 1e-9 ? absl::StrCat(x.expert()) : absl::StrFormat("%d(%.2f)", x.expert(), x.share()));
      }
      std::printf("  rank %3d: %s\n", r, absl::StrJoin(items, " ").c_str());
    }
  }
}

void PrintConstraints(const admin::ConstraintsResponse& c) {
  std::vector<std::string> pins, drained;
  for (const types::Pin& p : c.pins()) {
    pins.push_back(absl::StrCat("expert ", p.expert(), " -> rank ", p.rank(), p.layer() < 0 ? "" : absl::StrCat(" (layer ", p.layer(), ")")));
  }
  for (int r : c.drained_ranks()) drained.push_back(absl::StrCat(r));
  std::printf("pins: %s\ndrained ranks: %s\n", pins.empty() ? "none" : absl::StrJoin(pins, "; ").c_str(),
              drained.empty() ? "none" : absl::StrJoin(drained, ", ").c_str());
}

void PrintPolicy(const types::Policy& p) {
  std::printf("auto_rebalance     %s\nmin_gain           %.4g (predicted step-time reduction)\nhysteresis_windows %d\n"
              "cooldown_windows   %d\nmax_moves          %d%s\nmin_gain_per_move  %.4g\nnoise_z            %.4g\n"
              "smoothing          %.4g\nplanner            %s\n",
              p.auto_rebalance() ? "true" : "false", p.min_gain(), p.hysteresis_windows(), p.cooldown_windows(), p.max_moves(),
              p.max_moves() == 0 ? " (no limit)" : "", p.min_gain_per_move(), p.noise_z(), p.smoothing(), p.planner().c_str());
}

// The newest event's sequence number (waits start after it).
absl::StatusOr<int64_t> LastEventSeq(const Client& c, double timeout) {
  auto ctx = c.Context(timeout);
  admin::WatchEventsRequest request;
  auto reader = c.stub->WatchEvents(ctx.get(), request);
  admin::Event e;
  int64_t last = 0;
  while (reader->Read(&e)) last = std::max(last, e.seq());
  SY_RETURN_IF_ERROR(rpc::FromGrpc(reader->Finish(), c.address));
  return last;
}

// Follows the migration to `epoch` until it commits (OK) or aborts (Aborted, with the
// coordinator's reason, or when no rank is left to finish it), drawing progress: a bar redrawn
// in place on a terminal, a line per 10% (or state change) otherwise. With follow_later, an
// epoch published right after it is followed too (a drain deferred behind a migration in
// flight publishes its own when that one commits).
absl::Status WaitForEpoch(const Client& c, int64_t epoch, int64_t after_seq, double timeout, bool follow_later) {
  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  const double limit = absl::GetFlag(FLAGS_wait_timeout_s);  // checked before the change was made
  const absl::Time start = absl::Now();
  auto lost = [&](const absl::Status& s) {
    if (tty) std::printf("\n");
    return absl::Status(s.code(), absl::StrCat("while waiting for epoch ", epoch, ": ", s.message()));
  };
  int last_decile = -1;
  bool last_started = false;
  std::string last_line;
  while (true) {
    // Abort: the coordinator's migration_failed event for this epoch.
    {
      auto ctx = c.Context(timeout);
      admin::WatchEventsRequest request;
      request.set_after_seq(after_seq);
      auto reader = c.stub->WatchEvents(ctx.get(), request);
      admin::Event e;
      while (reader->Read(&e)) {
        after_seq = std::max(after_seq, e.seq());
        if (e.kind() == "migration_failed" && e.epoch() == epoch) {
          if (tty) std::printf("\n");
          std::fflush(stdout);
          return absl::AbortedError(absl::StrCat("the migration to epoch ", epoch, " aborted: ", e.message()));
        }
      }
      if (absl::Status st = rpc::FromGrpc(reader->Finish(), c.address); !st.ok()) return lost(st);
    }
    admin::ClusterStatus s;
    if (absl::Status st = rpc::FromGrpc(c.stub->GetStatus(c.Context(timeout).get(), {}, &s), c.address); !st.ok()) return lost(st);
    if (s.committed_epoch() < epoch) {  // a migration needs its ranks: stop when none is left to do it
      bool any_running = false;
      for (const admin::WorkerStatus& w : s.workers()) any_running = any_running || (w.healthy() && !w.left());
      if (!any_running) {
        if (tty) std::printf("\n");
        return absl::AbortedError(absl::StrCat("epoch ", epoch, " was not committed: the job's ranks have all left or are lost"));
      }
    }
    if (s.committed_epoch() >= epoch) {
      if (follow_later && s.target_epoch() > s.committed_epoch() && s.migration().epoch() > epoch) {  // the change's next epoch
        epoch = s.migration().epoch();
        last_decile = -1;
        continue;
      }
      std::printf("%sepoch %lld committed: %d/%d ranks run it (%.1f s)\n", tty ? "\r\033[K" : "", static_cast<long long>(epoch),
                  s.ranks(), s.ranks(), absl::ToDoubleSeconds(absl::Now() - start));
      std::fflush(stdout);
      return absl::OkStatus();
    }
    const admin::MigrationProgress& m = s.migration();
    const double fraction = m.total_bytes() > 0 ? std::min(1.0, static_cast<double>(m.done_bytes()) / m.total_bytes()) : 0;
    const std::string line = absl::StrFormat(
        "epoch %lld: %s %.1f/%.1f MiB (%.0f%%), %d replicas, %d/%d ranks committed, %.1f s", static_cast<long long>(epoch),
        m.started() ? "moving" : "published, waiting for the ranks to start;", m.done_bytes() / 1048576.0, m.total_bytes() / 1048576.0,
        100 * fraction, m.moved_replicas(), m.ranks_committed(), m.ranks(), absl::ToDoubleSeconds(absl::Now() - start));
    if (tty) {
      const int filled = static_cast<int>(fraction * 30);
      std::printf("\r\033[K[%s%s] %s", std::string(filled, '#').c_str(), std::string(30 - filled, '.').c_str(), line.c_str());
      std::fflush(stdout);
    } else if (static_cast<int>(fraction * 10) != last_decile || m.started() != last_started) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    last_decile = static_cast<int>(fraction * 10);
    last_started = m.started();
    last_line = line;
    if (limit > 0 && absl::Now() - start > absl::Seconds(limit)) {
      if (tty) std::printf("\n");
      return absl::DeadlineExceededError(absl::StrCat("still migrating after --wait-timeout-s ", limit, ": ", last_line));
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
}

absl::Status Run(const std::string& command, const std::vector<std::string>& args) {
  SY_ASSIGN_OR_RETURN(Client c, Connect());
  const bool json = absl::GetFlag(FLAGS_json);
  const double timeout = absl::GetFlag(FLAGS_timeout_s);
  SY_RETURN_IF_ERROR(CheckFlagRange("timeout-s", timeout, 0, 1e6));
  auto check = [&](const grpc::Status& s) { return rpc::FromGrpc(s, c.address); };
  auto no_args = [&]() -> absl::Status {
    if (!args.empty()) return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", args[0], "'"));
    return absl::OkStatus();
  };
  if (command == "status") {
    SY_RETURN_IF_ERROR(no_args());
    admin::ClusterStatus s;
    SY_RETURN_IF_ERROR(check(c.stub->GetStatus(c.Context(timeout).get(), {}, &s)));
    if (json) return PrintJson(s), absl::OkStatus();
    std::printf("coordinator %s at %s\njob: %s, %d ranks on %d node%s, %s shares; %d registered, %d healthy\n"
                "epoch %lld committed, %lld target; step %lld; %lld load windows\n",
                s.coordinator_id().c_str(), c.address.c_str(), s.model().empty() ? "(none yet)" : s.model().c_str(), s.ranks(),
                s.nodes(), s.nodes() == 1 ? "" : "s", s.shares().empty() ? "unknown" : s.shares().c_str(), s.registered(), s.healthy(), static_cast<long long>(s.committed_epoch()),
                static_cast<long long>(s.target_epoch()), static_cast<long long>(s.step()), static_cast<long long>(s.windows()));
    if (s.workers_size() > 0) {
      std::printf("%5s  %-16s %-16s  %-7s %8s %6s  %9s  %9s\n", "rank", "node", "host", "health", "step", "epoch", "heartbeat",
                  "report");
      for (const admin::WorkerStatus& w : s.workers()) {
        std::printf("%5d  %-16s %-16s  %-7s %8lld %6lld  %8.1fs  %9s\n", w.rank(),
                    absl::StrFormat("%s (%d)", w.node_name(), w.node()).c_str(), w.host().c_str(),
                    w.left() ? "left" : (!w.healthy() ? "LOST" : (w.drained() ? "drained" : "ok")), static_cast<long long>(w.step()),
                    static_cast<long long>(w.epoch()), w.seconds_since_heartbeat(),
                    w.seconds_since_report() < 0 ? "never" : absl::StrFormat("%.1fs", w.seconds_since_report()).c_str());
      }
    }
    if (s.generation() > 0 || s.lost_size() > 0) {
      std::printf("membership generation %lld; lost or removed workers (newest last):\n", static_cast<long long>(s.generation()));
      for (const admin::LostWorker& l : s.lost()) {
        std::printf("  rank %d (token stream %d) on %s, %.0fs ago: %s%s\n", l.rank(), l.origin(), l.node_name().c_str(),
                    l.seconds_ago(), l.reason().c_str(),
                    l.generation() > 0 ? absl::StrCat("; generation ", l.generation(), " formed without it").c_str() : "; regrouping");
      }
    }
    if (s.pins_size() > 0 || s.drained_ranks_size() > 0) {
      admin::ConstraintsResponse c;
      *c.mutable_pins() = s.pins();
      *c.mutable_drained_ranks() = s.drained_ranks();
      PrintConstraints(c);
    }
    if (s.windows() > 0) {
      std::vector<std::string> parts;
      for (int i = 0; i < s.layers_size(); ++i) parts.push_back(absl::StrFormat("%d:%.3f", s.layers(i), s.layer_balancedness(i)));
      std::printf("balancedness (last window, layer:value): %s\n", absl::StrJoin(parts, "  ").c_str());
    }
    return absl::OkStatus();
  }
  if (command == "placement") {
    SY_RETURN_IF_ERROR(no_args());
    admin::GetPlacementRequest request;
    SY_ASSIGN_OR_RETURN(const std::optional<int> layer, rpc::SelectedLayer(false, absl::GetFlag(FLAGS_layer)));
    request.set_layer(layer.value_or(-1));
    request.set_all_layers(!layer.has_value());
    admin::GetPlacementResponse response;
    SY_RETURN_IF_ERROR(check(c.stub->GetPlacement(c.Context(timeout).get(), request, &response)));
    if (json) return PrintJson(response.placement()), absl::OkStatus();
    PrintPlacement(response.placement());
    return absl::OkStatus();
  }
  if (command == "load") {
    SY_RETURN_IF_ERROR(no_args());
    admin::GetLoadRequest request;
    SY_ASSIGN_OR_RETURN(const std::optional<int> layer, rpc::SelectedLayer(false, absl::GetFlag(FLAGS_layer)));
    request.set_layer(layer.value_or(-1));
    request.set_all_layers(!layer.has_value());
    admin::GetLoadResponse response;
    SY_RETURN_IF_ERROR(check(c.stub->GetLoad(c.Context(timeout).get(), request, &response)));
    if (json) return PrintJson(response), absl::OkStatus();
    std::printf("%lld load windows\n%6s  %12s  %12s  %s\n", static_cast<long long>(response.windows()), "layer", "balancedness",
                "predicted", "hottest experts (pairs/step)");
    for (const admin::LayerLoad& l : response.layers()) {
      std::vector<int> order(l.smoothed_size());
      for (int e = 0; e < l.smoothed_size(); ++e) order[e] = e;
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l.smoothed(a) > l.smoothed(b); });
      std::vector<std::string> hot;
      for (int i = 0; i < std::min(5, l.smoothed_size()); ++i) hot.push_back(absl::StrFormat("%d:%.1f", order[i], l.smoothed(order[i])));
      std::printf("%6d  %12.3f  %12.3f  %s\n", l.layer(), l.balancedness(), l.predicted_balancedness(), absl::StrJoin(hot, " ").c_str());
    }
    return absl::OkStatus();
  }
  if (command == "rebalance") {
    SY_RETURN_IF_ERROR(no_args());
    admin::RebalanceRequest request;
    request.set_dry_run(absl::GetFlag(FLAGS_dry_run));
    const int max_moves = absl::GetFlag(FLAGS_max_moves);
    request.set_max_moves(max_moves == -1 ? 0 : max_moves);  // -1 (the default): the policy's budget
    const bool wait = absl::GetFlag(FLAGS_wait);
    if (wait && request.dry_run()) return absl::InvalidArgumentError("--wait follows a published epoch: not with --dry-run");
    SY_RETURN_IF_ERROR(CheckFlagRange("wait-timeout-s", absl::GetFlag(FLAGS_wait_timeout_s), 0, 1e7));
    int64_t seq = 0;
    if (wait) {
      SY_ASSIGN_OR_RETURN(seq, LastEventSeq(c, timeout));
    }
    admin::RebalanceResponse response;
    SY_RETURN_IF_ERROR(check(c.stub->Rebalance(c.Context(timeout).get(), request, &response)));
    if (json) {
      PrintJson(response);
    } else {
      std::printf("%s epoch %lld: %d moved replicas; balancedness mean %.4f -> %.4f, worst layer %.4f -> %.4f\n",
                  response.applied() ? "published" : (request.dry_run() ? "plan (dry run) for" : "nothing to publish for"),
                  static_cast<long long>(response.target_epoch()), response.moved_replicas(), response.balancedness_before(),
                  response.balancedness_after(), response.worst_before(), response.worst_after());
    }
    std::fflush(stdout);
    if (wait && response.applied()) return WaitForEpoch(c, response.target_epoch(), seq, timeout, /*follow_later=*/false);
    return absl::OkStatus();
  }
  if (command == "pin" || command == "unpin") {
    SY_RETURN_IF_ERROR(no_args());
    if (absl::GetFlag(FLAGS_expert) < 0 || absl::GetFlag(FLAGS_rank) < 0) {
      return absl::InvalidArgumentError(absl::StrCat(command, " needs --expert E and --rank R (and optionally --layer L)"));
    }
    admin::PinRequest request;
    request.mutable_pin()->set_layer(absl::GetFlag(FLAGS_layer));
    request.mutable_pin()->set_expert(absl::GetFlag(FLAGS_expert));
    request.mutable_pin()->set_rank(absl::GetFlag(FLAGS_rank));
    SY_RETURN_IF_ERROR(rpc::ValidatePin(request.pin()));  // the server's own check, before sending
    admin::ConstraintsResponse response;
    SY_RETURN_IF_ERROR(check(command == "pin" ? c.stub->Pin(c.Context(timeout).get(), request, &response)
                                             : c.stub->Unpin(c.Context(timeout).get(), request, &response)));
    if (json) return PrintJson(response), absl::OkStatus();
    PrintConstraints(response);
    return absl::OkStatus();
  }
  if (command == "drain" || command == "undrain") {
    int rank = -1;
    if (args.size() != 1 || !absl::SimpleAtoi(args[0], &rank)) {
      return absl::InvalidArgumentError(absl::StrCat("usage: switchyard ", command, " RANK"));
    }
    admin::DrainRequest request;
    request.set_rank(rank);
    SY_RETURN_IF_ERROR(rpc::ValidateRankArgument(rank));
    if (absl::GetFlag(FLAGS_remove)) {
      if (command != "drain") return absl::InvalidArgumentError("--remove goes with drain (a removed rank does not come back)");
      request.set_remove(true);
    }
    const bool wait = absl::GetFlag(FLAGS_wait);
    if (wait && (command != "drain" || request.remove())) {
      return absl::InvalidArgumentError("--wait follows the migration a drain starts: drain RANK --wait (not undrain, not --remove)");
    }
    SY_RETURN_IF_ERROR(CheckFlagRange("wait-timeout-s", absl::GetFlag(FLAGS_wait_timeout_s), 0, 1e7));
    int64_t seq = 0;
    if (wait) {
      SY_ASSIGN_OR_RETURN(seq, LastEventSeq(c, timeout));
    }
    admin::ConstraintsResponse response;
    SY_RETURN_IF_ERROR(check(command == "drain" ? c.stub->Drain(c.Context(timeout).get(), request, &response)
                                               : c.stub->Undrain(c.Context(timeout).get(), request, &response)));
    if (json) {
      PrintJson(response);
    } else if (request.remove()) {
      std::printf("rank %d leaves after its step; the others regroup without it (switchyard status shows the new generation)\n", rank);
    } else {
      PrintConstraints(response);
    }
    std::fflush(stdout);
    if (!wait) return absl::OkStatus();
    admin::ClusterStatus status;
    SY_RETURN_IF_ERROR(check(c.stub->GetStatus(c.Context(timeout).get(), {}, &status)));
    if (status.target_epoch() <= status.committed_epoch()) {
      std::printf("nothing to migrate: rank %d holds no experts at epoch %lld\n", rank, static_cast<long long>(status.committed_epoch()));
      return absl::OkStatus();
    }
    return WaitForEpoch(c, status.target_epoch(), seq, timeout, /*follow_later=*/true);
  }
  if (command == "policy") {
    types::Policy policy;
    SY_RETURN_IF_ERROR(check(c.stub->GetPolicy(c.Context(timeout).get(), {}, &policy)));
    if (!args.empty()) {  // policy key=value ...: change those, keep the rest
      SY_RETURN_IF_ERROR(rpc::ApplyPolicySettings(args, policy));
      admin::SetPolicyRequest request;
      *request.mutable_policy() = policy;
      SY_RETURN_IF_ERROR(check(c.stub->SetPolicy(c.Context(timeout).get(), request, &policy)));
    }
    if (json) return PrintJson(policy), absl::OkStatus();
    PrintPolicy(policy);
    return absl::OkStatus();
  }
  if (command == "events") {
    SY_RETURN_IF_ERROR(no_args());
    const bool follow = absl::GetFlag(FLAGS_follow);
    auto ctx = c.Context(follow ? timeout : std::max(timeout, 0.0));
    admin::WatchEventsRequest request;
    request.set_follow(follow);
    auto reader = c.stub->WatchEvents(ctx.get(), request);
    admin::Event e;
    while (reader->Read(&e)) {
      if (json) {
        std::string line;
        (void)google::protobuf::util::MessageToJsonString(e, &line);
        std::printf("%s\n", line.c_str());
      } else {
        std::printf("#%-5lld %s  %-18s %s\n", static_cast<long long>(e.seq()),
                    absl::FormatTime("%H:%M:%E3S", absl::FromUnixMillis(e.unix_ms()), absl::LocalTimeZone()).c_str(),
                    e.kind().c_str(), e.message().c_str());
      }
      std::fflush(stdout);
    }
    const grpc::Status s = reader->Finish();
    // `events --follow` streams until the deadline (--timeout-s; 0: until interrupted).
    if (follow && s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return absl::OkStatus();
    return check(s);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown command '", command, "'"));
}

}  // namespace

bool IsAdminCommand(const std::string& command) {
  for (const char* c : {"status", "placement", "load", "rebalance", "pin", "unpin", "drain", "undrain", "policy", "events"}) {
    if (command == c) return true;
  }
  return false;
}

int RunAdmin(const std::string& command, const std::vector<std::string>& args) {
  absl::Status s = OnlyOwnFlags(command);
  if (s.ok()) s = Run(command, args);
  if (!s.ok()) return ReportError(command, s);
  return 0;
}

}  // namespace switchyard::cli
