"""Seeing the cluster: the coordinator's metrics endpoint under load and slow clients, the
dashboard's JSON/SVG API and page (in headless Chromium), `switchyard report`, the Grafana
dashboard's queries, and `rebalance --wait` / `drain --wait` ending on commit and on abort.
Real coordinators and mpirun worker jobs on 127.0.0.1; every process is stopped."""
from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import BUILD, MPIRUN, REPO, mpi_env

CLI = str(BUILD / "cli" / "switchyard")
TOKEN = "observability-test-token"
TRACE = REPO / "data" / "traces" / "deepseek_v3_sglang_prefill_in4096.csv"


class Coordinator:
    def __init__(self, directory):
        self.dir = directory
        (directory / "token").write_text(TOKEN + "\n")
        os.chmod(directory / "token", 0o600)
        self.log = open(directory / "coordinator.log", "w")
        self.proc = subprocess.Popen(
            [str(BUILD / "coordinator" / "switchyard-coordinator"), "--listen", "127.0.0.1:0", "--metrics-port", "0",
             "--port-file", str(directory / "port"), "--state-dir", str(directory / "state"), "--auth-token-file",
             str(directory / "token")], stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 30
        while True:
            text = (directory / "port").read_text() if (directory / "port").exists() else ""
            if len(text.split()) == 2:
                break
            assert self.proc.poll() is None, (directory / "coordinator.log").read_text()
            assert time.time() < deadline, "no port file in 30 s"
            time.sleep(0.05)
        grpc_port, metrics_port = text.split()
        self.address = f"127.0.0.1:{grpc_port}"
        self.http = f"http://127.0.0.1:{metrics_port}"
        self.metrics_port = int(metrics_port)

    def get(self, path, timeout=10):
        with urllib.request.urlopen(self.http + path, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()

    def cli(self, *args, timeout=240):
        return subprocess.run([CLI, *map(str, args), "--coordinator", self.address, "--token-file", str(self.dir / "token")],
                              capture_output=True, text=True, timeout=timeout)

    def status(self):
        return json.loads(self.get("/api/status")[2])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Job:
    """A 4-rank worker job under mpirun in the background, rebalancing on."""

    def __init__(self, coordinator, directory, steps, extra=(), env_extra=None):
        env = mpi_env()
        env.update(env_extra or {})
        self.report = directory / f"report-{time.monotonic_ns()}.json"
        self.out = open(directory / "job.log", "a")
        self.proc = subprocess.Popen(
            MPIRUN + ["-np", "4", str(BUILD / "worker" / "switchyard-worker"), "--model", "preset:deepseek-v3", "--scale",
                      "0.0625", "--layers", "3", "--slots-per-rank", "100", "--tokens-per-rank", "64", "--steps", str(steps),
                      "--threads", "1",
                      "--workload", f"trace:{TRACE}", "--coordinator", coordinator.address, "--coordinator-token-file",
                      str(coordinator.dir / "token"), "--rebalance", "on", "--window-steps", "4", "--log-every", "0",
                      "--report", str(self.report), *map(str, extra)],
            stdout=self.out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_for_windows(self, coordinator, windows=2, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None or self.proc.returncode == 0, "the job ended early"
            s = coordinator.status()
            if s["registered"] == 4 and int(s["windows"]) >= windows:
                return s
            time.sleep(0.2)
        raise AssertionError("the job reported no load windows in time")

    def end(self, timeout=120):
        """Ends the run early: SIGUSR1 to mpirun, which passes it to every rank (a SIGTERM
        would have mpirun kill them a second later); the ranks stop after the same step,
        rank 0 writes the report, and the job exits 0."""
        self.proc.send_signal(signal.SIGUSR1)
        assert self.proc.wait(timeout=timeout) == 0, (self.out.name, open(self.out.name).read()[-3000:])
        report = json.loads(self.report.read_text())
        assert report["stopped_early"] and report["tokens_conserved"], report
        return report

    def finish(self, timeout=300):
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.stop()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """A coordinator and a job that has committed two migrations (rebalance --wait, then drain
    --wait), ended then."""
    d = tmp_path_factory.mktemp("observed")
    c = Coordinator(d)
    job = None
    try:
        # 1 MiB per step: the migrations take tens of steps, so --wait sees them move.
        job = Job(c, d, steps=100000, extra=["--migration-bytes-per-step", 1 << 20])
        job.wait_for_windows(c)
        wait = c.cli("rebalance", "--wait")
        drain = c.cli("drain", "3", "--wait")
        deadline = time.time() + 120  # at least 100 steps (the metrics test counts them)
        while int(c.status()["step"]) < 100 and time.time() < deadline:
            time.sleep(0.2)
        job.end()
        yield c, job, (wait, drain)
    finally:
        if job:
            job.stop()
        c.stop()


def test_rebalance_and_drain_wait_end_on_commit(observed):
    c, job, (wait, drain) = observed
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert "drained ranks: 3" in drain.stdout
    assert re.search(r"^epoch 2 committed: 4/4 ranks run it", drain.stdout.splitlines()[-1], re.M), drain.stdout
    assert wait.returncode == 0, wait.stdout + wait.stderr
    lines = wait.stdout.splitlines()
    assert lines[0].startswith("published epoch 1:"), wait.stdout
    assert re.search(r"epoch 1: moving [\d.]+/[\d.]+ MiB \(\d+%\), \d+ replicas, 0/4 ranks committed", wait.stdout), wait.stdout
    assert re.search(r"^epoch 1 committed: 4/4 ranks run it", lines[-1]), wait.stdout
    assert "\r" not in wait.stdout  # not a terminal: plain lines
    assert int(c.status()["committed_epoch"]) == 2


def test_dashboard_api_shapes(observed):
    c, job, _ = observed
    status, kind, body = c.get("/api/status")
    s = json.loads(body)
    assert kind == "application/json" and s["ranks"] == 4 and s["layers"] == [3, 4, 5]
    assert {"committed_epoch", "target_epoch", "workers", "migration", "layer_balancedness"} <= set(s)
    assert TOKEN not in body
    load = json.loads(c.get("/api/load?layer=4")[2])
    assert (load["layer"], load["ranks"], load["experts"]) == (4, 4, 256)
    assert len(load["rank_expert"]) == 4 and all(len(row) == 256 for row in load["rank_expert"])
    assert sum(map(sum, load["rank_expert"])) > 0
    history = json.loads(c.get("/api/balancedness")[2])
    assert history["layers"] == [3, 4, 5] and len(history["samples"]) >= 2
    bad = [x for x in history["samples"] if len(x["values"]) != 3 or not all(0 <= v <= 1 for v in x["values"])]
    assert not bad, bad
    migrations = json.loads(c.get("/api/migrations")[2])
    assert [m["epoch"] for m in migrations] == [1, 2] and all(m["state"] == "committed" for m in migrations)
    assert migrations[0]["bytes"] > 0 and migrations[0]["done_bytes"] == migrations[0]["bytes"] and migrations[0]["seconds"] > 0
    events = json.loads(c.get("/api/events")[2])
    kinds = {e["kind"] for e in events}
    assert {"plan_published", "migration_started", "epoch_committed"} <= kinds
    assert json.loads(c.get(f"/api/events?after={events[-1]['seq']}")[2]) == []
    placement = json.loads(c.get("/api/placement?layer=3")[2])
    assert placement["ranks"] == 4 and len(placement["layers"]) == 1
    _, kind, svg = c.get("/api/plot/heatmap.svg?layer=3")
    assert kind == "image/svg+xml" and 'data-rows="4" data-cols="256"' in svg and svg.count('class="cell"') == 4 * 256
    _, _, svg = c.get("/api/plot/balancedness.svg?layer=5")
    assert 'data-series="3"' in svg
    _, _, svg = c.get("/api/plot/migrations.svg")
    assert 'data-spans="2"' in svg and svg.count('data-state="committed"') == 2
    for path, code, message in [("/api/load?layer=99", 404, "layer 99"), ("/api/load?layer=x", 400, "is not a layer id"),
                                ("/api/load", 400, "layer: required"), ("/api/events?after=-1", 400, "after"),
                                ("/nope", 404, "not found")]:
        with pytest.raises(urllib.error.HTTPError) as e:
            c.get(path)
        assert e.value.code == code and message in e.value.read().decode(), path
    request = urllib.request.Request(c.http + "/api/status", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 405 and e.value.headers["Allow"] == "GET, HEAD"
    with urllib.request.urlopen(urllib.request.Request(c.http + "/api/status", method="HEAD"), timeout=10) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) > 0 and r.read() == b""
    assert json.loads(c.get("/api/load?layer=%34")[2])["layer"] == 4  # percent-decoded


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    pytest.fail("no Chromium on PATH: scripts/setup.sh installs Debian's chromium")


def run_chromium(url, *extra, timeout=120):
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
            *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@functools.lru_cache(maxsize=None)
def chromium_starts():
    """Whether headless Chromium renders a trivial page on this machine (some containers
    forbid what it needs to start); the stderr tail when it does not."""
    r = run_chromium("data:text/html,<p id=probe>ok</p>", "--dump-dom", timeout=60)
    return ("", True) if "probe" in r.stdout else (r.stderr[-500:], False)


def headless(url, *extra, timeout=120):
    """Chromium on `url`. Skips only when Chromium cannot render even a trivial page here;
    once it can, any failure on our page is the page's and fails the test."""
    why, ok = chromium_starts()
    if not ok:
        pytest.skip(f"headless Chromium cannot start on this machine (a blank page fails too): {why}")
    return run_chromium(url, *extra, timeout=timeout)


def console_errors(stderr):
    return [line for line in stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def test_dashboard_renders_in_headless_chromium(observed, tmp_path):
    c, job, _ = observed
    r = headless(c.http + "/", "--virtual-time-budget=5000", "--dump-dom")
    dom = r.stdout
    assert re.search(r'data-ready="[1-9]\d*"', dom) and 'data-errors="0"' in dom, dom[:2000]
    assert not console_errors(r.stderr), console_errors(r.stderr)
    assert 'class="sy-chart sy-heatmap" data-kind="heatmap" id="heatmap" data-rows="4" data-cols="256"' in dom
    assert dom.count('class="cell"') == 4 * 256
    points = re.search(r'data-kind="line" id="balancedness" data-series="\d+" data-points="(\d+)"', dom)
    assert points and int(points.group(1)) > 0
    assert 'data-spans="2"' in dom and dom.count('data-state="committed"') == 2
    assert dom.count('<tr class="rank">') == 4
    assert "epoch_committed" in dom
    shot = tmp_path / "dashboard.png"
    r = headless(c.http + "/", "--virtual-time-budget=5000", "--window-size=1100,1600", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 20000, r.stderr[-1000:]


def scrape(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def test_slow_client_does_not_stall_100_concurrent_scrapes(observed):
    c, _, _ = observed
    stop = threading.Event()

    def slow_client():  # one byte every 1.5 s, as long as the test runs
        with socket.create_connection(("127.0.0.1", c.metrics_port), timeout=30) as s:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                if stop.wait(1.5):
                    return
                try:
                    s.send(bytes([byte]))
                except OSError:
                    return

    slow = threading.Thread(target=slow_client, daemon=True)
    slow.start()
    time.sleep(2)  # it holds a connection now
    try:
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
            results = list(pool.map(lambda _: scrape(c.http + "/metrics"), range(100)))
        elapsed = time.monotonic() - start
    finally:
        stop.set()
    assert all(code == 200 and b"switchyard_committed_epoch" in body for code, body in results)
    assert elapsed <= 2.0, f"100 concurrent scrapes took {elapsed:.2f} s with a slow client connected"


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_rss_is_stable_over_10000_scrapes(observed):
    c, _, _ = observed
    urls = [c.http + "/metrics"] * 9 + [c.http + "/api/status"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(scrape, urls * 100))  # warm up: 1,000
        before = rss_kib(c.proc.pid)
        list(pool.map(scrape, urls * 1000))  # 10,000
    after = rss_kib(c.proc.pid)
    assert after - before < 4096, f"RSS grew {after - before} KiB over 10,000 scrapes ({before} -> {after})"


def test_metrics_names_histograms_and_promtool(observed):
    c, _, _ = observed
    _, kind, text = c.get("/metrics")
    assert kind.startswith("text/plain; version=0.0.4")
    for name in ("switchyard_committed_epoch", "switchyard_layer_balancedness", "switchyard_migration_bytes_total",
                 "switchyard_last_migration_seconds", "switchyard_worker_up"):
        assert f"# TYPE {name} " in text
    steps = int(re.search(r"^switchyard_step_seconds_count (\d+)$", text, re.M).group(1))
    assert steps >= 100  # rank 0's step times, once each
    assert re.search(r'^switchyard_step_seconds_bucket\{le="\+Inf"\} %d$' % steps, text, re.M)
    assert re.search(r"^switchyard_migration_seconds_count 2$", text, re.M)
    intra = int(re.search(r'^switchyard_migration_link_bytes_total\{link="intra_node"\} (\d+)$', text, re.M).group(1))
    inter = int(re.search(r'^switchyard_migration_link_bytes_total\{link="inter_node"\} (\d+)$', text, re.M).group(1))
    assert intra > 0 and inter == 0  # one node
    assert int(re.search(r'^switchyard_alltoall_link_bytes_total\{link="intra_node"\} (\d+)$', text, re.M).group(1)) > 0
    promtool = shutil.which("promtool")
    assert promtool, "promtool not on PATH: scripts/setup.sh installs Debian's prometheus package"
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_grafana_dashboard_queries_exported_metrics(observed):
    c, _, _ = observed
    exported = set(re.findall(r"^# TYPE (\w+) (\w+)$", c.get("/metrics")[2], re.M))
    names = {n for n, _ in exported} | {f"{n}_bucket" for n, t in exported if t == "histogram"}
    dashboard = json.loads((REPO / "examples" / "grafana" / "switchyard.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\bswitchyard_\w+", target["expr"]))
    assert used and used <= names, used - names


def test_report_with_and_without_migrations(observed, tmp_path):
    c, job, _ = observed
    quiet = tmp_path / "quiet.json"
    r = subprocess.run(MPIRUN + ["-np", "2", str(BUILD / "worker" / "switchyard-worker"), "--model", "preset:deepseek-v3",
                                 "--scale", "0.0625", "--layers", "2", "--tokens-per-rank", "32", "--steps", "12", "--threads",
                                 "1", "--workload", f"trace:{TRACE}", "--report", str(quiet), "--log-every", "0"],
                       capture_output=True, text=True, timeout=240, env=mpi_env())
    assert r.returncode == 0, r.stderr
    for report, ranks, layers, spans in ((job.report, 4, 3, 2), (quiet, 2, 2, 0)):
        html = tmp_path / f"{report.stem}.html"
        out = subprocess.run([CLI, "report", str(report), "--out", str(html)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        page = html.read_text()
        assert page.count('class="sy-chart sy-heatmap"') == layers
        assert page.count(f'data-rows="{ranks}" data-cols="256"') == layers
        assert page.count('class="cell"') == layers * ranks * 256
        assert f'data-spans="{spans}"' in page
        assert re.search(r'data-kind="bars" id="phases" data-bars="%d"' % ranks, page)
        assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        rendered = headless(html.as_uri(), "--dump-dom")
        assert 'class="sy-chart sy-heatmap"' in rendered.stdout and not console_errors(rendered.stderr)
    svgs = tmp_path / "svgs"
    out = subprocess.run([CLI, "report", str(job.report), "--format", "svg", "--out", str(svgs)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in svgs.iterdir()) == sorted(
        ["heatmap_layer3.svg", "heatmap_layer4.svg", "heatmap_layer5.svg", "balancedness.svg", "phases.svg",
         "critical_path.svg", "migrations.svg"])
    pngs = tmp_path / "pngs"
    out = subprocess.run([CLI, "report", str(quiet), "--format", "png", "--out", str(pngs)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr  # Chromium (scripts/setup.sh) is a converter
    assert all(p.suffix == ".png" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs.iterdir())
    # Bad input: one clear line, exit 2
    for args, message in [(["report"], "usage: switchyard report"), (["report", str(tmp_path / "none.json")], "cannot open"),
                          (["report", str(quiet), "--format", "pdf"], "--format 'pdf': use html"),
                          (["report", str(quiet), "--format", "svg"], "give --out DIR"),
                          (["report", str(html), "--out", str(tmp_path / "x.html")], "")]:
        out = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.splitlines()) == 1, (args, out.stderr)


def test_report_survives_huge_axis_values(tmp_path):
    """Step numbers too large for a tick step to change them (1e17): bounded ticks, no hang."""
    run = {"model": "m", "ranks": 2, "steps": 10, "layers": [{"layer": 0, "expert_tokens": [1, 2]}],
           "worst_balancedness_by_step": [[1e17, 0.5], [1.0000000000000002e17, 0.6]],
           "migrations": [{"epoch": 1, "start_step": 9000000000000000000, "commit_step": 9000000000000002048}]}
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(run))
    out = subprocess.run([CLI, "report", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and len(out.stdout) < 200000, out.stderr
    run["layers"].append({"layer": 0, "expert_tokens": [3, 4]})
    path.write_text(json.dumps(run))
    out = subprocess.run([CLI, "report", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "layer 0 is listed twice" in out.stderr


def test_report_heatmaps_stay_bounded_at_scale(tmp_path):
    """512 ranks x 256 experts (131,072 cells): adjacent experts are summed into bins."""
    import numpy as np

    import switchyard

    placement = switchyard.plan(np.ones((1, 256)), 512, 1, policy="eplb")
    run = {"model": "m", "ranks": 512, "steps": 1, "layers": [{"layer": 0, "expert_tokens": list(range(256))}],
           "final_placement": json.loads(placement.to_json())}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(run))
    out = subprocess.run([CLI, "report", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'data-rows="512" data-cols="128" data-per-col="2"' in out.stdout
    assert out.stdout.count('class="cell"') == 512 * 128


def test_wait_ends_on_abort(tmp_path):
    """A migration that cannot finish (rank 1 posts no transfers) aborts; --wait says so, exit 1."""
    c = Coordinator(tmp_path)
    job = None
    try:
        job = Job(c, tmp_path, steps=400, extra=["--migration-bytes-per-step", 1 << 20, "--migration-timeout-s", "1"],
                  env_extra={"SWITCHYARD_TEST_HOLD_TRANSFERS": "1"})
        job.wait_for_windows(c)
        wait = c.cli("rebalance", "--wait", "--wait-timeout-s", "120")
        assert wait.returncode == 1, wait.stdout + wait.stderr
        assert "published epoch 1" in wait.stdout
        assert re.search(r"switchyard rebalance: the migration to epoch 1 aborted: epoch 1 aborted at step \d+", wait.stderr), wait.stderr
        assert int(c.status()["committed_epoch"]) == 0
        drain = c.cli("drain", "2", "--wait", "--wait-timeout-s", "120")
        assert drain.returncode == 1, drain.stdout + drain.stderr
        assert "drained ranks: 2" in drain.stdout and "aborted" in drain.stderr
        bad = c.cli("rebalance", "--wait", "--dry-run")
        assert bad.returncode == 2 and "not with --dry-run" in bad.stderr
        bad = c.cli("rebalance", "--wait", "--wait-timeout-s", "-1")
        assert bad.returncode == 2 and "wait-timeout-s" in bad.stderr and "published" not in bad.stdout  # checked first
        job.stop()
        # A new job on the same coordinator starts without the old one's figures.
        before = json.loads(c.get("/api/migrations")[2])
        assert len(before) >= 2 and all(m["state"] in ("aborted", "abandoned") for m in before)
        job = Job(c, tmp_path, steps=12)
        assert job.finish() == 0
        assert json.loads(c.get("/api/migrations")[2]) == []
        windows = [x["window"] for x in json.loads(c.get("/api/balancedness")[2])["samples"]]
        assert windows == sorted(windows) and windows[0] == 1
    finally:
        if job:
            job.stop()
        c.stop()
