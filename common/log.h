// The one log sink of Switchyard's libraries: library code reports what an operator should
// see (a rejected report, a listener restarted, orders refused) through LogWarning (or LogLine),
// never straight to stderr. Binaries name themselves once (SetLogPrefix); tests and embedders
// may redirect or silence the lines (SetLogSink). Thread-safe; one line per call.
#pragma once

#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace switchyard {

enum class LogSeverity { kInfo, kWarning, kError };

// Where lines go: default stderr as "<prefix>: <message>\n".
using LogSink = std::function<void(LogSeverity, absl::string_view message)>;
void SetLogSink(LogSink sink);  // null: back to stderr
void SetLogPrefix(absl::string_view prefix);

void LogLine(LogSeverity severity, absl::string_view message);

template <typename... Parts>
void LogWarning(const Parts&... parts) {
  LogLine(LogSeverity::kWarning, absl::StrCat(parts...));
}

}  // namespace switchyard
