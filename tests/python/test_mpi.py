"""MoeLayer across ranks under mpirun: the example block against plain PyTorch, and Python's
MoeLayer against the C++ worker on the same weights and inputs (identical outputs)."""
from __future__ import annotations

import json
import re

import pytest

from conftest import BUILD, REPO, python_cmd, run_mpi

HERE = REPO / "tests" / "python"


@pytest.mark.parametrize("comm,dtype", [("mpi", "float32"), ("ucx", "float32"), ("mpi", "bfloat16")])
def test_example_block_matches_plain_pytorch_on_two_ranks(comm, dtype):
    out = run_mpi(2, python_cmd() + [REPO / "examples" / "python" / "moe_block.py", "--comm", comm, "--dtype", dtype])
    assert out.returncode == 0, out.stdout + out.stderr
    errors = [float(x) for x in re.findall(r"max relative error vs plain PyTorch (\S+)", out.stdout)]
    assert len(errors) == 2, out.stdout
    assert max(errors) <= (1e-5 if dtype == "float32" else 2e-2)
    assert "rank 0/2" in out.stdout and "rank 1/2" in out.stdout


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_python_layers_give_the_workers_outputs(tmp_path, dtype):
    model, scale, layers, tokens, steps, seed = "preset:deepseek-v3", "0.0625", 2, 16, 3, 5
    workload = f"trace:{REPO / 'data' / 'traces' / 'deepseek_v3_sglang_decode_in1000out1000.csv'}"
    report = tmp_path / "report.json"
    worker = run_mpi(2, [BUILD / "worker" / "switchyard-worker", "--model", model, "--scale", scale, "--layers", layers,
                         "--tokens-per-rank", tokens, "--steps", steps, "--seed", seed, "--workload", workload,
                         "--weight-type", dtype, "--threads", 1, "--report", report, "--log-every", 0])
    assert worker.returncode == 0, worker.stdout + worker.stderr
    r = json.loads(report.read_text())
    assert (r["experts"], r["top_k"]) == (256, 8)
    ours = run_mpi(2, python_cmd() + [HERE / "worker_identity.py", model, scale, layers, tokens, steps, seed, workload, dtype])
    assert ours.returncode == 0, ours.stdout + ours.stderr
    parts = [int(x) for x in re.findall(r"checksum (\d+)", ours.stdout)]
    assert len(parts) == 2, ours.stdout
    assert f"{sum(parts) % 2**64:016x}" == r["output_checksum"]


def test_example_under_torchruns_environment():
    """torchrun's workers (RANK, WORLD_SIZE, LOCAL_*, TORCHELASTIC_RUN_ID; siblings of one agent
    process) meet over UCX with no MPI launcher. Debian's torchrun 1.13 fails on Python 3.11
    before starting any worker, so this starts the workers the way its agent does."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "SLURM_"))}
    env.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", TORCHELASTIC_RUN_ID=f"pytest{os.getpid()}", MASTER_ADDR="127.0.0.1",
               MASTER_PORT="29500")
    workers = [subprocess.Popen(python_cmd() + [str(REPO / "examples" / "python" / "moe_block.py"), "--comm", "ucx"],
                                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = []
    try:
        for w in workers:
            outputs.append(w.communicate(timeout=180)[0])
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert "rank 0/2" in outputs[0] and "rank 1/2" in outputs[1]


def test_nccl_backend_without_a_gpu_exits_2():
    """No GPU: one clear line and exit 2, alone and under mpirun, before any peer is sought."""
    import os
    import subprocess

    if os.path.exists("/dev/nvidia0"):
        pytest.skip("this machine has a GPU: the no-GPU refusal under test cannot happen here")
    worker = BUILD / "worker" / "switchyard-worker"
    args = ["--model", "preset:deepseek-v3", "--scale", "0.0625", "--backend", "nccl", "--steps", "2", "--workload", "uniform"]
    alone = subprocess.run([str(worker), *args], capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and alone.stderr.strip() == "switchyard-worker: nccl backend: no usable GPU on this machine", alone.stderr
    under = run_mpi(2, [worker, *args])
    assert under.returncode != 0 and under.stderr.count("nccl backend: no usable GPU on this machine") == 2
    # The layers on the GPU: refused the same way, naming the flag; an unknown device by name.
    cuda = subprocess.run([str(worker), *args, "--device", "cuda", "--weight-type", "bf16"], capture_output=True, text=True,
                          timeout=60)
    lines = cuda.stderr.strip().splitlines()
    assert cuda.returncode == 2 and len(lines) == 1, cuda.stderr
    assert lines[0].startswith("switchyard-worker: --device cuda: ") and ("no usable GPU" in lines[0] or "no CUDA" in lines[0]), lines
    unknown = subprocess.run([str(worker), *args[:-4], "--device", "gpu"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and unknown.stderr.strip() == "switchyard-worker: unknown device 'gpu' (cpu or cuda)", unknown.stderr
