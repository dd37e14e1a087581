#include "coordinator/membership.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace switchyard::coordinator {

bool Membership::Join(const switchyard::control::v1::RegisterRequest& r, absl::Time now) {
  const bool known = workers_.count(r.rank()) > 0;
  WorkerState& w = workers_[r.rank()];
  w.info = r;
  w.last_heartbeat = now;
  w.epoch = r.placement().epoch();
  w.step = std::max(w.step, r.step());
  w.healthy = true;
  w.left = false;
  return known;
}

WorkerState* Membership::Find(int rank) {
  auto it = workers_.find(rank);
  return it == workers_.end() ? nullptr : &it->second;
}

const WorkerState* Membership::Find(int rank) const {
  auto it = workers_.find(rank);
  return it == workers_.end() ? nullptr : &it->second;
}

absl::Status Membership::CheckProgress(absl::string_view what, const WorkerState& w, int64_t step, int64_t epoch,
                                       int64_t latest_epoch) const {
  const int rank = w.info.rank();
  if (step < 0 || step > w.step + kMaxStepJump) {
    return absl::InvalidArgumentError(absl::StrCat(what, " of rank ", rank, ": step ", step, " is not plausible (the rank was at step ",
                                                   w.step, "; at most ", kMaxStepJump, " steps between messages)"));
  }
  if (epoch < 0 || epoch > latest_epoch) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " of rank ", rank, ": epoch ", epoch, " was never published (latest ", latest_epoch, ")"));
  }
  return absl::OkStatus();
}

std::vector<std::pair<int, absl::Duration>> Membership::ExpireSilent(absl::Time now, absl::Duration timeout) {
  std::vector<std::pair<int, absl::Duration>> lost;
  for (auto& [rank, w] : workers_) {
    if (w.healthy && !w.left && now - w.last_heartbeat > timeout) {
      w.healthy = false;
      lost.emplace_back(rank, now - w.last_heartbeat);
    }
  }
  return lost;
}

bool Membership::Gone(int rank) const {
  const WorkerState* w = Find(rank);
  return w != nullptr && (!w->healthy || w->left);
}

int64_t Membership::WidestTokensPerStep() const {
  int64_t widest = 0;
  for (const auto& [rank, w] : workers_) widest = std::max(widest, w.info.tokens_per_step());
  return widest;
}

}  // namespace switchyard::coordinator
