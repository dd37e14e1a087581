"""Writing safetensors checkpoints that Switchyard (and Hugging Face loaders) read.

For tests, examples and exporting weights without the ``safetensors`` package: an 8-byte
little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets}}``, the bytes.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Tuple, Union

import numpy as np

_NUMPY_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
                 np.dtype(np.int32): "I32", np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}
# Raw encodings given as (dtype name, integer array of the encoded bits).
_RAW = {"BF16": np.uint16, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8, "U8": np.uint8}

Tensor = Union[np.ndarray, Tuple[str, np.ndarray], Any]


def bf16_bits(x: Any) -> np.ndarray:
    """float32 values -> their bfloat16 encodings (uint16), rounded to nearest even, as torch
    and Switchyard round (NaN stays NaN)."""
    u = np.ascontiguousarray(np.asarray(x, dtype=np.float32)).view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """bfloat16 encodings (uint16) -> float32 values."""
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def e4m3_values(codes: np.ndarray) -> np.ndarray:
    """float8 e4m3fn encodings (uint8) -> float32 values (0x7f/0xff are NaN; no infinities)."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int32)
    sign = np.where(c & 0x80, -1.0, 1.0)
    exp = (c >> 3) & 0xF
    mant = c & 0x7
    value = np.where(exp == 0, mant / 8.0 * 2.0 ** -6, (1 + mant / 8.0) * 2.0 ** (exp - 7))
    value = np.where((c & 0x7F) == 0x7F, np.nan, value)
    return (sign * value).astype(np.float32)


def _encode(name: str, tensor: Tensor) -> Tuple[str, Tuple[int, ...], bytes]:
    if isinstance(tensor, tuple):
        dtype, array = tensor
        if dtype not in _RAW:
            raise ValueError(f"{name}: raw dtype {dtype!r} is not one of {sorted(_RAW)}")
        array = np.ascontiguousarray(np.asarray(array, dtype=_RAW[dtype]))
        return dtype, array.shape, array.tobytes()
    if hasattr(tensor, "detach") and hasattr(tensor, "cpu"):  # torch.Tensor
        import torch

        t = tensor.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return "BF16", tuple(t.shape), t.view(torch.int16).numpy().astype(np.uint16).tobytes()
        tensor = t.numpy()
    array = np.ascontiguousarray(tensor)
    if array.dtype not in _NUMPY_DTYPES:
        raise ValueError(f"{name}: dtype {array.dtype} is not supported (float32/16/64, int32/64, uint8, or (raw dtype, bits))")
    return _NUMPY_DTYPES[array.dtype], array.shape, array.astype(array.dtype.newbyteorder("<")).tobytes()


def write_safetensors(path: Union[str, os.PathLike], tensors: Mapping[str, Tensor]) -> None:
    """Writes ``tensors`` (name -> numpy array, torch tensor, or (dtype, encoded bits) such as
    ``("BF16", bf16_bits(x))`` or ``("F8_E4M3", codes)``) to one .safetensors file."""
    header = {}
    chunks = []
    offset = 0
    for name, tensor in tensors.items():
        dtype, shape, data = _encode(name, tensor)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for data in chunks:
            f.write(data)
