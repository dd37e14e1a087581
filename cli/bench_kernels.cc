#include "cli/bench_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/bench_report.h"
#include "common/status.h"
#include "kernels/ffn.h"
#include "kernels/gating.h"
#include "kernels/permute.h"
#include "placement/io/load_csv.h"
#include "switchyard/config.h"
#if SWITCHYARD_HAVE_CUDA
#include "kernels/cuda_kernels.h"
#endif

ABSL_FLAG(int, bench_threads, 0,
          "bench kernels: threads of the multi-thread FFN and gating cases, ours and the peer alike (0: the rank default, "
          "kernels::DefaultCpuThreads; 1: skip the case)");
ABSL_FLAG(int, ffn_rows, 8192, "bench kernels: total rows over the 64 FFN slots");

namespace switchyard::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Times `reps` runs of a and b, alternating so that the machine's drift hits both alike.
// Returns the best time of each and the median of the per-pair ratios time_b / time_a (the
// figure the ratio targets are judged on: a pair runs back to back). `pause_s` > 0 sleeps
// before each run: multi-threaded runs need it, since OpenBLAS's and OpenMP's idle threads
// spin for a while after a call and would steal the other side's cores.
struct Paired {
  double a, b, ratio;
};
Paired Interleaved(const std::function<void()>& a, const std::function<void()>& b, int reps, double pause_s = 0) {
  auto pause = [pause_s] {
    if (pause_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(pause_s));
  };
  double best_a = 1e30, best_b = 1e30;
  std::vector<double> ratios;
  a();  // warm up
  b();
  for (int r = 0; r < reps; ++r) {
    pause();
    auto t0 = Clock::now();
    a();
    auto t1 = Clock::now();
    pause();
    auto t2 = Clock::now();
    b();
    auto t3 = Clock::now();
    const double ta = std::chrono::duration<double>(t1 - t0).count();
    const double tb = std::chrono::duration<double>(t3 - t2).count();
    best_a = std::min(best_a, ta);
    best_b = std::min(best_b, tb);
    ratios.push_back(tb / ta);
  }
  std::sort(ratios.begin(), ratios.end());
  return {best_a, best_b, ratios[ratios.size() / 2]};
}

// achieved and bound from the best times; ratio = the median per-pair ratio.
nlohmann::json Case(const std::string& name, double achieved, const std::string& unit, double bound,
                    double ratio) {
  return {{"name", name}, {"achieved", achieved}, {"unit", unit}, {"bound", bound}, {"ratio", ratio}};
}

// Rows per slot in proportion to 64 experts' loads of a DeepSeek-V3 decode layer.
absl::StatusOr<std::vector<int64_t>> SkewedRows(int slots, int64_t total) {
  if (total < 1 || total > 65536) {
    return absl::InvalidArgumentError(absl::StrCat("--ffn-rows ", total, ": use 1..65536"));
  }
  SY_ASSIGN_OR_RETURN(placement::LoadMatrix load,
                      placement::ReadLoadCsv(TracesDir() + "/deepseek_v3_sglang_decode_in1000out1000.csv"));
  const std::vector<double>& row = load.values[10];  // model layer 13
  std::vector<double> w;
  for (int s = 0; s < slots; ++s) w.push_back(row[s * static_cast<int>(row.size()) / slots]);
  double sum = 0;
  for (double x : w) sum += x;
  // Largest remainders: floors, then one more row to the slots with the largest fractions,
  // so the total is exact and no slot is negative.
  std::vector<int64_t> rows;
  std::vector<std::pair<double, int>> fractions;
  int64_t placed = 0;
  for (int s = 0; s < slots; ++s) {
    const double exact = w[s] / sum * total;
    placed += rows.emplace_back(static_cast<int64_t>(std::floor(exact)));
    fractions.push_back({exact - std::floor(exact), s});
  }
  std::sort(fractions.begin(), fractions.end(), [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  for (int64_t i = 0; i < total - placed; ++i) ++rows[fractions[i % slots].second];
  return rows;
}

// The grouped SwiGLU FFN (H=1024, F=512, 64 slots, rows skewed as a DeepSeek-V3 decode
// layer) against one OpenBLAS sgemm of the same FLOPs with the same thread count: fp32 and
// bf16 weights on one thread, fp32 on `threads` threads when that is more than one.
absl::Status FfnCases(BenchReport& report, kernels::CpuIsa isa, int threads) {
  const int slots = 64;
  const int64_t H = 1024, F = 512;
  SY_ASSIGN_OR_RETURN(const std::vector<int64_t> rows, SkewedRows(slots, absl::GetFlag(FLAGS_ffn_rows)));
  std::vector<int64_t> offsets(slots);
  int64_t total = 0;
  for (int s = 0; s < slots; ++s) {
    offsets[s] = total;
    total += rows[s];
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0, 0.03f);
  std::vector<float> x(total * H), y(total * H);
  for (float& v : x) v = n(rng);
  std::vector<float> gate(F * H), up(F * H), down(H * F);
  // The sgemm peer: [total x H] x [H x 3F], the same FLOPs as the SwiGLU FFN.
  std::vector<float> b(H * 3 * F), c(total * 3 * F);
  for (float& v : b) v = n(rng);
  struct Run {
    kernels::WeightType type;
    int threads;
  };
  std::vector<Run> runs = {{kernels::WeightType::kF32, 1}, {kernels::WeightType::kBF16, 1}};
  if (threads > 1) runs.push_back({kernels::WeightType::kF32, threads});
  for (const Run& run : runs) {
    const kernels::FfnShape shape{H, F, kernels::Activation::kSwiGlu, run.type};
    const size_t bytes = kernels::PackedExpertBytes(shape);
    std::vector<char> packed(bytes * slots);
    std::vector<const void*> weights(slots);
    std::mt19937 wrng(7);
    for (int s = 0; s < slots; ++s) {
      for (float& v : gate) v = n(wrng);
      for (float& v : up) v = n(wrng);
      for (float& v : down) v = n(wrng);
      SY_RETURN_IF_ERROR(kernels::PackExpert(shape, gate.data(), up.data(), down.data(), &packed[s * bytes]));
      weights[s] = &packed[s * bytes];
    }
    kernels::FfnWorkspace ws(isa, run.threads);
    openblas_set_num_threads(run.threads);
    absl::Status status;
    auto [ours, peer, ratio] = Interleaved(
        [&] { status.Update(kernels::GroupedFfnCpu(shape, weights.data(), offsets.data(), rows.data(), slots, x.data(), y.data(), ws)); },
        [&] { cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, total, 3 * F, H, 1.0f, x.data(), H, b.data(), 3 * F, 0.0f, c.data(), 3 * F); },
        9, run.threads > 1 ? 0.25 : 0.0);
    SY_RETURN_IF_ERROR(status);
    const double flops = shape.FlopsPerRow() * total;
    auto entry = Case(absl::StrCat("ffn_swiglu_grouped_", kernels::WeightTypeName(run.type), "_h1024_f512_64slots",
                                   run.threads > 1 ? absl::StrCat("_", run.threads, "threads") : ""),
                      flops / ours / 1e9, "GFLOP/s", flops / peer / 1e9, ratio);
    entry["bound_name"] = "openblas_sgemm_same_flops";
    // The peer's own kernels, as OpenBLAS picked them (or OPENBLAS_CORETYPE forced them): on a
    // CPU it does not know it falls back to old ones (Debian's 0.3.21 takes Intel family 6
    // model 207 for "Prescott", SSE3), and the ratio then flatters us.
    entry["peer_kernel"] = openblas_get_corename();
    entry["isa"] = kernels::FfnKernelName(isa, run.type);
    if (run.type == kernels::WeightType::kBF16 && isa == kernels::CpuIsa::kAvx512 && kernels::CpuSupportsBf16Dot()) {
      // What decided between the vdpbf16ps and widening kernels (SWITCHYARD_BF16_DOT=auto).
      entry["vdpbf16ps_cost_in_fmas"] = kernels::Bf16DotCostInFmas();
    }
    entry["threads"] = run.threads;
    entry["rows"] = total;
    entry["rows_min_max"] = {*std::min_element(rows.begin(), rows.end()), *std::max_element(rows.begin(), rows.end())};
    if (run.type == kernels::WeightType::kF32) entry["target"] = run.threads > 1 ? "ratio >= 0.7" : "ratio >= 0.8";
    report.Add(std::move(entry));
  }
  openblas_set_num_threads(1);
  return absl::OkStatus();
}

absl::Status PermuteCombineCases(BenchReport& report, kernels::CpuIsa isa) {
  // One rank's step: T tokens x top-8, hidden 1024 fp32 rows, 16 destination ranks.
  const int64_t T = 2048, k = 8, H = 1024, pairs = T * k;
  const size_t row_bytes = H * sizeof(float);
  std::mt19937 rng(2);
  std::vector<int32_t> dest(pairs);
  for (auto& d : dest) d = std::uniform_int_distribution<int>(0, 15)(rng);
  std::vector<int64_t> counts(16), offsets(16);
  std::vector<int32_t> position(pairs), send_pair(pairs);
  std::vector<float> hidden(T * H, 1.0f), send(pairs * H), out(T * H), w(pairs, 0.125f), copy(pairs * H);
  absl::Status status;
  auto [layout_and_gather, memcpy_time, permute_ratio] = Interleaved(
      [&] {
        status.Update(kernels::DispatchLayout(dest.data(), pairs, 16, counts.data(), offsets.data(), position.data(), send_pair.data()));
        kernels::GatherRows(hidden.data(), send.data(), send_pair.data(), pairs, row_bytes, static_cast<int32_t>(k));
      },
      [&] { std::memcpy(copy.data(), send.data(), pairs * row_bytes); }, 7);
  SY_RETURN_IF_ERROR(status);
  const double bytes = static_cast<double>(pairs) * row_bytes;
  auto permute = Case("permute_dispatch_fp32_h1024_t2048_k8", bytes / layout_and_gather / 1e9, "GB/s", bytes / memcpy_time / 1e9, permute_ratio);
  permute["bound_name"] = "memcpy_same_bytes";
  permute["target"] = "ratio >= 0.5";
  permute["isa"] = "generic";
  permute["threads"] = 1;
  report.Add(std::move(permute));
  auto [combine, memcpy2, combine_ratio] = Interleaved(
      [&] { kernels::Combine(send.data(), position.data(), w.data(), T, k, H, out.data(), 1, isa); },
      [&] { std::memcpy(copy.data(), send.data(), pairs * row_bytes); }, 7);
  auto entry = Case("combine_fp32_h1024_t2048_k8", bytes / combine / 1e9, "GB/s", bytes / memcpy2 / 1e9, combine_ratio);
  entry["bound_name"] = "memcpy_same_bytes";
  entry["target"] = "ratio >= 0.5";
  entry["isa"] = kernels::CpuIsaName(isa);
  entry["threads"] = 1;
  report.Add(std::move(entry));
  return absl::OkStatus();
}

// The DeepSeek-V3 router on one thread, and on `threads` against a memcpy split the same way
// when that is more than one.
absl::Status GatingCases(BenchReport& report, kernels::CpuIsa isa, int threads) {
  const int64_t T = 8192;
  const int E = 256;
  std::vector<float> logits(T * E), bias(E), w(T * 8), copy(T * E);
  std::vector<int32_t> ids(T * 8);
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 2);
  for (float& v : logits) v = n(rng);
  for (float& v : bias) v = n(rng) * 0.01f;
  const kernels::GatingConfig config{E, 8, kernels::ScoreFunction::kSigmoid, true, 8, 4, 2.5f, bias.data()};
  std::vector<int> runs{1};
  if (threads > 1) runs.push_back(threads);
  for (int run_threads : runs) {
    absl::Status status;
    auto [gate, memcpy_time, gate_ratio] = Interleaved(
        [&] { status.Update(kernels::GateCpu(config, logits.data(), T, ids.data(), w.data(), isa, run_threads)); },
        [&] {
          // The same split as the gating's: chunks of kGateChunkTokens tokens' logits.
          const int64_t chunk_bytes = kernels::kGateChunkTokens * E * 4, chunks = T / kernels::kGateChunkTokens;
#pragma omp parallel for num_threads(run_threads) schedule(dynamic, 1) if (run_threads > 1)
          for (int64_t c = 0; c < chunks; ++c) {
            std::memcpy(reinterpret_cast<char*>(copy.data()) + c * chunk_bytes,
                        reinterpret_cast<const char*>(logits.data()) + c * chunk_bytes, chunk_bytes);
          }
        },
        // 15 pairs (about 15 ms on avx2 and avx512, 0.5 s on portable): a steadier median
        // than 5 on a noisy host.
        15);  // one OpenMP runtime on both sides: no idle spinning threads of another library to wait out
    SY_RETURN_IF_ERROR(status);
    auto entry = Case(absl::StrCat("gating_deepseek_e256_k8_groups8_top4", run_threads > 1 ? absl::StrCat("_", run_threads, "threads") : ""),
                      T / gate, "tokens/s", T / memcpy_time, gate_ratio);
    entry["bound_name"] = "memcpy_of_the_logits";
    entry["isa"] = kernels::CpuIsaName(isa);
    entry["threads"] = run_threads;
    entry["target"] = "ratio >= 0.3";
    report.Add(std::move(entry));
  }
  return absl::OkStatus();
}

#if SWITCHYARD_HAVE_CUDA
// GPU cases (where a GPU is present): permute and combine as a fraction of HBM bandwidth,
// the grouped bf16 FFN (DeepSeek-V3 expert shape) against one cuBLAS GEMM of the same FLOPs.
absl::Status GpuCases(BenchReport& report) {
  namespace cu = kernels::cuda;
  SY_ASSIGN_OR_RETURN(const cu::DeviceProperties device, cu::GetDeviceProperties());
  auto best_of = [](int reps, const std::function<absl::Status()>& f) -> absl::StatusOr<double> {
    double best = 1e30;
    for (int r = 0; r < reps + 1; ++r) {  // the first run warms up
      SY_RETURN_IF_ERROR(cu::Synchronize(nullptr));
      const auto t0 = Clock::now();
      SY_RETURN_IF_ERROR(f());
      SY_RETURN_IF_ERROR(cu::Synchronize(nullptr));
      if (r > 0) best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return best;
  };
  {  // permute and combine: T = 8192 tokens x top-8, hidden 4096 fp32
    const int64_t T = 8192, k = 8, H = 4096, pairs = T * k;
    std::vector<int32_t> index(pairs);
    std::mt19937 rng(4);
    for (int64_t p = 0; p < pairs; ++p) index[p] = static_cast<int32_t>(p);
    std::shuffle(index.begin(), index.end(), rng);
    std::vector<float> w(pairs, 0.125f);
    SY_ASSIGN_OR_RETURN(auto hidden, cu::DeviceBuffer::Allocate(T * H * 4));
    SY_ASSIGN_OR_RETURN(auto rows, cu::DeviceBuffer::Allocate(pairs * H * 4));
    SY_ASSIGN_OR_RETURN(auto out, cu::DeviceBuffer::Allocate(T * H * 4));
    SY_ASSIGN_OR_RETURN(auto index_dev, cu::DeviceBuffer::Allocate(pairs * 4));
    SY_ASSIGN_OR_RETURN(auto w_dev, cu::DeviceBuffer::Allocate(pairs * 4));
    SY_RETURN_IF_ERROR(cu::CopyToDevice(index_dev.data(), index.data(), pairs * 4));
    SY_RETURN_IF_ERROR(cu::CopyToDevice(w_dev.data(), w.data(), pairs * 4));
    SY_ASSIGN_OR_RETURN(const double gather, best_of(5, [&] {
      return cu::GatherRowsCuda(hidden.data(), rows.data(), index_dev.as<int32_t>(), pairs, H * 4, k, nullptr);
    }));
    SY_ASSIGN_OR_RETURN(const double combine, best_of(5, [&] {
      return cu::CombineCuda(rows.as<float>(), index_dev.as<int32_t>(), w_dev.as<float>(), T, k, H, out.as<float>(), nullptr);
    }));
    const double gather_bytes = 2.0 * pairs * H * 4, combine_bytes = (pairs + T) * H * 4.0;
    auto g = Case("gpu_permute_fp32_h4096_t8192_k8", gather_bytes / gather / 1e9, "GB/s",
                  device.memory_bandwidth_gbs, gather_bytes / gather / 1e9 / device.memory_bandwidth_gbs);
    g["bound_name"] = "hbm_peak " + device.name;
    g["target"] = "ratio >= 0.6";
    report.Add(std::move(g));
    auto c = Case("gpu_combine_fp32_h4096_t8192_k8", combine_bytes / combine / 1e9, "GB/s",
                  device.memory_bandwidth_gbs, combine_bytes / combine / 1e9 / device.memory_bandwidth_gbs);
    c["bound_name"] = "hbm_peak " + device.name;
    c["target"] = "ratio >= 0.6";
    report.Add(std::move(c));
  }
  {  // grouped bf16 FFN, DeepSeek-V3 expert shape, 64 slots, skewed rows
    const kernels::FfnShape shape{7168, 2048, kernels::Activation::kSwiGlu, kernels::WeightType::kBF16};
    const int slots = 64;
    SY_ASSIGN_OR_RETURN(const std::vector<int64_t> rows, SkewedRows(slots, 64 * 512));
    std::vector<int64_t> offsets(slots);
    int64_t total = 0;
    for (int s = 0; s < slots; ++s) {
      offsets[s] = total;
      total += rows[s];
    }
    const int64_t H = shape.hidden, F = shape.ffn;
    SY_ASSIGN_OR_RETURN(auto gate_up, cu::DeviceBuffer::Allocate(slots * 2 * F * H * 2));
    SY_ASSIGN_OR_RETURN(auto down, cu::DeviceBuffer::Allocate(slots * H * F * 2));
    SY_ASSIGN_OR_RETURN(auto x, cu::DeviceBuffer::Allocate(total * H * 2));
    SY_ASSIGN_OR_RETURN(auto y, cu::DeviceBuffer::Allocate(total * 3 * F * 4 > total * H * 4 ? total * 3 * F * 4 : total * H * 4));
    std::vector<cu::CudaExpert> experts(slots);
    for (int s = 0; s < slots; ++s) {
      experts[s] = {gate_up.as<kernels::bf16>() + s * 2 * F * H, down.as<kernels::bf16>() + s * H * F};
    }
    SY_ASSIGN_OR_RETURN(auto ffn, cu::CudaFfn::Create(shape, nullptr));
    SY_ASSIGN_OR_RETURN(auto dense, cu::CudaDenseGemm::Create(nullptr));
    SY_ASSIGN_OR_RETURN(const double grouped, best_of(3, [&] {
      return ffn->Run(experts.data(), offsets.data(), rows.data(), slots, x.as<kernels::bf16>(), y.as<float>());
    }));
    // The peer: [total x H] . [H x 3F], the FFN's FLOPs in one GEMM (weights of 1.5 slots).
    SY_ASSIGN_OR_RETURN(const double one, best_of(3, [&] {
      return dense->Run(total, 3 * F, H, x.as<kernels::bf16>(), gate_up.as<kernels::bf16>(), y.as<float>());
    }));
    const double flops = shape.FlopsPerRow() * total;
    auto entry = Case("gpu_ffn_swiglu_grouped_bf16_h7168_f2048_64slots", flops / grouped / 1e12, "TFLOP/s",
                      flops / one / 1e12, one / grouped);
    entry["bound_name"] = "cublas_dense_gemm_same_flops " + device.name;
    entry["target"] = "ratio >= 0.7";
    entry["rows"] = total;
    report.Add(std::move(entry));
  }
  return absl::OkStatus();
}
#endif

}  // namespace

absl::Status RunKernelsBenchmark() {
  BenchReport report;
  SY_ASSIGN_OR_RETURN(const kernels::CpuIsa isa, kernels::CpuIsaFromEnvironment());
  SY_RETURN_IF_ERROR(kernels::Bf16DotFromEnvironment().status());
  int threads = absl::GetFlag(FLAGS_bench_threads);
  if (threads < 0 || threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("--bench-threads ", threads, ": use 1..1024, or 0 for the default"));
  }
  if (threads == 0) threads = kernels::DefaultCpuThreads();
  SY_RETURN_IF_ERROR(FfnCases(report, isa, threads));
  SY_RETURN_IF_ERROR(PermuteCombineCases(report, isa));
  SY_RETURN_IF_ERROR(GatingCases(report, isa, threads));
#if SWITCHYARD_HAVE_CUDA
  if (kernels::cuda::DeviceCount() > 0) SY_RETURN_IF_ERROR(GpuCases(report));
#endif
  report.Print(false);
  return absl::OkStatus();
}

}  // namespace switchyard::cli
