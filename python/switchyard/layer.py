"""The expert-parallel MoE layer (worker/moe_layer.h) for a host framework: :class:`MoeLayer`."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Union

import numpy as np

from . import _core
from ._args import INT32_MAX, UINT64_MAX, existing_path, integer, number, string
from .placement import Placement

try:  # torch is optional: without it MoeLayer takes and returns numpy arrays
    import torch

    _Module = torch.nn.Module
except ImportError:  # pragma: no cover - exercised only where torch is absent
    torch = None
    _Module = object

Array = Any  # torch.Tensor or numpy.ndarray


def _model_spec(model: Any) -> str:
    """A preset name, "preset:NAME", or an existing config.json path (or its directory)."""
    if isinstance(model, os.PathLike):
        return existing_path("model", model)
    model = string("model", model)
    if model.startswith("preset:") or ("/" not in model and not model.endswith(".json")):
        return model
    return existing_path("model", model)


def model_info(model: str, scale: float = 1.0) -> Dict[str, Any]:
    """The MoE shape of a preset name or config.json path: name, model_type, experts, top_k,
    hidden, expert_ffn, shared_ffn (0: none), moe_layers (model layer ids). ValueError naming
    the file and key (or ``model_type``) when the config is bad or unsupported;
    FileNotFoundError for a path that does not exist."""
    return _core.model_info(_model_spec(model), number("scale", scale, 0, 1, lo_open=True))


def model_presets() -> List[str]:
    """Names of the built-in model presets (``switchyard.MoeLayer("deepseek-v3", ...)``)."""
    return list(_core.model_presets())


def _launch_from_torchrun(rendezvous_dir: Optional[str]) -> Optional[str]:
    """torchrun gives RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE; Switchyard's launch
    detection (cluster/launch.h) reads SWITCHYARD_* for launchers it does not know. Returns
    the rendezvous directory: the given one, or on one node a fresh one per torchrun agent
    (its workers share the agent's process id)."""
    env = os.environ
    if "OMPI_COMM_WORLD_RANK" in env or "SLURM_PROCID" in env or "PMIX_RANK" in env or "SWITCHYARD_RANK" in env:
        return rendezvous_dir
    if "RANK" not in env or "WORLD_SIZE" not in env or "TORCHELASTIC_RUN_ID" not in env:
        return rendezvous_dir
    env["SWITCHYARD_RANK"] = env["RANK"]
    env["SWITCHYARD_SIZE"] = env["WORLD_SIZE"]
    env.setdefault("SWITCHYARD_LOCAL_RANK", env.get("LOCAL_RANK", "0"))
    env.setdefault("SWITCHYARD_LOCAL_SIZE", env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
    if rendezvous_dir:
        return rendezvous_dir
    if env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]) != env["WORLD_SIZE"]:
        raise ValueError("under torchrun on several nodes, pass rendezvous_dir: a fresh directory on a filesystem every "
                         "node shares")
    return os.path.join(tempfile.gettempdir(), f"switchyard-torchrun-{env['TORCHELASTIC_RUN_ID']}-{os.getppid()}")


class MoeLayer(_Module):
    """One rank's part of a distributed MoE layer: gate, dispatch, expert FFNs, combine.

    Every rank of the job makes the same MoeLayer (one per MoE layer of the model) and calls it
    with its own tokens, in the same order on every rank (each call runs collectives). The
    routed experts only: the router (gate projection) and attention stay in the host model;
    the layer adds the shared experts when the model has them.

    Args:
        model: a preset name (``"deepseek-v3"``, ``"qwen3-30b-a3b"``, ... see
            :func:`model_presets`), ``"preset:NAME"``, or a Hugging Face config.json path (or
            its directory).
        layer: the model layer id of this MoE layer (e.g. 3..60 for DeepSeek-V3).
        comm: "mpi" (under mpirun / srun) or "ucx" (mpirun, srun, or torchrun: on one node
            without further arguments, across nodes with ``rendezvous_dir``).
        weights: a safetensors checkpoint (file or directory) with Hugging Face tensor names,
            or None for seeded weights (every rank generates the same bytes from ``seed``).
        placement: a :class:`Placement` (or a path to its JSON) holding this layer for the
            job's rank count, or None for contiguous expert parallelism (expert e on rank
            floor(e * R / E)).
        scale: shrink hidden and FFN sizes (0 < scale <= 1), for tests and demos.
        seed, weight_type ("fp32" | "bf16" expert weights), threads (0: this rank's cores),
        shares ("step" | "epoch": how an expert's tokens split over its replicas),
        rendezvous_dir (ucx without an MPI launcher), timeout (seconds to wait for peers).

    Call: ``layer(hidden, router_logits) -> out``
        hidden: [T, H] float32 or bfloat16 (torch) / float32 (numpy), on the CPU.
        router_logits: [T, E] the router's logits (float32; other float dtypes are converted).
        out: [T, H], hidden's dtype: the weighted sum of the token's top-k experts (plus the
        shared experts). Contiguous float32 inputs are used in place (no copy); bfloat16 is
        widened to float32 inside. Inference only: the output carries no autograd graph.

    Raises ValueError / TypeError naming a wrong argument, shape, dtype or device (a rank that
    raises before its collectives leaves its peers to time out); FileNotFoundError for a path
    that does not exist; TimeoutError when a peer does not arrive within ``timeout``;
    RuntimeError when a peer fails.
    """

    def __init__(
        self,
        model: str,
        layer: int,
        comm: str = "mpi",
        weights: Optional[str] = None,
        placement: Union[Placement, str, os.PathLike, None] = None,
        scale: float = 1.0,
        *,
        seed: int = 1,
        weight_type: str = "fp32",
        threads: int = 0,
        shares: str = "step",
        rendezvous_dir: Optional[str] = None,
        timeout: float = 60.0,
    ):
        if _Module is not object:
            super().__init__()
        if comm not in ("mpi", "ucx"):
            raise ValueError(f"comm: expected 'mpi' or 'ucx', got {comm!r}")
        layer = integer("layer", layer, 0, INT32_MAX)
        model = _model_spec(model)
        if weights is not None:
            weights = existing_path("weights", weights)
        if placement is not None and not isinstance(placement, Placement):
            with open(existing_path("placement", placement), encoding="utf-8") as f:
                placement = Placement.from_json(f.read())
        if rendezvous_dir is not None and not isinstance(rendezvous_dir, (str, os.PathLike)):
            raise TypeError(f"rendezvous_dir: expected a path, got {type(rendezvous_dir).__name__}")
        if comm == "ucx":
            rendezvous_dir = _launch_from_torchrun(None if rendezvous_dir is None else os.fspath(rendezvous_dir))
        self._layer = _core.Layer(
            model, layer, comm, weights or "", placement, number("scale", scale, 0, 1, lo_open=True),
            integer("seed", seed, 0, UINT64_MAX), string("weight_type", weight_type), integer("threads", threads, 0, 1024),
            string("shares", shares), rendezvous_dir or "", number("timeout", timeout, 0, 1e6, lo_open=True))
        info = self._layer.model
        self.layer_id = int(layer)
        self.hidden_size = int(info["hidden"])
        self.num_experts = int(info["experts"])
        self.top_k = int(info["top_k"])
        self._calls = 0

    @property
    def rank(self) -> int:
        """This process's rank in the job."""
        return self._layer.rank

    @property
    def world_size(self) -> int:
        return self._layer.world_size

    @property
    def model(self) -> Dict[str, Any]:
        """The (scaled) model shape, as :func:`model_info`."""
        return self._layer.model

    @property
    def placement(self) -> Placement:
        """The placement this layer runs (this layer only)."""
        return self._layer.placement

    def take_counts(self) -> Dict[str, List[int]]:
        """Pairs this rank's gate sent to each expert (``chosen``) and computed for each
        (``processed``) since the last call: the load statistics a planner needs."""
        return self._layer.take_counts()

    def forward(self, hidden: Array, router_logits: Array, draw_key: Optional[int] = None) -> Array:
        """Runs this rank's tokens through the layer (collective: every rank calls it, in the same order).

        Args:
            hidden: [T, H] float32 or bfloat16 torch tensor (numpy: float32), on the CPU.
            router_logits: [T, E] the router's logits, finite (any float dtype; used as float32).
            draw_key: makes the replica choices of this call deterministic (default: a per-layer
                call counter, the same on every rank). Outputs do not depend on it.

        Returns [T, H] in hidden's dtype. ValueError / TypeError naming a bad shape, dtype,
        device or a non-finite logit; TimeoutError when a peer does not arrive within
        ``timeout``; RuntimeError when a peer fails.
        """
        key = self._calls if draw_key is None else integer("draw_key", draw_key, 0, UINT64_MAX)
        self._calls += 1
        if torch is not None and isinstance(hidden, torch.Tensor):
            return self._forward_torch(hidden, router_logits, key)
        if isinstance(hidden, np.ndarray):
            return self._forward_numpy(hidden, router_logits, key)
        raise TypeError(f"hidden: expected a torch.Tensor or numpy.ndarray, got {type(hidden).__name__}")

    if _Module is object:  # without torch, calling the layer is forward()
        __call__ = forward

    def _check_shapes(self, hidden_shape, logits_shape) -> int:
        if len(hidden_shape) != 2 or hidden_shape[1] != self.hidden_size:
            raise ValueError(f"hidden: expected shape [tokens, {self.hidden_size}], got {list(hidden_shape)}")
        if len(logits_shape) != 2 or logits_shape[1] != self.num_experts:
            raise ValueError(f"router_logits: expected shape [tokens, {self.num_experts}], got {list(logits_shape)}")
        if logits_shape[0] != hidden_shape[0]:
            raise ValueError(f"router_logits has {logits_shape[0]} tokens, hidden has {hidden_shape[0]}")
        return int(hidden_shape[0])

    def _forward_torch(self, hidden, router_logits, key):
        if not isinstance(router_logits, torch.Tensor):
            raise TypeError(f"router_logits: expected a torch.Tensor like hidden, got {type(router_logits).__name__}")
        for name, t in (("hidden", hidden), ("router_logits", router_logits)):
            if t.device.type != "cpu":
                raise ValueError(f"{name}: tensor is on {t.device}; this build's MoeLayer runs on the CPU (move it with .cpu())")
        if hidden.dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"hidden: dtype {hidden.dtype} is not supported (float32 or bfloat16)")
        if not router_logits.dtype.is_floating_point:
            raise TypeError(f"router_logits: dtype {router_logits.dtype} is not a float dtype")
        tokens = self._check_shapes(tuple(hidden.shape), tuple(router_logits.shape))
        h = hidden.detach().contiguous()
        logits = router_logits.detach().to(torch.float32).contiguous()
        out = torch.empty_like(h)
        self._layer.forward(h.data_ptr(), logits.data_ptr(), tokens, out.data_ptr(), h.dtype == torch.bfloat16, key)
        return out

    def _forward_numpy(self, hidden, router_logits, key):
        if not isinstance(router_logits, np.ndarray):
            raise TypeError(f"router_logits: expected a numpy.ndarray like hidden, got {type(router_logits).__name__}")
        if hidden.dtype != np.float32:
            raise TypeError(f"hidden: dtype {hidden.dtype} is not supported (float32)")
        if router_logits.dtype.kind != "f":
            raise TypeError(f"router_logits: dtype {router_logits.dtype} is not a float dtype")
        tokens = self._check_shapes(hidden.shape, router_logits.shape)
        h = np.ascontiguousarray(hidden)
        logits = np.ascontiguousarray(router_logits, dtype=np.float32)
        out = np.empty_like(h)
        self._layer.forward(h.ctypes.data, logits.ctypes.data, tokens, out.ctypes.data, False, key)
        return out

    def extra_repr(self) -> str:
        info = self._layer.model
        return (f"model={info['name']!r}, layer={self.layer_id}, experts={self.num_experts}, top_k={self.top_k}, "
                f"hidden={self.hidden_size}, rank={self.rank}/{self.world_size}")
