// The CPU kernels' instruction-set paths and thread count: which path runs (chosen once from
// the CPU, or forced by $SWITCHYARD_CPU_ISA), and how many threads a rank uses by default.
//
// Every path computes the same bits for the same inputs (FMA chains in a fixed order, one
// per-lane implementation of exp; kernels/cpu/math-inl.h), so ranks on different CPUs agree
// after a migration and a forced path only changes speed.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::kernels {

// The instruction-set path of the CPU kernels (FFN, gating).
enum class CpuIsa {
  kPortable,  // scalar, any CPU (correctly rounded std::fma per lane)
  kAvx2,      // x86-64 AVX2 + FMA (Haswell, AMD Zen 1-3 and later)
  kAvx512,    // x86-64 AVX-512 F/VL/DQ/BW; bf16 weights use vdpbf16ps where the CPU runs it fast
  kNeon,      // AArch64 NEON (every Arm server; SVE machines take this path too)
};
absl::string_view CpuIsaName(CpuIsa isa);  // "portable", "avx2", "avx512", "neon"

// The paths this build and this CPU can run, portable first, best last.
std::vector<CpuIsa> SupportedCpuIsas();
bool CpuSupports(CpuIsa isa);

// `name` as a path this CPU runs. InvalidArgument for an unknown name, FailedPrecondition
// naming the CPU's paths for one it lacks.
absl::StatusOr<CpuIsa> ParseCpuIsa(absl::string_view name);

// The environment setting that forces a path (tests, benchmarks, mixed clusters).
inline constexpr char kCpuIsaEnv[] = "SWITCHYARD_CPU_ISA";  // Setting::kCpuIsa (common/env.h)

// The path forced by $SWITCHYARD_CPU_ISA (an error if it names an unknown path or one this CPU
// lacks), else the best path this CPU has. Binaries call this at start-up and refuse to run
// on an error.
absl::StatusOr<CpuIsa> CpuIsaFromEnvironment();
// The same, for library defaults: a bad setting falls back to the best path (the binaries
// have already refused it).
CpuIsa BestCpuIsa();

bool CpuSupportsBf16Dot();  // AVX-512 BF16 (vdpbf16ps)

// The environment setting that chooses the bf16 kernel of the avx512 path (Setting::kBf16Dot).
inline constexpr char kBf16DotEnv[] = "SWITCHYARD_BF16_DOT";
// $SWITCHYARD_BF16_DOT: true for "1" (vdpbf16ps), false for "0" (widen to fp32), nullopt when
// unset, empty or "auto" (measured: kernels/cpu/ffn_internal.h, UseBf16Dot). InvalidArgument
// for any other value, FailedPrecondition for "1" on a CPU without AVX-512 BF16. Binaries
// check it at start-up, with CpuIsaFromEnvironment. Both kernels give the same bits but where
// a value, product or partial sum falls below 2^-126 (kernels/cpu/ffn_gemm.cc).
absl::StatusOr<std::optional<bool>> Bf16DotFromEnvironment();

// What one vdpbf16ps costs on this CPU, in 512-bit FMAs (seconds per instruction, each kind
// issued back to back in registers); measured once per process, about 0.2 ms. 0 without
// AVX-512 BF16. It decides SWITCHYARD_BF16_DOT=auto. Measured 3.8-4.2 on Intel family 6
// model 207; on AMD Zen 5, where the vdpbf16ps FFN ran 1.7x the fp32 one, it should be near 1.
double Bf16DotCostInFmas();

// Threads a rank's CPU kernels use unless told otherwise: $OMP_NUM_THREADS if it is a number
// in 1..1024 (anything else is ignored, as libgomp itself warns); else the
// CPUs this process may run on (its affinity mask, i.e. the launcher's binding), divided
// among the ranks the launcher started on this node when they were left unbound
// (OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS, SLURM_STEP_NUM_TASKS / SLURM_STEP_NUM_NODES).
// At least 1.
int DefaultCpuThreads();

}  // namespace switchyard::kernels
