"""Import the released GAGAvatar checkpoint (``GAGAvatar.pt``) into Flax variables.

The checkpoint is Lightning Fabric's ``{"model": state_dict, "meta_cfg": ...}``
of the official ``GAGAvatar`` module (core/models/GAGAvatar/models.py). Its
tensors go, name by name (``convert.mapping``), to:

=============================  ==========================================  ==========
torch prefix                   Flax module                                 field
=============================  ==========================================  ==========
``base_model.dino_model.``     ``nn.vit.DinoViT`` (torch-hub names, via    ``dino``
                               ``convert.dinov2``)
``base_model.``                ``nn.dpt.DPTHead``                          ``dpt``
``gs_generator_g.``            ``nn.gaussian_heads.LinearGSGenerator``     ``gs_generator_g``
``gs_generator_l0.`` / ``l1.``  ``nn.gaussian_heads.ConvGSGenerator``       ``gs_generator_l0/1``
``upsampler.``                 ``nn.styleunet.StyleUNet`` (+ ``buffers``)  ``upsampler``
``head_base``                  the 5023 x 256 vertex embedding (array)     ``head_base``
=============================  ==========================================  ==========

The Flax modules name their submodules after the torch attributes (``projects_0``
for ``projects.0``, ``condition_scale_3_2`` for ``condition_scale.3.2``), so the
mapping is derived from the Flax parameter tree, leaf by leaf, with the layout
change each layer kind needs (Linear / Conv / ConvTranspose / modulated conv /
NCHW-shaped biases and buffers). Every checkpoint tensor must be used and every
parameter filled, or ``CheckpointMismatchError`` lists the offenders. Three
groups are skipped on purpose and reported in ``GAGAvatarWeights.skipped``:

* ``base_model.refinenet.0.resConfUnit1.*``: held but never called by the
  official forward (the first fusion block gets one input);
* ``upsampler.toRGB.*``: StyleUNet's per-level RGB heads, never called
  (``return_rgb`` is commented out);
* ``percep_loss.*`` (``ignore_prefixes``): the training-only VGGFace/AlexNet
  perceptual-loss networks, not part of the avatar model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax.convert import mapping as M
from gshead_jax.nn.dpt import DPTHead
from gshead_jax.nn.gaussian_heads import ConvGSGenerator, LinearGSGenerator
from gshead_jax.nn.styleunet import StyleUNet, make_styleunet

__all__ = [
    "DINO_PREFIX",
    "GAGAvatarModules",
    "GAGAvatarWeights",
    "convert_gagavatar_state_dict",
    "convert_module_state_dict",
    "expected_variables",
    "load_gagavatar",
    "load_gagavatar_state_dict",
]

DINO_PREFIX = "base_model.dino_model."
# Relative to each module: tensors the official module holds but its forward never uses.
_UNUSED = {
    DPTHead: ("refinenet.0.resConfUnit1.",),
    StyleUNet: ("toRGB.",),
}
# torch ConvTranspose2d weights are [in, out, kh, kw] (Conv2d: [out, in, kh, kw]).
_CONV_TRANSPOSE = re.compile(r"^resize_layers_[01]$")
# Biases stored NCHW-broadcastable ([1, C, 1, 1]) by StyleConv / ToRGB.
_NCHW_BIAS_OWNER = re.compile(r"^(style_conv1|style_convs_\d+|to_rgb1|to_rgbs_\d+)$")


class GAGAvatarModules(NamedTuple):
    """The Flax modules (and sizes) a GAGAvatar checkpoint is converted for.

    Attributes:
      dpt: The DPT head (GAGAvatar: ``DPTHead(output_dim=256)``).
      vertex_head: ``gs_generator_g`` (``LinearGSGenerator(in_dim=1024)``).
      plane_head: ``gs_generator_l0`` and ``l1`` (``ConvGSGenerator(in_dim=256)``).
      refiner: ``upsampler`` (``StyleUNet`` 512 -> 512, 32 -> 3 channels).
      vit_dim: ViT width feeding the DPT head (768 for DINOv2 B/14).
      num_vertices: Rows of ``head_base`` (5023 FLAME vertices).
      vertex_dim: Columns of ``head_base`` (256).
    """

    dpt: DPTHead = DPTHead()
    vertex_head: LinearGSGenerator = LinearGSGenerator()
    plane_head: ConvGSGenerator = ConvGSGenerator()
    refiner: StyleUNet = make_styleunet("gagavatar")
    vit_dim: int = 768
    num_vertices: int = 5023
    vertex_dim: int = 256


class GAGAvatarWeights(NamedTuple):
    """A converted GAGAvatar checkpoint: Flax variables per module (NumPy arrays).

    Attributes:
      dpt: ``{"params": ...}`` for :class:`DPTHead`.
      gs_generator_g: ``{"params": ...}`` for the vertex :class:`LinearGSGenerator`.
      gs_generator_l0: ``{"params": ...}`` for the first (forward-lifting) :class:`ConvGSGenerator`.
      gs_generator_l1: ``{"params": ...}`` for the second (backward-lifting) one.
      upsampler: ``{"params": ..., "buffers": ...}`` for :class:`StyleUNet`.
      head_base: The learned per-vertex embedding. [num_vertices, vertex_dim]
      dino: ``(ViTConfig, params)`` of the DINOv2 backbone, or None when the state
        dict carries no ``base_model.dino_model.*`` tensors (load DINOv2 B/14 with
        ``convert.load_dinov2`` then).
      skipped: Checkpoint names deliberately not converted (module docstring).
    """

    dpt: dict
    gs_generator_g: dict
    gs_generator_l0: dict
    gs_generator_l1: dict
    upsampler: dict
    head_base: np.ndarray
    dino: tuple[Any, dict] | None
    skipped: tuple[str, ...]


def expected_variables(module, *, vit_dim: int | None = None) -> dict:
    """Abstract variables (``jax.ShapeDtypeStruct`` leaves) of one of the four modules.

    Args:
      module: A ``DPTHead``, ``LinearGSGenerator``, ``ConvGSGenerator`` or ``StyleUNet``.
      vit_dim: ViT width, needed for ``DPTHead`` (its 1x1 projections read it).

    Returns:
      ``jax.eval_shape`` of ``module.init`` (nothing is allocated).
    """
    key = jax.random.key(0)
    z = jnp.zeros
    if isinstance(module, DPTHead):
        if vit_dim is None:
            raise ValueError("vit_dim is needed to build a DPTHead's parameters")
        fn = lambda: module.init(key, [z((1, 2, 2, vit_dim))] * 4, z((1, 28, 28, 3)))  # noqa: E731
    elif isinstance(module, LinearGSGenerator):
        fn = lambda: module.init(key, z((1, 1, module.in_dim)), z((1, module.dir_dim)))  # noqa: E731
    elif isinstance(module, ConvGSGenerator):
        fn = lambda: module.init(key, z((1, 1, 1, module.in_dim)), z((1, module.dir_dim)))  # noqa: E731
    elif isinstance(module, StyleUNet):
        s = module.out_size if module.in_size <= module.out_size else module.in_size
        fn = lambda: module.init(key, z((1, s, s, module.in_dim)), noise_mode="none")  # noqa: E731
    else:
        raise TypeError(f"module must be one of GAGAvatar's four Flax modules, got {module!r}")
    return jax.eval_shape(fn)


def _torch_part(part: str) -> str:
    # "condition_scale_3_2" -> "condition_scale.3.2"; "resConfUnit1", "noise0" unchanged.
    m = re.match(r"^(.*?)((?:_\d+)+)$", part)
    return m.group(1) + m.group(2).replace("_", ".") if m else part


def _plan_entry(collection: str, path: tuple[str, ...], shape: tuple[int, ...], prefix: str):
    """The TensorMap filling one Flax leaf: source name, source shape, layout change."""
    *mods, leaf = path
    owner = mods[-1] if mods else ""
    name = prefix + ".".join(
        [_torch_part(p) for p in mods] + ["weight" if leaf == "kernel" else leaf]
    )
    target = "/".join((collection, *path))
    T = M.TensorMap
    if leaf == "kernel" and len(shape) == 2:  # Dense [in, out] <- Linear [out, in]
        return T(target, (name,), M.transpose_linear, ((shape[1], shape[0]),))
    if leaf == "kernel" and len(shape) == 4:
        kh, kw, cin, cout = shape
        if _CONV_TRANSPOSE.match(owner):  # [s, s, in, out] <- ConvTranspose2d [in, out, s, s]
            return T(
                target,
                (name,),
                lambda w: np.ascontiguousarray(w.transpose(2, 3, 0, 1)),
                ((cin, cout, kh, kw),),
            )
        return T(target, (name,), M.conv_oihw_to_hwio, ((cout, cin, kh, kw),))
    if leaf == "weight" and owner == "modulated_conv":  # [k, k, in, out] <- [1, out, in, k, k]
        k, _, cin, cout = shape
        return T(
            target,
            (name,),
            lambda w: np.ascontiguousarray(w[0].transpose(2, 3, 1, 0)),
            ((1, cout, cin, k, k),),
        )
    if leaf == "weight" and owner == "constant_input":  # [4, 4, C] <- [1, C, 4, 4]
        h, w, c = shape
        return T(
            target,
            (name,),
            lambda a: np.ascontiguousarray(a[0].transpose(1, 2, 0)),
            ((1, c, h, w),),
        )
    if leaf == "bias" and _NCHW_BIAS_OWNER.match(owner):  # [C] <- [1, C, 1, 1]
        return T(target, (name,), lambda b: b.reshape(-1), ((1, shape[0], 1, 1),))
    if collection == "buffers":  # noise{i} [R, R] <- [1, 1, R, R]
        return T(target, (name,), lambda a: a.reshape(shape), ((1, 1, *shape),))
    return T(target, (name,), shapes=(tuple(shape),))  # biases, noise strengths: as is


def _flat_leaves(tree, path=()):
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _flat_leaves(v, (*path, str(k)))
    else:
        yield path, tree


def convert_module_state_dict(
    tensors: Mapping[str, np.ndarray],
    module,
    *,
    vit_dim: int | None = None,
    source: str = "state_dict",
) -> tuple[dict, tuple[str, ...]]:
    """Convert one official module's state dict (names relative to it) to Flax variables.

    Args:
      tensors: e.g. ``DINOBase(...).state_dict()`` without ``dino_model.*``, as NumPy.
      module: The Flax module to fill (see :func:`expected_variables`).
      vit_dim: ViT width, for ``DPTHead``.
      source: Name of the checkpoint, for error messages.

    Returns:
      ``(variables, skipped)``: variables as nested dicts of float32 NumPy arrays
      (``{"params": ...}``, plus ``"buffers"`` for StyleUNet) and the names of the
      never-used tensors that were left out.

    Raises:
      CheckpointMismatchError: Missing, unexpected or misshaped tensors, all listed.
    """
    expected = expected_variables(module, vit_dim=vit_dim)
    unused = next((v for k, v in _UNUSED.items() if isinstance(module, k)), ())
    skipped = tuple(sorted(n for n in tensors if n.startswith(unused))) if unused else ()
    kept = {n: t for n, t in tensors.items() if n not in skipped}
    plan = [
        _plan_entry(col, path, tuple(leaf.shape), "")
        for col, tree in expected.items()
        for path, leaf in _flat_leaves(tree)
    ]
    hint = f"(converting to {type(module).__name__} {module})"
    variables = M.map_tensors(kept, plan, source=source, hint=hint)
    variables = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), variables)
    M.check_tree(variables, expected, source=source, hint=hint)
    return variables, skipped


def _convert_dino(tensors: Mapping[str, np.ndarray], source: str):
    # DINOv2 in torch-hub names (DINOBase loads it with torch.hub), through the ViT
    # importer: architecture inferred from the shapes, every tensor mapped.
    from gshead_jax.convert import dinov2

    return dinov2.convert_state_dict(tensors, source=source)


def convert_gagavatar_state_dict(
    state_dict: Mapping[str, np.ndarray],
    *,
    modules: GAGAvatarModules | None = None,
    ignore_prefixes: Sequence[str] = ("percep_loss.",),
    source: str = "state_dict",
) -> GAGAvatarWeights:
    """Convert a whole GAGAvatar state dict (NumPy arrays, official names).

    Args:
      state_dict: ``torch.load(...)["model"]`` as NumPy (see
        :func:`load_gagavatar_state_dict`).
      modules: The Flax modules to fill; None: GAGAvatar's paper sizes (``GAGAvatarModules()``).
      ignore_prefixes: Names to leave out (reported in ``skipped``).
      source: Name of the checkpoint, for error messages.

    Returns:
      :class:`GAGAvatarWeights`.

    Raises:
      CheckpointMismatchError: Every tensor that maps nowhere, every parameter left
        unfilled and every shape mismatch, listed by name.

    Example:
      >>> weights = load_gagavatar("assets/GAGAvatar.pt")
      >>> DPTHead().apply(weights.dpt, feats, images)
    """
    modules = GAGAvatarModules() if modules is None else modules
    skipped = [n for n in state_dict if n.startswith(tuple(ignore_prefixes))]
    rest = {n: t for n, t in state_dict.items() if n not in set(skipped)}
    groups: dict[str, dict[str, np.ndarray]] = {
        "dino": {},
        "base_model.": {},
        "gs_generator_g.": {},
        "gs_generator_l0.": {},
        "gs_generator_l1.": {},
        "upsampler.": {},
    }
    unexpected = []
    head_base = None
    for name, t in rest.items():
        if name.startswith(DINO_PREFIX):
            groups["dino"][name[len(DINO_PREFIX) :]] = t
        elif name == "head_base":
            head_base = np.asarray(t, np.float32)
        else:
            prefix = next((p for p in groups if p != "dino" and name.startswith(p)), None)
            if prefix is None:
                unexpected.append(name)
            else:
                groups[prefix][name[len(prefix) :]] = t
    want_head = (modules.num_vertices, modules.vertex_dim)
    missing = ["head_base"] if head_base is None else []
    missing += [p + "*" for p, g in groups.items() if p != "dino" and not g]
    wrong = {}
    if head_base is not None and head_base.shape != want_head:
        wrong["head_base"] = (head_base.shape, want_head)
    if unexpected or missing or wrong:
        raise M.CheckpointMismatchError(
            source, missing, unexpected, wrong, "(GAGAvatar checkpoint, top level)"
        )
    out: dict[str, Any] = {}
    parts = [
        ("dpt", "base_model.", modules.dpt),
        ("gs_generator_g", "gs_generator_g.", modules.vertex_head),
        ("gs_generator_l0", "gs_generator_l0.", modules.plane_head),
        ("gs_generator_l1", "gs_generator_l1.", modules.plane_head),
        ("upsampler", "upsampler.", modules.refiner),
    ]
    for field, prefix, module in parts:
        variables, dropped = convert_module_state_dict(
            groups[prefix], module, vit_dim=modules.vit_dim, source=f"{source} [{prefix}*]"
        )
        out[field] = variables
        skipped += [prefix + n for n in dropped]
    dino = _convert_dino(groups["dino"], f"{source} [{DINO_PREFIX}*]") if groups["dino"] else None
    return GAGAvatarWeights(**out, head_base=head_base, dino=dino, skipped=tuple(sorted(skipped)))


def load_gagavatar_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read ``GAGAvatar.pt`` (or any ``{"model": state_dict}`` / state dict file) as NumPy.

    Needs torch (the ``convert`` extra); loads with ``weights_only=True``.
    """
    path = os.fspath(path)
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"reading {path} needs torch: pip install 'gshead-jax[convert]'") from err
    obj = torch.load(path, map_location="cpu", weights_only=True)
    sd = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}: expected {{'model': state_dict}} or a state dict, got {found}")
    return {k: v.detach().float().cpu().numpy() for k, v in sd.items()}


def load_gagavatar(path: str | os.PathLike, **kwargs) -> GAGAvatarWeights:
    """``convert_gagavatar_state_dict(load_gagavatar_state_dict(path), **kwargs)``."""
    return convert_gagavatar_state_dict(
        load_gagavatar_state_dict(path), source=os.fspath(path), **kwargs
    )
