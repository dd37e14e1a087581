#!/usr/bin/env bash
# The per-step shares benchmark (docs/benchmarks.md "Per-step shares"):
#   1. the solver's time per layer (Google Benchmark: 32 ranks x 9 slots, 4096 ranks x 2),
#   2. per-step balancedness, epoch vs step shares on the same replicas (switchyard bench shares),
#   3. 4 ranks under mpirun on the DeepSeek-V3 decode trace: the critical-path step time with
#      --shares epoch and --shares step (count exchange included), alternated A/B/A/B.
# Usage: scripts/bench_shares.sh [--steps N] [--tokens T] [--rounds K]   (after a build)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=40 tokens=256 rounds=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "bench_shares: unknown argument $1" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== solver (CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
build/tests/placement_benchmark --benchmark_filter=StepShares 2>/dev/null | grep BM_
echo "== per-step balancedness (switchyard bench shares)"
build/cli/switchyard bench shares
echo "== 4 ranks, mpirun, DeepSeek-V3 x1/16 decode trace, EPLB placement, $tokens tokens/rank, $steps steps"
echo "   (65 slots per rank: 4 spare replicas; 80: 64 spare replicas)"
export OMPI_MCA_mpi_yield_when_idle=1 UCX_NET_DEVICES=lo
trace=data/traces/deepseek_v3_sglang_decode_in1000out1000.csv
for slots in 65 80; do
  for ((i = 0; i < rounds; i++)); do
    for shares in epoch step; do
      mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
        -x UCX_NET_DEVICES build/worker/switchyard-worker --model preset:deepseek-v3 --scale 0.0625 --backend ucx \
        --workload "trace:$trace" --tokens-per-rank "$tokens" --steps "$steps" --layers 4 --policy eplb \
        --slots-per-rank "$slots" --shares "$shares" --log-every 0 --report "$out/${slots}_${shares}_$i.json" >/dev/null
    done
  done
done
/usr/bin/python3 - "$out" "$rounds" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print("| slots | shares | round | critical step ms p50 | p99 | tokens/s (critical) | step balancedness p50 / p99 (worst layer) | checksum |")
print("|---|---|---|---|---|---|---|---|")
for slots in (65, 80):
    for i in range(rounds):
        for shares in ("epoch", "step"):
            r = json.load(open(f"{out}/{slots}_{shares}_{i}.json"))
            c = r["critical_path"]
            p50 = min(l["step_balancedness"]["p50"] for l in r["layers"])
            p99 = min(l["step_balancedness"]["p99"] for l in r["layers"])
            print(f"| {slots} | {shares} | {i} | {c['step_ms']['p50']:.2f} | {c['step_ms']['p99']:.2f} | {c['tokens_per_s']:.0f} | {p50:.3f} / {p99:.3f} | {r['output_checksum']} |")
PY
