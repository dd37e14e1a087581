#include "rpc/rpc_util.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/file_util.h"
#include "common/status.h"

namespace switchyard::rpc {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::Status FromGrpc(const grpc::Status& s, absl::string_view address) {
  if (s.ok()) return absl::OkStatus();
  std::string message = s.error_message();
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    message = absl::StrCat("coordinator at ", address, " is unreachable: ", message);
  }
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), message);
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, const std::string& tls_ca_pem,
                                           absl::Duration connect_timeout) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = tls_ca_pem;
    creds = grpc::SslCredentials(ssl);
  }
  // gRPC's own reconnect backoff grows to 2 minutes by default; a coordinator that restarts
  // must be found again within a second or two. gRPC reads GRPC_ARG_MIN_RECONNECT_BACKOFF_MS
  // as the least time a connection attempt (TCP and HTTP/2 handshakes) gets, not as a backoff.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(connect_timeout), 100, 600'000)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(address, creds, args);
}

std::unique_ptr<grpc::ClientContext> CallContext(absl::Duration timeout, const std::string& token) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (timeout != absl::InfiniteDuration()) ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  return ctx;
}

absl::Status ValidateToken(absl::string_view token) {
  if (token.empty()) return absl::InvalidArgumentError("the token is empty");
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(token[i]);
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat("the token has byte 0x", absl::Hex(c, absl::kZeroPad2), " at position ", i,
                                                     ": a bearer token is printable ASCII"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  std::string token(absl::StripAsciiWhitespace(text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  if (absl::Status valid = ValidateToken(token); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, ": ", valid.message()));
  }
  return token;
}

}  // namespace switchyard::rpc
