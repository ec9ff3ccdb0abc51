"""Safetensors dtype codes and their sizes, and the mapping to torch dtypes (lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ITEM_SIZE: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}

# Names users write in recipes (mergekit's spellings) -> safetensors codes.
_DTYPE_NAMES = {
    "float32": "F32",
    "fp32": "F32",
    "float": "F32",
    "float16": "F16",
    "fp16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "bf16": "BF16",
    "float64": "F64",
}
_TORCH_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
}
FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def dtype_code(name: str) -> str:
    """'bfloat16' / 'bf16' / 'BF16' -> 'BF16'. Raises ValueError naming the valid names."""
    if name.upper() in ITEM_SIZE:
        return name.upper()
    code = _DTYPE_NAMES.get(name.lower())
    if code is None:
        valid = ", ".join(sorted(_DTYPE_NAMES))
        raise ValueError(f"unknown dtype {name!r}; valid: {valid}")
    return code


def torch_dtype_name(code: str) -> str:
    """'BF16' -> 'bfloat16' (the name config.json uses for torch_dtype)."""
    return _TORCH_NAMES[code]


def to_torch(code: str) -> torch.dtype:
    import torch

    return getattr(torch, _TORCH_NAMES[code])  # type: ignore[no-any-return]


def from_torch(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    for code, torch_name in _TORCH_NAMES.items():
        if torch_name == name:
            return code
    raise ValueError(f"no safetensors code for {dtype}")
