"""A DeepSeek-style MoE block in PyTorch whose routed experts run through switchyard.MoeLayer.

    mpirun --allow-run-as-root --oversubscribe -np 2 .venv/bin/python examples/python/moe_block.py

(the Python that has switchyard installed; `--comm ucx` also runs under torchrun on one node).

Every rank builds the same block (same seed): a router (gate projection), 16 routed SwiGLU
experts with sigmoid scores, a selection-only bias, group-limited top-4 (4 groups, best 2),
renormalised weights times routed_scaling_factor, and one shared expert. It writes the
block's weights as a Hugging Face checkpoint (config.json + safetensors), loads it into a
switchyard.MoeLayer (experts spread over the ranks, tokens dispatched and combined by
all-to-all), runs its own tokens through both, and prints the largest relative error.
Exits 1 if it exceeds the tolerance (1e-5 for float32).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch
import torch.nn.functional as F

import switchyard
from switchyard.checkpoint import write_safetensors

CONFIG = {
    "model_type": "deepseek_v3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "first_k_dense_replace": 1,  # layer 0 dense, layer 1 MoE
    "n_routed_experts": 16,
    "num_experts_per_tok": 4,
    "moe_intermediate_size": 32,
    "n_shared_experts": 1,
    "n_group": 4,
    "topk_group": 2,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
}
LAYER = 1


class Expert(torch.nn.Module):
    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        self.gate_proj = torch.nn.Linear(hidden, ffn, bias=False)
        self.up_proj = torch.nn.Linear(hidden, ffn, bias=False)
        self.down_proj = torch.nn.Linear(ffn, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoeBlock(torch.nn.Module):
    """The plain PyTorch block: DeepSeek-V3's router and experts (no expert parallelism)."""

    def __init__(self, c: dict):
        super().__init__()
        self.c = c
        h, e = c["hidden_size"], c["n_routed_experts"]
        self.gate = torch.nn.Linear(h, e, bias=False)
        self.e_score_correction_bias = torch.nn.Parameter(torch.randn(e) * 0.1)
        self.experts = torch.nn.ModuleList(Expert(h, c["moe_intermediate_size"]) for _ in range(e))
        self.shared_experts = Expert(h, c["moe_intermediate_size"] * c["n_shared_experts"])

    def route(self, logits):
        c = self.c
        scores = logits.sigmoid()
        biased = scores + self.e_score_correction_bias
        groups = biased.view(len(logits), c["n_group"], -1)
        group_score = groups.topk(2, dim=-1).values.sum(-1)
        keep = group_score.topk(c["topk_group"], dim=-1).indices
        mask = torch.zeros_like(group_score).scatter_(1, keep, 1.0)
        mask = mask.unsqueeze(-1).expand_as(groups).reshape(len(logits), -1)
        ids = biased.masked_fill(mask == 0, float("-inf")).topk(c["num_experts_per_tok"], dim=-1).indices
        weights = scores.gather(1, ids)
        weights = weights / weights.sum(-1, keepdim=True) * c["routed_scaling_factor"]
        return ids, weights

    def routed(self, x, logits):
        ids, weights = self.route(logits)
        out = torch.zeros_like(x)
        for k in range(ids.shape[1]):
            for e in ids[:, k].unique().tolist():
                rows = ids[:, k] == e
                out[rows] += weights[rows, k, None] * self.experts[e](x[rows])
        return out

    def forward(self, x):
        logits = self.gate(x)
        return self.routed(x, logits) + self.shared_experts(x)


class SwitchyardMoeBlock(torch.nn.Module):
    """The same block with its routed and shared experts in a switchyard.MoeLayer."""

    def __init__(self, gate: torch.nn.Linear, model_dir: str, comm: str):
        super().__init__()
        self.gate = gate
        self.moe = switchyard.MoeLayer(model_dir, LAYER, comm=comm, weights=model_dir)

    def forward(self, x):
        return self.moe(x, self.gate(x.to(self.gate.weight.dtype)))  # router in float32


def save_checkpoint(block: MoeBlock, directory: str) -> None:
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    prefix = f"model.layers.{LAYER}.mlp."
    tensors = {prefix + "gate.weight": block.gate.weight, prefix + "gate.e_score_correction_bias": block.e_score_correction_bias}
    for name, p in block.experts.named_parameters():
        tensors[prefix + "experts." + name] = p
    for name, p in block.shared_experts.named_parameters():
        tensors[prefix + "shared_experts." + name] = p
    write_safetensors(os.path.join(directory, "model.safetensors"), tensors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comm", default="mpi", choices=["mpi", "ucx"])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per rank")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    torch.manual_seed(0)  # the same block on every rank
    block = MoeBlock(CONFIG).eval()
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        save_checkpoint(block, d)
        fast = SwitchyardMoeBlock(block.gate, d, args.comm).eval()
        rank, world = fast.moe.rank, fast.moe.world_size
        torch.manual_seed(100 + rank)  # each rank its own tokens
        x = torch.randn(args.tokens, CONFIG["hidden_size"])
        dtype = getattr(torch, args.dtype)
        ours = fast(x.to(dtype)).float()
        reference = block(x)
    # Relative to the output's scale (largest magnitude), element by element.
    err = ((ours - reference).abs().max() / reference.abs().max()).item()
    tolerance = 1e-5 if args.dtype == "float32" else 2e-2
    print(f"rank {rank}/{world}: {args.tokens} tokens, {CONFIG['n_routed_experts']} experts over {world} ranks, "
          f"{args.dtype}: max relative error vs plain PyTorch {err:.2e} (tolerance {tolerance:g})", flush=True)
    return 0 if err <= tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
