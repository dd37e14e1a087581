// RoutingTable: how a (token, expert) pair picks the replica that computes it (DESIGN.md
// section 4, step 2). Built from a placement and an epoch; pure and immutable, so the step
// thread can swap tables between steps.
//
// Shares first, then locality. Every source rank is assumed to send 1/R of an expert's
// pairs; replica j (share s_j) absorbs s_j * R of those units. Sources fill replicas on their
// own rank first, then on their node, then the rest in rank order, so each replica receives
// its share overall while as much traffic as the shares allow stays local. A pair draws
// u in [0, 1) deterministically and takes the replica whose cumulative fraction covers u.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/placement.h"

namespace switchyard::placement {

struct ReplicaLocation {
  int rank = 0;
  int slot = 0;  // index into the rank's list of replicas for the layer
  friend bool operator==(const ReplicaLocation&, const ReplicaLocation&) = default;
};

class RoutingTable {
 public:
  // InvalidArgument if the placement is not valid (ValidatePlacement).
  static absl::StatusOr<RoutingTable> Build(const Placement& placement, int64_t epoch);

  int64_t epoch() const { return epoch_; }
  const Placement& placement() const { return placement_; }
  int num_layers() const { return static_cast<int>(placement_.layers.size()); }
  // Index of a model layer id in the placement, or -1.
  int LayerIndex(int layer_id) const;

  // The replica for a pair of expert `expert` in layer `layer_index`, sent from
  // `source_rank`, with draw u in [0, 1).
  ReplicaLocation Route(int layer_index, int expert, int source_rank, double u) const;

  // Fraction of source_rank's pairs for the expert that `replica` gets (tests, reports).
  double Fraction(int layer_index, int expert, int source_rank, const ReplicaLocation& replica) const;

 private:
  struct Choice {
    double upto;  // cumulative fraction, last entry 1
    ReplicaLocation where;
  };
  RoutingTable() = default;

  Placement placement_;
  int64_t epoch_ = 0;
  int ranks_ = 0, experts_ = 0;
  // choices_[((layer * experts) + expert) * ranks + source] -> [begin, end) into choice_list_
  std::vector<std::pair<int32_t, int32_t>> index_;
  std::vector<Choice> choice_list_;
};

// A well-mixed draw in [0, 1) from up to four integers (splitmix64).
double PairDraw(uint64_t a, uint64_t b, uint64_t c, uint64_t d);

}  // namespace switchyard::placement
