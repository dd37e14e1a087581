// Helpers for tests that run a coordinator process, workers under mpirun and the CLI.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/common/subprocess.h"

namespace switchyard::test {

// `mpirun` as root on loopback with `np` ranks (MPIEXEC from the build).
std::vector<std::string> Mpirun(const std::string& mpiexec, int np);

// A switchyard-coordinator process on 127.0.0.1 (`port` 0: a free one) with `args` added;
// port() is 0 if it did not come up (its log says why).
class CoordinatorProcess {
 public:
  // `wrapper` (e.g. {"prlimit", "--nofile=256"}) runs the binary under another command.
  CoordinatorProcess(const std::string& binary, const TempDir& dir, int port, const std::vector<std::string>& args = {},
                     const std::vector<std::string>& wrapper = {});
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return Slurp(log_); }
  int Stop() { return process_->Stop(); }
  pid_t pid() const { return process_->pid(); }
  // Waits up to `timeout` for the coordinator to exit by itself; its exit code (-1: killed).
  int Wait(std::chrono::milliseconds timeout, bool* timed_out) { return process_->Wait(timeout, timed_out); }

 private:
  std::string log_;
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

// `switchyard ARGS --coordinator ADDRESS`.
RunResult Cli(const std::string& cli, const std::string& address, std::vector<std::string> args);
// `switchyard status --json` (an empty object when the call fails).
nlohmann::json StatusJson(const std::string& cli, const std::string& address);
// A protobuf-JSON integer (int64 fields are strings there); 0 when absent.
int64_t JsonInt(const nlohmann::json& j, const char* key);
// Polls the status every 200 ms until `done` holds or `seconds` pass.
bool WaitForStatus(const std::string& cli, const std::string& address,
                   const std::function<bool(const nlohmann::json&)>& done, int seconds = 60);
// Polls `switchyard events` until one of kind `kind` appears; its message, or "" after `seconds`.
std::string WaitForEvent(const std::string& cli, const std::string& address, const std::string& kind, int seconds = 60);

// One line of a worker's step log (--step-log PREFIX; worker/driver.h, DriverOptions::step_log).
struct StepRow {
  int64_t epoch = 0;
  std::string hash;  // output_hash
  double done = 0;   // done_unix_s: unix seconds
  int64_t pairs = 0;
};
using StepLog = std::map<int, StepRow>;  // by step
// PREFIX.rank<ORIGIN>.csv of every origin in 0..7 that has one, by origin.
std::map<int, StepLog> ReadStepLogs(const std::string& prefix);

}  // namespace switchyard::test
