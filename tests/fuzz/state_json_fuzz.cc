// The coordinator's state.json (coordinator/state_store.h): an accepted state validates and
// round-trips.
#include "common/status.h"
#include "coordinator/state_store.h"
#include "tests/fuzz/fuzz_target.h"

SY_FUZZ_TARGET(state_json) {
  using namespace switchyard::coordinator;
  auto s = ParseState(std::string(reinterpret_cast<const char*>(data), size), "state.json");
  if (!s.ok()) return 0;
  SY_CHECK(ValidateState(*s).ok());
  auto again = ParseState(StateToJson(*s), "again.json");
  SY_CHECK(again.ok() && StateToJson(*again) == StateToJson(*s));
  return 0;
}
