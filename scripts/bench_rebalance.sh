#!/usr/bin/env bash
# The live-rebalancing benchmark (issue 7): 4 ranks, DeepSeek-V3 scaled, its measured
# prefill expert load for 100 steps then its decode load, 300 steps, from a contiguous
# placement with 2 spare slots per rank per layer; the same run with `--rebalance off` and
# `--rebalance on` (embedded coordinator), one after the other on this machine.
# Prints the targets: critical-path tokens/s on/off, steps after the switch until the
# worst-layer balancedness is back above 0.9, p99 critical-path step time during migrations
# vs steady steps, moved replicas per rebalance vs a from-scratch re-plan, checksums.
# Usage: scripts/bench_rebalance.sh [--scale S] [--tokens T] [--layers L] [--steps N]
#        [--backend mpi|ucx] [--policy k=v,...] [--keep DIR]   (after a build)
set -euo pipefail
cd "$(dirname "$0")/.."
scale=0.0625 tokens=256 layers=4 steps=300 backend=mpi policy="" keep=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --policy) policy=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out=${keep:-$(mktemp -d)}
mkdir -p "$out"
[[ -n "$keep" ]] || trap 'rm -rf "$out"' EXIT
export OMPI_MCA_mpi_yield_when_idle=1 UCX_NET_DEVICES=lo
switch=$((steps / 3))
traces=data/traces
for mode in off on; do
  extra=()
  extra=(--coordinator embedded --rebalance "$mode")  # the same control plane in both runs
  [[ $mode == on && -n "$policy" ]] && extra+=(--embedded-policy "$policy")
  mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
    -x OMPI_MCA_mpi_yield_when_idle -x UCX_NET_DEVICES build/worker/switchyard-worker \
    --model preset:deepseek-v3 --scale "$scale" --layers "$layers" --tokens-per-rank "$tokens" --backend "$backend" \
    --policy contiguous --slots-per-rank $((256 / 4 + 2)) \
    --workload "trace:$traces/deepseek_v3_sglang_prefill_in4096.csv" \
    --workload "trace:$traces/deepseek_v3_sglang_decode_in1000out1000.csv@$switch" \
    --steps "$steps" --log-every 0 --report "$out/$mode.json" "${extra[@]}" > "$out/$mode.log"
done
/usr/bin/python3 - "$out" "$switch" <<'PY'
import json, sys
out, switch = sys.argv[1], int(sys.argv[2])
off, on = (json.load(open(f"{out}/{m}.json")) for m in ("off", "on"))
cp_off, cp_on = off["critical_path"], on["critical_path"]
print(f"critical path tokens/s: on {cp_on['tokens_per_s']:.0f}, off {cp_off['tokens_per_s']:.0f}, "
      f"ratio {cp_on['tokens_per_s'] / cp_off['tokens_per_s']:.2f} (target >= 1.3)")
print(f"wall-clock tokens/s:    on {on['tokens_per_s']:.0f}, off {off['tokens_per_s']:.0f}, "
      f"ratio {on['tokens_per_s'] / off['tokens_per_s']:.2f}")
print(f"critical step ms p50/p99: on {cp_on['step_ms']['p50']:.1f}/{cp_on['step_ms']['p99']:.1f}, "
      f"off {cp_off['step_ms']['p50']:.1f}/{cp_off['step_ms']['p99']:.1f}")
steady, moving = cp_on["steady_step_ms"]["p99"], cp_on["migration_step_ms"]["p99"]
print(f"p99 critical step during migrations {moving:.1f} ms over {cp_on['migration_steps']} steps, steady {steady:.1f} ms: "
      f"ratio {moving / steady:.2f} (target <= 1.1)")
by_step = dict(on["worst_balancedness_by_step"])
def recovered(values, start):  # first step from which 5 consecutive steps average >= 0.9
    for s in range(start, len(values) - 4):
        if sum(values[s + i] for i in range(5)) / 5 >= 0.9:
            return s
    return None
values = [by_step[s] for s in range(len(by_step))]
r = recovered(values, switch)
first = next((s for s in range(switch, len(values)) if values[s] >= 0.9), None)
print(f"worst-layer balancedness after the switch at step {switch}: first step >= 0.9 at {first}, "
      f"5-step mean >= 0.9 from step {r} ({'+%d steps' % (r - switch) if r is not None else 'never'}; target <= +20)")
mean = lambda a, b: sum(values[a:b]) / max(1, b - a)
off_values = [v for _, v in off["worst_balancedness_by_step"]]
print(f"mean worst-layer balancedness: on {mean(0, len(values)):.3f} (steps {switch + 20}-{len(values)}: "
      f"{mean(switch + 20, len(values)):.3f}), off {sum(off_values) / len(off_values):.3f}")
for m in on["migrations"]:
    print(f"migration to epoch {m['epoch']}: steps {m['start_step']}-{m['commit_step']}, {m['moved_replicas']} replicas "
          f"({m['bytes'] / 2**20:.1f} MiB) vs {m['scratch_moved_replicas']} from scratch (EPLB)" + (f", ABORTED: {m['error']}" if m.get("error") else ""))
print(f"checksums {'equal' if on['output_checksum'] == off['output_checksum'] else 'DIFFER'} "
      f"({on['output_checksum']}); tokens conserved: {on['tokens_conserved'] and off['tokens_conserved']}; "
      f"replicas byte-identical: {on['weights_identical']}")
PY
