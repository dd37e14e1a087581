"""The coordinator's gRPC admin API (proto/switchyard/admin/v1/admin.proto) as plain Python."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from . import _core
from ._args import INT32_MAX, INT64_MAX, existing_path, integer, number, string
from .placement import Placement


def _layer(layer: Optional[int]) -> int:
    """A model layer id (>= 0), or -1 for every layer (None)."""
    return -1 if layer is None else integer("layer", layer, 0, INT32_MAX)


class AdminClient:
    """A client of one ``switchyard-coordinator``'s admin API.

    Every method returns plain Python objects (dicts, lists, ints, floats, str) with the proto
    field names (``committed_epoch``, ``workers``, ...). Changing calls (rebalance without
    dry_run, pin, unpin, drain, undrain, policy changes) need the coordinator's token when it
    was started with ``--auth-token-file``.

    Args:
        address: "HOST:PORT" of the coordinator's gRPC listener (default: $SWITCHYARD_COORDINATOR,
            else 127.0.0.1:7070, as the CLI).
        token: the bearer token (printable ASCII), or None.
        tls_ca: path of a PEM CA certificate: talk TLS (the coordinator's --tls-cert).
        timeout: seconds each call may take.

    Raises ConnectionError (coordinator unreachable), PermissionError (token missing or
    wrong), TimeoutError, ValueError (a request the coordinator refuses, e.g. a rank out of
    range), RuntimeError otherwise.
    """

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None, *, tls_ca: Optional[str] = None,
                 timeout: float = 10.0):
        if address is None:  # as the CLI: $SWITCHYARD_COORDINATOR, else the default port on this host
            address = os.environ.get("SWITCHYARD_COORDINATOR") or "127.0.0.1:7070"
        address = string("address", address)
        host, sep, port = address.rpartition(":")
        if not sep or not host or "\0" in address or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"address: expected 'HOST:PORT' with a port in 1..65535, got {address!r}")
        if token is not None:
            token = string("token", token)
        if tls_ca is not None:
            tls_ca = existing_path("tls_ca", tls_ca)
        self._c = _core.AdminClient(address, token or "", tls_ca or "", number("timeout", timeout, 0, 1e6, lo_open=True))

    @property
    def address(self) -> str:
        return self._c.address

    def status(self) -> Dict[str, Any]:
        """Job, ranks (health, step, epoch, node names), epochs, per-layer balancedness."""
        return self._c.status()

    def placement(self, layer: Optional[int] = None) -> Dict[str, Any]:
        """The committed placement (one layer, or every layer when None) as a dict."""
        return self._c.placement(_layer(layer))["placement"]

    def committed_placement(self) -> Placement:
        """The committed placement, every layer, as a :class:`switchyard.Placement` (e.g. the
        ``current`` of :func:`switchyard.plan`)."""
        return self._c.committed_placement()

    def load(self, layer: Optional[int] = None) -> Dict[str, Any]:
        """Smoothed per-expert load (pairs per step) and the last window's counts per layer."""
        return self._c.load(_layer(layer))

    def rebalance(self, dry_run: bool = False, max_moves: Optional[int] = None) -> Dict[str, Any]:
        """Plans from the smoothed load; publishes it as the target epoch unless dry_run."""
        return self._c.rebalance(bool(dry_run), 0 if max_moves is None else integer("max_moves", max_moves, 1, INT32_MAX))

    def pin(self, expert: int, rank: int, layer: Optional[int] = None) -> Dict[str, Any]:
        """Keeps a replica of ``expert`` on ``rank`` (one layer, or all when None). Returns the constraints."""
        return self._c.pin(True, integer("expert", expert, 0, INT32_MAX), integer("rank", rank, 0, INT32_MAX), _layer(layer))

    def unpin(self, expert: int, rank: int, layer: Optional[int] = None) -> Dict[str, Any]:
        return self._c.pin(False, integer("expert", expert, 0, INT32_MAX), integer("rank", rank, 0, INT32_MAX), _layer(layer))

    def drain(self, rank: int, remove: bool = False) -> Dict[str, Any]:
        """Moves every expert off ``rank`` (remove: the rank also leaves a joined job)."""
        return self._c.drain(True, integer("rank", rank, 0, INT32_MAX), bool(remove))

    def undrain(self, rank: int) -> Dict[str, Any]:
        return self._c.drain(False, integer("rank", rank, 0, INT32_MAX), False)

    def policy(self, **changes: Any) -> Dict[str, Any]:
        """The rebalance policy; keyword arguments change those fields (as ``switchyard policy k=v``)."""
        settings = []
        for key, value in changes.items():
            if not key.isidentifier():
                raise ValueError(f"policy: {key!r} is not a policy field name")
            if isinstance(value, bool):
                value = "true" if value else "false"
            settings.append(f"{key}={value}")
        return self._c.policy(settings)

    def events(self, after_seq: int = 0, follow: float = 0.0) -> List[Dict[str, Any]]:
        """Buffered events after ``after_seq``; with ``follow`` > 0, also new ones for that many seconds."""
        after_seq = integer("after_seq", after_seq, 0, INT64_MAX)
        follow = number("follow", follow, 0, 1e6)
        return self._c.events(after_seq, follow > 0, follow if follow > 0 else 1.0)

    def __repr__(self) -> str:
        return f"AdminClient({self.address!r})"
