// A Bootstrap through a shared directory, for jobs not started by an MPI launcher (e.g.
// plain processes, or srun without PMIx). Exchange number n writes this rank's value to
// <dir>/<n>.<rank> (atomically: temp file + rename) and polls until every rank's file is
// there. The directory must be empty of earlier jobs' files (use a fresh one per job).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cluster/launch.h"
#include "comm/bootstrap.h"

namespace switchyard::cluster {

std::unique_ptr<comm::Bootstrap> CreateFileBootstrap(const std::string& dir, const LaunchInfo& where);

}  // namespace switchyard::cluster
