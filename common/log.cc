#include "common/log.h"

#include <cstdio>
#include <mutex>

namespace switchyard {
namespace {

std::mutex& Mutex() {
  static std::mutex mu;
  return mu;
}
LogSink& Sink() {
  static LogSink sink;
  return sink;
}
std::string& Prefix() {
  static std::string prefix = "switchyard";
  return prefix;
}

}  // namespace

void SetLogSink(LogSink sink) {
  std::lock_guard<std::mutex> lock(Mutex());
  Sink() = std::move(sink);
}

void SetLogPrefix(absl::string_view prefix) {
  std::lock_guard<std::mutex> lock(Mutex());
  Prefix() = std::string(prefix);
}

void LogLine(LogSeverity severity, absl::string_view message) {
  std::lock_guard<std::mutex> lock(Mutex());
  if (Sink()) {
    Sink()(severity, message);
    return;
  }
  const char* level = severity == LogSeverity::kError ? "error: " : severity == LogSeverity::kWarning ? "warning: " : "";
  std::fprintf(stderr, "%s: %s%.*s\n", Prefix().c_str(), level, static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
}

}  // namespace switchyard
