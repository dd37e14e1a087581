#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU (and the packages scripts/setup.sh installs),
# builds with CUDA, runs the gpu-labelled tests and the GPU benchmarks on the first GPU, and
# prints the figures docs/benchmarks.md records:
#   - permute (dispatch gather) and combine as a fraction of the GPU's HBM bandwidth (target >= 0.6);
#   - the grouped bf16 SwiGLU FFN (DeepSeek-V3 expert shape, 64 skewed slots) against one
#     cuBLAS GEMM of the same FLOPs (target >= 0.7);
#   - a 1-rank MoE layer step on the GPU (switchyard-worker --device cuda --backend nccl):
#     tokens/s and time per phase.
# Under 8 minutes on one GPU with 16 cores (the build is most of it; --no-build reuses DIR).
# Exit status: 2 without a GPU, 1 when a test or a run failed (the figures printed so far stay).
#
# Usage: scripts/gpu_check.sh [--build-dir DIR] [--no-build] [--out DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
build=build-gpu out="" do_build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "gpu_check: unknown argument $1 (--build-dir DIR, --no-build, --out DIR)" >&2; exit 2 ;;
  esac
done
if ! gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1) || [[ -z "$gpu" ]]; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi found none)" >&2
  exit 2
fi
out=${out:-$build/gpu_check}
mkdir -p "$out"
echo "gpu_check: $gpu; $(date -u +%Y-%m-%dT%H:%MZ); build $build; results in $out"
status=0

if (( do_build )); then
  # native: the architecture of the GPU here (CMake >= 3.24).
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSWITCHYARD_WITH_CUDA=ON -DSWITCHYARD_WITH_PYTHON=OFF \
        -DSWITCHYARD_CUDA_ARCHITECTURES=native > "$out/configure.log" 2>&1 || { tail -20 "$out/configure.log"; exit 1; }
  ninja -C "$build" switchyard switchyard-worker kernels_cuda_test comm_nccl_test worker_cuda_test > "$out/build.log" 2>&1 \
    || { tail -30 "$out/build.log"; exit 1; }
fi

echo "== gpu-labelled tests"
timeout 300 ctest --test-dir "$build" -L gpu --output-on-failure 2>&1 | tee "$out/gpu_tests.txt" | tail -15 || status=1
if grep -q "Skipped\|SKIPPED" "$out/gpu_tests.txt"; then
  echo "gpu_check: some gpu tests skipped on a GPU machine (see $out/gpu_tests.txt)" >&2
  status=1
fi

echo "== kernels (bench kernels: the CPU cases, then the GPU ones)"
timeout 240 "$build/cli/switchyard" bench kernels --json > "$out/kernels.json" || status=1

echo "== 1-rank layer step on the GPU"
rdv=$(mktemp -d)
trap 'rm -rf "$rdv"' EXIT
timeout 240 "$build/worker/switchyard-worker" --model preset:deepseek-v3 --scale 0.25 --layers 2 --device cuda \
  --backend nccl --weight-type bf16 --rendezvous-dir "$rdv" --tokens-per-rank 4096 --steps 20 --log-every 0 \
  --workload trace:data/traces/deepseek_v3_sglang_decode_in1000out1000.csv --report "$out/layer_step.json" \
  > "$out/layer_step.txt" 2>&1 || { tail -5 "$out/layer_step.txt"; status=1; }

python3 - "$out" "$gpu" <<'PY'
import json, os, sys
out, gpu = sys.argv[1], sys.argv[2]
print(f"\n| case | value | bound | ratio | target |   ({gpu})")
print("|---|---|---|---|---|")
try:
    for c in json.load(open(f"{out}/kernels.json")):
        if c["name"].startswith("gpu_"):
            print(f"| {c['name']} | {c['value']:.1f} {c['unit']} | {c['bound']:.1f} ({c.get('bound_name', '')}) | "
                  f"{c['ratio']:.2f} | {c.get('target', '')} |")
except (OSError, ValueError, KeyError) as e:
    print(f"no kernel figures: {e}")
try:
    r = json.load(open(f"{out}/layer_step.json"))
    ph = r.get("phase_ms", {})
    print(f"\nlayer step, 1 rank ({r.get('device')} {r.get('isa')}): {r['tokens_per_s']:.0f} tokens/s, "
          f"step p50 {r['step_ms']['p50']:.2f} ms, p99 {r['step_ms']['p99']:.2f} ms; phases (ms/step) {ph}")
except (OSError, ValueError, KeyError) as e:
    print(f"no layer-step figures: {e}")
PY
exit $status
