#include "placement/topology.h"

#include "absl/strings/str_cat.h"

namespace switchyard::placement {

absl::StatusOr<Topology> Topology::Create(int ranks, int nodes, int slots_per_rank) {
  if (ranks < 1 || ranks > kMaxRanks) {
    return absl::InvalidArgumentError(absl::StrCat("ranks must be in 1..", kMaxRanks, ", got ", ranks));
  }
  if (nodes < 1) return absl::InvalidArgumentError(absl::StrCat("nodes must be >= 1, got ", nodes));
  if (ranks % nodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "nodes (", nodes, ") must divide ranks (", ranks, "): nodes are equal blocks of ranks"));
  }
  if (slots_per_rank < 1 || slots_per_rank > kMaxSlotsPerRank) {
    return absl::InvalidArgumentError(
        absl::StrCat("slots per rank must be in 1..", kMaxSlotsPerRank, ", got ", slots_per_rank));
  }
  return Topology(ranks, nodes, slots_per_rank);
}

}  // namespace switchyard::placement
