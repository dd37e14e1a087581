// The coordinator's control and admin requests (coordinator/coordinator.h behind the gRPC
// services, with rpc/validate.h's checks): a sequence of requests of any content against a
// coordinator running a registered job. Every request either applies or fails with the
// coordinator's state unchanged (DESIGN.md section 6), and nothing crashes or blocks.
//
// Input: records [op byte][length byte][length bytes of a serialized request message].
#include "common/status.h"
#include "coordinator/coordinator.h"
#include "rpc/validate.h"
#include "tests/coordinator/fixtures.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

using namespace switchyard;
namespace control = switchyard::control::v1;
namespace admin = switchyard::admin::v1;
namespace types = switchyard::types::v1;

// Everything a request may change, minus the clock-dependent fields.
std::string Snapshot(coordinator::Coordinator& c) {
  admin::ClusterStatus s = c.Status();
  for (admin::WorkerStatus& w : *s.mutable_workers()) {
    w.clear_seconds_since_heartbeat();
    w.clear_seconds_since_report();
  }
  std::string out = s.SerializeAsString();
  if (auto p = c.GetPlacement(std::nullopt); p.ok()) out += p->SerializeAsString();
  if (auto l = c.GetLoad(std::nullopt); l.ok()) out += l->SerializeAsString();
  return out + c.GetPolicy().SerializeAsString();
}

template <typename Message>
bool Parse(const uint8_t* data, size_t size, Message* m) {
  return m->ParseFromArray(data, static_cast<int>(size));
}

absl::Status Apply(coordinator::Coordinator& c, int op, const uint8_t* data, size_t size) {
  switch (op % 14) {
    case 0: {
      control::RegisterRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return c.Register(r).status();
    }
    case 1: {
      control::HeartbeatRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return c.Heartbeat(r).status();
    }
    case 2: {
      control::LoadReport r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return c.ReportLoad(r);
    }
    case 3: {
      control::PollOrdersRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      r.set_wait_ms(std::min(r.wait_ms(), 0));  // never block the fuzzer; negatives stay
      return c.PollOrders(r).status();
    }
    case 4: {
      control::MigrationReport r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return c.ReportMigration(r);
    }
    case 5: {
      control::LeaveRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return c.Leave(r);
    }
    case 6:
    case 7: {
      admin::PinRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return op % 14 == 6 ? c.Pin(r.pin()).status() : c.Unpin(r.pin()).status();
    }
    case 8:
    case 9: {
      admin::DrainRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return op % 14 == 8 ? c.Drain(r.rank()).status() : c.Undrain(r.rank()).status();
    }
    case 10: {
      admin::SetPolicyRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return c.SetPolicy(r.policy()).status();
    }
    case 11: {
      admin::RebalanceRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      return c.Rebalance(r.dry_run(), r.max_moves()).status();
    }
    case 12: {
      admin::GetPlacementRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      auto layer = rpc::SelectedLayer(r.all_layers(), r.layer());
      if (!layer.ok()) return layer.status();
      return c.GetPlacement(*layer).status();
    }
    default: {
      admin::GetLoadRequest r;
      if (!Parse(data, size, &r)) return absl::OkStatus();
      auto layer = rpc::SelectedLayer(r.all_layers(), r.layer());
      if (!layer.ok()) return layer.status();
      return c.GetLoad(*layer).status();
    }
  }
}

}  // namespace

SY_FUZZ_TARGET(requests) {
  auto created = coordinator::Coordinator::Create({});
  SY_CHECK(created.ok());
  coordinator::Coordinator& c = **created;
  for (int r = 0; r < test::job::kRanks; ++r) SY_CHECK(c.Register(test::job::Registration(r)).ok());
  for (int r = 0; r < test::job::kRanks; ++r) SY_CHECK(c.ReportLoad(test::job::Report(r, 0, 10)).ok());
  size_t i = 0;
  for (int requests = 0; requests < 16 && i + 2 <= size; ++requests) {
    const int op = data[i];
    const size_t len = std::min<size_t>(data[i + 1], size - i - 2);
    const std::string before = Snapshot(c);
    const absl::Status s = Apply(c, op, data + i + 2, len);
    if (!s.ok()) SY_CHECK(Snapshot(c) == before);  // a refused request changes nothing
    i += 2 + len;
  }
  return 0;
}
