// Crash-safe writes: the target is replaced atomically, a symlink is followed (the link is
// kept), a device is written in place (never replaced), a directory is refused by name.
#include "common/file_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "tests/common/subprocess.h"

namespace switchyard {
namespace {

TEST(FileUtilTest, WritesReplaceFollowLinksAndNeverDestroyDevices) {
  test::TempDir dir;
  const std::string file = dir.File("a.txt"), link = dir.File("link.txt");
  ASSERT_TRUE(WriteFileAtomically(file, "one").ok());
  EXPECT_EQ(*ReadFile(file), "one");
  ASSERT_TRUE(WriteFileAtomically(file, "two").ok());
  EXPECT_EQ(*ReadFile(file), "two");
  ASSERT_EQ(::symlink(file.c_str(), link.c_str()), 0);
  ASSERT_TRUE(WriteFileAtomically(link, "three").ok());
  EXPECT_TRUE(std::filesystem::is_symlink(link)) << "the link is kept";
  EXPECT_EQ(*ReadFile(file), "three");
  // A relative link resolves against the link's directory.
  ASSERT_EQ(::symlink("a.txt", dir.File("rel.txt").c_str()), 0);
  ASSERT_TRUE(WriteFileAtomically(dir.File("rel.txt"), "four").ok());
  EXPECT_EQ(*ReadFile(file), "four");
  // A device is written in place, not replaced.
  ASSERT_TRUE(WriteFileAtomically("/dev/null", "x").ok());
  struct stat st;
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  // Directories are refused, naming the path; nothing is left behind.
  for (const std::string& bad : {dir.path(), dir.path() + "/", std::string()}) {
    const absl::Status s = WriteFileAtomically(bad, "x");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad << ": " << s;
  }
  EXPECT_EQ(ReadFile(dir.path()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteFileAtomically(dir.File("missing/x.txt"), "x").code(), absl::StatusCode::kNotFound);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 3u);
}

}  // namespace
}  // namespace switchyard
