#include "cluster/file_bootstrap.h"

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status.h"

namespace switchyard::cluster {
namespace {

class FileBootstrap : public comm::Bootstrap {
 public:
  FileBootstrap(std::string dir, const LaunchInfo& where) : dir_(std::move(dir)), where_(where) {}

  int rank() const override { return where_.rank; }
  int size() const override { return where_.size; }
  int local_rank() const override { return where_.local_rank; }
  int local_size() const override { return where_.local_size; }

  absl::StatusOr<std::vector<std::string>> Exchange(const std::string& mine, absl::Duration timeout) override {
    const int round = round_++;
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    SY_RETURN_IF_ERROR(WriteFileAtomically(Path(round, where_.rank), mine));
    const absl::Time deadline = absl::Now() + timeout;
    std::vector<std::string> values(where_.size);
    std::vector<bool> have(where_.size, false);
    int missing = where_.size;
    while (true) {
      for (int r = 0; r < where_.size; ++r) {
        if (have[r]) continue;
        auto value = ReadFile(Path(round, r));
        if (value.ok()) {
          values[r] = *std::move(value);
          have[r] = true;
          --missing;
        }
      }
      if (missing == 0) return values;
      if (absl::Now() >= deadline) {
        std::vector<int> absent;
        for (int r = 0; r < where_.size; ++r) {
          if (!have[r]) absent.push_back(r);
        }
        return absl::DeadlineExceededError(absl::StrCat("rendezvous in ", dir_, ": ranks {",
                                                        absl::StrJoin(absent, ","), "} did not show up within ",
                                                        absl::FormatDuration(timeout)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

 private:
  std::string Path(int round, int rank) const { return absl::StrCat(dir_, "/", round, ".", rank); }

  std::string dir_;
  LaunchInfo where_;
  int round_ = 0;
};

}  // namespace

std::unique_ptr<comm::Bootstrap> CreateFileBootstrap(const std::string& dir, const LaunchInfo& where) {
  return std::make_unique<FileBootstrap>(dir, where);
}

}  // namespace switchyard::cluster
