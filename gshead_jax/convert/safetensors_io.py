"""Reading and writing safetensors files without torch.

``safetensors.numpy`` cannot represent bfloat16 (NumPy has no such dtype), and large
checkpoints (WebSSL 7B) are sharded behind ``model.safetensors.index.json``. These helpers
read plain NumPy dtypes through ``safetensors.numpy`` (memory-mapped), bfloat16 and other
ML dtypes through safetensors' Flax backend on the CPU (as ``ml_dtypes`` arrays), and
follow Hugging Face's shard index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax
import numpy as np
from safetensors import safe_open

# safetensors dtype names that NumPy represents natively (safetensors.numpy._TYPES).
_NUMPY_DTYPES = {"F64", "F32", "F16", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8", "BOOL"}

INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "model.safetensors"


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of one safetensors file as NumPy arrays (bfloat16 as ml_dtypes).

    Args:
        path: The ``.safetensors`` file.

    Returns:
        Tensors by name.
    """
    out: dict[str, np.ndarray] = {}
    exotic: list[str] = []
    with safe_open(os.fspath(path), framework="np") as f:
        for name in f.keys():  # noqa: SIM118 -- safe_open is not iterable
            if f.get_slice(name).get_dtype() in _NUMPY_DTYPES:
                out[name] = f.get_tensor(name)
            else:
                exotic.append(name)
    if exotic:
        # The Flax backend knows bfloat16 / float8; keep the copies on the host.
        cpu = jax.devices("cpu")[0]
        with jax.default_device(cpu), safe_open(os.fspath(path), framework="flax") as f:
            for name in exotic:
                out[name] = np.asarray(f.get_tensor(name))
    return out


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` string map of a safetensors file (empty if none)."""
    with safe_open(os.fspath(path), framework="np") as f:
        return dict(f.metadata() or {})


def read_hf_weights(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Tensors of a Hugging Face model folder, single file or sharded.

    Args:
        folder: Directory with ``model.safetensors`` or ``model.safetensors.index.json``
            and its shards.

    Returns:
        (tensors by name, description of the files read).
    """
    folder = os.fspath(folder)
    index = os.path.join(folder, INDEX_NAME)
    single = os.path.join(folder, WEIGHTS_NAME)
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: no 'weight_map' object")
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            part = read_safetensors(os.path.join(folder, shard))
            tensors.update(part)
        listed, found = set(weight_map), set(tensors)
        if listed != found:
            raise ValueError(
                f"{index}: shards do not hold the listed tensors; listed but absent: "
                f"{sorted(listed - found)}, present but unlisted: {sorted(found - listed)}"
            )
        return tensors, index
    if os.path.isfile(single):
        return read_safetensors(single), single
    raise FileNotFoundError(f"{folder}: neither {WEIGHTS_NAME} nor {INDEX_NAME} found")


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray | jax.Array],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes tensors (any dtype JAX knows, bfloat16 included) to one safetensors file.

    Args:
        path: Output file.
        tensors: Arrays by name (NumPy, ml_dtypes or jax); dtypes are kept.
        metadata: Optional string map stored in the header.
    """
    from safetensors.numpy import save_file

    # safetensors.numpy writes by dtype name, so ml_dtypes' bfloat16 is accepted too.
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    save_file(arrays, os.fspath(path), metadata=dict(metadata) if metadata else None)
