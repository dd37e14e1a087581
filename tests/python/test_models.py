"""The seed models' checkpoints: a tiny synthetic checkpoint per new model type (their
Hugging Face config keys and tensor names), run through switchyard.MoeLayer and compared with
a float64 NumPy implementation of that model's MoE block; FP8 checkpoints against their bf16
conversion (bit-identical outputs)."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import switchyard
from switchyard.checkpoint import bf16_bits, bf16_values, e4m3_values, write_safetensors

H, F, E, K = 40, 24, 8, 2


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def swiglu(x, gate, up, down):  # x [T, H]; gate, up [F, H]; down [H, F]
    g = x @ gate.T
    return (g * sigmoid(g) * (x @ up.T)) @ down.T


class Spec:
    """How one model type names, routes and combines its experts."""

    def __init__(self, model_type, config, layer, prefix, names=("gate_proj", "up_proj", "down_proj"), shared=None,
                 bias=None, score="sigmoid", groups=1, top_groups=1, scaling=1.0, fused=False, shared_gate=False):
        self.__dict__.update(locals())
        del self.__dict__["self"]


SPECS = {
    "glm4_moe": Spec("glm4_moe", {"n_routed_experts": E, "moe_intermediate_size": F, "n_shared_experts": 1,
                                  "first_k_dense_replace": 1, "n_group": 2, "topk_group": 1, "norm_topk_prob": True,
                                  "routed_scaling_factor": 2.5},
                     1, "model.layers.{L}.mlp.", shared="shared_experts.", bias="gate.e_score_correction_bias",
                     groups=2, top_groups=1, scaling=2.5),
    "glm_moe_dsa": Spec("glm_moe_dsa", {"n_routed_experts": E, "moe_intermediate_size": F, "n_shared_experts": 1,
                                        "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
                                        "routed_scaling_factor": 2.5},
                        1, "model.layers.{L}.mlp.", shared="shared_experts.", bias="gate.e_score_correction_bias", scaling=2.5),
    "kimi_k2": Spec("kimi_k2", {"n_routed_experts": E, "moe_intermediate_size": F, "n_shared_experts": 1,
                                "first_k_dense_replace": 1, "moe_layer_freq": 1, "scoring_func": "sigmoid",
                                "topk_method": "noaux_tc", "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
                                "routed_scaling_factor": 2.827},
                    1, "model.layers.{L}.mlp.", shared="shared_experts.", bias="gate.e_score_correction_bias", scaling=2.827),
    "minimax_m2": Spec("minimax_m2", {"num_local_experts": E, "intermediate_size": F, "scoring_func": "sigmoid",
                                      "use_routing_bias": True},
                       0, "model.layers.{L}.block_sparse_moe.", names=("w1", "w3", "w2"), bias="e_score_correction_bias"),
    "qwen3_5_moe": Spec("qwen3_5_moe", {"num_experts": E, "moe_intermediate_size": F, "shared_expert_intermediate_size": F,
                                        "layer_types": ["linear_attention", "full_attention"]},
                        1, "model.language_model.layers.{L}.mlp.", shared="shared_expert.", score="softmax", fused=True,
                        shared_gate=True),
}


def make_weights(rng):
    w = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    return {"experts": [(w(F, H), w(F, H), w(H, F)) for _ in range(E)], "shared": (w(F, H), w(F, H), w(H, F)),
            "bias": (rng.standard_normal(E) * 0.1).astype(np.float32), "shared_gate": w(1, H),
            "router": w(E, H)}


def write_model(directory: pathlib.Path, spec: Spec, weights, fused=None) -> None:
    config = {"model_type": spec.model_type, "hidden_size": H, "num_hidden_layers": 2, "num_experts_per_tok": K,
              **spec.config}
    if spec.model_type == "qwen3_5_moe":  # multimodal: the language model's keys under text_config
        config = {"model_type": "qwen3_5_moe", "text_config": {**config, "model_type": "qwen3_5_moe_text"}}
    (directory / "config.json").write_text(json.dumps(config))
    p = spec.prefix.format(L=spec.layer)
    fused = spec.fused if fused is None else fused
    if fused is False and spec.model_type == "qwen3_5_moe":
        p = f"model.layers.{spec.layer}.mlp."  # a text-only export with per-expert names
    t = {p + "gate.weight": weights["router"]}
    if fused:
        t[p + "experts.gate_up_proj"] = np.stack([np.concatenate([g, u]) for g, u, _ in weights["experts"]])
        t[p + "experts.down_proj"] = np.stack([d for _, _, d in weights["experts"]])
    else:
        for e, (g, u, d) in enumerate(weights["experts"]):
            for name, m in zip(spec.names, (g, u, d)):
                t[f"{p}experts.{e}.{name}.weight"] = m
    if spec.shared:
        for name, m in zip(("gate_proj", "up_proj", "down_proj"), weights["shared"]):
            t[f"{p}{spec.shared}{name}.weight"] = m
    if spec.shared_gate:
        t[p + "shared_expert_gate.weight"] = weights["shared_gate"]
    if spec.bias:
        t[p + spec.bias] = weights["bias"]
    write_safetensors(directory / "model.safetensors", t)


def reference(spec: Spec, weights, x, logits):
    """The model's MoE block in float64: its router on `logits`, its experts, its shared expert."""
    x = x.astype(np.float64)
    logits = logits.astype(np.float64)
    out = np.zeros_like(x)
    for t in range(len(x)):
        if spec.score == "softmax":
            s = np.exp(logits[t] - logits[t].max())
            s /= s.sum()
            choice = s
        else:
            s = sigmoid(logits[t])
            choice = s + (weights["bias"] if spec.bias else 0)
        allowed = np.ones(E, bool)
        if spec.groups > 1:
            g = choice.reshape(spec.groups, -1)
            group_score = np.sort(g, axis=1)[:, -2:].sum(1)
            keep = np.argsort(-group_score, kind="stable")[:spec.top_groups]
            allowed = np.zeros((spec.groups, E // spec.groups), bool)
            allowed[keep] = True
            allowed = allowed.ravel()
        ids = np.argsort(-np.where(allowed, choice, -np.inf), kind="stable")[:K]
        w = s[ids] / s[ids].sum() * spec.scaling
        for k, e in enumerate(ids):
            g, u, d = (m.astype(np.float64) for m in weights["experts"][e])
            out[t] += w[k] * swiglu(x[t:t + 1], g, u, d)[0]
    if spec.shared:
        shared = swiglu(x, *(m.astype(np.float64) for m in weights["shared"]))
        if spec.shared_gate:
            shared *= sigmoid(x @ weights["shared_gate"].astype(np.float64).T)
        out += shared
    return out


@pytest.mark.parametrize("model_type", sorted(SPECS))
def test_checkpoint_runs_like_the_model(tmp_path, model_type):
    spec = SPECS[model_type]
    rng = np.random.default_rng(42)
    weights = make_weights(rng)
    write_model(tmp_path, spec, weights)
    layer = switchyard.MoeLayer(str(tmp_path), spec.layer, comm="mpi", weights=str(tmp_path), threads=1)
    assert (layer.num_experts, layer.top_k, layer.hidden_size) == (E, K, H)
    assert layer.model["model_type"] == model_type
    x = rng.standard_normal((64, H)).astype(np.float32)
    logits = (x @ weights["router"].T).astype(np.float32)
    ours = layer(x, logits)
    want = reference(spec, weights, x, logits)
    err = np.abs(ours - want).max() / np.abs(want).max()
    assert err <= 1e-5, f"{model_type}: max relative error {err:.2e}"
    if model_type == "qwen3_5_moe":  # fused 3-D experts and per-expert names load the same weights
        other = tmp_path / "per_expert"
        other.mkdir()
        write_model(other, spec, weights, fused=False)
        same = switchyard.MoeLayer(str(other), spec.layer, comm="mpi", weights=str(other), threads=1)
        assert np.array_equal(same(x, logits), ours)


def e4m3_encode(x):
    """float -> nearest float8 e4m3fn code (ties to even), |x| <= 448."""
    table = e4m3_values(np.arange(256, dtype=np.uint8))
    finite = np.where(np.isnan(table), np.inf, table)
    codes = np.abs(x[..., None] - finite).argmin(-1).astype(np.uint8)
    return codes


@pytest.mark.parametrize("model_type,block", [("kimi_k2", [16, 16]), ("minimax_m2", [16, 8])])
def test_fp8_checkpoints_load_the_bf16_conversion(tmp_path, model_type, block):
    """FP8 as published (e4m3 + weight_scale_inv per block) gives the same outputs, bit for
    bit, as the checkpoint converted to bf16 the way DeepSeek's fp8_cast_bf16.py does."""
    spec = SPECS[model_type]
    rng = np.random.default_rng(7)
    weights = make_weights(rng)
    p = spec.prefix.format(L=spec.layer)
    fp8, bf16 = {}, {}

    def quantise(name, m):
        rows, cols = m.shape
        br, bc = block
        sr, sc = -(-rows // br), -(-cols // bc)
        scales = np.empty((sr, sc), np.float32)
        codes = np.empty(m.shape, np.uint8)
        for i in range(sr):
            for j in range(sc):
                blk = m[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
                scales[i, j] = np.float32(np.abs(blk).max() / 448.0)
                codes[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = e4m3_encode(blk / scales[i, j])
        fp8[name] = ("F8_E4M3", codes)
        fp8[name + "_scale_inv"] = scales
        expanded = np.repeat(np.repeat(scales, br, 0), bc, 1)[:rows, :cols]
        bf16[name] = ("BF16", bf16_bits(e4m3_values(codes) * expanded))  # float32 product, rounded once

    for e, mats in enumerate(weights["experts"]):
        for n, m in zip(spec.names, mats):
            quantise(f"{p}experts.{e}.{n}.weight", m)
    if spec.shared:
        for n, m in zip(("gate_proj", "up_proj", "down_proj"), weights["shared"]):
            quantise(f"{p}{spec.shared}{n}.weight", m)
    for t in (fp8, bf16):
        t[p + "gate.weight"] = weights["router"]
        t[p + spec.bias] = weights["bias"]
    outs = []
    for name, tensors in (("fp8", fp8), ("bf16", bf16)):
        d = tmp_path / name
        d.mkdir()
        config = {"model_type": spec.model_type, "hidden_size": H, "num_hidden_layers": 2, "num_experts_per_tok": K,
                  **spec.config}
        if name == "fp8":
            config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": block}
        (d / "config.json").write_text(json.dumps(config))
        write_safetensors(d / "model.safetensors", tensors)
        for weight_type in ("fp32", "bf16"):
            layer = switchyard.MoeLayer(str(d), spec.layer, comm="mpi", weights=str(d), weight_type=weight_type, threads=1)
            x = np.random.default_rng(3).standard_normal((32, H)).astype(np.float32)
            outs.append((name, weight_type, layer(x, (x @ weights["router"].T).astype(np.float32))))
    by = {(n, w): o for n, w, o in outs}
    assert np.array_equal(by["fp8", "fp32"], by["bf16", "fp32"])
    assert np.array_equal(by["fp8", "bf16"], by["bf16", "bf16"])
    # and it is the model: close to the unquantised weights
    assert np.isfinite(by["fp8", "fp32"]).all()


@pytest.mark.parametrize("scale,message", [(-1.0, "block scales must be > 0"), (0.0, "block scales must be > 0"),
                                           (np.nan, "must be finite")])
def test_fp8_bad_scales_are_named(tmp_path, scale, message):
    spec = SPECS["minimax_m2"]
    weights = make_weights(np.random.default_rng(1))
    write_model(tmp_path, spec, weights)
    p = spec.prefix.format(L=spec.layer)
    tensors = {p + spec.bias: weights["bias"]}
    for e, mats in enumerate(weights["experts"]):
        for n, m in zip(spec.names, mats):
            tensors[f"{p}experts.{e}.{n}.weight"] = ("F8_E4M3", np.zeros(m.shape, np.uint8))
            tensors[f"{p}experts.{e}.{n}.weight_scale_inv"] = np.full((1, 1), scale, np.float32)
    write_safetensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(ValueError) as e:
        switchyard.MoeLayer(str(tmp_path), 0, comm="mpi", weights=str(tmp_path))
    assert "weight_scale_inv" in str(e.value) and message in str(e.value)


def test_other_quantisations_are_refused(tmp_path):
    write_model(tmp_path, SPECS["minimax_m2"], make_weights(np.random.default_rng(1)))
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as e:
        switchyard.model_info(str(tmp_path))
    assert "$.quantization_config.quant_method" in str(e.value) and "'awq' is not supported" in str(e.value)


def test_fp8_without_scales_is_named(tmp_path):
    spec = SPECS["minimax_m2"]
    weights = make_weights(np.random.default_rng(1))
    write_model(tmp_path, spec, weights)
    p = spec.prefix.format(L=spec.layer)
    tensors = {f"{p}experts.{e}.{n}.weight": ("F8_E4M3", np.zeros(m.shape, np.uint8))
               for e, mats in enumerate(weights["experts"]) for n, m in zip(spec.names, mats)}
    tensors[p + spec.bias] = weights["bias"]
    write_safetensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(ValueError) as e:
        switchyard.MoeLayer(str(tmp_path), 0, comm="mpi", weights=str(tmp_path))
    assert "weight_scale_inv" in str(e.value)


def test_bf16_helpers_round_like_torch():
    import torch

    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 1e3
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)
    assert np.array_equal(bf16_bits(x), want)
    assert np.array_equal(bf16_values(want), torch.from_numpy(x).to(torch.bfloat16).float().numpy())


# ---- gpt-oss: fused, interleaved experts with biases; MXFP4 as published ----------------------

GH, GF, GE, GK = 64, 32, 8, 2
E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def mxfp4_values(blocks, scales):
    """[..., G, 16] U8 blocks, [..., G] U8 scales -> [..., G * 32] float32 (low nibble first)."""
    lo, hi = E2M1[blocks & 0x0F], E2M1[blocks >> 4]
    values = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)
    values = values * np.exp2(scales.astype(np.float32) - 127)[..., None]
    return values.reshape(*blocks.shape[:-2], -1).astype(np.float32)


def gpt_oss_checkpoints(tmp_path, rng):
    """The same experts twice: MXFP4 blocks/scales as published, and dequantised to BF16."""
    gu_blocks = rng.integers(0, 256, size=(GE, 2 * GF, GH // 32, 16), dtype=np.uint8)
    gu_scales = rng.integers(121, 125, size=(GE, 2 * GF, GH // 32), dtype=np.uint8)
    d_blocks = rng.integers(0, 256, size=(GE, GH, GF // 32, 16), dtype=np.uint8)
    d_scales = rng.integers(121, 125, size=(GE, GH, GF // 32), dtype=np.uint8)
    gu = mxfp4_values(gu_blocks, gu_scales)        # [E, 2F (interleaved gate, up), H]: rows are outputs
    down = mxfp4_values(d_blocks, d_scales)        # [E, H, F]
    gu_bias = bf16_values(bf16_bits(rng.standard_normal((GE, 2 * GF)) * 2))
    d_bias = bf16_values(bf16_bits(rng.standard_normal((GE, GH))))
    router = (rng.standard_normal((GE, GH)) / 8).astype(np.float32)
    p = "model.layers.1.mlp."
    common = {p + "router.weight": router, p + "router.bias": np.zeros(GE, np.float32),
              p + "experts.gate_up_proj_bias": ("BF16", bf16_bits(gu_bias)),
              p + "experts.down_proj_bias": ("BF16", bf16_bits(d_bias))}
    config = {"model_type": "gpt_oss", "hidden_size": GH, "num_hidden_layers": 2, "num_local_experts": GE,
              "num_experts_per_tok": GK, "experts_per_token": GK, "intermediate_size": GF, "swiglu_limit": 7.0}
    dirs = {}
    for name in ("mxfp4", "bf16"):
        d = tmp_path / name
        d.mkdir()
        c = dict(config)
        if name == "mxfp4":
            c["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.mlp.router"]}
            tensors = {**common, p + "experts.gate_up_proj_blocks": ("U8", gu_blocks), p + "experts.gate_up_proj_scales": ("U8", gu_scales),
                       p + "experts.down_proj_blocks": ("U8", d_blocks), p + "experts.down_proj_scales": ("U8", d_scales)}
        else:  # transformers' dequantised parameters: gate_up_proj [E, H, 2F], down_proj [E, F, H]
            tensors = {**common, p + "experts.gate_up_proj": ("BF16", bf16_bits(gu.transpose(0, 2, 1))),
                       p + "experts.down_proj": ("BF16", bf16_bits(down.transpose(0, 2, 1)))}
        (d / "config.json").write_text(json.dumps(c))
        write_safetensors(d / "model.safetensors", tensors)
        dirs[name] = d
    weights = {"gate": gu[:, 0::2, :], "up": gu[:, 1::2, :], "down": down, "gate_bias": gu_bias[:, 0::2],
               "up_bias": gu_bias[:, 1::2], "down_bias": d_bias, "router": router}
    return dirs, weights


def gpt_oss_reference(w, x, logits):
    """gpt-oss's MoE block in float64: softmax over the top-k logits, clamped SwiGLU, biases."""
    x = x.astype(np.float64)
    out = np.zeros_like(x)
    for t in range(len(x)):
        ids = np.argsort(-logits[t], kind="stable")[:GK]
        top = logits[t][ids].astype(np.float64)
        p = np.exp(top - top.max())
        p /= p.sum()
        for k, e in enumerate(ids):
            g = np.minimum(w["gate"][e].astype(np.float64) @ x[t] + w["gate_bias"][e], 7.0)
            u = np.clip(w["up"][e].astype(np.float64) @ x[t] + w["up_bias"][e], -7.0, 7.0)
            act = (u + 1) * g / (1 + np.exp(-1.702 * g))
            out[t] += p[k] * (w["down"][e].astype(np.float64) @ act + w["down_bias"][e])
    return out


def test_gpt_oss_mxfp4_checkpoint_runs_like_the_model(tmp_path):
    rng = np.random.default_rng(11)
    dirs, w = gpt_oss_checkpoints(tmp_path, rng)
    x = rng.standard_normal((48, GH)).astype(np.float32)
    logits = (x @ w["router"].T).astype(np.float32)
    outputs = {}
    for name, d in dirs.items():
        for weight_type in ("fp32", "bf16"):
            layer = switchyard.MoeLayer(str(d), 1, comm="mpi", weights=str(d), weight_type=weight_type, threads=1)
            assert layer.model["model_type"] == "gpt_oss"
            outputs[name, weight_type] = layer(x, logits)
    want = gpt_oss_reference(w, x, logits)
    err = np.abs(outputs["mxfp4", "fp32"] - want).max() / np.abs(want).max()
    assert err <= 1e-5, f"max relative error {err:.2e}"
    # MXFP4 values are exact in bf16: the published and the dequantised checkpoint are the same weights
    assert np.array_equal(outputs["mxfp4", "fp32"], outputs["bf16", "fp32"])
    assert np.array_equal(outputs["mxfp4", "bf16"], outputs["bf16", "bf16"])
    # the clamps are exercised: some gate pre-activations exceed the limit
    g = np.einsum("efh,th->tef", w["gate"], x) + w["gate_bias"][None]
    assert (g > 7).any() and (g < 7).any()


def test_gpt_oss_bad_checkpoints_are_named(tmp_path):
    rng = np.random.default_rng(12)
    dirs, _ = gpt_oss_checkpoints(tmp_path, rng)
    config = json.loads((dirs["mxfp4"] / "config.json").read_text())
    config["swiglu_limit"] = 10.0
    (dirs["mxfp4"] / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as e:
        switchyard.model_info(str(dirs["mxfp4"]))
    assert "swiglu_limit" in str(e.value) and "10" in str(e.value)
    p = "model.layers.1.mlp.experts."
    write_safetensors(dirs["bf16"] / "model.safetensors", {p + "gate_up_proj": np.zeros((GE, GH, GF), np.float32)})
    with pytest.raises(ValueError) as e:
        switchyard.MoeLayer(str(dirs["bf16"]), 1, comm="mpi", weights=str(dirs["bf16"]))
    assert "gate_up_proj: shape [8, 64, 32], the model needs [8, 64, 64]" in str(e.value)
