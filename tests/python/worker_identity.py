"""Run under mpirun: the worker's step loop (worker/driver.cc) in Python with switchyard.MoeLayer.

Each rank makes the worker's inputs (switchyard._core.WorkerInputs: the same hidden states
and router logits as switchyard-worker for the same model, workload, seed and rank), runs
them through one MoeLayer per MoE layer (h += layer(h, logits)), hashes the final hidden
states the worker's way and prints its part of the output checksum.

    worker_identity.py MODEL SCALE LAYERS TOKENS_PER_RANK STEPS SEED WORKLOAD DTYPE
"""
import sys

import numpy as np
import torch

import switchyard
from switchyard import _core

model, scale, n_layers, tokens, steps, seed, workload, dtype = sys.argv[1:9]
scale, n_layers, tokens, steps, seed = float(scale), int(n_layers), int(tokens), int(steps), int(seed)
inputs = _core.WorkerInputs(model, scale, [workload], n_layers, seed)
layers = [switchyard.MoeLayer(model, layer_id, comm="mpi", scale=scale, seed=seed, weight_type=dtype, threads=1)
          for layer_id in inputs.layers]
rank = layers[0].rank
total = 0
for step in range(steps):
    h = torch.from_numpy(inputs.hidden(step, rank * tokens, tokens))
    for li, layer in enumerate(layers):
        logits = torch.from_numpy(inputs.logits(step, li, rank * tokens, tokens))
        h = h + layer(h, logits, draw_key=step)
    for t in range(tokens):
        total = (total + _core.token_hash(step, rank * tokens + t, h[t].numpy())) % 2**64
print(f"rank {rank} checksum {total}", flush=True)
