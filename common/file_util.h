// Whole-file reads and crash-safe writes.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace switchyard {

// Reads a file; NotFound / PermissionDenied / Internal name the path and errno text.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces `path` atomically: writes `path.tmp.<pid>`, fsyncs it, renames it over `path`
// and fsyncs the directory. Readers see the old or the new content, never a mix; on error
// the old file is untouched and the temporary is removed.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view content);

}  // namespace switchyard
