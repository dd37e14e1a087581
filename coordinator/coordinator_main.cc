// switchyard-coordinator: the control plane. Workers register and report to it
// (--coordinator HOST:PORT); the `switchyard` CLI steers it through the admin API.
#include <csignal>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "coordinator/server.h"
#include "rpc/convert.h"
#include "rpc/rpc_util.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7070", "address:port of the gRPC services (port 0: a free one)");
ABSL_FLAG(std::string, state_dir, "", "directory for the durable state (placement, epoch, pins, drains, policy)");
ABSL_FLAG(std::string, auth_token_file, "", "file holding the bearer token: workers need it for every call, admin clients for changing calls");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate: serve over TLS (with --tls-key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls-cert");
ABSL_FLAG(int, metrics_port, -1, "port of the HTTP /metrics endpoint (-1: none, 0: a free one)");
ABSL_FLAG(std::string, metrics_host, "127.0.0.1", "address of the /metrics endpoint");
ABSL_FLAG(double, heartbeat_timeout_s, 2.0,
          "seconds without a heartbeat before a worker counts as lost (workers send one every 250 ms); a joined job (--world-size "
          "workers) then regroups without it");
ABSL_FLAG(bool, auto_rebalance, false, "rebalance on load reports by policy (when no state says otherwise)");
ABSL_FLAG(std::vector<std::string>, policy, {}, "initial policy settings key=value (when no state says otherwise)");
ABSL_FLAG(bool, insecure_allow_remote, false,
          "serve a non-loopback --listen address without --auth-token-file (refused otherwise): anyone who reaches it "
          "can register workers, drain ranks and change the placement");
ABSL_FLAG(double, stop_grace_s, 0,
          "on SIGTERM/SIGINT: write the state, then keep serving up to this many seconds while registered workers are "
          "still running, for jobs whose workers are signalled too (scancel): they finish their step and leave; a "
          "second signal stops at once");
ABSL_FLAG(std::string, status_file, "",
          "write the cluster status (as `switchyard status --json` prints it) here at every checkpoint (SIGUSR1) and "
          "when stopping, after the workers have left");
ABSL_FLAG(std::string, port_file, "",
          "once listening, write 'GRPC_PORT METRICS_PORT' here (one line; METRICS_PORT -1 without --metrics-port)");

namespace {

std::atomic<int> g_stop_signals{0};          // SIGTERM / SIGINT received
std::atomic<bool> g_checkpoint_signal{false};  // SIGUSR1: write the state now (a time limit is near)

void OnSignal(int signal) {
  if (signal == SIGUSR1) {
    g_checkpoint_signal = true;
  } else {
    g_stop_signals.fetch_add(1);
  }
}

int Main(int argc, char** argv) {
  switchyard::SetLogPrefix("switchyard-coordinator");
  auto parsed = switchyard::ParseFlags(argc, argv);
  auto fail = [](const absl::Status& s, int code) {
    std::fprintf(stderr, "switchyard-coordinator: %s\n", std::string(s.message()).c_str());
    return code;
  };
  if (!parsed.ok()) return fail(parsed.status(), switchyard::kExitBadInput);
  if (parsed->help) {
    std::printf("usage: switchyard-coordinator [flags]\n%s", switchyard::FlagsHelp({"coordinator/"}).c_str());
    return 0;
  }
  // Before anything is started or announced (the port file): a signal that comes while the
  // coordinator starts is handled like any other, never the default action.
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  for (int signal : {SIGTERM, SIGINT, SIGUSR1}) sigaction(signal, &action, nullptr);
  switchyard::coordinator::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.core.state_dir = absl::GetFlag(FLAGS_state_dir);
  if (absl::Status range = switchyard::CheckFlagRange("heartbeat-timeout-s", absl::GetFlag(FLAGS_heartbeat_timeout_s), 0.1, 86400);
      !range.ok()) {
    return fail(range, switchyard::kExitBadInput);
  }
  if (absl::Status range = switchyard::CheckFlagRange("stop-grace-s", absl::GetFlag(FLAGS_stop_grace_s), 0, 86400); !range.ok()) {
    return fail(range, switchyard::kExitBadInput);
  }
  options.core.heartbeat_timeout = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_timeout_s));
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  options.insecure_allow_remote = absl::GetFlag(FLAGS_insecure_allow_remote);
  if (!absl::GetFlag(FLAGS_auth_token_file).empty()) {
    auto token = switchyard::rpc::ReadTokenFile(absl::GetFlag(FLAGS_auth_token_file));
    if (!token.ok()) return fail(token.status(), switchyard::kExitBadInput);
    options.auth_token = *token;
  }
  for (auto [flag, out] : {std::pair{absl::GetFlag(FLAGS_tls_cert), &options.tls_cert_pem},
                           std::pair{absl::GetFlag(FLAGS_tls_key), &options.tls_key_pem}}) {
    if (flag.empty()) continue;
    auto pem = switchyard::ReadFile(flag);
    if (!pem.ok()) return fail(pem.status(), switchyard::kExitBadInput);
    *out = *pem;
  }
  auto policy = switchyard::coordinator::DefaultPolicy();
  policy.set_auto_rebalance(absl::GetFlag(FLAGS_auto_rebalance));
  if (absl::Status applied = switchyard::rpc::ApplyPolicySettings(absl::GetFlag(FLAGS_policy), policy); !applied.ok()) {
    return fail(applied, switchyard::kExitBadInput);
  }
  if (absl::Status valid = switchyard::coordinator::ValidatePolicy(policy); !valid.ok()) {
    return fail(valid, switchyard::kExitBadInput);
  }
  options.initial_policy = policy;
  auto server = switchyard::coordinator::CoordinatorServer::Start(options);
  if (!server.ok()) {
    return fail(server.status(), absl::IsInvalidArgument(server.status()) ? switchyard::kExitBadInput : 1);
  }
  std::printf("switchyard-coordinator %s listening on %s%s%s\n", (*server)->core().id().c_str(), (*server)->address().c_str(),
              options.tls_cert_pem.empty() ? "" : " (TLS)",
              (*server)->metrics_port() >= 0
                  ? absl::StrCat(", metrics on http://", options.metrics_host, ":", (*server)->metrics_port(),
                                 "/metrics, dashboard on http://", options.metrics_host, ":", (*server)->metrics_port(), "/")
                        .c_str()
                  : "");
  std::fflush(stdout);
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    auto written = switchyard::WriteFileAtomically(absl::GetFlag(FLAGS_port_file),
                                                   absl::StrCat((*server)->port(), " ", (*server)->metrics_port(), "\n"));
    if (!written.ok()) return fail(written, 1);
  }
  switchyard::coordinator::Coordinator& core = (*server)->core();
  bool state_lost = false;  // the last checkpoint failed: exit 1, so that a job script knows
  auto checkpoint = [&](const std::string& why) {
    absl::Status written = core.Checkpoint(why);
    state_lost = !written.ok();
    if (state_lost) switchyard::LogWarning("cannot write the state: ", written.message());
    if (const std::string file = absl::GetFlag(FLAGS_status_file); !file.empty()) {
      const std::string status = switchyard::rpc::MessageToJsonText(core.Status());
      if (absl::Status written = switchyard::WriteFileAtomically(file, status); !written.ok()) {
        switchyard::LogWarning("cannot write --status-file: ", written.message());
      }
    }
  };
  while (g_stop_signals.load() == 0) {
    if (g_checkpoint_signal.exchange(false)) checkpoint("SIGUSR1");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Stopping (scancel, the end of the job): the state first, then the running workers'
  // last reports and Leave, so that they end their step cleanly instead of losing us.
  checkpoint("stopping");
  const absl::Time grace_end = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_stop_grace_s));
  bool announced = false;
  while (g_stop_signals.load() == 1 && absl::Now() < grace_end) {
    const int running = core.Status().healthy();
    if (running == 0) break;
    if (!announced) {
      std::printf("switchyard-coordinator: stopping; waiting up to %.0f s for %d running workers to leave (signal again to stop now)\n",
                  absl::GetFlag(FLAGS_stop_grace_s), running);
      std::fflush(stdout);
      announced = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  checkpoint("stopped");
  (*server)->Shutdown();
  if (state_lost) {
    std::fprintf(stderr, "switchyard-coordinator: stopped WITHOUT writing its state to %s (see the warning above)\n",
                 options.core.state_dir.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
