// Command-line parsing for Switchyard binaries over Abseil's flag registry.
//
// Flags are declared with ABSL_FLAG as usual; ParseFlags sets them from argv through the
// registry (absl::FindCommandLineFlag / CommandLineFlag::ParseFrom) instead of
// absl::ParseCommandLine, so that a bad flag is a Status the binary reports in one line and
// turns into exit code 2 (absl's parser prints several lines and exits 1).
//
// Accepted forms: --name=value, --name value, --bool_flag, --nobool_flag, and "--" to end
// flags. Dashes in names are read as underscores (--slots-per-rank sets slots_per_rank). A
// list flag (std::vector<std::string>) given several times collects every value. Everything else is returned, in order, as positional arguments (argv[0] excluded).
#pragma once

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard {

struct ParsedCommandLine {
  std::vector<std::string> positional;
  bool help = false;  // --help or -h was given
};

absl::StatusOr<ParsedCommandLine> ParseFlags(int argc, char** argv);

// Help text listing the flags whose definitions live in files whose path contains one of
// `file_substrings` (so each binary lists its own flags, not Abseil's).
std::string FlagsHelp(const std::vector<absl::string_view>& file_substrings);
// The same for the flags named in `names` (underscores), in name order; unknown names are skipped.
std::string FlagsHelpFor(const std::vector<absl::string_view>& names);

// InvalidArgument "--FLAG VALUE: must be in [lo, hi]" unless lo <= value <= hi (NaN never is).
// `flag` is the name without dashes or underscores mapped: "heartbeat-timeout-s".
absl::Status CheckFlagRange(absl::string_view flag, double value, double lo, double hi);

// Exit code for bad input (flags, files, requests): one line on stderr, then exit(2).
inline constexpr int kExitBadInput = 2;

}  // namespace switchyard
