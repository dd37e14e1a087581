// Typed, total reading of JSON documents (config.json, placement JSON, safetensors headers,
// the coordinator's state.json): every accessor checks the value's type and range and returns
// a Status naming the file, the JSON path and the offending value; nothing throws. Callers
// parse with ParseJson (which catches nlohmann's exceptions) and then read only through a
// JsonReader, never through nlohmann's throwing get<>/at/value.
//
// Paths are JSONPath-like: "$", "$.layers[3].ranks", "$.model".
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

using Json = nlohmann::json;

// Parses `text`; errors name `file` and the byte offset. Duplicate keys keep the last value.
absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view file);

// At most `max` bytes of `value` for an error message, with the elided length named: a
// hostile file or request must not make its error text unbounded.
std::string EchoValue(absl::string_view value, size_t max = 64);

// Path of a member / an element under `path`.
std::string JsonPath(absl::string_view path, absl::string_view member);
std::string JsonPath(absl::string_view path, size_t index);

class JsonReader {
 public:
  static constexpr int64_t kIntMin = std::numeric_limits<int>::min();
  static constexpr int64_t kIntMax = std::numeric_limits<int>::max();

  explicit JsonReader(absl::string_view file) : file_(file) {}

  // InvalidArgument "<file>: <path>: <problem>".
  absl::Status Error(absl::string_view path, absl::string_view problem) const;

  // `object` must be an object (error at `path` otherwise). Field: the member, error if
  // absent. Optional: the member, or nullptr if absent or null.
  absl::StatusOr<const Json*> Field(const Json& object, absl::string_view name, absl::string_view path) const;
  absl::StatusOr<const Json*> Optional(const Json& object, absl::string_view name, absl::string_view path) const;

  // Scalars at `path`, in [lo, hi].
  absl::StatusOr<int64_t> Int(const Json& v, absl::string_view path, int64_t lo = kIntMin, int64_t hi = kIntMax) const;
  absl::StatusOr<double> Number(const Json& v, absl::string_view path, double lo = -std::numeric_limits<double>::max(),
                                double hi = std::numeric_limits<double>::max()) const;
  absl::StatusOr<bool> Bool(const Json& v, absl::string_view path) const;
  absl::StatusOr<std::string> String(const Json& v, absl::string_view path) const;
  absl::Status Array(const Json& v, absl::string_view path) const;
  absl::Status Object(const Json& v, absl::string_view path) const;

  // Members of `object` (at `path`): required, or `fallback` when absent or null.
  absl::StatusOr<int64_t> IntField(const Json& object, absl::string_view name, absl::string_view path,
                                   int64_t lo = kIntMin, int64_t hi = kIntMax) const;
  absl::StatusOr<int64_t> IntFieldOr(const Json& object, absl::string_view name, absl::string_view path, int64_t fallback,
                                     int64_t lo = kIntMin, int64_t hi = kIntMax) const;
  absl::StatusOr<double> NumberField(const Json& object, absl::string_view name, absl::string_view path,
                                     double lo = -std::numeric_limits<double>::max(),
                                     double hi = std::numeric_limits<double>::max()) const;
  absl::StatusOr<double> NumberFieldOr(const Json& object, absl::string_view name, absl::string_view path, double fallback,
                                       double lo = -std::numeric_limits<double>::max(),
                                       double hi = std::numeric_limits<double>::max()) const;
  absl::StatusOr<bool> BoolFieldOr(const Json& object, absl::string_view name, absl::string_view path, bool fallback) const;
  absl::StatusOr<std::string> StringField(const Json& object, absl::string_view name, absl::string_view path) const;
  absl::StatusOr<std::string> StringFieldOr(const Json& object, absl::string_view name, absl::string_view path,
                                            const std::string& fallback) const;
  // An array member (error if absent or not an array); ArrayFieldOr: nullptr when absent.
  absl::StatusOr<const Json*> ArrayField(const Json& object, absl::string_view name, absl::string_view path) const;
  absl::StatusOr<const Json*> ArrayFieldOr(const Json& object, absl::string_view name, absl::string_view path) const;

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

}  // namespace switchyard
