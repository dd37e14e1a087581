#!/usr/bin/env bash
# The simulator's benchmarks (docs/benchmarks.md "Simulator"), after a build:
#  1. policies at 64, 256 and 1,024 simulated H200s (8 per node) on DeepSeek-V3's measured
#     decode load that shifts to its prefill load halfway: static vs EPLB every window vs
#     incremental, step p99, tokens/s, moved bytes;
#  2. the scale target: 4,096 ranks on 512 nodes, 1 slot per rank, 1,000 steps, all three
#     policies in one call: wall time and peak memory;
#  3. the CPU preset against the worker runs of scripts/bench_worker.sh (same model, layers,
#     tokens and ranks), phase by phase.
# Usage: scripts/bench_sim.sh [--steps N] [--skip-scale]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=1000 scale=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --skip-scale) scale=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
S=build/cli/switchyard
T=data/traces
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
# Decode load, then prefill load: one window each, spread over the steps (a shift halfway).
{
  echo "workload,layer,expert,tokens"
  tail -n +2 "$T/deepseek_v3_sglang_decode_in1000out1000.csv" | sed 's/^/decode,/'
  tail -n +2 "$T/deepseek_v3_sglang_prefill_in1024.csv" | sed 's/^/prefill,/'
} > "$out/shift.csv"

echo "## policies on a decode -> prefill shift (h200, ${steps} steps, 128 tokens per rank)"
# Slots: every expert once plus spare (64 x 5, 256 x 2); 1,024 x 1 holds 4 replicas of each.
for shape in 64:5 256:2 1024:1; do
  ranks=${shape%:*} slots=${shape#*:} nodes=$((${shape%:*} / 8))
  start=$(date +%s.%N)
  $S sim --trace "$out/shift.csv" --ranks "$ranks" --nodes "$nodes" --slots-per-rank "$slots" --steps "$steps" \
    --compare static,eplb,incremental --json > "$out/r$ranks.json"
  end=$(date +%s.%N)
  /usr/bin/python3 - "$out/r$ranks.json" "$ranks" "$nodes" "$slots" "$(echo "$end - $start" | bc)" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
ranks, nodes, slots, wall = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
print(f"\n{ranks} GPUs on {nodes} nodes x {slots} slots (simulated in {wall:.1f} s)\n")
print("| policy | tokens/s | step p50 ms | p99 ms | balancedness | plans | moved replicas | moved GiB | recovery after the shift (steps) |")
print("|---|---|---|---|---|---|---|---|---|")
base = rows[0]
for r in rows:
    rec = ", ".join("never" if x["steps"] is None else str(x["steps"]) for x in r["recoveries"]) or "-"
    print(f"| {r['policy']} | {r['tokens_per_s']:.0f} ({r['tokens_per_s'] / base['tokens_per_s']:.2f}x) | "
          f"{r['step_ms']['p50']:.2f} | {r['step_ms']['p99']:.2f} | {r['balancedness_mean']:.3f} | {r['plans']} | "
          f"{r['moved_replicas']} | {r['moved_bytes'] / 2**30:.1f} | {rec} |")
PY
done

if [[ $scale == 1 ]]; then
  echo
  echo "## scale: 4096 ranks x 512 nodes, 58 layers, 1 slot per rank, 1000 steps, --compare static,eplb,incremental"
  for budget in 512 0; do
    /usr/bin/time -f "max-moves $budget: %e s wall, %M KiB peak RSS" timeout 600 \
      $S sim --trace "$out/shift.csv" --ranks 4096 --nodes 512 --slots-per-rank 1 --steps 1000 \
      --compare static,eplb,incremental --max-moves "$budget" 2>&1 | tail -4 || true
  done
fi

echo
echo "## cpu preset vs the worker (scripts/bench_worker.sh: deepseek-v3 x 1/16, 4 layers, decode, 256 tokens per rank)"
for ranks in 1 2 4; do
  hw=cpu
  if [[ $ranks -gt $(nproc) ]]; then  # ranks share the cores: each gets its part of a core
    /usr/bin/python3 -c "
import json; share = $(nproc) / $ranks
print(json.dumps({'preset': 'cpu', 'name': f'cpu x {share:g}', 'flops': 125e9 * share,
                  'memory_bandwidth': 17.4e9 * share, 'intra_bandwidth': 4e9 * share}))" > "$out/cpu$ranks.json"
    hw="$out/cpu$ranks.json"
  fi
  $S sim --model preset:deepseek-v3 --scale 0.0625 --trace "$T/deepseek_v3_sglang_decode_in1000out1000.csv" \
    --first-layers 4 --ranks "$ranks" --slots-per-rank $((256 / ranks + 1)) --tokens-per-rank 256 --steps 30 \
    --policy static --hardware "$hw" --json |
    /usr/bin/python3 -c "
import json, sys
r = json.load(sys.stdin)[0]; p = r['phase_ms']
print(f'$ranks ranks ($hw): step p50 {r[\"step_ms\"][\"p50\"]:.1f} ms; gate {p[\"gate\"]:.1f}, dispatch {p[\"dispatch\"]:.1f}, ffn {p[\"ffn\"]:.1f}, combine {p[\"combine\"]:.1f}')"
done
