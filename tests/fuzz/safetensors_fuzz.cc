// A safetensors file (worker/safetensors.h): every accepted tensor lies inside the file and
// its bytes match shape x dtype for the dtypes the reader knows.
#include "common/status.h"
#include "tests/fuzz/fuzz_target.h"
#include "worker/safetensors.h"

SY_FUZZ_TARGET(safetensors) {
  using namespace switchyard::worker;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto tensors = ParseSafetensors(bytes, "fuzz.safetensors");
  if (!tensors.ok()) return 0;
  for (const auto& [name, v] : *tensors) {
    SY_CHECK(v.data >= bytes.data() && v.data + v.bytes <= bytes.data() + bytes.size());
  }
  return 0;
}
