#include "common/json_reader.h"

#include <cmath>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace switchyard {

absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view file) {
  // Parse without exceptions: a discarded (invalid) document comes back as `discarded`, and
  // the SAX error position is recovered by a second, exception-carrying parse only then.
  // A key repeated in one object is refused (which one would count is a guess).
  std::vector<std::set<std::string>> keys;  // of the objects being parsed, innermost last
  std::string duplicate;
  Json::parser_callback_t check = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) keys.emplace_back();
    if (event == Json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    if (event == Json::parse_event_t::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second &&
        duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  Json doc = Json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/false);
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": key \"", EchoValue(duplicate), "\" appears twice in one object"));
  }
  if (!doc.is_discarded()) return doc;
  try {
    const Json reparsed = Json::parse(text.begin(), text.end());
    (void)reparsed;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON: ", e.what()));
  }
  return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON"));
}

std::string EchoValue(absl::string_view value, size_t max) {
  // Control bytes (a NUL, an escape sequence) are shown escaped, never written to a terminal.
  std::string shown;
  for (const char c : value.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(&shown, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      shown.push_back(c);
    }
  }
  if (value.size() <= max) return shown;
  return absl::StrCat(shown, "... (", value.size(), " bytes)");
}

std::string JsonPath(absl::string_view path, absl::string_view member) { return absl::StrCat(path, ".", member); }
std::string JsonPath(absl::string_view path, size_t index) { return absl::StrCat(path, "[", index, "]"); }

namespace {

const char* TypeName(const Json& v) { return v.type_name(); }

// dump() that cannot throw (invalid UTF-8 is replaced).
std::string Echo(const Json& v) { return EchoValue(v.dump(-1, ' ', false, Json::error_handler_t::replace)); }

// What a value of the wrong type is: "string \"x\"", "boolean true", "null".
std::string Got(const Json& v) { return v.is_null() ? "null" : absl::StrCat(TypeName(v), " ", Echo(v)); }

}  // namespace

absl::Status JsonReader::Error(absl::string_view path, absl::string_view problem) const {
  return absl::InvalidArgumentError(absl::StrCat(file_, ": ", path, ": ", problem));
}

absl::StatusOr<const Json*> JsonReader::Field(const Json& object, absl::string_view name, absl::string_view path) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Optional(object, name, path));
  if (v == nullptr) return Error(JsonPath(path, name), "missing");
  return v;
}

absl::StatusOr<const Json*> JsonReader::Optional(const Json& object, absl::string_view name, absl::string_view path) const {
  SY_RETURN_IF_ERROR(Object(object, path));
  auto it = object.find(std::string(name));
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<int64_t> JsonReader::Int(const Json& v, absl::string_view path, int64_t lo, int64_t hi) const {
  auto range = [&](auto x) {
    return Error(path, absl::StrCat(x, " is out of range (must be in ", lo, "..", hi, ")"));
  };
  if (v.is_number_unsigned()) {
    const uint64_t x = v.get<uint64_t>();
    if (hi < 0 || x > static_cast<uint64_t>(hi) || static_cast<int64_t>(x) < lo) return range(x);
    return static_cast<int64_t>(x);
  }
  if (!v.is_number_integer()) {
    return Error(path, absl::StrCat("expected an integer, got ", Got(v)));
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) return range(x);
  return x;
}

absl::StatusOr<double> JsonReader::Number(const Json& v, absl::string_view path, double lo, double hi) const {
  if (!v.is_number()) return Error(path, absl::StrCat("expected a number, got ", Got(v)));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {  // all the digits: 1 + 2^-52 must not read as 1
    return Error(path, absl::StrCat(absl::StrFormat("%.17g", x), " is out of range (must be in ", lo, "..", hi, ")"));
  }
  return x;
}

absl::StatusOr<bool> JsonReader::Bool(const Json& v, absl::string_view path) const {
  if (!v.is_boolean()) return Error(path, absl::StrCat("expected true or false, got ", Got(v)));
  return v.get<bool>();
}

absl::StatusOr<std::string> JsonReader::String(const Json& v, absl::string_view path) const {
  if (!v.is_string()) return Error(path, absl::StrCat("expected a string, got ", Got(v)));
  return v.get<std::string>();
}

absl::Status JsonReader::Array(const Json& v, absl::string_view path) const {
  if (!v.is_array()) return Error(path, absl::StrCat("expected an array, got ", TypeName(v)));
  return absl::OkStatus();
}

absl::Status JsonReader::Object(const Json& v, absl::string_view path) const {
  if (!v.is_object()) return Error(path, absl::StrCat("expected an object, got ", TypeName(v)));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> JsonReader::IntField(const Json& object, absl::string_view name, absl::string_view path, int64_t lo,
                                             int64_t hi) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Field(object, name, path));
  return Int(*v, JsonPath(path, name), lo, hi);
}

absl::StatusOr<int64_t> JsonReader::IntFieldOr(const Json& object, absl::string_view name, absl::string_view path,
                                               int64_t fallback, int64_t lo, int64_t hi) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Optional(object, name, path));
  if (v == nullptr) return fallback;
  return Int(*v, JsonPath(path, name), lo, hi);
}

absl::StatusOr<double> JsonReader::NumberField(const Json& object, absl::string_view name, absl::string_view path, double lo,
                                               double hi) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Field(object, name, path));
  return Number(*v, JsonPath(path, name), lo, hi);
}

absl::StatusOr<double> JsonReader::NumberFieldOr(const Json& object, absl::string_view name, absl::string_view path,
                                                 double fallback, double lo, double hi) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Optional(object, name, path));
  if (v == nullptr) return fallback;
  return Number(*v, JsonPath(path, name), lo, hi);
}

absl::StatusOr<bool> JsonReader::BoolFieldOr(const Json& object, absl::string_view name, absl::string_view path,
                                             bool fallback) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Optional(object, name, path));
  if (v == nullptr) return fallback;
  return Bool(*v, JsonPath(path, name));
}

absl::StatusOr<std::string> JsonReader::StringField(const Json& object, absl::string_view name, absl::string_view path) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Field(object, name, path));
  return String(*v, JsonPath(path, name));
}

absl::StatusOr<std::string> JsonReader::StringFieldOr(const Json& object, absl::string_view name, absl::string_view path,
                                                      const std::string& fallback) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Optional(object, name, path));
  if (v == nullptr) return fallback;
  return String(*v, JsonPath(path, name));
}

absl::StatusOr<const Json*> JsonReader::ArrayField(const Json& object, absl::string_view name, absl::string_view path) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Field(object, name, path));
  SY_RETURN_IF_ERROR(Array(*v, JsonPath(path, name)));
  return v;
}

absl::StatusOr<const Json*> JsonReader::ArrayFieldOr(const Json& object, absl::string_view name, absl::string_view path) const {
  SY_ASSIGN_OR_RETURN(const Json* v, Optional(object, name, path));
  if (v != nullptr) SY_RETURN_IF_ERROR(Array(*v, JsonPath(path, name)));
  return v;
}

}  // namespace switchyard
