"""Expert placement: :func:`plan`, :class:`Placement`, :func:`read_load_csv`."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from . import _core

Placement = _core.Placement
Placement.__doc__ = """Which expert sits in which slot of which rank, per MoE layer, with token shares.

Made by :func:`plan` or :meth:`Placement.from_json`; immutable.

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
    if hasattr(loads, "detach") and hasattr(loads, "cpu"):  # torch.Tensor, on any device
        loads = loads.detach().cpu().numpy()
    try:
        array = np.ascontiguousarray(np.asarray(loads, dtype=np.float64))
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
    for name, value in (("ranks", ranks), ("slots_per_rank", slots_per_rank), ("nodes", nodes), ("groups", groups)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if max_moves is not None and (isinstance(max_moves, bool) or not isinstance(max_moves, (int, np.integer)) or max_moves < 0):
        raise ValueError(f"max_moves: expected None or an int >= 0, got {max_moves!r}")
    if current is not None and not isinstance(current, Placement):
        raise TypeError(f"current: expected a switchyard.Placement or None, got {type(current).__name__}")
    if not isinstance(policy, str):
        raise TypeError(f"policy: expected a str, got {type(policy).__name__}")
    return _core.plan(
        array,
        None if layers is None else [int(x) for x in layers],
        int(ranks),
        int(slots_per_rank),
        int(nodes),
        policy,
        current,
        -1 if max_moves is None else int(max_moves),
        float(min_gain_per_move),
        float(noise_z),
        int(groups),
    )


def read_load_csv(path: str, select: Optional[str] = None) -> Tuple[np.ndarray, list]:
    """Reads an expert-load CSV (``layer,expert,tokens`` [+ ``step`` or ``workload``]).

    Returns (loads [layers, experts] float64, layer ids). ``select`` keeps the rows whose
    step/workload column equals it (as ``switchyard plan --select``). ValueError naming the
    file, line and column of a bad row.
    """
    return _core.read_load_csv(str(path), select or "")
