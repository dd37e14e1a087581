"""switchyard.MoeLayer in one process (an MPI singleton): shapes, dtypes, devices, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import switchyard
from conftest import write_config


@pytest.fixture(scope="module")
def layer():
    return switchyard.MoeLayer("deepseek-v3", 3, comm="mpi", scale=0.0625, threads=1)


def inputs(layer, tokens, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(tokens, layer.hidden_size, generator=g).to(dtype),
            torch.randn(tokens, layer.num_experts, generator=g))


def test_a_module_with_the_models_shape(layer):
    assert isinstance(layer, torch.nn.Module)
    assert (layer.rank, layer.world_size) == (0, 1)
    assert (layer.hidden_size, layer.num_experts, layer.top_k) == (448, 256, 8)
    assert layer.model["model_type"] == "deepseek_v3" and layer.model["experts"] == 256
    assert layer.placement.layers == [3] and layer.placement.ranks == 1
    assert "experts=256" in repr(layer)


def test_float32_bfloat16_and_numpy(layer):
    h, logits = inputs(layer, 24)
    out = layer(h, logits)
    assert out.shape == h.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(layer(h, logits), out)  # deterministic
    # numpy in, numpy out: the same bits
    np_out = layer(h.numpy(), logits.numpy())
    assert isinstance(np_out, np.ndarray) and np.array_equal(np_out, out.numpy())
    # a non-contiguous view is copied, not misread
    wide = torch.cat([h, h], dim=1)[:, ::2]
    assert not wide.is_contiguous()
    assert torch.equal(layer(wide, logits), layer(wide.contiguous(), logits))
    # bf16: the same as widening, computing in fp32 and rounding once
    hb = h.to(torch.bfloat16)
    outb = layer(hb, logits)
    assert outb.dtype == torch.bfloat16
    assert torch.equal(outb, layer(hb.float(), logits).to(torch.bfloat16))
    # float16/bfloat16 logits are converted
    assert torch.equal(layer(h, logits.to(torch.bfloat16)), layer(h, logits.to(torch.bfloat16).float()))
    # zero tokens
    assert layer(h[:0], logits[:0]).shape == (0, layer.hidden_size)


def test_counts_are_the_gates_choices(layer):
    layer.take_counts()
    h, logits = inputs(layer, 10, seed=3)
    layer(h, logits)
    counts = layer.take_counts()
    assert sum(counts["chosen"]) == 10 * layer.top_k == sum(counts["processed"])
    assert len(counts["chosen"]) == 256


@pytest.mark.parametrize("make,error,message", [
    (lambda L: (torch.zeros(4, 7), torch.zeros(4, 256)), ValueError, "hidden: expected shape [tokens, 448], got [4, 7]"),
    (lambda L: (torch.zeros(4, 448), torch.zeros(4, 255)), ValueError, "router_logits: expected shape [tokens, 256]"),
    (lambda L: (torch.zeros(4, 448), torch.zeros(5, 256)), ValueError, "router_logits has 5 tokens, hidden has 4"),
    (lambda L: (torch.zeros(448), torch.zeros(4, 256)), ValueError, "hidden: expected shape"),
    (lambda L: (torch.zeros(4, 448, dtype=torch.float64), torch.zeros(4, 256)), TypeError, "torch.float64 is not supported"),
    (lambda L: (torch.zeros(4, 448, dtype=torch.int32), torch.zeros(4, 256)), TypeError, "not supported"),
    (lambda L: (torch.zeros(4, 448), torch.zeros(4, 256, dtype=torch.int64)), TypeError, "not a float dtype"),
    (lambda L: (torch.zeros(4, 448, device="meta"), torch.zeros(4, 256)), ValueError, "on meta"),
    (lambda L: (torch.zeros(4, 448), np.zeros((4, 256), np.float32)), TypeError, "expected a torch.Tensor"),
    (lambda L: ([[0.0] * 448], torch.zeros(1, 256)), TypeError, "hidden: expected a torch.Tensor or numpy.ndarray"),
    (lambda L: (np.zeros((4, 448)), np.zeros((4, 256))), TypeError, "float64 is not supported"),
    (lambda L: (torch.zeros(4, 448), torch.full((4, 256), float("nan"))), ValueError, "router_logits[0, 0] is nan"),
    (lambda L: (torch.zeros(4, 448), torch.zeros(4, 256).index_fill_(1, torch.tensor([3]), float("inf"))), ValueError,
     "router_logits[0, 3] is inf (logits must be finite)"),
])
def test_bad_inputs_are_named(layer, make, error, message):
    h, logits = make(layer)
    with pytest.raises(error) as e:
        layer(h, logits)
    assert message in str(e.value)


def test_bad_constructions_are_named(tmp_path):
    cases = [
        (dict(model="deepseek-v3", layer=0), ValueError, "layer 0 is not a MoE layer"),
        (dict(model="deepseek-v3", layer=3, comm="nccl"), ValueError, "comm: expected 'mpi' or 'ucx'"),
        (dict(model="gpt-5", layer=0), ValueError, "unknown model preset 'gpt-5'"),
        (dict(model="deepseek-v3", layer=3, scale=2.0), ValueError, "scale: 2.0 is out of range (0, 1]"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, weight_type="fp8"), ValueError, "weight_type 'fp8'"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, shares="all"), ValueError, "shares 'all'"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, weights=str(tmp_path / "none")), FileNotFoundError,
         "weights: " + str(tmp_path / "none") + " does not exist"),
        (dict(model="deepseek-v3", layer="3"), TypeError, "layer: expected an int"),
        (dict(model="deepseek-v3", layer=3, scale=0.0), ValueError, "scale: 0.0 is out of range (0, 1]"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, seed=-1), ValueError, "seed: -1 is out of range"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, threads=1.5), TypeError, "threads: expected an int"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, threads=2**31), ValueError, "threads"),
        (dict(model="deepseek-v3", layer=2**40), ValueError, "layer: 1099511627776 is out of range"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, placement=123), TypeError, "placement: expected a path"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, timeout=0), ValueError, "timeout"),
        (dict(model=str(tmp_path / "nope" / "config.json"), layer=0), FileNotFoundError, "model: "),
        (dict(model="deepseek-v3", layer=3, scale=0.0625,
              placement=switchyard.plan(np.ones((1, 256)), 2, 128, layers=[3])), ValueError, "it is for 2 ranks"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625,
              placement=switchyard.plan(np.ones((1, 256)), 1, 256, layers=[4])), ValueError, "no layer 3"),
        (dict(model="deepseek-v3", layer=3, scale=0.0625, placement=str(tmp_path / "missing.json")), FileNotFoundError,
         "placement: "),
    ]
    write_config(tmp_path, {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2})
    cases.append((dict(model=str(tmp_path), layer=0), ValueError, "model_type 'llama' is not a supported MoE model"))
    for kwargs, error, message in cases:
        with pytest.raises(error) as e:
            switchyard.MoeLayer(**kwargs)
        assert message in str(e.value), (kwargs, str(e.value))


def test_a_placement_with_replicas_gives_the_same_outputs(layer):
    h, logits = inputs(layer, 32, seed=5)
    want = layer(h, logits)
    loads = np.random.default_rng(0).integers(1, 100, size=(1, 256))
    replicated = switchyard.plan(loads, 1, 256, layers=[3])
    other = switchyard.MoeLayer("deepseek-v3", 3, comm="mpi", scale=0.0625, placement=replicated, shares="epoch")
    assert torch.equal(other(h, logits), want)


def test_model_info_and_presets():
    presets = switchyard.model_presets()
    with pytest.raises(ValueError) as e:
        switchyard.model_info("deepseek-v3", scale=0)
    assert "scale:" in str(e.value) and "--scale" not in str(e.value)
    for name in ("glm-5", "glm-4.5", "qwen3.5-397b-a17b", "minimax-m2", "kimi-k2", "gpt-oss-120b"):
        assert name in presets
    info = switchyard.model_info("kimi-k2")
    assert (info["experts"], info["top_k"], info["moe_layers"][0]) == (384, 8, 1)
    assert json.dumps(info)  # plain Python values


def run_python(code: str, env_extra: dict, timeout: float = 120):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def test_a_missing_peer_times_out_after_timeout(tmp_path):
    """UCX under a launcher without MPI: the address exchange waits `timeout`, not a default."""
    import time

    start = time.monotonic()
    r = run_python(
        "import switchyard\n"
        "try:\n"
        f"    switchyard.MoeLayer('mixtral-8x7b', 0, comm='ucx', scale=0.004, timeout=3, rendezvous_dir={str(tmp_path)!r})\n"
        "except TimeoutError as e:\n"
        "    print('TimeoutError', e)\n",
        {"SWITCHYARD_RANK": "0", "SWITCHYARD_SIZE": "2"})
    elapsed = time.monotonic() - start
    assert "TimeoutError" in r.stdout and "ranks {1}" in r.stdout, r.stdout + r.stderr
    assert elapsed < 30, elapsed


def test_weights_that_do_not_fit_are_a_memory_error(tmp_path):
    """An allocation failure raises MemoryError (no crash), here under a 3 GiB address-space limit."""
    write_config(tmp_path, {"model_type": "mixtral", "hidden_size": 16384, "num_hidden_layers": 1,
                            "num_experts_per_tok": 2, "num_local_experts": 8, "intermediate_size": 65536})
    r = run_python(
        "import resource, switchyard\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "try:\n"
        f"    switchyard.MoeLayer({str(tmp_path)!r}, 0)\n"
        "except MemoryError as e:\n"
        "    print('MemoryError', e)\n", {})
    assert r.returncode == 0 and "MemoryError" in r.stdout, r.stdout + r.stderr[-2000:]
