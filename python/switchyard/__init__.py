"""Switchyard: expert placement, the expert-parallel MoE layer and the admin API, from Python.

- :func:`plan` places experts (with replicas of hot ones) on ranks: the same planners, and the
  same placements bit for bit, as ``switchyard plan``.
- :class:`Placement` is a placement in the ``switchyard.placement/v1`` format.
- :class:`MoeLayer` runs one rank's part of a distributed MoE layer (a ``torch.nn.Module`` when
  torch is importable) under ``mpirun`` (``comm="mpi"``) or any launcher with UCX.
- :class:`AdminClient` talks to a ``switchyard-coordinator`` over its gRPC admin API.

Errors: bad arguments raise ``ValueError`` (or ``TypeError`` for wrong types), an unreachable
coordinator ``ConnectionError``, a refused token ``PermissionError``, timeouts ``TimeoutError``;
other failures ``RuntimeError``. Messages are the C++ library's, naming the problem.
"""
from __future__ import annotations

import os as _os
import sys as _sys

# Open MPI loads its components with dlopen and needs libmpi's symbols global; a Python
# extension is loaded RTLD_LOCAL by default, so load _core (and with it libmpi) globally.
_flags = _sys.getdlopenflags()
_sys.setdlopenflags(_flags | _os.RTLD_GLOBAL)
try:
    from . import _core
finally:
    _sys.setdlopenflags(_flags)

from .placement import Balancedness, Placement, plan, read_load_csv  # noqa: E402
from .admin import AdminClient  # noqa: E402
from .layer import MoeLayer, model_info, model_presets  # noqa: E402

__all__ = [
    "AdminClient",
    "Balancedness",
    "MoeLayer",
    "Placement",
    "model_info",
    "model_presets",
    "plan",
    "read_load_csv",
]
__version__ = "0.1.0"
