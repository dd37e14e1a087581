#include "placement/io/load_csv.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file_util.h"
#include "common/json_reader.h"
#include "common/status.h"

namespace switchyard::placement {
namespace {

constexpr absl::string_view kHeaderHelp =
    "header must be 'layer,expert,tokens', optionally preceded by 'step' or 'workload'";

// Largest layer and expert id a trace may name (models have at most a few hundred of each).
constexpr int kMaxId = 65535;

struct Header {
  bool has_key = false;
  std::string key_name;  // "step" or "workload"
};

absl::StatusOr<Header> ParseHeader(absl::string_view line, absl::string_view file) {
  std::vector<absl::string_view> cols = absl::StrSplit(line, ',');
  for (auto& c : cols) c = absl::StripAsciiWhitespace(c);
  Header header;
  size_t first = 0;
  if (cols.size() == 4 && (cols[0] == "step" || cols[0] == "workload")) {
    header.has_key = true;
    header.key_name = std::string(cols[0]);
    first = 1;
  }
  if (cols.size() != first + 3 || cols[first] != "layer" || cols[first + 1] != "expert" ||
      cols[first + 2] != "tokens") {
    return absl::InvalidArgumentError(
        absl::StrCat(file, " line 1: ", kHeaderHelp, " (got '", EchoValue(line), "')"));
  }
  return header;
}

// Calls fn(line_number, stripped_line) for each non-empty line.
template <typename Fn>
absl::Status ForEachLine(absl::string_view text, Fn fn) {
  int number = 0;
  absl::ConsumePrefix(&text, "\xEF\xBB\xBF");  // a UTF-8 byte-order mark (spreadsheet exports)
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    SY_RETURN_IF_ERROR(fn(number, line));
  }
  return absl::OkStatus();
}

using Sums = std::map<int, std::map<int, double>>;  // layer -> expert -> tokens

// Sums the rows per (layer, expert): of the selected key only, of every key together, or
// (per_key) per key in first-seen order.
absl::StatusOr<std::vector<std::pair<std::string, Sums>>> ParseSums(absl::string_view text, absl::string_view file,
                                                                    const LoadCsvOptions& options, bool per_key) {
  std::optional<Header> header;
  std::vector<std::pair<std::string, Sums>> windows;
  std::map<std::string, size_t, std::less<>> index;
  bool select_seen = false;
  SY_RETURN_IF_ERROR(ForEachLine(text, [&](int number, absl::string_view line) -> absl::Status {
    if (!header) {
      SY_ASSIGN_OR_RETURN(header, ParseHeader(line, file));
      if (options.select && !header->has_key) {
        return absl::InvalidArgumentError(absl::StrCat(
            file, ": --select '", *options.select, "' needs a step or workload column"));
      }
      return absl::OkStatus();
    }
    std::vector<absl::string_view> f = absl::StrSplit(line, ',');
    const size_t want = header->has_key ? 4 : 3;
    const std::string where = absl::StrCat(file, " line ", number, ": ");
    if (f.size() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "expected ", want, " fields, got ", f.size()));
    }
    size_t i = 0;
    absl::string_view key;
    if (header->has_key) {
      key = absl::StripAsciiWhitespace(f[i++]);
      if (options.select && key != *options.select) return absl::OkStatus();
      select_seen = true;
    }
    if (!per_key) key = "";
    auto [slot, added] = index.try_emplace(std::string(key), windows.size());
    if (added) windows.emplace_back(std::string(key), Sums{});
    Sums& sums = windows[slot->second].second;
    int layer = 0, expert = 0;
    double tokens = 0;
    const absl::string_view layer_s = absl::StripAsciiWhitespace(f[i]);
    const absl::string_view expert_s = absl::StripAsciiWhitespace(f[i + 1]);
    const absl::string_view tokens_s = absl::StripAsciiWhitespace(f[i + 2]);
    if (!absl::SimpleAtoi(layer_s, &layer) || layer < 0 || layer > kMaxId) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "layer '", EchoValue(layer_s), "' is not an integer in 0..", kMaxId));
    }
    if (!absl::SimpleAtoi(expert_s, &expert) || expert < 0 || expert > kMaxId) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "expert '", EchoValue(expert_s), "' is not an integer in 0..", kMaxId));
    }
    // Decimal numbers only (SimpleAtod would also take hex, "inf" and "nan").
    if (tokens_s.empty() || tokens_s.find_first_not_of("0123456789.eE+-") != absl::string_view::npos ||
        !absl::SimpleAtod(tokens_s, &tokens)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "tokens '", EchoValue(tokens_s), "' is not a number"));
    }
    if (!std::isfinite(tokens)) {  // a decimal beyond a double's range (1e400)
      return absl::InvalidArgumentError(absl::StrCat(where, "tokens ", EchoValue(tokens_s), " is out of range (at most ",
                                                     absl::StrFormat("%.0f", kMaxLoad), ")"));
    }
    if (tokens < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "tokens ", tokens_s, " is negative"));
    }
    double& sum = sums[layer][expert];
    // Integer counts below 2^53 add exactly, and every sum at or past 2^53 rounds to at
    // least 2^53: `>=` refuses exactly the sums a double cannot count.
    if (tokens >= kMaxLoad || sum + tokens >= kMaxLoad) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "tokens ", EchoValue(tokens_s), " bring layer ", layer, " expert ", expert,
          " beyond 2^53 (9.0e15), more than a count can be"));
    }
    sum += tokens;
    return absl::OkStatus();
  }));
  if (!header) return absl::InvalidArgumentError(absl::StrCat(file, ": empty file (", kHeaderHelp, ")"));
  if (options.select && !select_seen) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": no rows with ", header->key_name,
                                                   " '", *options.select, "'"));
  }
  if (windows.empty()) return absl::InvalidArgumentError(absl::StrCat(file, ": no data rows"));
  return windows;
}

absl::StatusOr<LoadMatrix> ToMatrix(const Sums& sums, absl::string_view file) {
  LoadMatrix load;
  const int experts = sums.begin()->second.rbegin()->first + 1;
  for (const auto& [layer, row] : sums) {
    const int layer_experts = row.rbegin()->first + 1;
    if (layer_experts != experts) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": layer ", layer, " has experts 0..", layer_experts - 1,
                       ", layer ", sums.begin()->first, " has 0..", experts - 1,
                       " (every layer needs the same experts)"));
    }
    if (static_cast<int>(row.size()) != experts) {
      int missing = 0;
      while (row.count(missing)) ++missing;
      return absl::InvalidArgumentError(absl::StrCat(file, ": layer ", layer, " has no expert ",
                                                     missing, " (expert ids must be 0..",
                                                     experts - 1, " without gaps)"));
    }
    load.layer_ids.push_back(layer);
    std::vector<double>& values = load.values.emplace_back();
    values.reserve(experts);
    for (const auto& [expert, tokens] : row) values.push_back(tokens);
  }
  return load;
}

}  // namespace

absl::StatusOr<LoadMatrix> ParseLoadCsv(absl::string_view text, absl::string_view file,
                                        const LoadCsvOptions& options) {
  SY_ASSIGN_OR_RETURN(const auto windows, ParseSums(text, file, options, /*per_key=*/false));
  return ToMatrix(windows.front().second, file);
}

absl::StatusOr<std::vector<std::pair<std::string, LoadMatrix>>> ParseLoadCsvWindows(absl::string_view text,
                                                                                   absl::string_view file) {
  SY_ASSIGN_OR_RETURN(const auto windows, ParseSums(text, file, {}, /*per_key=*/true));
  std::vector<std::pair<std::string, LoadMatrix>> out;
  for (const auto& [key, sums] : windows) {
    const std::string where = key.empty() ? std::string(file) : absl::StrCat(file, " (", key, ")");
    SY_ASSIGN_OR_RETURN(LoadMatrix load, ToMatrix(sums, where));
    if (!out.empty() && (load.layer_ids != out.front().second.layer_ids || load.num_experts() != out.front().second.num_experts())) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": layers or experts differ from ", out.front().first,
                                                     "'s (every window needs the same layers and experts)"));
    }
    out.emplace_back(key, std::move(load));
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, LoadMatrix>>> ReadLoadCsvWindows(const std::string& path) {
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParseLoadCsvWindows(text, path);
}

absl::StatusOr<LoadMatrix> ReadLoadCsv(const std::string& path, const LoadCsvOptions& options) {
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParseLoadCsv(text, path, options);
}

absl::StatusOr<std::vector<std::string>> ReadLoadCsvKeys(const std::string& path) {
  SY_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  std::optional<Header> header;
  std::vector<std::string> keys;
  SY_RETURN_IF_ERROR(ForEachLine(text, [&](int, absl::string_view line) -> absl::Status {
    if (!header) {
      SY_ASSIGN_OR_RETURN(header, ParseHeader(line, path));
      return absl::OkStatus();
    }
    if (!header->has_key) return absl::OkStatus();
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, line.find(','))));
    if (keys.empty() || keys.back() != key) {
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
    return absl::OkStatus();
  }));
  return keys;
}

}  // namespace switchyard::placement
