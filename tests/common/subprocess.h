// Running real processes from tests: the CLI, mpirun, servers.
//
// Run() waits for exit (killing the process group at the deadline); Process keeps a child
// running (a server) and kills its whole process group when destroyed, so a failing test
// never leaves daemons behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace switchyard::test {

struct RunResult {
  int exit_code = -1;  // -1 when killed (by a signal or the deadline)
  bool timed_out = false;
  std::string out, err;
};

// Runs argv[0] (PATH lookup) with `env` added to the environment, stdin from /dev/null.
RunResult RunCommand(const std::vector<std::string>& argv, std::chrono::seconds timeout = std::chrono::seconds(120),
              const std::vector<std::string>& env = {});

class Process {
 public:
  // Starts argv in its own process group; stdout and stderr go to `log_path`.
  Process(const std::vector<std::string>& argv, const std::string& log_path,
          const std::vector<std::string>& env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  // SIGTERM, then SIGKILL after `grace`; returns the exit code (-1 if killed by a signal).
  int Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  // Waits up to `timeout` for exit without signalling.
  int Wait(std::chrono::milliseconds timeout, bool* timed_out);

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  bool reaped_ = false;
};

// Content of a file ("" if missing).
std::string Slurp(const std::string& path);

// A fresh temporary directory, removed with its content by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace switchyard::test
