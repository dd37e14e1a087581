"""Expert placement: :func:`plan`, :class:`Placement`, :func:`read_load_csv`."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._args import INT32_MAX, existing_path, integer, number, optional_integer, string

Placement = _core.Placement
Placement.__doc__ = """Which expert sits in which slot of which rank, per MoE layer, with token shares.

Made by :func:`plan`, :meth:`Placement.from_json` or `AdminClient.committed_placement()`;
immutable; compares with ==, pickles and copies (through its JSON).

Attributes:
    ranks, nodes, slots_per_rank, experts (int); layers (list[int]: model layer ids,
    ascending); total_replicas (int).

Methods:
    balancedness(loads, layers=None) -> Balancedness: mean rank load / max rank load of each
        layer under ``loads`` ([layers, experts] token counts; rows matched to the placement's
        layers by ``layers``, default the placement's own layer ids in order).
    moved_replicas(other) -> int: replicas this placement holds that ``other`` does not
        (what migrating from ``other`` to this one copies). ValueError if the shapes differ.
    replicas(layer) -> list[list[tuple[int, float]]]: per rank, its slots' (expert, share).
    to_json(policy="python") -> str: the ``switchyard.placement/v1`` document.
    from_json(text) -> Placement (static): parses and validates one; ValueError naming the field.
"""
Balancedness = _core.Balancedness
Balancedness.__doc__ = "Balancedness of a placement: .mean and .min over layers, .per_layer (list[float], layer order)."


def _loads_array(loads: Any) -> np.ndarray:
    """[layers, experts] float64 C-contiguous copy of a numpy array, torch tensor or nested list."""
    if loads is None or isinstance(loads, (str, bytes)):
        raise TypeError(f"loads: expected an array-like [layers, experts] of token counts, got {type(loads).__name__}")
    if hasattr(loads, "detach") and hasattr(loads, "cpu"):  # torch.Tensor, on any device, any real dtype
        if loads.is_complex():
            raise TypeError(f"loads: dtype {loads.dtype} is complex; token counts are real")
        loads = loads.detach().cpu().double().numpy()
    try:
        raw = np.asarray(loads)
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"dtype {raw.dtype} is not a real number type")
        array = np.ascontiguousarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"loads: expected an array-like [layers, experts] of token counts ({e})") from None
    if array.ndim != 2:
        raise ValueError(f"loads: expected a 2-D array [layers, experts], got shape {tuple(array.shape)}")
    return array


def plan(
    loads: Any,
    ranks: int,
    slots_per_rank: int,
    nodes: int = 1,
    policy: str = "incremental",
    current: Optional[Placement] = None,
    max_moves: Optional[int] = None,
    *,
    layers: Optional[Sequence[int]] = None,
    min_gain_per_move: float = 0.001,
    noise_z: float = 2.0,
    groups: int = 1,
) -> Placement:
    """Places every layer's experts on ``ranks`` x ``slots_per_rank`` slots.

    Args:
        loads: [layers, experts] token counts (numpy array, torch tensor or nested lists; any
            real dtype). Finite and >= 0.
        ranks, slots_per_rank: the cluster; ranks * slots_per_rank >= experts.
        nodes: nodes the ranks span (divides ranks); placement keeps replicas node-aware.
        policy: "incremental" (default: re-plans from ``current`` with few moves) or "eplb"
            (DeepSeek's EPLB from scratch; ``groups`` expert groups for its hierarchical mode).
        current: the placement in force (same ranks, experts and layers), or None.
        max_moves: budget of moved replicas against ``current`` (None: no budget).
        layers: model layer id of each row of ``loads`` (default 0..layers-1); the CLI's load
            CSVs carry them (see :func:`read_load_csv`).
        min_gain_per_move, noise_z: the incremental planner's move thresholds (as
            ``switchyard plan --min-gain-per-move --noise-z``).

    Returns the new :class:`Placement`: the same one, bit for bit, as ``switchyard plan`` with
    the same inputs. Raises ValueError naming a bad argument.
    """
    return _plan_timed(loads, ranks, slots_per_rank, nodes, policy, current, max_moves, layers=layers,
                       min_gain_per_move=min_gain_per_move, noise_z=noise_z, groups=groups)[0]


def _plan_timed(loads, ranks, slots_per_rank, nodes=1, policy="incremental", current=None, max_moves=None, *, layers=None,
                min_gain_per_move=0.001, noise_z=2.0, groups=1) -> Tuple[Placement, float]:
    """plan() and the planner's own seconds (without the binding's conversions), for benchmarks."""
    array = _loads_array(loads)
    if current is not None and not isinstance(current, Placement):
        raise TypeError(f"current: expected a switchyard.Placement or None, got {type(current).__name__}")
    if layers is not None:
        if isinstance(layers, (str, bytes)):
            raise TypeError("layers: expected a sequence of ints (model layer ids)")
        layers = [integer(f"layers[{i}]", x, 0, INT32_MAX) for i, x in enumerate(layers)]
    max_moves = optional_integer("max_moves", max_moves, 0, INT32_MAX)
    return _core.plan(
        array,
        layers,
        integer("ranks", ranks, 1, INT32_MAX),
        integer("slots_per_rank", slots_per_rank, 1, INT32_MAX),
        integer("nodes", nodes, 1, INT32_MAX),
        string("policy", policy),
        current,
        -1 if max_moves is None else max_moves,
        number("min_gain_per_move", min_gain_per_move, 0, 1e6),
        number("noise_z", noise_z, 0, 1e6),
        integer("groups", groups, 1, INT32_MAX),
    )


def read_load_csv(path: str, select: Optional[str] = None) -> Tuple[np.ndarray, list]:
    """Reads an expert-load CSV (``layer,expert,tokens`` [+ ``step`` or ``workload``]).

    Returns (loads [layers, experts] float64, layer ids). ``select`` keeps the rows whose
    step/workload column equals it (as ``switchyard plan --select``). ValueError naming the
    file, line and column of a bad row.
    """
    path = existing_path("path", path)
    try:
        return _core.read_load_csv(path, "" if select is None else string("select", select))
    except ValueError as e:  # the CSV reader speaks the CLI's flag names
        raise ValueError(str(e).replace("--select", "select")) from None
