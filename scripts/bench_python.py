#!/usr/bin/env python3
"""The Python binding's call overhead: switchyard.plan's wall time vs the planner's own time
(the same work `switchyard plan` times as plan_ms), on the shared DeepSeek-V3 traces
(58 layers x 256 experts) for 64 ranks. Medians of --repeat calls; prints one JSON line per case.

    PYTHONPATH=build/python /usr/bin/python3 scripts/bench_python.py [--repeat 30]
"""
import argparse
import json
import pathlib
import platform
import statistics
import time

import switchyard
from switchyard.placement import _plan_timed

REPO = pathlib.Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    decode, layers = switchyard.read_load_csv(REPO / "data/traces/deepseek_v3_sglang_decode_in1000out1000.csv")
    prefill, _ = switchyard.read_load_csv(REPO / "data/traces/deepseek_v3_sglang_prefill_in4096.csv")
    start = switchyard.plan(prefill, 64, 5, policy="eplb", layers=layers)
    cases = [("incremental, from scratch", dict(loads=decode)), ("eplb, from scratch", dict(loads=decode, policy="eplb")),
             ("incremental, re-plan from a prefill placement", dict(loads=decode, current=start))]
    for name, kw in cases:
        walls, inner = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            _, seconds = _plan_timed(ranks=64, slots_per_rank=5, layers=layers, **kw)
            walls.append(time.perf_counter() - t0)
            inner.append(seconds)
        wall, plan = statistics.median(walls), statistics.median(inner)
        print(json.dumps({"case": name, "shape": "58x256 on 64 ranks x 5 slots", "cpu": cpu_model(),
                          "python_ms": round(wall * 1e3, 3), "planner_ms": round(plan * 1e3, 3),
                          "overhead_ms": round((wall - plan) * 1e3, 3), "overhead_fraction": round((wall - plan) / plan, 4)}))


if __name__ == "__main__":
    main()
