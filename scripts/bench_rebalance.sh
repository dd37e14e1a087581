#!/usr/bin/env bash
# The live-rebalancing benchmark (issue 7): 4 ranks, DeepSeek-V3 scaled, its measured
# prefill expert load for 100 steps then its decode load, 300 steps, from a contiguous
# placement with 2 spare slots per rank per layer; the same run with `--rebalance off` and
# `--rebalance on` (embedded coordinator), one after the other on this machine.
# Prints the targets: critical-path tokens/s on/off, steps after the switch until the
# worst-layer balancedness is back above 0.9, p99 critical-path step time during migrations
# vs steady steps, moved replicas per rebalance vs a from-scratch re-plan, checksums.
# This machine's speed drifts by ~10% between minutes, so the pair (off, on) runs --repeat
# times alternately and the figures are the median over pairs, with their range.
# Usage: scripts/bench_rebalance.sh [--scale S] [--tokens T] [--layers L] [--steps N]
#        [--backend mpi|ucx] [--policy k=v,...] [--migration-bytes B] [--repeat N] [--keep DIR]
#        (after a build; B: the worker's --migration-bytes-per-step)
set -euo pipefail
cd "$(dirname "$0")/.."
scale=0.0625 tokens=256 layers=4 steps=300 backend=mpi policy="" keep="" repeat=3 migration_bytes=4194304
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --policy) policy=$2; shift 2 ;;
    --migration-bytes) migration_bytes=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out=${keep:-$(mktemp -d)}
mkdir -p "$out"
[[ -n "$keep" ]] || trap 'rm -rf "$out"' EXIT
export OMPI_MCA_mpi_yield_when_idle=1 UCX_NET_DEVICES=lo
switch=$((steps / 3))
traces=data/traces
for ((i = 1; i <= repeat; ++i)); do
for mode in off on; do
  extra=()
  extra=(--coordinator embedded --rebalance "$mode" --migration-bytes-per-step "$migration_bytes")  # the same control plane in both runs
  [[ $mode == on && -n "$policy" ]] && extra+=(--embedded-policy "$policy")
  mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
    -x OMPI_MCA_mpi_yield_when_idle -x UCX_NET_DEVICES build/worker/switchyard-worker \
    --model preset:deepseek-v3 --scale "$scale" --layers "$layers" --tokens-per-rank "$tokens" --backend "$backend" \
    --policy contiguous --slots-per-rank $((256 / 4 + 2)) \
    --workload "trace:$traces/deepseek_v3_sglang_prefill_in4096.csv" \
    --workload "trace:$traces/deepseek_v3_sglang_decode_in1000out1000.csv@$switch" \
    --steps "$steps" --log-every 0 --report "$out/$mode$i.json" "${extra[@]}" > "$out/$mode$i.log"
done
done
/usr/bin/python3 - "$out" "$switch" "$repeat" <<'PY'
import json, statistics, sys
out, switch, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pairs = [tuple(json.load(open(f"{out}/{m}{i}.json")) for m in ("off", "on")) for i in range(1, repeat + 1)]

def recovered(values, start):  # first step from which 5 consecutive steps average >= 0.9
    for s in range(start, len(values) - 4):
        if sum(values[s:s + 5]) / 5 >= 0.9:
            return s
    return None

def p99(values):  # as the worker computes it: linear interpolation between order statistics
    v = sorted(values)
    x = 0.99 * (len(v) - 1)
    i = int(x)
    return v[i] if i + 1 >= len(v) else v[i] + (x - i) * (v[i + 1] - v[i])

# A migration that starts from the starting placement runs its steps under the same placement
# and load as the same steps of the run without rebalancing: their p99s, compared, isolate
# what moving the bytes costs from what the placement costs.
def same_steps_ratio(on, off):
    first = next((m for m in on["migrations"] if m["epoch"] == 1 and not m.get("error")), None)
    if first is None:
        return float("nan")
    steps = range(first["start_step"], first["commit_step"])
    return p99([on["critical_path"]["by_step_ms"][s] for s in steps]) / p99([off["critical_path"]["by_step_ms"][s] for s in steps])

rows = []
for off, on in pairs:
    cp_off, cp_on = off["critical_path"], on["critical_path"]
    values = [v for _, v in on["worst_balancedness_by_step"]]
    r = recovered(values, switch)
    rows.append({
        "critical_ratio": cp_on["tokens_per_s"] / cp_off["tokens_per_s"],
        "wall_ratio": on["tokens_per_s"] / off["tokens_per_s"],
        "on_tokens": cp_on["tokens_per_s"], "off_tokens": cp_off["tokens_per_s"],
        "migration_ratio": cp_on["migration_step_ms"]["p99"] / cp_on["steady_step_ms"]["p99"],
        "migration_p99": cp_on["migration_step_ms"]["p99"], "steady_p99": cp_on["steady_step_ms"]["p99"],
        "migration_steps": cp_on["migration_steps"],
        "recovery": (r - switch) if r is not None else float("inf"),
        "first_above": next((s - switch for s in range(switch, len(values)) if values[s] >= 0.9), None),
        "mean_on": sum(values) / len(values),
        "mean_off": sum(v for _, v in off["worst_balancedness_by_step"]) / len(off["worst_balancedness_by_step"]),
        "same_steps_ratio": same_steps_ratio(on, off),
        "work_share": cp_on["migration_work_ms"]["p99"] / cp_on["steady_step_ms"]["p99"],
        "same": on["output_checksum"] == off["output_checksum"] and on["tokens_conserved"] and on["weights_identical"],
    })
def summary(key, fmt="{:.2f}"):
    v = [x[key] for x in rows]
    return f"{fmt.format(statistics.median(v))} (range {fmt.format(min(v))}-{fmt.format(max(v))})"
print(f"{repeat} pairs (off, on), medians:")
print(f"critical path tokens/s on/off: {summary('critical_ratio')} (target >= 1.3); "
      f"on {summary('on_tokens', '{:.0f}')}, off {summary('off_tokens', '{:.0f}')}")
print(f"wall-clock tokens/s on/off: {summary('wall_ratio')}")
print(f"p99 critical step during migrations / steady: {summary('migration_ratio')} (target <= 1.1); "
      f"{summary('migration_p99', '{:.1f}')} ms vs {summary('steady_p99', '{:.1f}')} ms over {summary('migration_steps', '{:.0f}')} steps")
print(f"  the first migration's steps (same placement and load as the run without rebalancing), p99 on/off: "
      f"{summary('same_steps_ratio')}; the migration work on the critical path, p99 per migration step / steady p99: "
      f"{summary('work_share', '{:.3f}')}")
print(f"worst-layer balancedness after the switch at step {switch}: 5-step mean >= 0.9 after +{summary('recovery', '{:.0f}')} steps "
      f"(target <= +20); first single step >= 0.9 after +{summary('first_above', '{:.0f}')}")
print(f"mean worst-layer balancedness over the run: on {summary('mean_on', '{:.3f}')}, off {summary('mean_off', '{:.3f}')}")
for m in pairs[-1][1]["migrations"]:
    print(f"migration to epoch {m['epoch']} (last pair): steps {m['start_step']}-{m['commit_step']}, {m['moved_replicas']} replicas "
          f"({m['bytes'] / 2**20:.1f} MiB) vs {m['scratch_moved_replicas']} from scratch (EPLB)" + (f", ABORTED: {m['error']}" if m.get("error") else ""))
print(f"every pair: checksums equal, tokens conserved, replicas byte-identical: {all(x['same'] for x in rows)}")
PY
