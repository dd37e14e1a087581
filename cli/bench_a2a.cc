#include "cli/bench_a2a.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/bench_report.h"
#include "cluster/connect.h"
#include "common/status.h"
#include "placement/io/load_csv.h"
#include "switchyard/config.h"
#if SWITCHYARD_HAVE_MPI
#include "comm/mpi/factory.h"
#endif

ABSL_FLAG(std::string, backend, "ucx", "communicator backend: mpi, ucx (or nccl)");
ABSL_FLAG(std::string, rendezvous_dir, "", "shared directory for ucx/nccl rendezvous without mpirun");

namespace switchyard::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Share of each destination rank in a DeepSeek-V3 decode layer's load when experts sit
// contiguously (expert e on rank e * R / E): the skew a static placement sees.
absl::StatusOr<std::vector<double>> DestinationShares(int ranks) {
  SY_ASSIGN_OR_RETURN(placement::LoadMatrix load,
                      placement::ReadLoadCsv(TracesDir() + "/deepseek_v3_sglang_decode_in1000out1000.csv"));
  const std::vector<double>& row = load.values[10];
  std::vector<double> share(ranks, 0.0);
  double total = 0;
  for (size_t e = 0; e < row.size(); ++e) {
    share[e * ranks / row.size()] += row[e];
    total += row[e];
  }
  for (double& s : share) s /= total;
  return share;
}

struct Pattern {
  std::vector<int64_t> send_counts, send_offsets, recv_counts, recv_offsets;
  int64_t send_bytes = 0, recv_bytes = 0;
};

// `bytes_per_rank` sent by each rank, split over destinations by `share` with a per-rank
// random perturbation (rows of 64 bytes); receive counts through the backend's AllToAll.
absl::StatusOr<Pattern> MakePattern(comm::Communicator& c, int64_t bytes_per_rank, const std::vector<double>& share) {
  const int n = c.size();
  Pattern p;
  p.send_counts.assign(n, 0);
  std::mt19937 rng(1234 + c.rank());
  std::vector<double> w(n);
  double sum = 0;
  for (int r = 0; r < n; ++r) sum += w[r] = share[r] * std::uniform_real_distribution<double>(0.7, 1.3)(rng);
  int64_t given = 0;
  for (int r = 0; r < n; ++r) {
    p.send_counts[r] = static_cast<int64_t>(bytes_per_rank * w[r] / sum) / 64 * 64;
    given += p.send_counts[r];
  }
  p.send_counts[std::max_element(w.begin(), w.end()) - w.begin()] += bytes_per_rank - given;
  p.recv_counts.assign(n, 0);
  SY_RETURN_IF_ERROR(c.AllToAll(p.send_counts.data(), sizeof(int64_t), p.recv_counts.data()));
  for (int r = 0; r < n; ++r) {
    p.send_offsets.push_back(p.send_bytes);
    p.send_bytes += p.send_counts[r];
    p.recv_offsets.push_back(p.recv_bytes);
    p.recv_bytes += p.recv_counts[r];
  }
  return p;
}

// Seconds per call of `fn`, the slowest rank's, best of `rounds` rounds of `iters` calls.
absl::StatusOr<double> Time(comm::Communicator& c, int iters, int rounds, const std::function<absl::Status()>& fn) {
  double best = 1e30;
  SY_RETURN_IF_ERROR(fn());  // warm up
  for (int round = 0; round < rounds; ++round) {
    SY_RETURN_IF_ERROR(c.Barrier());
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) SY_RETURN_IF_ERROR(fn());
    double dt = std::chrono::duration<double>(Clock::now() - t0).count() / iters;
    SY_RETURN_IF_ERROR(c.AllReduce(&dt, 1, comm::ReduceOp::kMax));
    best = std::min(best, dt);
  }
  return best;
}

}  // namespace

absl::Status RunAllToAllBenchmark() {
  cluster::ConnectOptions options;
  options.backend = absl::GetFlag(FLAGS_backend);
  options.rendezvous_dir = absl::GetFlag(FLAGS_rendezvous_dir);
  SY_ASSIGN_OR_RETURN(auto comm, cluster::Connect(options));
  comm::Communicator& c = *comm;
  const int n = c.size();
  SY_ASSIGN_OR_RETURN(const std::vector<double> share, DestinationShares(n));
  BenchReport report;
  for (int64_t size : {int64_t{8} << 10, int64_t{64} << 10, int64_t{512} << 10, int64_t{1} << 20,
                       int64_t{4} << 20, int64_t{16} << 20, int64_t{64} << 20}) {
    SY_ASSIGN_OR_RETURN(const Pattern p, MakePattern(c, size, share));
    std::vector<char> send(p.send_bytes, 1), recv(std::max<int64_t>(p.recv_bytes, size), 0);
    const int iters = static_cast<int>(std::clamp<int64_t>((256 << 20) / size, 2, 200));
    // Backend, MPI_Alltoallv and memcpy alternate round by round, so the machine's drift hits
    // all three alike; vs_mpi is the median of the per-round ratios.
    double t_backend = 1e30, t_mpi = 1e30, t_memcpy = 1e30;
    std::vector<double> ratios;
    for (int round = 0; round < 7; ++round) {
      SY_ASSIGN_OR_RETURN(const double tb, Time(c, iters, 1, [&] {
        return c.AllToAllV(send.data(), p.send_counts.data(), p.send_offsets.data(), recv.data(),
                           p.recv_counts.data(), p.recv_offsets.data());
      }));
      t_backend = std::min(t_backend, tb);
#if SWITCHYARD_HAVE_MPI
      SY_ASSIGN_OR_RETURN(const double tm, Time(c, iters, 1, [&] {
        return comm::MpiAlltoallvBaseline(send.data(), p.send_counts.data(), p.send_offsets.data(), recv.data(),
                                          p.recv_counts.data(), p.recv_offsets.data());
      }));
      t_mpi = std::min(t_mpi, tm);
      ratios.push_back(tm / tb);
#endif
      SY_ASSIGN_OR_RETURN(const double tc, Time(c, iters, 1, [&] {
        std::memcpy(recv.data(), send.data(), size);
        return absl::OkStatus();
      }));
      t_memcpy = std::min(t_memcpy, tc);
    }
    std::sort(ratios.begin(), ratios.end());
    // Aggregate GB/s: every rank's bytes over the slowest rank's time.
    const double bytes = static_cast<double>(size) * n;
    const double achieved = bytes / t_backend / 1e9, bound = bytes / t_memcpy / 1e9;
    nlohmann::json entry = {{"name", absl::StrCat("alltoallv_dispatch_np", n)},
                            {"backend", c.backend()},
                            {"bytes_per_rank", size},
                            {"achieved", achieved},
                            {"unit", "GB/s"},
                            {"bound", bound},
                            {"ratio", achieved / bound}};
    if (!ratios.empty()) {
      entry["mpi_alltoallv"] = bytes / t_mpi / 1e9;
      entry["vs_mpi"] = ratios[ratios.size() / 2];
    }
    report.Add(std::move(entry));
  }
  // Background weight transfer: rank 0 -> rank 1, 64 MiB in 4 MiB chunks, 4 in flight.
  if (n >= 2) {
    const int64_t total = int64_t{64} << 20, chunk = int64_t{4} << 20;
    std::vector<char> buffer(total, 3);
    SY_ASSIGN_OR_RETURN(const double t, Time(c, 3, 3, [&]() -> absl::Status {
      std::vector<std::unique_ptr<comm::Request>> flight;
      for (int64_t off = 0; off < total; off += chunk) {
        if (c.rank() == 0) {
          SY_ASSIGN_OR_RETURN(auto r, c.Isend(buffer.data() + off, chunk, 1, static_cast<int>(off / chunk)));
          flight.push_back(std::move(r));
        } else if (c.rank() == 1) {
          SY_ASSIGN_OR_RETURN(auto r, c.Irecv(buffer.data() + off, chunk, 0, static_cast<int>(off / chunk)));
          flight.push_back(std::move(r));
        }
        if (flight.size() >= 4) {
          SY_RETURN_IF_ERROR(flight.front()->Wait(c.timeout()));
          flight.erase(flight.begin());
        }
      }
      for (auto& r : flight) SY_RETURN_IF_ERROR(r->Wait(c.timeout()));
      return absl::OkStatus();
    }));
    std::vector<char> copy(total);
    SY_ASSIGN_OR_RETURN(const double t_memcpy, Time(c, 3, 3, [&] {
      if (c.rank() == 0) std::memcpy(copy.data(), buffer.data(), total);  // one copy, as the transfer
      return absl::OkStatus();
    }));
    report.Add({{"name", "p2p_weight_transfer_64MiB_4MiB_chunks"},
                {"backend", c.backend()},
                {"bytes_per_rank", total},
                {"achieved", total / t / 1e9},
                {"unit", "GB/s"},
                {"bound", total / t_memcpy / 1e9},
                {"ratio", t_memcpy / t}});
  }
  if (c.rank() == 0) report.Print(false);
  return absl::OkStatus();
}

}  // namespace switchyard::cli
