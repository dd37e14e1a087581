"""switchyard.plan and Placement: the CLI's placements bit for bit, scores, JSON, bad input."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

import switchyard
from conftest import BUILD, TRACES

CLI = BUILD / "cli" / "switchyard"
DECODE = TRACES / "deepseek_v3_sglang_decode_in1000out1000.csv"
PREFILL = TRACES / "deepseek_v3_sglang_prefill_in4096.csv"


def cli_plan(*args) -> switchyard.Placement:
    out = subprocess.run([str(CLI), "plan", *map(str, args)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return switchyard.Placement.from_json(out.stdout)


@pytest.mark.parametrize("trace", [DECODE, PREFILL], ids=["decode", "prefill"])
@pytest.mark.parametrize("policy,ranks,slots,nodes,groups", [("incremental", 64, 5, 1, 1), ("eplb", 64, 5, 8, 8),
                                                             ("incremental", 32, 9, 4, 1)])
def test_plan_matches_the_cli_bit_for_bit(trace, policy, ranks, slots, nodes, groups):
    loads, layers = switchyard.read_load_csv(trace)
    assert loads.shape == (58, 256) and layers == list(range(3, 61))
    ours = switchyard.plan(loads, ranks, slots, nodes=nodes, policy=policy, layers=layers, groups=groups)
    theirs = cli_plan("--loads", trace, "--ranks", ranks, "--slots-per-rank", slots, "--nodes", nodes, "--policy", policy,
                      "--groups", groups)
    assert ours == theirs
    assert json.loads(ours.to_json())["layers"] == json.loads(theirs.to_json())["layers"]


def test_replanning_from_a_current_placement_matches_the_cli(tmp_path):
    decode, layers = switchyard.read_load_csv(DECODE)
    prefill, _ = switchyard.read_load_csv(PREFILL)
    start = switchyard.plan(prefill, 64, 5, policy="eplb", layers=layers)
    (tmp_path / "start.json").write_text(start.to_json())
    for budget in (None, 0, 25):
        ours = switchyard.plan(decode, 64, 5, current=start, max_moves=budget, layers=layers)
        args = ["--loads", DECODE, "--ranks", 64, "--slots-per-rank", 5, "--current", tmp_path / "start.json"]
        if budget is not None:
            args += ["--max-moves", budget]
        assert ours == cli_plan(*args)
        moved = ours.moved_replicas(start)
        if budget is not None:
            assert moved <= budget
        if budget == 0:  # the same replicas (their shares may be re-solved)
            assert moved == 0 and ours.replicas(3) != [] and [[e for e, _ in r] for r in ours.replicas(3)] == \
                [[e for e, _ in r] for r in start.replicas(3)]
    # The re-plan improves the decode balance over the prefill-planned start.
    replanned = switchyard.plan(decode, 64, 5, current=start, layers=layers)
    assert replanned.balancedness(decode).min > start.balancedness(decode).min


def test_placement_api(rng):
    loads = rng.integers(0, 1000, size=(3, 16)).astype(np.float64)
    p = switchyard.plan(loads, 4, 5, policy="eplb")
    assert (p.ranks, p.slots_per_rank, p.nodes, p.experts, p.layers) == (4, 5, 1, 16, [0, 1, 2])
    assert p.total_replicas == 3 * 20
    score = p.balancedness(loads)
    assert 0 < score.min <= score.mean <= 1 and len(score.per_layer) == 3
    replicas = p.replicas(1)
    assert len(replicas) == 4 and all(len(r) <= 5 for r in replicas)
    held = sorted({e for rank in replicas for e, _ in rank})
    assert held == list(range(16))
    for e in range(16):
        assert sum(s for rank in replicas for x, s in rank if x == e) == pytest.approx(1.0)
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(p)) == p and copy.deepcopy(p) == p
    assert repr(p) == "Placement(ranks=4, nodes=1, slots_per_rank=5, experts=16, layers=3)"
    again = switchyard.Placement.from_json(p.to_json())
    assert again == p and again.moved_replicas(p) == 0
    # torch tensors, integer dtypes and nested lists are the same loads
    assert switchyard.plan(torch.tensor(loads, dtype=torch.int64), 4, 5, policy="eplb") == p
    assert switchyard.plan(loads.tolist(), 4, 5, policy="eplb") == p
    assert switchyard.plan(loads.astype(np.float32), 4, 5, policy="eplb") == p
    assert switchyard.plan(torch.tensor(loads).to(torch.bfloat16).double(), 4, 5, policy="eplb") == \
        switchyard.plan(torch.tensor(loads).to(torch.bfloat16), 4, 5, policy="eplb")  # any real torch dtype


@pytest.mark.parametrize("call,error,message", [
    (lambda l: switchyard.plan(l[0], 4, 5), ValueError, "2-D array"),
    (lambda l: switchyard.plan(l[None], 4, 5), ValueError, "2-D array"),
    (lambda l: switchyard.plan(np.where(l == l[0, 0], np.nan, l), 4, 5), ValueError, "load nan"),
    (lambda l: switchyard.plan(-l, 4, 5), ValueError, ""),
    (lambda l: switchyard.plan(l, 4, 3), ValueError, "slots"),
    (lambda l: switchyard.plan(l, 4.5, 5), TypeError, "ranks: expected an int"),
    (lambda l: switchyard.plan(l, 4, 5, nodes=3), ValueError, "nodes"),
    (lambda l: switchyard.plan(l, 4, 5, policy="magic"), ValueError, "magic"),
    (lambda l: switchyard.plan(l, 4, 5, layers=[0, 1]), ValueError, "2 layer ids for 3 rows"),
    (lambda l: switchyard.plan(l, 4, 5, max_moves=-2), ValueError, "max_moves"),
    (lambda l: switchyard.plan(l, 4, 5, current="p.json"), TypeError, "current"),
    (lambda l: switchyard.plan(l, 4, 5, current=switchyard.plan(l, 8, 5)), ValueError, ""),
    (lambda l: switchyard.plan("loads", 4, 5), TypeError, "array-like"),
    (lambda l: switchyard.Placement.from_json("{"), ValueError, "placement JSON"),
    (lambda l: switchyard.Placement.from_json('{"format": "switchyard.placement/v1"}'), ValueError, ""),
    (lambda l: switchyard.plan(l, 4, 5).moved_replicas(switchyard.plan(l, 8, 5)), ValueError, "differ"),
    (lambda l: switchyard.plan(l, 4, 5).replicas(7), ValueError, "no layer 7"),
    (lambda l: switchyard.plan(l, 4, 5).balancedness(l[:, :8]), ValueError, ""),
    (lambda l: switchyard.read_load_csv("/nonexistent.csv"), FileNotFoundError, "path: /nonexistent.csv does not exist"),
    (lambda l: switchyard.plan(l, 4, 5, min_gain_per_move="x"), TypeError, "min_gain_per_move: expected a number"),
    (lambda l: switchyard.plan(l, 4, 5, layers=[-1, 0, 1]), ValueError, "layers[0]: -1 is out of range"),
    (lambda l: switchyard.plan(l, 4, 5, layers=[0.5, 1, 2]), TypeError, "layers[0]: expected an int"),
    (lambda l: switchyard.plan(l, 4, 5, layers="012"), TypeError, "layers: expected a sequence"),
    (lambda l: switchyard.plan(l, 2**31, 5), ValueError, "ranks: 2147483648 is out of range"),
    (lambda l: switchyard.plan(l, 4, 5, groups=2**40), ValueError, "groups"),
    (lambda l: switchyard.plan(l + 1j, 4, 5), TypeError, "complex"),
    (lambda l: switchyard.plan(None, 4, 5), TypeError, "loads"),
    (lambda l: switchyard.plan(np.ones((1, 70000)), 64, 2048), ValueError, "70000 experts per layer, at most 65536"),
])
def test_bad_inputs_raise_clear_errors(rng, call, error, message):
    loads = rng.integers(1, 1000, size=(3, 16)).astype(np.float64)
    with pytest.raises(error) as e:
        call(loads)
    assert message in str(e.value)
