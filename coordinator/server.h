// CoordinatorServer: the Coordinator behind gRPC (control + admin services, server reflection)
// and an HTTP /metrics endpoint (Prometheus text, served by civetweb: concurrent connections,
// bounded reads and writes), plus a ticker that notices lost workers.
//
// Listens on 127.0.0.1 unless told otherwise; port 0 binds a free port (port() says which).
// With an auth token, every control call (a registration can replace the job) and the
// mutating admin calls (Rebalance without dry_run, Pin, Unpin, Drain, Undrain, SetPolicy)
// need metadata `authorization: Bearer <token>` (UNAUTHENTICATED otherwise). With a certificate and key, both services are served over TLS.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "coordinator/coordinator.h"
#include "coordinator/rendezvous.h"

struct mg_context;  // civetweb

namespace grpc {
class ResourceQuota;
class Server;
class Service;
}  // namespace grpc

namespace switchyard::coordinator {

struct ServerOptions {
  std::string listen = "127.0.0.1:0";
  CoordinatorOptions core;
  std::string auth_token;                  // empty: no authentication
  std::string tls_cert_pem, tls_key_pem;   // empty: plaintext
  int metrics_port = -1;                   // -1: no metrics endpoint; 0: a free port
  std::string metrics_host = "127.0.0.1";
  std::optional<types::Policy> initial_policy;  // when no persisted policy exists
  // Without an auth token, Start refuses a non-loopback `listen` unless this is set (then
  // it serves with a loud warning on stderr).
  bool insecure_allow_remote = false;
};

// True for 127.0.0.0/8, ::1, localhost and unix: addresses ("HOST:PORT" or "unix:PATH").
bool IsLoopbackAddress(absl::string_view listen);

class CoordinatorServer {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(const ServerOptions& options);
  ~CoordinatorServer();

  int port() const { return port_; }
  std::string address() const;  // host:port the gRPC services listen on
  int metrics_port() const { return metrics_port_; }
  Coordinator& core() { return *core_; }
  // Times the watchdog rebuilt a gRPC listener that had stopped accepting.
  int listener_restarts() const { return listener_restarts_; }
  // Stops serving (idempotent): streams end, threads join.
  void Shutdown();

 private:
  CoordinatorServer() = default;
  absl::Status StartMetrics();
  // (Re)builds server_ on `listen` with the services and the connection bounds; sets port_.
  absl::Status BuildGrpcServer(const std::string& listen);
  void WatchListener();

  ServerOptions options_;
  std::unique_ptr<Coordinator> core_;
  std::unique_ptr<grpc::Service> control_, admin_;
  std::unique_ptr<grpc::ResourceQuota> quota_;
  std::mutex server_mu_;  // server_ (the watchdog may rebuild it)
  std::unique_ptr<grpc::Server> server_;
  std::atomic<int> listener_restarts_{0};
  int port_ = 0;
  ::mg_context* metrics_ = nullptr;  // the civetweb server of /metrics
  int metrics_port_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread ticker_, watchdog_;
};

}  // namespace switchyard::coordinator
