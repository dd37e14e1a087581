"""Argument checks shared by the package's entry points: errors name the argument."""
from __future__ import annotations

import numbers
import os
from typing import Any, Optional

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


def integer(name: str, value: Any, lo: int, hi: int) -> int:
    """An int (Python or numpy, not bool or float) in [lo, hi]; TypeError / ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value} is out of range [{lo}, {hi}]")
    return value


def optional_integer(name: str, value: Any, lo: int, hi: int) -> Optional[int]:
    return None if value is None else integer(name, value, lo, hi)


def number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    """A finite real number in [lo, hi] ((lo, hi] with lo_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (value > lo if lo_open else value >= lo) or not value <= hi:
        raise ValueError(f"{name}: {value} is out of range {'(' if lo_open else '['}{lo}, {hi}]")
    return value


def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {type(value).__name__}")
    return value


def existing_path(name: str, value: Any) -> str:
    """A path (str or os.PathLike) that exists; FileNotFoundError naming `name` otherwise."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path (str or os.PathLike), got {type(value).__name__}")
    path = os.fspath(value)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: {path} does not exist")
    return path
