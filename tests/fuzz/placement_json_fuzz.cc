// The placement JSON reader (placement/io/placement_json.h): accepted placements validate and
// round-trip.
#include "common/status.h"
#include "placement/io/placement_json.h"
#include "tests/fuzz/fuzz_target.h"

SY_FUZZ_TARGET(placement_json) {
  using namespace switchyard::placement;
  auto p = ParsePlacementJson(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
  if (!p.ok()) return 0;
  SY_CHECK(ValidatePlacement(*p).ok());
  auto again = ParsePlacementJson(PlacementToJson(*p, "fuzz", std::nullopt), "again.json");
  SY_CHECK(again.ok() && *again == *p);
  return 0;
}
