#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/json_reader.h"

namespace switchyard {
namespace {

absl::Status ErrnoError(absl::string_view what, const std::string& path, int err) {
  const std::string message = absl::StrCat(what, " ", EchoValue(path, 1024), ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EISDIR:
    case ENOTDIR:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace

// Writes all of `content` to `fd`; errno-style error text on failure.
absl::Status WriteAll(int fd, absl::string_view content, const std::string& name) {
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("cannot write", name, errno);
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return ErrnoError("cannot read", path, EISDIR);
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoError("cannot open", path, errno);
  // In chunks, up to kMaxReadBytes: a device or pipe that never ends (/dev/zero) is an error,
  // not an exhausted machine.
  std::string out;
  char chunk[1 << 16];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    if (out.size() + static_cast<size_t>(in.gcount()) > kMaxReadBytes) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read ", EchoValue(path, 1024), ": larger than ",
                                                     kMaxReadBytes >> 20, " MiB"));
    }
    out.append(chunk, static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return ErrnoError("cannot read", path, errno);
  return out;
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view content) {
  if (path.empty() || path.back() == '/') {
    return absl::InvalidArgumentError(absl::StrCat("cannot write '", path, "': it names a directory, not a file"));
  }
  // A symbolic link is followed: the file it points to is replaced, the link stays.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    char target[4096];
    const ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    if (n < 0) return ErrnoError("cannot read the link", path, errno);
    target[n] = '\0';
    std::string resolved = target;
    if (resolved.empty() || resolved[0] != '/') {
      const size_t slash = path.rfind('/');
      if (slash != std::string::npos) resolved = path.substr(0, slash + 1) + resolved;
    }
    static thread_local int depth = 0;
    if (depth >= 16) return ErrnoError("cannot write", path, ELOOP);
    ++depth;
    absl::Status written = WriteFileAtomically(resolved, content);
    --depth;
    return written;
  }
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return ErrnoError("cannot write", path, EISDIR);
    if (!S_ISREG(st.st_mode)) {
      // A FIFO, a device or a socket is written to in place: it cannot be replaced
      // atomically, and renaming over it would destroy it.
      const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) return ErrnoError("cannot open", path, errno);
      absl::Status written = WriteAll(fd, content, path);
      if (::close(fd) != 0 && written.ok()) written = ErrnoError("cannot flush", path, errno);
      return written;
    }
  }
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp, errno);
  if (absl::Status written = WriteAll(fd, content, tmp); !written.ok()) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return written;
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError("cannot flush", tmp, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError("cannot rename onto", path, err);
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace switchyard
