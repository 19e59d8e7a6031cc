"""GAGAvatar's static configuration: paper size by default, and the tiny test size.

Every number of the paper-size defaults comes from the official code
(core/models/GAGAvatar/models.py, configs/data/vfhq.yaml, core/data/loader_track.py);
see ``models/gagavatar.py`` for the architecture and docs/models.md for the choices.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from gshead_jax.camera import GAGAVATAR_FLAME_SCALE, GAGAVATAR_FOCAL
from gshead_jax.nn.dpt import DPT_VARIANTS
from gshead_jax.nn.embedding import harmonic_embedding_dim
from gshead_jax.nn.stylegan import NOISE_MODES
from gshead_jax.nn.styleunet import GAGAVATAR_CHANNELS, TINY_CHANNELS
from gshead_jax.nn.vit_config import ViTConfig, vit_config

__all__ = ["DIR_HARMONICS", "TINY", "VERTEX_ROTATIONS", "GAGAvatarConfig"]

VERTEX_ROTATIONS = ("first_order", "identity")
DIR_HARMONICS = 4  # n_harmonic_dir = 4 -> 27-D (models.py)


@dataclasses.dataclass(frozen=True)
class GAGAvatarConfig:
    """Static architecture of a GAGAvatar model (hashable; defaults = paper size).

    Attributes:
      vit: The frozen encoder (DINOv2 ViT-B/14, torch-hub ``dinov2_vitb14``).
      vit_input_size: Side the source is resized to for the ViT (518 = 37 patches).
      dpt_output_dim: DPT output channels (``DINOBase(output_dim=256)``).
      dpt_hidden_dim: DPT fusion width (256).
      dpt_out_dims: DPT 1x1 projection widths ((256, 512, 1024, 1024)).
      plane_size: Lifting-plane side P = DPT output size (``POINT_PLANE_SIZE`` 296).
      plane_focal: Normalised focal of the plane rays (``FOCAL_LENGTH`` 12).
      vertex_dim: Width of the learned per-vertex embedding ``head_base`` (256).
      head_hidden_dim: Branch width of the vertex MLP (128).
      color_dim: Feature channels per Gaussian (32; RGB first).
      render_size: Splat and output side (512).
      refiner_channels: StyleUNet ``(resolution, channels)`` table.
      refiner_style_dim: StyleUNet style width (512).
      refiner_num_mlp: StyleUNet style-MLP depth (8).
      flame_scale: World units per FLAME metre (``FLAME_SCALE`` 5).
      flame_path: FLAME file for ``flame.load`` (official .pkl, .npz, GAGAvatar's
        ``FLAME_with_eye.pt``); None uses ``flame.standin`` (no licence).
      standin_seed: Seed of the stand-in's random components.
      standin_vertices: Stand-in vertex count (5023 = FLAME: exact Gaussian count).
      standin_shape: Stand-in identity components (300).
      standin_expression: Stand-in expression components (100).
      official_quirks: Keep the released code's two head quirks (module docstring).
      vertex_rotation: ``"first_order"`` or ``"identity"`` (module docstring).
      flame_shape_from: ``"source"`` (inference) or ``"driver"`` (official training).
      eval_noise: StyleGAN noise outside training: ``"const"``, ``"none"`` or
        ``"random"`` (needs an rng).
      dtype: Compute dtype of ViT / DPT / heads / StyleUNet (None: float32).
      splat_backend: ``splat.rasterize`` backend ("auto": Pallas on Hopper GPUs).
      splat_capacity: Static intersection capacity (None: ``splat.default_capacity``).
        Paper size: 4 Mi. At random init every Gaussian has scale ~0.025 (sigmoid(0) x
        0.05), ~16 px at 512^2: 3.05M intersections at the head camera, more than the
        splat default (2.49M), so training from scratch would overflow; a trained head
        (smaller Gaussians) needs fewer -- inference may pass a tighter capacity.
      tile_size: Splat tile side.
    """

    vit: ViTConfig = dataclasses.field(default_factory=lambda: vit_config("B/14"))
    vit_input_size: int = 518
    dpt_output_dim: int = 256
    dpt_hidden_dim: int = 256
    dpt_out_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    plane_size: int = 296
    plane_focal: float = GAGAVATAR_FOCAL
    vertex_dim: int = 256
    head_hidden_dim: int = 128
    color_dim: int = 32
    render_size: int = 512
    refiner_channels: tuple[tuple[int, int], ...] = GAGAVATAR_CHANNELS
    refiner_style_dim: int = 512
    refiner_num_mlp: int = 8
    flame_scale: float = GAGAVATAR_FLAME_SCALE
    flame_path: str | None = None
    standin_seed: int = 0
    standin_vertices: int = 5023
    standin_shape: int = 300
    standin_expression: int = 100
    official_quirks: bool = True
    vertex_rotation: str = "first_order"
    flame_shape_from: str = "source"
    eval_noise: str = "const"
    dtype: Any = None
    splat_backend: str = "auto"
    splat_capacity: int | None = 4 * 1024 * 1024
    tile_size: int = 16

    def __post_init__(self):
        if not isinstance(self.vit, ViTConfig):
            raise TypeError(f"vit must be a ViTConfig, got {type(self.vit).__name__}")
        if self.vit_input_size % self.vit.patch_size:
            raise ValueError(
                f"vit_input_size must be a multiple of the patch size {self.vit.patch_size}, "
                f"got {self.vit_input_size}"
            )
        if self.vit.num_layers < 4:
            raise ValueError(f"the DPT head needs >= 4 ViT blocks, got {self.vit.num_layers}")
        for name, value, allowed in (
            ("vertex_rotation", self.vertex_rotation, VERTEX_ROTATIONS),
            ("flame_shape_from", self.flame_shape_from, ("source", "driver")),
            ("eval_noise", self.eval_noise, NOISE_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        r = self.render_size
        if r < 8 or r & (r - 1):
            raise ValueError(f"render_size must be a power of two >= 8, got {r}")
        if self.color_dim < 3:
            raise ValueError(f"color_dim must be >= 3 (RGB first), got {self.color_dim}")
        if self.plane_size < 2:
            raise ValueError(f"plane_size must be >= 2, got {self.plane_size}")

    @property
    def compute_dtype(self):
        return jnp.float32 if self.dtype is None else jnp.dtype(self.dtype)

    @property
    def dir_dim(self) -> int:
        return harmonic_embedding_dim(3, DIR_HARMONICS)


# The tiny size for CPU tests and the demo (every module at toy width).
TINY = dict(
    # nn.vit_config's "tiny" (width 32, 2 heads, 56^2 = 4 x 4 patches) with the 4 blocks
    # the DPT head reads.
    vit=vit_config("tiny", num_layers=4),
    vit_input_size=56,
    dpt_output_dim=DPT_VARIANTS["tiny"]["output_dim"],
    dpt_hidden_dim=DPT_VARIANTS["tiny"]["hidden_dim"],
    dpt_out_dims=DPT_VARIANTS["tiny"]["out_dims"],
    plane_size=32,  # the tiny DPT's natural size (8 x 4 patches)
    vertex_dim=16,
    head_hidden_dim=16,
    color_dim=32,
    render_size=64,
    refiner_channels=TINY_CHANNELS,
    refiner_style_dim=32,
    refiner_num_mlp=2,
    standin_vertices=1000,
    standin_shape=20,
    standin_expression=10,
    splat_capacity=None,  # splat.default_capacity: ~6k of 41k used at init
)
