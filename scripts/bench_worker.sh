#!/usr/bin/env bash
# The worker benchmark: tokens/s and per-phase time on 1, 2 and 4 ranks, DeepSeek-V3 (scaled
# 1/16) on its measured decode trace, static contiguous placement vs EPLB. Speed-of-light
# fractions use the peers `switchyard bench kernels` measures on this machine: memcpy
# bandwidth for dispatch/combine, OpenBLAS sgemm for the FFN, each scaled by the share of a
# core a rank gets (cores / ranks when ranks outnumber cores).
# Usage: scripts/bench_worker.sh [--backend ucx|mpi] [--steps N] [--tokens T]  (after a build)
set -euo pipefail
cd "$(dirname "$0")/.."
backend=ucx steps=30 tokens=256
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backend) backend=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMPI_MCA_mpi_yield_when_idle=1 UCX_NET_DEVICES=lo
build/cli/switchyard bench kernels --json > "$out/kernels.json"
trace=data/traces/deepseek_v3_sglang_decode_in1000out1000.csv
for np in 1 2 4; do
  for policy in contiguous eplb; do
    mpirun --allow-run-as-root --oversubscribe -np "$np" --mca btl_tcp_if_include lo \
      --mca oob_tcp_if_include lo -x UCX_NET_DEVICES build/worker/switchyard-worker \
      --model preset:deepseek-v3 --scale 0.0625 --backend "$backend" --workload "trace:$trace" \
      --tokens-per-rank "$tokens" --steps "$steps" --layers 4 --policy "$policy" --log-every 0 \
      --report "$out/np${np}_${policy}.json" > /dev/null
  done
done
/usr/bin/python3 - "$out" "$(nproc)" <<'PY'
import json, sys
out, cores = sys.argv[1], int(sys.argv[2])
kernels = {c["name"]: c for c in json.load(open(f"{out}/kernels.json"))}
memcpy = kernels["permute_dispatch_fp32_h1024_t2048_k8"]["bound"] * 1e9          # bytes/s, one core
sgemm = kernels["ffn_swiglu_grouped_fp32_h1024_f512_64slots"]["bound"] * 1e9       # FLOP/s, one core
print(f"bounds (one core): memcpy {memcpy/1e9:.1f} GB/s, sgemm {sgemm/1e9:.1f} GFLOP/s; {cores} cores")
print("| ranks | placement | tokens/s | step p50 ms | p99 ms | gate | dispatch (SOL) | ffn (SOL) | combine (SOL) | worst-layer balancedness |")
print("|---|---|---|---|---|---|---|---|---|---|")
rows = {}
for np in (1, 2, 4):
    share = min(1.0, cores / np)
    for policy in ("contiguous", "eplb"):
        r = json.load(open(f"{out}/np{np}_{policy}.json"))
        rows[(np, policy)] = r
        p, w = r["phase_ms"], r["work_per_step"]
        sol = lambda work, ms, bound: work / (ms / 1e3) / (bound * share) if ms > 0 else 0
        worst = min(l["balancedness"] for l in r["layers"])
        print(f"| {np} | {policy} | {r['tokens_per_s']:.0f} | {r['step_ms']['p50']:.1f} | {r['step_ms']['p99']:.1f} | "
              f"{p['gate']:.1f} | {p['dispatch']:.1f} ({sol(w['dispatch_bytes'], p['dispatch'], memcpy):.2f}) | "
              f"{p['ffn']:.1f} ({sol(w['ffn_flops'], p['ffn'], sgemm):.2f}) | "
              f"{p['combine']:.1f} ({sol(w['combine_bytes'], p['combine'], memcpy):.2f}) | {worst:.3f} |")
for np in (1, 2, 4):
    s, e = rows[(np, "contiguous")], rows[(np, "eplb")]
    print(f"np {np}: static/EPLB step time (p50) = {s['step_ms']['p50'] / e['step_ms']['p50']:.2f}, "
          f"checksums {'equal' if s['output_checksum'] == e['output_checksum'] else 'DIFFER'}")
PY
