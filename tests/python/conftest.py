"""Shared helpers of the Python tests (run by ctest: tests/CMakeLists.txt sets PYTHONPATH to
the build's python/ directory and SWITCHYARD_BUILD_DIR)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("SWITCHYARD_BUILD_DIR", REPO / "build"))
TRACES = REPO / "data" / "traces"
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def mpi_env() -> dict:
    env = dict(os.environ)
    env["OMPI_MCA_mpi_yield_when_idle"] = "1"  # more ranks than cores
    env.setdefault("PYTHONPATH", str(BUILD / "python"))
    return env


def run_mpi(np_: int, args: list, timeout: float = 240) -> subprocess.CompletedProcess:
    """Runs `args` on np_ ranks under mpirun; output captured as text."""
    return subprocess.run(MPIRUN + ["-np", str(np_)] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=mpi_env())


def python_cmd() -> list:
    return [sys.executable]


def write_config(directory: pathlib.Path, config: dict) -> None:
    (directory / "config.json").write_text(json.dumps(config))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
