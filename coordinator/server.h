// CoordinatorServer: the Coordinator behind gRPC (control + admin services, server reflection)
// and an HTTP /metrics endpoint (Prometheus text), plus a ticker that notices lost workers.
//
// Listens on 127.0.0.1 unless told otherwise; port 0 binds a free port (port() says which).
// With an auth token, every control call (a registration can replace the job) and the
// mutating admin calls (Rebalance without dry_run, Pin, Unpin, Drain, Undrain, SetPolicy)
// need metadata `authorization: Bearer <token>` (UNAUTHENTICATED otherwise). With a certificate and key, both services are served over TLS.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "coordinator/coordinator.h"

namespace grpc {
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
};

class CoordinatorServer {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(const ServerOptions& options);
  ~CoordinatorServer();

  int port() const { return port_; }
  std::string address() const;  // host:port the gRPC services listen on
  int metrics_port() const { return metrics_port_; }
  Coordinator& core() { return *core_; }
  // Stops serving (idempotent): streams end, threads join.
  void Shutdown();

 private:
  CoordinatorServer() = default;
  void ServeMetrics();

  ServerOptions options_;
  std::unique_ptr<Coordinator> core_;
  std::unique_ptr<grpc::Service> control_, admin_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  int metrics_fd_ = -1, metrics_port_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread ticker_, metrics_thread_;
};

}  // namespace switchyard::coordinator
