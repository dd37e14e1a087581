#!/usr/bin/env bash
# The main job: installs the dependencies, builds, and runs a 4-rank local cluster under mpirun:
# DeepSeek-V3's MoE layers (hidden and FFN sizes scaled 1/16, all 256 experts, top-8 routing
# with groups) driven by DeepSeek-V3's measured decode expert load. First with the static
# contiguous placement of plain expert parallelism (skewed: look at the worst-layer
# balancedness and p99), then with the placement Switchyard's planner makes for that load.
# Both runs produce the same output checksum: placement never changes the results.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export OMPI_MCA_mpi_yield_when_idle=1 UCX_NET_DEVICES=lo
run() {
  mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl_tcp_if_include lo \
    --mca oob_tcp_if_include lo -x UCX_NET_DEVICES build/worker/switchyard-worker \
    --model preset:deepseek-v3 --scale 0.0625 --backend ucx \
    --workload trace:data/traces/deepseek_v3_sglang_decode_in1000out1000.csv \
    --tokens-per-rank 256 --steps 60 --layers 4 --log-every 20 "$@"
}
echo
echo "== static contiguous placement (plain expert parallelism) =="
run --policy contiguous --report build/report_static.json
echo
echo "== Switchyard's incremental planner, one spare slot per rank =="
run --policy incremental --report build/report_switchyard.json
