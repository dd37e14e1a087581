#include "coordinator/server.h"

#include "coordinator/dashboard.h"

#include <arpa/inet.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <civetweb.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/tcp.h>
#include <sys/resource.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/json_reader.h"
#include "common/log.h"
#include "common/status.h"
#include "rpc/rpc_util.h"
#include "rpc/validate.h"
#include "switchyard/admin/v1/admin.grpc.pb.h"
#include "switchyard/control/v1/control.grpc.pb.h"

namespace switchyard::coordinator {
namespace {

using rpc::ToGrpc;

template <typename T, typename Out>
grpc::Status Reply(absl::StatusOr<T> result, Out* out) {
  if (!result.ok()) return ToGrpc(result.status());
  *out = *std::move(result);
  return grpc::Status::OK;
}

// Both services check the bearer token when the coordinator has one: the control service on
// every call (a registration can replace the job), the admin service on changing calls.
grpc::Status Authorize(grpc::ServerContext* ctx, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "this call needs 'authorization: Bearer <token>' (the coordinator has --auth-token-file)");
  }
  if (std::string(it->second.data(), it->second.size()) != "Bearer " + token) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  }
  return grpc::Status::OK;
}

class ControlService final : public control::Control::Service {
 public:
  ControlService(Coordinator& core, Rendezvous& rendezvous, std::string token)
      : core_(core), rendezvous_(rendezvous), token_(std::move(token)) {}
  grpc::Status Register(grpc::ServerContext* ctx, const control::RegisterRequest* r, control::RegisterResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.Register(*r), out);
  }
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const control::HeartbeatRequest* r, control::HeartbeatResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.Heartbeat(*r), out);
  }
  grpc::Status ReportLoad(grpc::ServerContext* ctx, const control::LoadReport* r, control::LoadReportResponse*) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return ToGrpc(core_.ReportLoad(*r));
  }
  grpc::Status PollOrders(grpc::ServerContext* ctx, const control::PollOrdersRequest* r, control::Orders* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.PollOrders(*r), out);
  }
  grpc::Status ReportMigration(grpc::ServerContext* ctx, const control::MigrationReport* r,
                               control::MigrationReportResponse*) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return ToGrpc(core_.ReportMigration(*r));
  }
  grpc::Status Leave(grpc::ServerContext* ctx, const control::LeaveRequest* r, control::LeaveResponse*) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return ToGrpc(core_.Leave(*r));
  }
  grpc::Status Resume(grpc::ServerContext* ctx, const control::ResumeRequest* r, control::ResumeResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.Resume(*r), out);
  }
  grpc::Status Join(grpc::ServerContext* ctx, const control::JoinRequest* r, control::JoinResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(rendezvous_.Join(*r, absl::Milliseconds(std::clamp(r->wait_ms(), 0, 1000))), out);
  }
  grpc::Status Exchange(grpc::ServerContext* ctx, const control::ExchangeRequest* r, control::ExchangeResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(rendezvous_.Exchange(*r, absl::Milliseconds(std::clamp(r->wait_ms(), 0, 1000))), out);
  }

 private:
  Coordinator& core_;
  Rendezvous& rendezvous_;
  std::string token_;
};

class AdminService final : public admin::Admin::Service {
 public:
  AdminService(Coordinator& core, std::string token, const std::atomic<bool>& stopping)
      : core_(core), token_(std::move(token)), stopping_(stopping) {}

  grpc::Status GetStatus(grpc::ServerContext*, const admin::GetStatusRequest*, admin::ClusterStatus* out) override {
    *out = core_.Status();
    return grpc::Status::OK;
  }
  grpc::Status GetPlacement(grpc::ServerContext*, const admin::GetPlacementRequest* r, admin::GetPlacementResponse* out) override {
    auto layer = rpc::SelectedLayer(r->all_layers(), r->layer());
    if (!layer.ok()) return ToGrpc(layer.status());
    auto p = core_.GetPlacement(*layer);
    if (!p.ok()) return ToGrpc(p.status());
    *out->mutable_placement() = *std::move(p);
    return grpc::Status::OK;
  }
  grpc::Status GetLoad(grpc::ServerContext*, const admin::GetLoadRequest* r, admin::GetLoadResponse* out) override {
    auto layer = rpc::SelectedLayer(r->all_layers(), r->layer());
    if (!layer.ok()) return ToGrpc(layer.status());
    return Reply(core_.GetLoad(*layer), out);
  }
  grpc::Status Rebalance(grpc::ServerContext* ctx, const admin::RebalanceRequest* r, admin::RebalanceResponse* out) override {
    if (!r->dry_run()) {
      if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    }
    return Reply(core_.Rebalance(r->dry_run(), r->max_moves()), out);
  }
  grpc::Status Pin(grpc::ServerContext* ctx, const admin::PinRequest* r, admin::ConstraintsResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.Pin(r->pin()), out);
  }
  grpc::Status Unpin(grpc::ServerContext* ctx, const admin::PinRequest* r, admin::ConstraintsResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.Unpin(r->pin()), out);
  }
  grpc::Status Drain(grpc::ServerContext* ctx, const admin::DrainRequest* r, admin::ConstraintsResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.Drain(r->rank(), r->remove()), out);
  }
  grpc::Status Undrain(grpc::ServerContext* ctx, const admin::DrainRequest* r, admin::ConstraintsResponse* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.Undrain(r->rank()), out);
  }
  grpc::Status GetPolicy(grpc::ServerContext*, const admin::GetPolicyRequest*, types::Policy* out) override {
    *out = core_.GetPolicy();
    return grpc::Status::OK;
  }
  grpc::Status SetPolicy(grpc::ServerContext* ctx, const admin::SetPolicyRequest* r, types::Policy* out) override {
    if (grpc::Status auth = Authorize(ctx, token_); !auth.ok()) return auth;
    return Reply(core_.SetPolicy(r->policy()), out);
  }
  grpc::Status WatchEvents(grpc::ServerContext* ctx, const admin::WatchEventsRequest* r,
                           grpc::ServerWriter<admin::Event>* writer) override {
    int64_t after = r->after_seq();
    do {
      for (const admin::Event& e : core_.WaitEvents(after, r->follow() ? absl::Milliseconds(500) : absl::ZeroDuration())) {
        if (!writer->Write(e)) return grpc::Status::OK;  // the client went away
        after = e.seq();
      }
    } while (r->follow() && !ctx->IsCancelled() && !stopping_);
    return grpc::Status::OK;
  }

 private:
  Coordinator& core_;
  std::string token_;
  const std::atomic<bool>& stopping_;
};

bool IsLoopbackHost(absl::string_view host) {
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  if (host == "localhost" || host == "::1" || host == "ip6-localhost") return true;
  in_addr v4{};
  const std::string h(host);
  return inet_pton(AF_INET, h.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

// Bounds that keep a flood of connections from starving the coordinator (gRPC 1.51 has no
// connection cap): memory and threads of the gRPC core, streams per connection, connections
// that never finish their handshake or sit idle are closed, long-lived ones are recycled.
constexpr size_t kGrpcMemoryBytes = size_t{256} << 20;
constexpr int kGrpcMaxThreads = 64;
constexpr int kMaxStreamsPerConnection = 64;
constexpr int kHandshakeTimeoutMs = 5000;
constexpr int kIdleConnectionMs = 5 * 60 * 1000;
constexpr int kConnectionAgeMs = 30 * 60 * 1000, kConnectionAgeGraceMs = 30 * 1000;

// A file-descriptor limit as high as the hard limit allows: a flood of connections then needs
// far more sockets before accept() can fail at all.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &lim);
  }
}

// The listening socket bound to `port` in this process, or -1.
int FindListeningSocket(int port) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &fd)) continue;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    const int bound = addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                    : addr.ss_family == AF_INET  ? ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port)
                                                 : -1;
    if (bound == port) return fd;
  }
  return -1;
}

// Connections waiting in the kernel's accept queue of a listening socket (TCP_INFO reports
// the queue length of a listener in tcpi_unacked); -1 if unknown.
int AcceptQueueLength(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
  return static_cast<int>(info.tcpi_unacked);
}

}  // namespace

bool IsLoopbackAddress(absl::string_view listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  const size_t colon = listen.rfind(':');
  return IsLoopbackHost(colon == absl::string_view::npos ? listen : listen.substr(0, colon));
}

absl::Status CoordinatorServer::BuildGrpcServer(const std::string& listen) {
  control_ = std::make_unique<ControlService>(*core_, core_->rendezvous(), options_.auth_token);
  admin_ = std::make_unique<AdminService>(*core_, options_.auth_token, stopping_);
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options_.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options_.tls_key_pem, options_.tls_cert_pem});
    creds = grpc::SslServerCredentials(ssl);
  }
  int port = 0;
  builder.AddListeningPort(listen, creds, &port);
  builder.SetResourceQuota(*quota_);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxStreamsPerConnection);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, kHandshakeTimeoutMs);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, kIdleConnectionMs);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, kConnectionAgeMs);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, kConnectionAgeGraceMs);
  // gRPC binds with SO_REUSEPORT by default: a second coordinator on a busy port would start
  // and split a job's workers with the first. One listener per port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(control_.get());
  builder.RegisterService(admin_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen, " (in use, or a bad address)"));
  }
  port_ = port;
  return absl::OkStatus();
}

// gRPC 1.51 stops accepting for good after one failed accept() (EMFILE under a connection
// flood). The watchdog notices a listener whose accept queue stays non-empty for
// kDeadListenerChecks checks in a row and rebuilds the gRPC server on the same port (after
// closing the old listener); it retries every check until the rebuild succeeds.
void CoordinatorServer::WatchListener() {
  constexpr int kDeadListenerChecks = 4;  // x 500 ms
  int stuck = 0;
  while (!stopping_) {
    for (int i = 0; i < 10 && !stopping_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (stopping_) break;
    const int fd = FindListeningSocket(port_);
    const int queued = fd >= 0 ? AcceptQueueLength(fd) : 0;
    stuck = (fd < 0 || queued > 0) ? stuck + 1 : 0;
    if (stuck < kDeadListenerChecks) continue;
    std::lock_guard<std::mutex> lock(server_mu_);
    if (stopping_) break;
    LogWarning("coordinator: the gRPC listener on port ", port_, " stopped accepting (", queued,
               " connections queued); restarting it");
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_.reset();
    const absl::Status rebuilt = BuildGrpcServer(absl::StrCat(options_.listen.substr(0, options_.listen.rfind(':')), ":", port_));
    if (!rebuilt.ok()) {
      LogWarning("coordinator: restarting the listener failed (", rebuilt.message(), "); retrying");
      stuck = kDeadListenerChecks;  // try again at the next check
      continue;
    }
    ++listener_restarts_;
    stuck = 0;
  }
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(const ServerOptions& options) {
  auto s = std::unique_ptr<CoordinatorServer>(new CoordinatorServer());
  s->options_ = options;
  SY_ASSIGN_OR_RETURN(s->core_, Coordinator::Create(options.core));
  if (options.initial_policy) {
    const std::string persisted = options.core.state_dir.empty() ? "" : options.core.state_dir + "/state.json";
    if (persisted.empty() || access(persisted.c_str(), F_OK) != 0) SY_RETURN_IF_ERROR(s->core_->SetPolicy(*options.initial_policy).status());
  }
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and a key");
  }
  if (!absl::StartsWith(options.listen, "unix:")) {
    const size_t colon = options.listen.rfind(':');
    int port = -1;
    if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("--listen '", EchoValue(options.listen),
                                                     "': use HOST:PORT with a port in 0..65535 (0: a free one)"));
    }
  }
  if (options.auth_token.empty() && !IsLoopbackAddress(options.listen)) {
    if (!options.insecure_allow_remote) {
      return absl::InvalidArgumentError(absl::StrCat(
          "refusing to serve ", options.listen, " without --auth-token-file: anyone who reaches it could register workers, "
          "drain ranks and replace the placement (give a token, listen on 127.0.0.1, or pass --insecure-allow-remote; "
          "an embedded coordinator takes the workers' --coordinator-token-file)"));
    }
    LogWarning("coordinator: serving ", options.listen, " WITHOUT AUTHENTICATION (--insecure-allow-remote): "
               "anyone who can reach this address can register workers, drain ranks and change the placement");
  }
  RaiseFileLimit();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  s->quota_ = std::make_unique<grpc::ResourceQuota>("switchyard-coordinator");
  s->quota_->Resize(kGrpcMemoryBytes).SetMaxThreads(kGrpcMaxThreads);
  SY_RETURN_IF_ERROR(s->BuildGrpcServer(options.listen));
  if (options.metrics_port >= 0) SY_RETURN_IF_ERROR(s->StartMetrics());
  s->watchdog_ = std::thread([raw = s.get()] { raw->WatchListener(); });
  s->ticker_ = std::thread([raw = s.get()] {
    while (!raw->stopping_) {
      raw->core_->Tick();
      for (int i = 0; i < 4 && !raw->stopping_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  return s;
}

std::string CoordinatorServer::address() const {
  const std::string host = options_.listen.substr(0, options_.listen.rfind(':'));
  return absl::StrCat(host, ":", port_);
}

// The HTTP endpoint runs on civetweb: a pool of kMetricsThreads threads, every network read
// and write bounded by kMetricsTimeoutMs, so a slow or stalled client holds one thread for a
// while, never the endpoint. GET /metrics answers the exposition text; the dashboard page and
// its API (dashboard.h) the other paths; other methods 405.
absl::Status CoordinatorServer::StartMetrics() {
  constexpr const char* kMetricsThreads = "32";  // dozens of slow clients still leave threads for scrapes
  constexpr const char* kMetricsTimeoutMs = "2000";
  mg_init_library(0);
  const std::string ports = absl::StrCat(options_.metrics_host, ":", options_.metrics_port);
  const char* options[] = {"listening_ports", ports.c_str(), "num_threads", kMetricsThreads, "request_timeout_ms",
                           kMetricsTimeoutMs, "enable_keep_alive", "no", nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = [](const mg_connection*, const char* message) {
    LogWarning("coordinator: metrics endpoint: ", message);
    return 1;
  };
  metrics_ = mg_start(&callbacks, this, options);
  if (metrics_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", ports, " (in use, or a bad address)"));
  }
  mg_set_request_handler(
      metrics_, "/",
      [](mg_connection* conn, void* self) {
        const mg_request_info* request = mg_get_request_info(conn);
        const absl::string_view uri = request->local_uri != nullptr ? request->local_uri : "";
        Coordinator& core = static_cast<CoordinatorServer*>(self)->core();
        HttpResponse response;
        const std::string method = request->request_method;
        if (method != "GET" && method != "HEAD") {
          response = {405, "text/plain; charset=utf-8", "read-only: only GET (and HEAD) are served here\n"};
        } else if (uri == "/metrics") {
          response = {200, "text/plain; version=0.0.4", core.MetricsText()};
        } else {
          response = ServeDashboard(core, uri, request->query_string != nullptr ? request->query_string : "");
        }
        const char* reason = response.status == 200 ? "OK" : response.status == 400 ? "Bad Request" : response.status == 404 ? "Not Found"
                             : "Method Not Allowed";
        mg_printf(conn,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                  "X-Content-Type-Options: nosniff\r\n%sConnection: close\r\n\r\n",
                  response.status, reason, response.content_type.c_str(), response.body.size(),
                  response.status == 405 ? "Allow: GET, HEAD\r\n" : "");
        if (method != "HEAD") mg_write(conn, response.body.data(), response.body.size());
        return response.status;
      },
      this);
  mg_server_port bound[1];
  if (mg_get_server_ports(metrics_, 1, bound) < 1) return absl::InternalError("metrics endpoint: no listening port");
  metrics_port_ = bound[0].port;
  return absl::OkStatus();
}

void CoordinatorServer::Shutdown() {
  if (stopping_.exchange(true)) return;
  if (core_) core_->StopWaiters();
  if (core_) core_->rendezvous().Stop();
  {
    std::lock_guard<std::mutex> lock(server_mu_);
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  if (watchdog_.joinable()) watchdog_.join();
  if (ticker_.joinable()) ticker_.join();
  if (metrics_ != nullptr) {
    mg_stop(metrics_);
    metrics_ = nullptr;
    mg_exit_library();
  }
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace switchyard::coordinator
