#include "common/flags.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json_reader.h"

namespace switchyard {
namespace {

bool IsBoolFlag(const absl::CommandLineFlag& flag) { return flag.IsOfType<bool>(); }

}  // namespace

absl::StatusOr<ParsedCommandLine> ParseFlags(int argc, char** argv) {
  ParsedCommandLine out;
  bool flags_done = false;
  std::vector<std::string> seen;  // list flags given again append (--workload a --workload b)
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      out.positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      out.help = true;
      continue;
    }
    absl::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
    absl::string_view name = body;
    absl::string_view value;
    bool has_value = false;
    if (auto eq = body.find('='); eq != absl::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    // Flags are declared with underscores; users may type dashes (--slots-per-rank). Errors
    // name the flag as typed.
    const std::string typed(name);
    std::string name_buf(name);
    std::replace(name_buf.begin(), name_buf.end(), '-', '_');
    name = name_buf;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && IsBoolFlag(*negated)) {
        std::string error;
        if (!negated->ParseFrom("false", &error)) return absl::InvalidArgumentError(error);
        continue;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '", arg, "' (see --help for the flags)"));
    }
    if (!has_value) {
      if (IsBoolFlag(*flag)) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("flag --", typed, " needs a value"));
      }
    }
    std::string error;
    std::string joined(value);
    if (flag->IsOfType<std::vector<std::string>>()) {
      if (std::find(seen.begin(), seen.end(), flag->Name()) != seen.end()) {
        joined = absl::StrCat(flag->CurrentValue(), ",", value);
      }
      seen.emplace_back(flag->Name());
    }
    if (!flag->ParseFrom(joined, &error)) {
      // Name what the flag takes rather than relaying Abseil's "Illegal value ... specified".
      std::string expected = error;
      if (flag->IsOfType<int>()) {
        expected = absl::StrCat("expected an integer in ", std::numeric_limits<int>::min(), "..", std::numeric_limits<int>::max());
      } else if (flag->IsOfType<int64_t>()) {
        expected = absl::StrCat("expected an integer in ", std::numeric_limits<int64_t>::min(), "..",
                                std::numeric_limits<int64_t>::max());
      } else if (flag->IsOfType<uint64_t>()) {
        expected = absl::StrCat("expected an integer in 0..", std::numeric_limits<uint64_t>::max());
      } else if (flag->IsOfType<double>()) {
        expected = "expected a number";
      } else if (flag->IsOfType<bool>()) {
        expected = "expected true or false";
      }
      return absl::InvalidArgumentError(absl::StrCat("--", typed, " '", EchoValue(value), "': ", expected));
    }
  }
  return out;
}

namespace {

std::string HelpOf(std::vector<const absl::CommandLineFlag*> flags) {
  std::sort(flags.begin(), flags.end(),
            [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  std::string out;
  for (const auto* flag : flags) {
    std::string name(flag->Name());
    std::replace(name.begin(), name.end(), '_', '-');
    absl::StrAppendFormat(&out, "  --%s (%s)\n      default: %s\n", name, flag->Help(),
                          flag->DefaultValue().empty() ? "\"\"" : flag->DefaultValue());
  }
  return out;
}

}  // namespace

std::string FlagsHelp(const std::vector<absl::string_view>& file_substrings) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    for (absl::string_view s : file_substrings) {
      if (absl::StrContains(flag->Filename(), s)) {
        flags.push_back(flag);
        break;
      }
    }
  }
  return HelpOf(std::move(flags));
}

std::string FlagsHelpFor(const std::vector<absl::string_view>& names) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (absl::string_view name : names) {
    if (const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name); flag != nullptr) flags.push_back(flag);
  }
  return HelpOf(std::move(flags));
}

absl::Status CheckFlagRange(absl::string_view flag, double value, double lo, double hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", value, ": must be in [", lo, ", ", hi, "]"));
}

}  // namespace switchyard
