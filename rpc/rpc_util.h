// gRPC glue every user of the control and admin APIs shares (coordinator, worker, CLI):
// status conversion both ways, client channels (plaintext or TLS), call contexts with a
// deadline and the bearer token.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace switchyard::rpc {

grpc::Status ToGrpc(const absl::Status& status);
// A call's outcome; an unreachable peer's message names `address`.
absl::Status FromGrpc(const grpc::Status& status, absl::string_view address);

// A channel to `address` (host:port): TLS verified against the PEM CA `tls_ca_pem`, or
// plaintext when it is empty. It reconnects to a peer that went away within about a second.
// `connect_timeout` (at least 100 ms): the least time one connection attempt gets. Workers
// keep it short, so that a coordinator restarting on its port is found again at once;
// admin clients, which make one fail-fast call, pass kAdminConnectTimeout, so that a slow
// handshake on a loaded machine is not cut off (a refused connection still fails at once).
inline constexpr absl::Duration kAdminConnectTimeout = absl::Seconds(5);
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, const std::string& tls_ca_pem,
                                           absl::Duration connect_timeout = absl::Milliseconds(100));

// A context for one call: deadline `timeout` from now (none if InfiniteDuration) and
// `authorization: Bearer <token>` when `token` is not empty.
std::unique_ptr<grpc::ClientContext> CallContext(absl::Duration timeout, const std::string& token);

// The token from a token file (surrounding whitespace dropped); an empty file is an error.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);
// OK for a non-empty token of printable ASCII (what an HTTP/2 header value may hold);
// InvalidArgument naming the first bad byte otherwise.
absl::Status ValidateToken(absl::string_view token);

}  // namespace switchyard::rpc
