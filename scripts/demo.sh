#!/usr/bin/env bash
# The main job: installs the dependencies, builds, and plans expert placement for
# DeepSeek-V3's measured prefill load on 32 ranks x 9 slots (4 nodes), printing a summary
# against EPLB.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
trace=data/traces/deepseek_v3_sglang_prefill_in4096.csv
echo
echo "== EPLB (DeepSeek's reference) =="
build/cli/switchyard plan --loads "$trace" --ranks 32 --nodes 4 --slots-per-rank 9 \
  --policy eplb --format table | head -5
echo
echo "== Switchyard incremental, from scratch =="
build/cli/switchyard plan --loads "$trace" --ranks 32 --nodes 4 --slots-per-rank 9 \
  --out build/placement_prefill.json
echo
echo "== The load shifts to decode: incremental re-plan from that placement =="
build/cli/switchyard plan --loads data/traces/deepseek_v3_sglang_decode_in1000out1000.csv \
  --ranks 32 --nodes 4 --slots-per-rank 9 --current build/placement_prefill.json \
  --out build/placement_decode.json
