#!/usr/bin/env bash
# The lost-rank scenario (docs/benchmarks.md "A lost rank"): 4 workers joined through a
# coordinator (no launcher), DeepSeek-V3 x1/16 on the decode trace, kill -9 of one worker (the
# one printing progress, rank 0) at step 50 of 300, then the worker started again. Prints:
# the time from the kill to the first step done under the new epoch, the survivors' exit codes
# and steps, whether every token stream's outputs equal a run without the failure (step by
# step), and when the restarted worker joined and first computed pairs (replicas migrated to it).
# Usage: scripts/bench_lost_rank.sh [--steps N] [--kill-at S] [--tokens T]   (after a build)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=300 kill_at=50 tokens=64
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --kill-at) kill_at=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    *) echo "bench_lost_rank: unknown argument $1" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT
export UCX_NET_DEVICES=lo
build/coordinator/switchyard-coordinator --listen 127.0.0.1:0 --port-file "$out/port" --auto-rebalance >"$out/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s $out/port ]] && break; sleep 0.1; done
address=127.0.0.1:$(cut -d' ' -f1 "$out/port")
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; coordinator $address"
worker() {  # worker JOB_KEY LOG [extra flags]   (run it with &: the job's pid is the worker's)
  local key=$1 log=$2; shift 2
  exec build/worker/switchyard-worker --model preset:deepseek-v3 --scale 0.0625 --layers 2 --threads 1 \
    --workload trace:data/traces/deepseek_v3_sglang_decode_in1000out1000.csv --tokens-per-rank "$tokens" \
    --steps "$steps" --log-every 5 --backend ucx --coordinator "$address" --world-size 4 --job-key "$key" \
    --slots-per-rank 96 --rebalance on --step-log "$out/$key" "$@" >"$log" 2>&1
}
echo "== reference: the same job without a failure"
ref=()
for i in 0 1 2 3; do worker reference "$out/ref$i.log" & ref+=($!); done
wait "${ref[@]}"
echo "== run: kill -9 at step $kill_at, the worker started again once the others regrouped"
run=()
for i in 0 1 2 3; do worker lost "$out/w$i.log" & run+=($!); pids+=($!); done
until grep -qE "^step +$kill_at\b" "$out"/w?.log 2>/dev/null; do sleep 0.01; done
victim=$(basename "$(grep -lE "^step +$kill_at\b" "$out"/w?.log | head -1)" .log | tr -dc 0-9)
kill -9 "${run[$victim]}"
killed_at=$(date +%s.%N)
until grep -q "generation 1:" "$out"/w?.log 2>/dev/null; do sleep 0.01; done
worker lost "$out/w4.log" & run+=($!); pids+=($!)
codes=()
for i in "${!run[@]}"; do
  if wait "${run[$i]}" 2>/dev/null; then codes+=("$i:0"); else codes+=("$i:$?"); fi
done
echo "exit codes (worker:code; worker $victim was killed, worker 4 is the restarted one): ${codes[*]}"
grep -h "generation\|regrouping" "$out"/w?.log | sed 's/^/  /' | sort | uniq -c | sort -rn | head -8
/usr/bin/python3 - "$out" "$killed_at" "$steps" <<'PY'
import csv, glob, os, sys
out, killed_at, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def logs(prefix):
    result = {}
    for path in glob.glob(os.path.join(out, prefix + ".rank*.csv")):
        rows = list(csv.DictReader(open(path)))
        result[int(rows[0]["origin"])] = {int(r["step"]): r for r in rows}
    return result
ref, run = logs("reference"), logs("lost")
for origin in sorted(run):
    mine = run[origin]
    same = all(ref[origin][s]["output_hash"] == r["output_hash"] for s, r in mine.items())
    after = [float(r["done_unix_s"]) for r in mine.values() if float(r["done_unix_s"]) > killed_at]
    first = min(after) - killed_at if after else float("nan")
    loaded = [float(r["done_unix_s"]) for r in mine.values() if int(r["pairs"]) > 0 and float(r["done_unix_s"]) > killed_at]
    start = min(float(r["done_unix_s"]) for r in mine.values())
    kind = "survivor" if len(mine) == steps else "restarted"
    line = f"token stream {origin} ({kind}): {len(mine)} steps, outputs identical to the reference: {same}; "
    if kind == "survivor":
        line += f"first step done {first:.2f} s after the kill (steps {min(s for s, r in mine.items() if float(r['done_unix_s']) > killed_at)}+)"
    else:
        line += (f"joined at step {min(mine)} ({start - killed_at:.2f} s after the kill), first pairs computed "
                 f"{(min(loaded) - start) if loaded else float('nan'):.2f} s after its first step")
    print(line)
PY
grep -h "migration to epoch" "$out"/w?.log | head -3 | sed 's/^/  /'
