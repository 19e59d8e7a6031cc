"""Import DINOv2 / WebSSL weights into ``DinoViT`` parameters, and the project's own format.

Three checkpoint layouts are read, every tensor mapped by name (``convert.mapping``):

* **Hugging Face folder** (``config.json`` + ``model.safetensors`` or a sharded
  ``model.safetensors.index.json``), ``model_type`` ``dinov2`` or
  ``dinov2_with_registers`` -- the files on the Hub and what ``save_pretrained`` writes:
  ``embeddings.*``, ``encoder.layer.N.attention.attention.{query,key,value}``,
  ``attention.output.dense``, ``layer_scale{1,2}.lambda1``, ``mlp.fc{1,2}`` or the fused
  SwiGLU ``mlp.weights_in`` ([gate; up]) / ``mlp.weights_out``, ``layernorm``. The
  in-memory names of transformers 5 (``attention.q_proj``, ``mlp.gate_proj``/``up_proj``/
  ``down_proj``; a ``state_dict()`` saved as is) are read too. Read with safetensors,
  no torch.
* **torch-hub / original** ``.pth`` state dicts (``facebookresearch/dinov2``, WebSSL):
  ``cls_token``, ``pos_embed``, ``register_tokens``, ``mask_token``,
  ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,
  mlp.fc1/fc2 or mlp.w12/w3,ls2.gamma}``, ``norm`` (also ``blocks.C.N.*`` of
  ``block_chunks`` models). Needs torch (``pip install 'gshead-jax[convert]'``); the same
  names in a ``.safetensors`` file are read without it. The architecture is inferred from
  the shapes; the head count, which shapes cannot tell, comes from the width of the
  known variants (or ``num_heads=``). Position-embedding interpolation follows the hub:
  registers -> antialiased, offset 0; no registers -> plain bicubic with the +0.1 offset.

The project's own format (``save_params`` / ``load_params``) is a directory with
``gshead_config.json`` (the ``ViTConfig``) and ``params.safetensors`` (``/``-joined
parameter paths): one mmap-able file any framework can read, unlike an Orbax
checkpoint, which the training code keeps for train states.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax.convert import mapping as M
from gshead_jax.convert.safetensors_io import read_hf_weights, read_safetensors, write_safetensors
from gshead_jax.nn.vit import DinoViT
from gshead_jax.nn.vit_config import ViTConfig

FORMAT = "gshead_jax.DinoViT"
FORMAT_VERSION = 1
CONFIG_NAME = "gshead_config.json"
PARAMS_NAME = "params.safetensors"

# Head count by width for checkpoints without a config (heads are not in the shapes):
# DINOv2 S/B/L/g and WebSSL 2B/3B/5B/7B (300M and 1B share L's and g's widths).
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1536: 24, 2688: 21, 3072: 24, 3584: 28, 4096: 32}

# Hugging Face config defaults (transformers 5.x Dinov2Config / Dinov2WithRegistersConfig).
_HF_DEFAULTS = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    mlp_ratio=4,
    hidden_act="gelu",
    layer_norm_eps=1e-6,
    image_size=224,
    num_channels=3,
    qkv_bias=True,
    layerscale_value=1.0,
    use_swiglu_ffn=False,
)


def _square(value: Any, name: str, source: str) -> int:
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{source}: {name} must be square, got {value}")
        value = value[0]
    return int(value)


def config_from_hf(hf: Mapping[str, Any], source: str = "config.json") -> ViTConfig:
    """``ViTConfig`` of a Hugging Face ``Dinov2Config`` / ``Dinov2WithRegistersConfig`` dict.

    Args:
        hf: The parsed ``config.json``.
        source: Its path, for error messages.

    Returns:
        The config, with HF's interpolation (resize to size; antialiased with registers).
    """
    model_type = hf.get("model_type")
    if model_type not in ("dinov2", "dinov2_with_registers"):
        raise ValueError(
            f"{source}: model_type must be 'dinov2' or 'dinov2_with_registers', got {model_type!r}"
        )
    reg = model_type == "dinov2_with_registers"
    g = {**_HF_DEFAULTS, "patch_size": 16 if reg else 14, **hf}
    return ViTConfig(
        hidden_size=int(g["hidden_size"]),
        num_layers=int(g["num_hidden_layers"]),
        num_heads=int(g["num_attention_heads"]),
        mlp_ratio=float(g["mlp_ratio"]),
        mlp_kind="swiglu" if g["use_swiglu_ffn"] else "mlp",
        hidden_act=str(g["hidden_act"]),
        patch_size=_square(g["patch_size"], "patch_size", source),
        image_size=_square(g["image_size"], "image_size", source),
        num_channels=int(g["num_channels"]),
        # Dinov2Config has no registers (a stray key is ignored, as HF does);
        # Dinov2WithRegistersConfig defaults to 4 and always has a mask token.
        num_register_tokens=int(g.get("num_register_tokens", 4)) if reg else 0,
        layer_norm_eps=float(g["layer_norm_eps"]),
        qkv_bias=bool(g["qkv_bias"]),
        layerscale=True,
        layerscale_value=float(g["layerscale_value"]),
        use_mask_token=True if reg else bool(g.get("use_mask_token", True)),
        interpolate_antialias=reg,
        interpolate_offset=0.0,
    )


def config_from_hub_tensors(
    t: Mapping[str, np.ndarray], source: str, num_heads: int | None = None
) -> ViTConfig:
    """Infers the ``ViTConfig`` of a torch-hub-layout state dict from its shapes.

    Args:
        t: Tensors by (unchunked) torch-hub name.
        source: Their path, for error messages.
        num_heads: Head count; by default looked up from the width (``HEADS_BY_WIDTH``).
    """
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if name not in t:
            raise ValueError(f"{source}: torch-hub DINOv2 checkpoint without {name!r}")
    d = int(t["cls_token"].shape[-1])
    _, c, p, _ = t["patch_embed.proj.weight"].shape
    n = int(t["pos_embed"].shape[1]) - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"{source}: pos_embed has {n} patch positions, not a square grid")
    blocks = {int(k.split(".")[1]) for k in t if k.startswith("blocks.")}
    if not blocks:
        raise ValueError(f"{source}: no blocks.N.* tensors")
    swiglu = "blocks.0.mlp.w12.weight" in t
    if swiglu:
        f = int(t["blocks.0.mlp.w3.weight"].shape[1]) if "blocks.0.mlp.w3.weight" in t else 0
        # SwiGLUFFNFused rounds 2/3 of width * mlp_ratio; every released model uses 4.
        ratio = 4.0
        if ViTConfig(hidden_size=d, num_heads=1, mlp_kind="swiglu").mlp_dim != f:
            raise ValueError(
                f"{source}: SwiGLU hidden size {f} is not the mlp_ratio=4 size for width {d}"
            )
    else:
        f = int(t["blocks.0.mlp.fc1.weight"].shape[0]) if "blocks.0.mlp.fc1.weight" in t else 4 * d
        ratio = f / d
    if num_heads is None and d not in HEADS_BY_WIDTH:
        raise ValueError(
            f"{source}: width {d} is not a known DINOv2/WebSSL width {sorted(HEADS_BY_WIDTH)}; "
            "pass num_heads="
        )
    regs = int(t["register_tokens"].shape[1]) if "register_tokens" in t else 0
    return ViTConfig(
        hidden_size=d,
        num_layers=max(blocks) + 1,
        num_heads=int(num_heads) if num_heads is not None else HEADS_BY_WIDTH[d],
        mlp_ratio=ratio,
        mlp_kind="swiglu" if swiglu else "mlp",
        patch_size=int(p),
        image_size=m * int(p),
        num_channels=int(c),
        num_register_tokens=regs,
        qkv_bias="blocks.0.attn.qkv.bias" in t,
        layerscale="blocks.0.ls1.gamma" in t,
        use_mask_token="mask_token" in t,
        # dinov2/hub/backbones.py: the _reg models resize antialiased with no offset,
        # the others with the historical scale_factor offset of 0.1.
        interpolate_antialias=regs > 0,
        interpolate_offset=0.0 if regs else 0.1,
    )


def _block_plan(c: ViTConfig, i: int, layout: str) -> list[M.TensorMap]:
    d, f, p = c.hidden_size, c.mlp_dim, f"blocks_{i}/"
    lin, cat, T = M.transpose_linear, M.concat_linear, M.TensorMap
    if layout == "hub":
        s = f"blocks.{i}."
        names = dict(n1="norm1", n2="norm2", proj="attn.proj", ls1="ls1.gamma", ls2="ls2.gamma")
        fc1, fc2, w12, w3 = "mlp.fc1", "mlp.fc2", "mlp.w12", "mlp.w3"
        plan = [T(p + "attn/qkv/kernel", (s + "attn.qkv.weight",), lin, ((3 * d, d),))]
        if c.qkv_bias:
            plan.append(T(p + "attn/qkv/bias", (s + "attn.qkv.bias",), shapes=((3 * d,),)))
    else:
        s = f"encoder.layer.{i}."
        names = dict(
            n1="norm1",
            n2="norm2",
            proj="attention.o_proj" if layout == "hf5" else "attention.output.dense",
            ls1="layer_scale1.lambda1",
            ls2="layer_scale2.lambda1",
        )
        fc1, fc2, w12, w3 = "mlp.fc1", "mlp.fc2", "mlp.weights_in", "mlp.weights_out"
        qkv = ("q_proj", "k_proj", "v_proj") if layout == "hf5" else ("query", "key", "value")
        pre = s + ("attention." if layout == "hf5" else "attention.attention.")
        ws = tuple(pre + q + ".weight" for q in qkv)
        plan = [T(p + "attn/qkv/kernel", ws, cat, ((d, d),) * 3)]
        if c.qkv_bias:
            bs = tuple(pre + q + ".bias" for q in qkv)
            plan.append(T(p + "attn/qkv/bias", bs, cat, ((d,),) * 3))
    for ln in ("n1", "n2"):
        tgt = p + ("norm1" if ln == "n1" else "norm2")
        plan.append(T(tgt + "/scale", (s + names[ln] + ".weight",), shapes=((d,),)))
        plan.append(T(tgt + "/bias", (s + names[ln] + ".bias",), shapes=((d,),)))
    plan.append(T(p + "attn/proj/kernel", (s + names["proj"] + ".weight",), lin, ((d, d),)))
    plan.append(T(p + "attn/proj/bias", (s + names["proj"] + ".bias",), shapes=((d,),)))
    if c.layerscale:
        plan.append(T(p + "ls1", (s + names["ls1"],), shapes=((d,),)))
        plan.append(T(p + "ls2", (s + names["ls2"],), shapes=((d,),)))
    if c.mlp_kind == "mlp":
        mlp = [("fc1", fc1, (f, d)), ("fc2", fc2, (d, f))]
    elif layout == "hf5":
        # transformers 5 splits the fused SwiGLU input projection into gate and up.
        g, u = s + "mlp.gate_proj", s + "mlp.up_proj"
        plan.append(T(p + "mlp/w12/kernel", (g + ".weight", u + ".weight"), cat, ((f, d),) * 2))
        plan.append(T(p + "mlp/w12/bias", (g + ".bias", u + ".bias"), cat, ((f,),) * 2))
        mlp = [("w3", "mlp.down_proj", (d, f))]
    else:
        mlp = [("w12", w12, (2 * f, d)), ("w3", w3, (d, f))]
    for tgt, src, shape in mlp:
        plan.append(T(p + f"mlp/{tgt}/kernel", (s + src + ".weight",), lin, (shape,)))
        plan.append(T(p + f"mlp/{tgt}/bias", (s + src + ".bias",), shapes=((shape[0],),)))
    return plan


def dinov2_plan(c: ViTConfig, layout: str) -> list[M.TensorMap]:
    """Every tensor of a ``layout`` checkpoint (``"hf"``, ``"hf5"``, ``"hub"``) for ``c``."""
    d, m, ch, p, r = c.hidden_size, c.grid_size, c.num_channels, c.patch_size, c.num_register_tokens
    T = M.TensorMap
    if layout == "hub":
        n = dict(cls="cls_token", mask="mask_token", pos="pos_embed", reg="register_tokens",
                 patch="patch_embed.proj", norm="norm")  # fmt: skip
    else:
        e = "embeddings."
        n = dict(cls=e + "cls_token", mask=e + "mask_token", pos=e + "position_embeddings",
                 reg=e + "register_tokens", patch=e + "patch_embeddings.projection",
                 norm="layernorm")  # fmt: skip
    plan = [
        T("cls_token", (n["cls"],), shapes=((1, 1, d),)),
        T("pos_embed", (n["pos"],), shapes=((1, 1 + m * m, d),)),
        T("patch_embed/kernel", (n["patch"] + ".weight",), M.conv_oihw_to_hwio, ((d, ch, p, p),)),
        T("patch_embed/bias", (n["patch"] + ".bias",), shapes=((d,),)),
        T("norm/scale", (n["norm"] + ".weight",), shapes=((d,),)),
        T("norm/bias", (n["norm"] + ".bias",), shapes=((d,),)),
    ]
    if c.use_mask_token:
        plan.append(T("mask_token", (n["mask"],), shapes=((1, d),)))
    if r:
        plan.append(T("register_tokens", (n["reg"],), shapes=((1, r, d),)))
    for i in range(c.num_layers):
        plan += _block_plan(c, i, layout)
    return plan


def _layout(names: set[str], source: str) -> str:
    if "embeddings.cls_token" in names:
        return "hf5" if any(".attention.q_proj." in k for k in names) else "hf"
    if "cls_token" in names:
        return "hub"
    raise ValueError(
        f"{source}: not a DINOv2 checkpoint: expected Hugging Face names (embeddings.cls_token, "
        f"encoder.layer.N.*) or torch-hub names (cls_token, blocks.N.*); first names: "
        f"{sorted(names)[:8]}"
    )


def _unchunk(t: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``blocks.C.N.x`` (block_chunks > 0) -> ``blocks.N.x``; returns the original names."""
    pat = re.compile(r"^blocks\.\d+\.(\d+)\.(.*)$")
    if not any(pat.match(k) for k in t):
        return t, {}
    out, shown = {}, {}
    for k, v in t.items():
        mt = pat.match(k)
        new = f"blocks.{mt.group(1)}.{mt.group(2)}" if mt else k
        if new in out:
            raise ValueError(f"two tensors map to {new!r} (one is {k!r})")
        out[new], shown[new] = v, k
    return out, shown


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:  # torch is the convert extra, not a dependency
        raise ImportError(
            f"reading {path} needs torch: pip install 'gshead-jax[convert]' "
            "(or convert it to .safetensors elsewhere)"
        ) from err
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{path}: expected a flat state dict of tensors (the released DINOv2/WebSSL "
            f"backbone .pth), got {keys}"
        )
    # bfloat16 has no NumPy dtype: widen it; the caller casts to the wanted dtype.
    return {
        k: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
        for k, v in obj.items()
    }


def _expected_params(c: ViTConfig) -> Any:
    m = c.image_size - c.image_size % c.patch_size
    shapes = jax.eval_shape(
        lambda: DinoViT(c).init(jax.random.key(0), jnp.zeros((1, m, m, c.num_channels)))
    )
    return shapes["params"]


def convert_state_dict(
    tensors: Mapping[str, np.ndarray],
    config: ViTConfig | None = None,
    *,
    source: str = "state_dict",
    dtype: Any = np.float32,
    **overrides: Any,
) -> tuple[ViTConfig, dict[str, Any]]:
    """Maps in-memory checkpoint tensors (any supported layout) onto DinoViT params.

    Args:
        tensors: Tensors by name, NumPy arrays: Hugging Face (files or transformers-5
            names) or torch-hub layout (``blocks.C.N.*`` accepted).
        config: The architecture; required for Hugging Face names, inferred from the
            shapes for torch-hub names when None.
        source: What the tensors are, for error messages.
        dtype: Dtype of the returned parameters.
        **overrides: ``ViTConfig`` fields replacing the given or inferred ones.

    Returns:
        (config, params).

    Raises:
        CheckpointMismatchError: Missing, unexpected or misshaped tensors, all listed.
    """
    layout = _layout(set(tensors), source)
    shown: dict[str, str] = {}
    if layout == "hub":
        tensors, shown = _unchunk(dict(tensors))
        if config is None:
            config = config_from_hub_tensors(tensors, source, overrides.get("num_heads"))
    elif config is None:
        raise ValueError(f"{source}: Hugging Face tensor names need their config (config.json)")
    config = dataclasses.replace(config, **overrides)
    hint = f"(read as a '{layout}' layout DINOv2 checkpoint for {config})"
    params = M.map_tensors(
        tensors, dinov2_plan(config, layout), source=source, display_names=shown, hint=hint
    )
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=dtype), params)
    M.check_tree(params, _expected_params(config), source=source, hint=hint)
    return config, params


def load_dinov2(
    path: str | os.PathLike, *, dtype: Any = np.float32, **overrides: Any
) -> tuple[ViTConfig, dict[str, Any]]:
    """Reads DINOv2 / WebSSL weights as ``(ViTConfig, DinoViT params)``.

    Args:
        path: A Hugging Face model folder (``config.json`` + safetensors, sharded or
            not; ``pytorch_model.bin`` with torch), or a torch-hub state dict file
            (``.pth``/``.pt``/``.bin`` with torch, ``.safetensors`` without).
        dtype: Dtype of the returned parameters (float32 by default).
        **overrides: ``ViTConfig`` fields that replace the read or inferred ones
            (``num_heads=...`` for an unknown width, ``interpolate_offset=0.0``, ...).

    Returns:
        (config, params): ``DinoViT(config).apply({"params": params}, pixels)``.

    Raises:
        CheckpointMismatchError: Some tensor is missing, unexpected or misshaped;
            all such names are listed.

    Example:
        >>> config, params = load_dinov2("/ckpt/dinov2-base")  # HF snapshot
        >>> y = DinoViT(config).apply({"params": params}, pixels)
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"{path}: a Hugging Face model folder needs config.json")
        with open(cfg_path) as f:
            config = config_from_hf(json.load(f), cfg_path)
        bin_path = os.path.join(path, "pytorch_model.bin")
        has_st = any(n.endswith((".safetensors", ".index.json")) for n in os.listdir(path))
        if not has_st and os.path.isfile(bin_path):
            tensors, source = _read_torch(bin_path), bin_path
        else:
            tensors, source = read_hf_weights(path)
        if _layout(set(tensors), source) == "hub":
            raise ValueError(f"{source}: torch-hub tensor names in a Hugging Face folder")
    elif os.path.isfile(path):
        source, config = path, None
        tensors = read_safetensors(path) if path.endswith(".safetensors") else _read_torch(path)
        if _layout(set(tensors), source) != "hub":
            raise ValueError(
                f"{path}: Hugging Face tensor names need their folder with config.json"
            )
    else:
        raise FileNotFoundError(f"{path}: no such file or directory")
    return convert_state_dict(tensors, config, source=source, dtype=dtype, **overrides)


def save_params(path: str | os.PathLike, config: ViTConfig, params: Mapping[str, Any]) -> None:
    """Writes ``config`` and ``params`` in the project's format (a directory).

    Args:
        path: Output directory (created): ``gshead_config.json`` + ``params.safetensors``.
        config: The architecture.
        params: DinoViT parameters (any dtype; kept as is).
    """
    path = os.fspath(path)
    M.check_tree(params, _expected_params(config), source=f"save_params({path})")
    os.makedirs(path, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION}
    with open(os.path.join(path, CONFIG_NAME), "w") as f:
        json.dump({**meta, "config": config.to_dict()}, f, indent=2)
    flat = M.flatten(params)
    write_safetensors(os.path.join(path, PARAMS_NAME), flat, {k: str(v) for k, v in meta.items()})


def load_params(path: str | os.PathLike) -> tuple[ViTConfig, dict[str, Any]]:
    """Reads a directory written by ``save_params``.

    Args:
        path: The directory.

    Returns:
        (config, params), params as NumPy arrays of the saved dtypes.
    """
    path = os.fspath(path)
    cfg_path = os.path.join(path, CONFIG_NAME)
    with open(cfg_path) as f:
        doc = json.load(f)
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
            f"got {doc.get('format')!r} version {doc.get('format_version')!r}"
        )
    config = ViTConfig.from_dict(doc["config"])
    source = os.path.join(path, PARAMS_NAME)
    params = M.unflatten(read_safetensors(source))
    M.check_tree(params, _expected_params(config), source=source)
    return config, params
