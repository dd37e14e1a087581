// Internal to the CPU FFN: the packed layout and the per-ISA GEMM entry points.
//
// Packed expert = 64-byte header, then the first GEMM's panels, then the down GEMM's panels
// (each 64-byte aligned):
//   fp32: a panel is [K][32] floats (K = reduction length), 32 output columns per panel.
//   bf16: a panel is [K/2][32][2] bf16: column c's reduction pair (2i, 2i+1) sits together,
//         the layout vdpbf16ps consumes; K is padded to even with zeros.
//   First GEMM (K = hidden): SwiGLU panels hold 16 ffn columns as [16 gate | 16 up];
//   ReLU^2 panels hold 32 up columns. Down GEMM (K = ffn): 32 hidden columns per panel.
//   Columns beyond the matrix are zero.
//   gpt-oss experts then hold their biases, fp32, 64-byte aligned: the first GEMM's
//   [panels1][32] (in its panels' column order) and the down GEMM's [panels2][32].
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ffn.h"

namespace switchyard::kernels::internal {

inline constexpr uint32_t kPackedMagic = 0x46465953;  // "SYFF"
inline constexpr size_t kHeaderBytes = 64;
inline constexpr int kPanelCols = 32;

struct PackedHeader {
  uint32_t magic;
  uint32_t version;
  int64_t hidden;
  int64_t ffn;
  int32_t activation;
  int32_t weights;
};

struct PackedLayout {
  int64_t k1, k2;                 // reduction lengths (padded to even for bf16)
  int64_t panels1, panels2;       // panel counts of the two GEMMs
  size_t panel1_bytes, panel2_bytes;
  size_t first_offset, down_offset, total_bytes;
  size_t bias1_offset = 0, bias2_offset = 0;  // 0: no biases
  int64_t outputs_per_panel1;     // ffn columns a first-GEMM panel produces (16 or 32)
};
PackedLayout LayoutOf(const FfnShape& shape);

// One GEMM over a group of rows. A: [rows, lda], fp32, or with bf16 panels bf16 values as
// the kernel takes them (GemmKernel::a_bf16); panels: the packed panels; out: [rows, ldo],
// the `epilogue`'s result stored as `output` says.
enum class Epilogue {
  kStore,        // out (fp32) = acc, 32 columns per panel
  kSwiGlu,       // out = silu(acc[0:16]) * acc[16:32], 16 columns per panel
  kReluSquared,  // out = max(acc, 0)^2, 32 columns per panel
  kGptOssSwiGlu, // gpt-oss's clamped SwiGLU of (acc + bias), 16 columns per panel
};
// How the epilogue stores its result.
enum class Output {
  kF32,         // fp32
  kBf16,        // rounded to bf16, stored as bf16 (the next vdpbf16ps GEMM's input)
  kBf16InF32,   // rounded to bf16, stored as fp32 (the next widening bf16 GEMM's input)
};
struct GemmArgs {
  const void* a;
  int64_t lda;        // elements
  const void* panels;
  size_t panel_bytes;
  int64_t panels_n;
  int64_t k;          // reduction length (even for bf16)
  int64_t rows;
  void* out;
  int64_t ldo;        // elements
  int64_t out_cols;   // valid output columns (the rest of the last panel is dropped)
  Epilogue epilogue;
  const float* bias = nullptr;  // [panels_n][32] added to the accumulators first (null: none)
  // Where the weights the caller reads next start (the next task's first panel), prefetched
  // during the last panels: one or two panels' bytes from there (a hint: never read, may
  // run past the weights); null: none.
  const void* next_panels = nullptr;
  bool bf16;          // the panels are bf16; A then holds bf16 values: as bf16 for the
                      // vdpbf16ps kernel, as fp32 for the widening ones (GemmKernel::a_bf16)
  Output output;
};

// One GEMM over all rows and panels of `args`, single-threaded. Every path computes each
// output element as the same FMA chain over k ascending and applies the same epilogue
// (math-inl.h), so the bits do not depend on the path (kernels/cpu/ffn_gemm.cc).
using GemmFn = void (*)(const GemmArgs& args);

struct GemmKernel {
  GemmFn fn;          // null if this build has no such path
  bool a_bf16;        // takes A (and wants the first GEMM's activations) as bf16, else fp32
  const char* name;   // "avx512", "avx2_bf16widen", "avx512_bf16dot", ...
};

// The GEMM of `isa` for bf16 or fp32 weights (the caller has checked that the CPU supports
// `isa`). For bf16 it is the vdpbf16ps kernel when `bf16_dot` (UseBf16Dot(isa)), else the
// kernel that widens the weights to fp32 in registers.
GemmKernel GemmFor(CpuIsa isa, bool bf16, bool bf16_dot);

// Whether bf16 GEMMs on `isa` use vdpbf16ps: only on kAvx512 with AVX-512 BF16, and then as
// $SWITCHYARD_BF16_DOT says, or (unset or auto) when the instruction is fast on this CPU
// (Bf16DotCostInFmas): on some CPUs it issues once per two cycles, and the widening
// kernel's two FMAs per cycle beat it; on others it issues at the FMA rate and does twice
// the work. Reads the environment: FfnWorkspace decides once, at construction.
bool UseBf16Dot(CpuIsa isa);

// Bit mask of CpuIsa values this build compiled (1 << isa) and this CPU can run.
uint32_t SupportedIsaMask();

}  // namespace switchyard::kernels::internal
