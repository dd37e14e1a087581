"""The coordinator's gRPC admin API (proto/switchyard/admin/v1/admin.proto) as plain Python."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from . import _core


class AdminClient:
    """A client of one ``switchyard-coordinator``'s admin API.

    Every method returns plain Python objects (dicts, lists, ints, floats, str) with the proto
    field names (``committed_epoch``, ``workers``, ...). Changing calls (rebalance without
    dry_run, pin, unpin, drain, undrain, policy changes) need the coordinator's token when it
    was started with ``--auth-token-file``.

    Args:
        address: "HOST:PORT" of the coordinator's gRPC listener.
        token: the bearer token, or None.
        tls_ca: path of a PEM CA certificate: talk TLS (the coordinator's --tls-cert).
        timeout: seconds each call may take.

    Raises ConnectionError (coordinator unreachable), PermissionError (token missing or
    wrong), TimeoutError, ValueError (a request the coordinator refuses, e.g. a rank out of
    range), RuntimeError otherwise.
    """

    def __init__(self, address: str, token: Optional[str] = None, *, tls_ca: Optional[str] = None, timeout: float = 10.0):
        if not isinstance(address, str) or not address:
            raise ValueError(f"address: expected 'HOST:PORT', got {address!r}")
        self._c = _core.AdminClient(address, token or "", tls_ca or "", float(timeout))

    @property
    def address(self) -> str:
        return self._c.address

    def status(self) -> Dict[str, Any]:
        """Job, ranks (health, step, epoch, node names), epochs, per-layer balancedness."""
        return self._c.status()

    def placement(self, layer: Optional[int] = None) -> Dict[str, Any]:
        """The committed placement (one layer, or every layer when None) as a dict."""
        return self._c.placement(-1 if layer is None else int(layer))["placement"]

    def load(self, layer: Optional[int] = None) -> Dict[str, Any]:
        """Smoothed per-expert load (pairs per step) and the last window's counts per layer."""
        return self._c.load(-1 if layer is None else int(layer))

    def rebalance(self, dry_run: bool = False, max_moves: Optional[int] = None) -> Dict[str, Any]:
        """Plans from the smoothed load; publishes it as the target epoch unless dry_run."""
        return self._c.rebalance(bool(dry_run), 0 if max_moves is None else int(max_moves))

    def pin(self, expert: int, rank: int, layer: Optional[int] = None) -> Dict[str, Any]:
        """Keeps a replica of ``expert`` on ``rank`` (one layer, or all when None). Returns the constraints."""
        return self._c.pin(True, int(expert), int(rank), -1 if layer is None else int(layer))

    def unpin(self, expert: int, rank: int, layer: Optional[int] = None) -> Dict[str, Any]:
        return self._c.pin(False, int(expert), int(rank), -1 if layer is None else int(layer))

    def drain(self, rank: int, remove: bool = False) -> Dict[str, Any]:
        """Moves every expert off ``rank`` (remove: the rank also leaves a joined job)."""
        return self._c.drain(True, int(rank), bool(remove))

    def undrain(self, rank: int) -> Dict[str, Any]:
        return self._c.drain(False, int(rank), False)

    def policy(self, **changes: Any) -> Dict[str, Any]:
        """The rebalance policy; keyword arguments change those fields (as ``switchyard policy k=v``)."""
        settings = []
        for key, value in changes.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            settings.append(f"{key}={value}")
        return self._c.policy(settings)

    def events(self, after_seq: int = 0, follow: float = 0.0) -> List[Dict[str, Any]]:
        """Buffered events after ``after_seq``; with ``follow`` > 0, also new ones for that many seconds."""
        return self._c.events(int(after_seq), follow > 0, float(follow) if follow > 0 else 1.0)

    def __repr__(self) -> str:
        return f"AdminClient({self.address!r})"
