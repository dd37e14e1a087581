// Whole-file reads and crash-safe writes.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace switchyard {

// Largest file ReadFile reads (traces, configs, placements are far smaller).
inline constexpr size_t kMaxReadBytes = size_t{1} << 30;

// Reads a file; NotFound / PermissionDenied / InvalidArgument (a directory, or more than
// kMaxReadBytes) / Internal name the path and errno text.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces `path` atomically: writes `path.tmp.<pid>`, fsyncs it, renames it over `path`
// and fsyncs the directory. Readers see the old or the new content, never a mix; on error
// the old file is untouched and the temporary is removed. A symbolic link is followed (the
// file it names is replaced, the link kept); a FIFO or device is written in place (no
// atomicity there, and never replaced). A directory, or a path ending in '/', is
// InvalidArgument naming it.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view content);

}  // namespace switchyard
