#include "comm/communicator.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace switchyard::comm {

absl::string_view MemoryKindName(MemoryKind kind) {
  return kind == MemoryKind::kHost ? "host" : "cuda";
}

absl::Status Communicator::AllToAll(const void* send, int64_t bytes_per_peer, void* recv, MemoryKind kind) {
  std::vector<int64_t> counts(size(), bytes_per_peer), offsets(size());
  for (int p = 0; p < size(); ++p) offsets[p] = p * bytes_per_peer;
  return AllToAllV(send, counts.data(), offsets.data(), recv, counts.data(), offsets.data(), kind);
}

absl::Status CheckPeer(const Communicator& comm, int peer, absl::string_view call) {
  if (peer < 0 || peer >= comm.size()) {
    return absl::InvalidArgumentError(absl::StrCat(call, ": peer ", peer, " out of range (",
                                                   comm.size(), " ranks)"));
  }
  return absl::OkStatus();
}

absl::Status CheckTag(int tag, absl::string_view call) {
  if (tag < 0 || tag >= (1 << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(call, ": tag ", tag, " out of range [0, 2^30)"));
  }
  return absl::OkStatus();
}

absl::Status CheckKind(const Communicator& comm, MemoryKind kind, absl::string_view call) {
  if (!comm.Supports(kind)) {
    return absl::InvalidArgumentError(absl::StrCat(call, ": the ", comm.backend(),
                                                   " backend does not take ",
                                                   MemoryKindName(kind), " memory"));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::comm
