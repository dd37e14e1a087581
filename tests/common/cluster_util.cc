#include "tests/common/cluster_util.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace switchyard::test {

std::vector<std::string> Mpirun(const std::string& mpiexec, int np) {
  return {mpiexec, "--allow-run-as-root", "--oversubscribe", "-np", std::to_string(np), "--mca", "btl_tcp_if_include", "lo",
          "--mca", "oob_tcp_if_include", "lo", "-x", "OMPI_MCA_mpi_yield_when_idle", "-x", "UCX_NET_DEVICES"};
}

CoordinatorProcess::CoordinatorProcess(const std::string& binary, const TempDir& dir, int port,
                                       const std::vector<std::string>& args, const std::vector<std::string>& wrapper) {
  const std::string port_file = dir.File("coordinator.port");
  std::remove(port_file.c_str());
  log_ = dir.File("coordinator." + std::to_string(port) + ".log");
  std::vector<std::string> argv = wrapper;
  argv.insert(argv.end(), {binary, "--listen", "127.0.0.1:" + std::to_string(port), "--port-file", port_file});
  argv.insert(argv.end(), args.begin(), args.end());
  process_ = std::make_unique<Process>(argv, log_);
  for (int i = 0; i < 200 && port_ == 0 && process_->Running(); ++i) {
    const std::string text = Slurp(port_file);
    if (!text.empty()) port_ = std::stoi(text.substr(0, text.find(' ')));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

RunResult Cli(const std::string& cli, const std::string& address, std::vector<std::string> args) {
  args.insert(args.begin(), cli);
  args.insert(args.end(), {"--coordinator", address});
  return RunCommand(args, std::chrono::seconds(30));
}

nlohmann::json StatusJson(const std::string& cli, const std::string& address) {
  const RunResult r = Cli(cli, address, {"status", "--json"});
  if (r.exit_code != 0) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  return j.is_discarded() ? nlohmann::json::object() : j;
}

int64_t JsonInt(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return 0;
  if (j[key].is_string()) return std::stoll(j[key].get<std::string>());
  return j[key].get<int64_t>();
}

bool WaitForStatus(const std::string& cli, const std::string& address,
                   const std::function<bool(const nlohmann::json&)>& done, int seconds) {
  for (int i = 0; i < seconds * 5; ++i) {
    if (done(StatusJson(cli, address))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

std::string WaitForEvent(const std::string& cli, const std::string& address, const std::string& kind, int seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    const RunResult r = Cli(cli, address, {"events", "--json"});
    for (size_t at = 0; at < r.out.size();) {
      const size_t end = r.out.find('\n', at);
      const nlohmann::json e = nlohmann::json::parse(r.out.substr(at, end - at), nullptr, false);
      if (!e.is_discarded() && e.value("kind", "") == kind) return e.value("message", "?");
      if (end == std::string::npos) break;
      at = end + 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

std::map<int, StepLog> ReadStepLogs(const std::string& prefix) {
  std::map<int, StepLog> out;
  for (int origin = 0; origin < 8; ++origin) {
    std::ifstream in(prefix + ".rank" + std::to_string(origin) + ".csv");
    if (!in) continue;
    std::string line;
    std::getline(in, line);  // header: step,epoch,wall_ms,...,output_hash,done_unix_s,pairs
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::istringstream fields(line);
      for (std::string x; std::getline(fields, x, ',');) f.push_back(x);
      if (f.size() < 11) continue;
      out[origin][std::stoi(f[0])] = {std::stoll(f[1]), f[8], std::stod(f[9]), std::stoll(f[10])};
    }
  }
  return out;
}

}  // namespace switchyard::test
