"""switchyard.AdminClient against a real switchyard-coordinator with a 3-rank worker job."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

import switchyard
from conftest import BUILD, REPO, run_mpi

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("coordinator")
    (d / "token").write_text(TOKEN + "\n")
    os.chmod(d / "token", 0o600)
    coordinator = subprocess.Popen(
        [str(BUILD / "coordinator" / "switchyard-coordinator"), "--listen", "127.0.0.1:0", "--port-file", str(d / "port"),
         "--state-dir", str(d / "state"), "--auth-token-file", str(d / "token")],
        stdout=subprocess.DEVNULL, stderr=open(d / "coordinator.log", "w"))
    try:
        deadline = time.time() + 30
        while not (d / "port").exists() or not (d / "port").read_text().strip():
            assert coordinator.poll() is None, (d / "coordinator.log").read_text()
            assert time.time() < deadline, "the coordinator wrote no port file in 30 s"
            time.sleep(0.05)
        address = f"127.0.0.1:{(d / 'port').read_text().split()[0]}"
        job = run_mpi(3, [BUILD / "worker" / "switchyard-worker", "--model", "preset:deepseek-v3", "--scale", "0.0625",
                          "--layers", 2, "--slots-per-rank", 200, "--tokens-per-rank", 32, "--steps", 12, "--window-steps", 4, "--threads", 1,
                          "--workload", f"trace:{REPO / 'data' / 'traces' / 'deepseek_v3_sglang_decode_in1000out1000.csv'}",
                          "--coordinator", address, "--coordinator-token-file", d / "token", "--log-every", 0])
        assert job.returncode == 0, job.stdout + job.stderr
        yield address
    finally:
        coordinator.send_signal(signal.SIGTERM)
        try:
            coordinator.wait(timeout=20)
        except subprocess.TimeoutExpired:
            coordinator.kill()
            coordinator.wait()


def test_reads(cluster):
    admin = switchyard.AdminClient(cluster)
    status = admin.status()
    assert status["ranks"] == 3 and status["registered"] == 3
    assert isinstance(status["step"], int) and status["step"] >= 11  # int64 fields are Python ints
    assert status["layers"] == [3, 4] and len(status["layer_balancedness"]) == 2
    assert {w["rank"] for w in status["workers"]} == {0, 1, 2}
    placement = admin.placement()
    assert placement["ranks"] == 3 and placement["experts"] == 256 and len(placement["layers"]) == 2
    assert len(admin.placement(layer=4)["layers"]) == 1
    committed = admin.committed_placement()
    assert (committed.ranks, committed.experts, committed.layers) == (3, 256, [3, 4])
    loads = np.asarray([layer["smoothed"] for layer in admin.load()["layers"]])
    replanned = switchyard.plan(loads, 3, 200, current=committed, layers=committed.layers, max_moves=10)
    assert replanned.moved_replicas(committed) <= 10
    load = admin.load(layer=3)
    assert load["windows"] >= 2 and len(load["layers"][0]["smoothed"]) == 256
    policy = admin.policy()
    assert isinstance(policy["auto_rebalance"], bool) and policy["planner"]
    kinds = {e["kind"] for e in admin.events()}
    assert "worker_joined" in kinds
    assert admin.events(after_seq=10**9) == []


def test_changes_need_the_token(cluster):
    anonymous = switchyard.AdminClient(cluster)
    with pytest.raises(PermissionError) as e:
        anonymous.pin(expert=3, rank=1, layer=3)
    assert "Bearer" in str(e.value)
    admin = switchyard.AdminClient(cluster, token=TOKEN)
    plan = admin.rebalance(dry_run=True)
    assert plan["applied"] is False and plan["placement"]["ranks"] == 3
    assert admin.pin(expert=3, rank=1, layer=3)["pins"] == [{"layer": 3, "expert": 3, "rank": 1}]
    assert admin.unpin(expert=3, rank=1, layer=3)["pins"] == []
    assert admin.drain(1)["drained_ranks"] == [1]
    assert admin.undrain(1)["drained_ranks"] == []
    changed = admin.policy(min_gain=0.2, auto_rebalance=False)
    assert changed["min_gain"] == pytest.approx(0.2) and changed["auto_rebalance"] is False
    assert admin.policy()["min_gain"] == pytest.approx(0.2)


def test_bad_requests_are_named(cluster):
    admin = switchyard.AdminClient(cluster, token=TOKEN)
    with pytest.raises(ValueError) as e:
        admin.placement(layer=99)
    assert "99" in str(e.value)
    with pytest.raises(ValueError):
        admin.pin(expert=999, rank=0, layer=3)
    with pytest.raises(ValueError) as e:
        admin.policy(no_such_setting=1)
    assert "no_such_setting" in str(e.value)
    with pytest.raises(ValueError):
        admin.drain(7)
    admin.drain(1)
    with pytest.raises(RuntimeError) as e:  # two drained ranks leave too few slots
        admin.drain(2)
    assert "cannot hold 256 experts" in str(e.value)
    assert admin.undrain(1)["drained_ranks"] == []
    with pytest.raises(ValueError):
        switchyard.AdminClient("")


def test_bad_client_arguments_are_named(tmp_path):
    for kwargs, error, message in [
        (dict(address="127.0.0.1:99999"), ValueError, "port in 1..65535"),
        (dict(address="nohost"), ValueError, "HOST:PORT"),
        (dict(address="127.0.0.1:7070", token="a\nb"), ValueError, "token: the token has byte 0x0a at position 1"),
        (dict(address="127.0.0.1:7070", token="caf\u00e9"), ValueError, "printable ASCII"),
        (dict(address="127.0.0.1:7070", timeout=0), ValueError, "timeout"),
        (dict(address="127.0.0.1:7070", tls_ca=str(tmp_path / "ca.pem")), FileNotFoundError, "tls_ca"),
    ]:
        with pytest.raises(error) as e:
            switchyard.AdminClient(**kwargs)
        assert message in str(e.value), (kwargs, str(e.value))
    admin = switchyard.AdminClient("127.0.0.1:7070")
    for call, error, message in [(lambda: admin.placement(layer=-2), ValueError, "layer: -2"),
                                 (lambda: admin.pin(2**40, 0), ValueError, "expert"),
                                 (lambda: admin.events(after_seq=-1), ValueError, "after_seq"),
                                 (lambda: admin.policy(**{"a=b": 1}), ValueError, "'a=b' is not a policy field")]:
        with pytest.raises(error) as e:
            call()
        assert message in str(e.value)


def test_an_unreachable_coordinator_is_a_connection_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    admin = switchyard.AdminClient(f"127.0.0.1:{port}", timeout=2)
    # every call, including those that raise with the GIL released (policy reads, then writes)
    for call in (admin.status, admin.policy, lambda: admin.policy(min_gain=0.1), admin.events, lambda: admin.pin(1, 0)):
        with pytest.raises((ConnectionError, TimeoutError)) as e:
            call()
        assert str(port) in str(e.value)
