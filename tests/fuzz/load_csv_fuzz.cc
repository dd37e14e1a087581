// The expert-load trace CSV reader (placement/io/load_csv.h).
#include "common/status.h"
#include "placement/io/load_csv.h"
#include "tests/fuzz/fuzz_target.h"

SY_FUZZ_TARGET(load_csv) {
  using namespace switchyard::placement;
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const std::optional<std::string>& select : {std::optional<std::string>(), std::optional<std::string>("0")}) {
    LoadCsvOptions options;
    options.select = select;
    auto load = ParseLoadCsv(text, "fuzz.csv", options);
    if (load.ok()) SY_CHECK(load->Validate().ok());  // what a planner is given is a valid load
  }
  return 0;
}
