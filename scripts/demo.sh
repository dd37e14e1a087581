#!/usr/bin/env bash
# The main job: installs the dependencies, builds, and runs a 4-rank local cluster under mpirun:
# DeepSeek-V3's MoE layers (hidden and FFN sizes scaled 1/16, all 256 experts, top-8 routing
# with groups) driven by DeepSeek-V3's measured prefill expert load, with a coordinator inside
# rank 0. Both runs start from the contiguous placement of plain expert parallelism (2 spare
# slots per rank). First with rebalancing off (skewed: look at the worst-layer balancedness
# and the critical path), then on: the coordinator plans from the load reports, the ranks copy
# the new replicas in the background and switch epochs together, and the balancedness rises
# within a few steps. Both runs produce the same output checksum: placement and migration
# never change the results.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export OMPI_MCA_mpi_yield_when_idle=1 UCX_NET_DEVICES=lo
run() {
  mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl_tcp_if_include lo \
    --mca oob_tcp_if_include lo -x UCX_NET_DEVICES build/worker/switchyard-worker \
    --model preset:deepseek-v3 --scale 0.0625 --backend mpi \
    --workload trace:data/traces/deepseek_v3_sglang_prefill_in4096.csv \
    --tokens-per-rank 256 --steps 60 --layers 4 --log-every 10 \
    --policy contiguous --slots-per-rank 66 --coordinator embedded "$@"
}
echo
echo "== contiguous placement, rebalancing off (plain expert parallelism) =="
run --rebalance off --report build/report_static.json
echo
echo "== contiguous placement, live rebalancing on =="
run --rebalance on --report build/report_rebalanced.json
