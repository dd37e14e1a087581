// The job the coordinator tests register: 4 ranks on 2 nodes, 16 experts, MoE layers 1 and 2,
// contiguous placement; load windows with expert 0 hot.
#pragma once

#include <string>
#include <vector>

#include "placement/placement.h"
#include "rpc/convert.h"
#include "switchyard/control/v1/control.pb.h"

namespace switchyard::test::job {

namespace control = switchyard::control::v1;

constexpr int kRanks = 4, kExperts = 16, kSlots = 6;  // contiguous: 4 experts + 2 spare slots per rank
inline const std::vector<int> kLayers = {1, 2};

inline placement::Placement StartPlacement() {
  auto topo = placement::Topology::Create(kRanks, 2, kSlots).value();
  return placement::ContiguousPlacement(topo, kExperts, kLayers).value();
}

inline control::RegisterRequest Registration(int rank, const std::string& job = "job-a") {
  control::RegisterRequest r;
  r.set_rank(rank);
  r.set_world_size(kRanks);
  r.set_host("127.0.0.1");
  r.set_node(rank / 2);
  r.set_local_rank(rank % 2);
  r.set_backend("inprocess");
  auto* m = r.mutable_model();
  m->set_name("test-moe");
  m->set_num_experts(kExperts);
  m->set_top_k(2);
  m->set_hidden(64);
  m->set_expert_ffn(32);
  for (int l : kLayers) m->add_moe_layers(l);
  m->set_expert_bytes(3 * 64 * 32 * 4);
  *r.mutable_placement() = rpc::ToProto(StartPlacement(), 0);
  r.set_job_id(job);
  return r;
}

// A window where expert 0 is hot: rank r reports what its gate chose (every rank the same
// skewed mix) and what it computed under the contiguous placement (experts 4r..4r+3).
inline control::LoadReport Report(int rank, int64_t first, int64_t end, int64_t hot = 400) {
  control::LoadReport r;
  r.set_rank(rank);
  r.set_first_step(first);
  r.set_end_step(end);
  for (int layer : kLayers) {
    auto* l = r.add_layers();
    l->set_layer(layer);
    for (int e = 0; e < kExperts; ++e) {
      l->add_chosen(e == 0 ? hot : 20);
      const int holder = e / 4;
      l->add_processed(holder == rank ? (e == 0 ? hot : 20) * kRanks : 0);
    }
  }
  return r;
}

}  // namespace switchyard::test::job
