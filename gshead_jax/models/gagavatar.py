"""GAGAvatar (Chu & Harada, NeurIPS 2024): the published architecture behind the family API.

A port of the official ``GAGAvatar`` module (core/models/GAGAvatar/models.py) and its
data path (core/data/loader_track.py), assembled from the blocks of ``gshead_jax.nn``
(docs/gagavatar.md). At paper size:

``reconstruct`` (once per source image)::

    source [B, S, S, 3] --resize 518 (antialiased)--> frozen DINOv2 B/14, last 4 blocks
      --> DPT head --> local features [B, 296, 296, 256]
                   \\-> global feature [B, 768] = the FIRST PATCH token of the last
                        normed layer (``image_features[-1][:, 0]`` on patch tokens),
                        NOT the CLS token -- the official code does this, we reproduce it
    lifting plane: 296^2 rays of the source camera hitting the plane through the
      origin facing it (``build_points_planes``, focal 12); direction embedding 27-D
    dual lifting: two conv heads (283 -> 128 -> 128 -> 128 -> 41) give 2 x 296^2
      Gaussians pushed +d0 / -d1 (sigmoid, world units) along the source view axis
    vertex Gaussians: learned 5023 x 256 embedding ++ global feature (1024) through
      the per-vertex MLP -> colour 32, opacity, scale, rotation of 5023 Gaussians

``drive`` (per frame)::

    FLAME(shape = source's, expression / jaw / eyes (/ neck, global pose,
      translation) = driver's) x 5  -> the 5023 vertex Gaussians' centres
    all 180,255 Gaussians, 32 feature channels --splat 512^2, background 0-->
      [B, 512, 512, 32]; coarse RGB = channels 0-2
    StyleUNet 512 -> 512 RGB (sigmoid) = the refined image

Head pose lives in the camera (GAGAvatar's tracker leaves FLAME's global pose at 0;
any ``global_pose`` given is applied by FLAME, as the official FLAME call would).

Choices where the official code and the paper are silent or differ (docs/models.md):

* ``official_quirks=True`` (default) keeps the released code's two quirks
  (docs/gagavatar.md): the colour sigmoid on the first three image *columns* of
  the plane heads, and the vertex head's quaternions normalised over the *vertex*
  axis. The official rasteriser does not normalise quaternions, so those tiny
  quaternions act as ``R(q) = I + E`` with ``|E| ~ 1e-3``; gsplat semantics
  normalise them, which would turn them into arbitrary rotations. We therefore
  render the vertex Gaussians with ``vertex_rotation="first_order"``: the unit
  quaternion ``(1, r x, r y, r z)`` (normalised), whose rotation equals the
  antisymmetric (rotation) part of the official ``R(q)`` to first order (the
  dropped symmetric part is ~1e-3 relative in the covariance, the same order as
  using the identity) and which keeps a gradient to the rotation branch, as
  the official model has; ``"identity"`` renders them unrotated.
* The FLAME identity comes from the source (``flame_shape_from="source"``, the
  official inference, ``DriverData``); the official *training* loader poses the
  target with the target's own ``shapecode`` -- ``"driver"`` reproduces that.
* StyleGAN noise: training draws fresh noise (official ``randomize_noise=True``);
  inference uses the fixed buffers (``eval_noise="const"``), deterministic (the
  official inference draws fresh noise too: ``eval_noise="random"`` with an rng).
* ``dtype``: compute dtype of the ViT, DPT head, Gaussian heads and StyleUNet
  (e.g. bfloat16); parameters, Gaussians, FLAME and the splat stay float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.struct
import flax.traverse_util
import jax
import jax.numpy as jnp

from gshead_jax import _compat, flame
from gshead_jax.camera import Camera
from gshead_jax.flame import FlameModel, FlameParams
from gshead_jax.models.base import (
    CONSTANTS,
    FROZEN,
    TRAINABLE,
    Avatar,
    AvatarModel,
    check_camera,
    check_flame_params,
    check_image,
    param_count,
    register_model,
)
from gshead_jax.models.gagavatar_config import DIR_HARMONICS, TINY, GAGAvatarConfig
from gshead_jax.nn.dpt import DPTHead
from gshead_jax.nn.embedding import harmonic_embedding
from gshead_jax.nn.gaussian_heads import ConvGSGenerator, LinearGSGenerator
from gshead_jax.nn.lifting import lift, lifting_plane
from gshead_jax.nn.preprocess import imagenet_normalize
from gshead_jax.nn.preprocess import resize as torchvision_resize
from gshead_jax.nn.styleunet import StyleUNet
from gshead_jax.nn.vit import DinoViT, intermediate_feature_maps
from gshead_jax.splat import rasterize

__all__ = [
    "GAGAvatar",
    "GAGAvatarAvatar",
    "GAGAvatarConfig",
    "gagavatar",
    "gagavatar_tiny",
    "params_from_weights",
]

# XLA:CPU compile options for one-off init programs (see _compile_init).
_FAST_CPU_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_FAST_INIT_MAX_VALUES = 20_000_000


@flax.struct.dataclass
class GAGAvatarAvatar(Avatar):
    """All Gaussians of a GAGAvatar head; ``drive`` moves the first V (FLAME vertices).

    Order as the official ``torch.cat([g, l0, l1])``: V vertex Gaussians, then the
    P^2 forward-lifted and the P^2 backward-lifted plane Gaussians (N = V + 2 P^2,
    180,255 at paper size). Quaternions are unit, in the splat's convention.

    Attributes:
      flame_shape: The source's FLAME identity. [B, S]
      means: Centres; rows 0..V-1 are placeholders (zeros) that ``drive``
        replaces by the posed FLAME vertices x ``flame_scale``. [B, N, 3]
      quats: Rotations (w, x, y, z). [B, N, 4]
      scales: Linear scales in (0, 0.05). [B, N, 3]
      opacities: In (0, 1). [B, N]
      colors: Feature channels, RGB first. [B, N, C]
      num_vertices: V (static).
    """

    means: jax.Array
    quats: jax.Array
    scales: jax.Array
    opacities: jax.Array
    colors: jax.Array
    num_vertices: int = flax.struct.field(pytree_node=False, default=5023)

    @property
    def lifted_points(self) -> jax.Array:
        """The 2 P^2 plane Gaussians' centres (the lifting loss's points). [B, 2 P^2, 3]"""
        return self.means[:, self.num_vertices :]


@functools.lru_cache(maxsize=4)
def _flame_model(path, seed, num_vertices, num_shape, num_expression) -> FlameModel:
    if path is not None:
        return flame.load(path)
    return flame.standin(
        seed, num_vertices=num_vertices, num_shape=num_shape, num_expression=num_expression
    )


def _compile_init(fn, rng):
    """``jax.jit(fn)`` compiled for ``rng``; cheaply for small models on CPU.

    On XLA:CPU, LLVM's optimisation of an init program (hundreds of unrolled
    threefry samplers) takes a minute on a small machine while running it takes
    milliseconds, so a small model's one-off init compiles without the expensive
    passes; unoptimised samplers are slow to *run* at paper size (170M values),
    which therefore compiles normally.
    """
    lowered = jax.jit(fn).lower(rng)
    small = param_count(lowered.out_info) < _FAST_INIT_MAX_VALUES
    if small and jax.default_backend() == "cpu":
        return lowered.compile(_FAST_CPU_COMPILE)
    return lowered.compile()


# Layers the official code leaves at PyTorch's default init, and the exceptions:
# StyleGAN2's decoder sets its own (nn/stylegan.py reproduces them); DINOBase's
# ConvTranspose2d kernels count fan-in from their *output* channels (torch's
# _calculate_fan_in_and_fan_out on [in, out, k, k] weights).
_TORCH_INIT_SKIP = "stylegan_decoder"
_TORCH_CONV_TRANSPOSE = ("resize_layers_0", "resize_layers_1")


def _torch_default_init(tree: dict, key: jax.Array) -> dict:
    """Redraw every Flax Dense/Conv kernel and bias as PyTorch initialises them.

    ``nn.Linear`` / ``nn.Conv2d`` / ``nn.ConvTranspose2d`` ``reset_parameters``:
    ``kaiming_uniform_(a=sqrt(5))`` for the weight and ``U(-1/sqrt(fan_in),
    1/sqrt(fan_in))`` for the bias, i.e. both uniform with bound ``1/sqrt(fan_in)``.
    Training from scratch then starts from the official model's distribution
    (Flax's defaults are lecun-normal kernels and zero biases; with zero biases a
    tiny head can output an all-zero quaternion).
    """
    flat = flax.traverse_util.flatten_dict(tree)
    owners = sorted(k[:-1] for k in flat if k[-1] == "kernel" and _TORCH_INIT_SKIP not in k)
    targets = []  # (flat key, shape, bound)
    for owner in owners:
        kernel = flat[(*owner, "kernel")]
        if owner[-1] in _TORCH_CONV_TRANSPOSE:  # [s, s, in, out]: fan_in = out * s * s
            fan_in = kernel.shape[0] * kernel.shape[1] * kernel.shape[3]
        else:  # Dense [in, out], Conv [kh, kw, in, out]
            fan_in = math.prod(kernel.shape[:-1])
        for leaf in ("kernel", "bias"):
            if (*owner, leaf) in flat:
                targets.append(((*owner, leaf), flat[(*owner, leaf)].shape, fan_in**-0.5))
    # One draw for all leaves: a single sampler compiles much faster than hundreds.
    sizes = [math.prod(shape) for _, shape, _ in targets]
    u = jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0)
    out = dict(flat)
    start = 0
    for (k, shape, bound), size in zip(targets, sizes):
        out[k] = bound * u[start : start + size].reshape(shape)
        start += size
    return flax.traverse_util.unflatten_dict(out)


def _first_order_quats(q: jax.Array) -> jax.Array:
    """Unit quaternions rotating like the official unnormalised ``R(q)`` (first order).

    For q = (r, x, y, z), 3DGS's ``computeCov3D`` builds ``R = I + 2 r [v]_x + O(|v|^2)``
    (v = (x, y, z)) without normalising; ``(1, r v)`` normalised has the same
    antisymmetric part. See the module docstring.
    """
    r, v = q[..., :1], q[..., 1:]
    return jnp.concatenate([jnp.ones_like(r), r * v], -1) / jnp.sqrt(
        1.0 + jnp.sum(jnp.square(r * v), -1, keepdims=True)
    )


@dataclasses.dataclass(frozen=True)
class GAGAvatar(AvatarModel):
    """The GAGAvatar family object (static config; arrays live in ``params``).

    ``params`` (see ``models.base``)::

        trainable: dpt, gs_generator_g, gs_generator_l0, gs_generator_l1,
                   upsampler ({"params"} of each Flax module), head_base [V, vertex_dim]
        frozen:    vit (DinoViT params), upsampler_buffers (StyleGAN noise maps)
        constants: flame (FlameModel)

    The trainable names are the official module names (``GAGAvatarWeights``).

    Example:
      >>> model = get_model("gagavatar-tiny")
      >>> params = model.init(jax.random.key(0))
      >>> avatar = model.reconstruct(params, image, source_params, source_camera)
      >>> rgb, aux = model.drive(params, avatar, driving_params, camera)
    """

    config: GAGAvatarConfig = dataclasses.field(default_factory=GAGAvatarConfig)
    name: str = "gagavatar"

    # -------------------------------------------------------------------- modules

    @property
    def vit(self) -> DinoViT:
        return DinoViT(self.config.vit, dtype=self.config.compute_dtype)

    @property
    def dpt(self) -> DPTHead:
        c = self.config
        return DPTHead(c.dpt_output_dim, c.dpt_hidden_dim, c.dpt_out_dims, dtype=c.dtype)

    @property
    def vertex_head(self) -> LinearGSGenerator:
        c = self.config
        return LinearGSGenerator(
            in_dim=c.vertex_dim + c.vit.hidden_size,
            dir_dim=c.dir_dim,
            color_dim=c.color_dim,
            hidden_dim=c.head_hidden_dim,
            official_quirks=c.official_quirks,
            dtype=c.dtype,
        )

    @property
    def plane_head(self) -> ConvGSGenerator:
        c = self.config
        return ConvGSGenerator(
            in_dim=c.dpt_output_dim,
            dir_dim=c.dir_dim,
            color_dim=c.color_dim,
            official_quirks=c.official_quirks,
            dtype=c.dtype,
        )

    @property
    def refiner(self) -> StyleUNet:
        c = self.config
        return StyleUNet(
            in_size=c.render_size,
            out_size=c.render_size,
            in_dim=c.color_dim,
            out_dim=3,
            num_style_feat=c.refiner_style_dim,
            num_mlp=c.refiner_num_mlp,
            channels=c.refiner_channels,
            dtype=c.dtype,
        )

    def flame_model(self) -> FlameModel:
        """The FLAME model of this config (loaded once per process, cached)."""
        c = self.config
        return _flame_model(
            c.flame_path, c.standin_seed, c.standin_vertices, c.standin_shape, c.standin_expression
        )

    # -------------------------------------------------------------------- init

    def init(self, rng: jax.Array) -> dict[str, Any]:
        """Random parameters, initialised as the official PyTorch model is.

        PyTorch's default init for the DPT head, the Gaussian heads and the StyleUNet's
        U-Net (``_torch_default_init``), the StyleGAN2 decoder's own initialisers,
        ``randn`` for the vertex embedding; the ViT is random too (load DINOv2 with
        ``convert.load_dinov2`` / ``params_from_weights`` for a real model).

        Args:
          rng: PRNG key.

        Returns:
          ``{"trainable", "frozen", "constants"}`` (class docstring).
        """
        fm = self.flame_model()
        learned = functools.partial(self._init_learned, num_vertices=fm.num_vertices)
        if _compat.is_tracer(rng):  # under jit / eval_shape: just trace it
            trainable, frozen = learned(rng)
        else:
            trainable, frozen = _compile_init(learned, rng)(rng)
        return {TRAINABLE: trainable, FROZEN: frozen, CONSTANTS: {"flame": fm}}

    def _init_learned(self, rng: jax.Array, *, num_vertices: int):
        c = self.config
        keys = jax.random.split(rng, 8)
        s, h = c.vit_input_size, c.vit_input_size // c.vit.patch_size
        image = jnp.zeros((1, s, s, 3))
        maps = [jnp.zeros((1, h, h, c.vit.hidden_size))] * 4
        d = jnp.zeros((1, c.dir_dim))
        r = c.render_size
        refiner = self.refiner.init(keys[5], jnp.zeros((1, r, r, c.color_dim)), noise_mode="none")
        plane = jnp.zeros((1, 2, 2, c.dpt_output_dim))
        trainable = {
            "dpt": self.dpt.init(keys[1], maps, image, output_size=c.plane_size),
            "gs_generator_g": self.vertex_head.init(
                keys[2], jnp.zeros((1, 1, self.vertex_head.in_dim)), d
            ),
            "gs_generator_l0": self.plane_head.init(keys[3], plane, d),
            "gs_generator_l1": self.plane_head.init(keys[4], plane, d),
            "upsampler": {"params": refiner["params"]},
        }
        trainable = _torch_default_init(trainable, keys[6])
        # nn.Parameter(torch.randn(5023, 256))
        trainable["head_base"] = jax.random.normal(keys[0], (num_vertices, c.vertex_dim))
        frozen = {
            "vit": self.vit.init(keys[7], image)["params"],
            "upsampler_buffers": refiner["buffers"],
        }
        return trainable, frozen

    # -------------------------------------------------------------------- reconstruct

    def reconstruct(
        self,
        params: dict[str, Any],
        source_image: jax.Array,
        source_params: FlameParams,
        source_camera: Camera,
    ) -> GAGAvatarAvatar:
        """Encode source portraits into their Gaussians (module docstring).

        Args:
          params: The model parameters.
          source_image: Source portraits, RGB in [0, 1] (GAGAvatar: 512^2). [B, S, S, 3]
          source_params: The sources' FLAME parameters (only ``shape`` is used), batch [B].
          source_camera: The sources' cameras, batch [B]; their viewmat places the
            lifting plane (the plane rays use ``plane_focal``, as the official code).

        Returns:
          :class:`GAGAvatarAvatar` with N = V + 2 P^2 Gaussians.
        """
        c = self.config
        b, s = check_image("source_image", source_image)
        check_flame_params("source_params", source_params, b)
        check_camera("source_camera", source_camera, b)
        tr, fr = params[TRAINABLE], params[FROZEN]
        # Loader: torchvision resize(antialias=True) to 518 in [0, 1]; DINOBase normalises.
        x = source_image.astype(jnp.float32)
        if s != c.vit_input_size:
            x = torchvision_resize(x, (c.vit_input_size, c.vit_input_size), antialias=True)
        maps = intermediate_feature_maps(self.vit, fr["vit"], imagenet_normalize(x), 4)
        maps = jax.lax.stop_gradient(maps)  # frozen encoder: no backward through it
        # The DPT's natural output is 8 x the patch grid (296 at 518^2); the official
        # forward asks for plane_size, a no-op at paper size (skipped then).
        natural = 8 * (c.vit_input_size // c.vit.patch_size)
        size = None if natural == c.plane_size else c.plane_size
        dpt = self.dpt.apply(tr["dpt"], maps, x, output_size=size)
        local = dpt.features  # [B, P, P, dpt_output_dim]
        glob = dpt.global_feature.astype(jnp.float32)  # [B, D]: first patch token, not CLS

        plane = lifting_plane(source_camera.viewmat, size=c.plane_size, focal=c.plane_focal)
        direnc = harmonic_embedding(plane.dirs.astype(jnp.float32), DIR_HARMONICS)  # [B, 27]

        head_base = tr["head_base"]
        v = head_base.shape[0]
        vertex_in = jnp.concatenate(
            [
                jnp.broadcast_to(head_base[None], (b, v, head_base.shape[1])),
                jnp.broadcast_to(glob[:, None], (b, v, glob.shape[-1])),
            ],
            -1,
        )  # [B, V, vertex_dim + D]
        g = self.vertex_head.apply(tr["gs_generator_g"], vertex_in, direnc)
        l0 = self.plane_head.apply(tr["gs_generator_l0"], local, direnc)
        l1 = self.plane_head.apply(tr["gs_generator_l1"], local, direnc)
        xyz0 = lift(plane, l0.positions, +1.0)  # away from the source camera
        xyz1 = lift(plane, l1.positions, -1.0)  # towards it

        g_quats = g.rotations
        if c.official_quirks:
            if c.vertex_rotation == "first_order":
                g_quats = _first_order_quats(g_quats)
            else:
                g_quats = jnp.zeros_like(g_quats).at[..., 0].set(1.0)

        def cat(attr) -> jax.Array:
            return jnp.concatenate([attr(g), attr(l0), attr(l1)], axis=1)

        means = jnp.concatenate([jnp.zeros((b, v, 3), xyz0.dtype), xyz0, xyz1], axis=1)
        return GAGAvatarAvatar(
            flame_shape=source_params.shape,
            means=means,
            quats=jnp.concatenate([g_quats, l0.rotations, l1.rotations], axis=1),
            scales=cat(lambda p: p.scales),
            opacities=cat(lambda p: p.opacities)[..., 0],
            colors=cat(lambda p: p.colors),
            num_vertices=v,
        )

    # -------------------------------------------------------------------- drive

    def posed_vertices(
        self, params: dict[str, Any], avatar: GAGAvatarAvatar, driving_params: FlameParams
    ) -> jax.Array:
        """FLAME vertices in GAGAvatar's world (metres x ``flame_scale``). [B, V, 3]"""
        c = self.config
        p = driving_params
        shape = avatar.flame_shape if c.flame_shape_from == "source" else p.shape
        out = flame.forward(
            params[CONSTANTS]["flame"],
            shape,
            p.expression,
            jaw=p.jaw,
            eyes=p.eyes,
            neck=p.neck,
            global_pose=p.global_pose,
            translation=p.translation,
            check=False,
        )
        return out.vertices * c.flame_scale

    def splat(self, avatar: GAGAvatarAvatar, vertices: jax.Array, camera: Camera):
        """Splat every Gaussian, vertex centres replaced by ``vertices`` [B, V, 3].

        Returns:
          ``splat.RasterOutput`` with a batch axis: image [B, H, W, C], alpha and
          depth [B, H, W, 1], num_intersections and overflow [B].
        """
        c = self.config
        means = jax.lax.dynamic_update_slice_in_dim(avatar.means, vertices, 0, axis=1)
        render = functools.partial(
            rasterize,
            width=camera.width,
            height=camera.height,
            tile_size=c.tile_size,
            capacity=c.splat_capacity,
            backend=c.splat_backend,
        )
        args = (means, avatar.quats, avatar.scales, avatar.opacities, avatar.colors)
        args += (camera.viewmat, camera.K)
        if means.shape[0] == 1:  # the real-time case: no batched sort / scatter
            return jax.tree.map(lambda x: x[None], render(*(a[0] for a in args)))
        return jax.vmap(render)(*args)

    def _noise_mode(self, rng: jax.Array | None, train: bool) -> str:
        mode = "random" if train else self.config.eval_noise
        if mode == "random" and rng is None:
            raise ValueError(
                "rng is needed: StyleGAN noise is random in training (and with eval_noise='random')"
            )
        return mode

    def refine(
        self,
        params: dict[str, Any],
        features: jax.Array,
        *,
        rng: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        """StyleUNet on the splatted features [B, R, R, C] -> RGB [B, R, R, 3] in (0, 1)."""
        mode = self._noise_mode(rng, train)
        variables = {
            "params": params[TRAINABLE]["upsampler"]["params"],
            "buffers": params[FROZEN]["upsampler_buffers"],
        }
        out = self.refiner.apply(
            variables,
            features.astype(self.config.compute_dtype),
            noise_mode=mode,
            rngs={"noise": rng} if mode == "random" else None,
        )
        return out.astype(jnp.float32)

    def drive(
        self,
        params: dict[str, Any],
        avatar: GAGAvatarAvatar,
        driving_params: FlameParams,
        camera: Camera,
        *,
        rng: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Render avatars under driving FLAME parameters (no image, no encoder).

        Args:
          params: The model parameters (uses the refiner and FLAME only).
          avatar: From :meth:`reconstruct`, batch B.
          driving_params: Expression, jaw, eyes (neck, global pose, translation) per
            frame; ``shape`` is used only with ``flame_shape_from="driver"``. Batch [B].
          camera: Render cameras, ``render_size`` square, batch [B].
          rng: StyleGAN noise key, needed with ``train=True``.
          train: Fresh noise (training) instead of ``eval_noise``.

        Returns:
          ``(refined [B, R, R, 3], aux)`` with aux ``coarse`` [B, R, R, 3] (splatted
          channels 0-2), ``features`` [B, R, R, C] (all splatted channels),
          ``alpha`` / ``depth`` [B, R, R, 1], ``overflow`` [B] bool,
          ``num_intersections`` [B] int32, ``flame_vertices`` [B, V, 3] (the posed
          vertices: the lifting loss's targets) and ``lifted_points`` [B, 2 P^2, 3].
        """
        if not isinstance(avatar, GAGAvatarAvatar):
            raise TypeError(f"avatar must be a GAGAvatarAvatar, got {type(avatar).__name__}")
        b = avatar.batch_size
        check_flame_params("driving_params", driving_params, b)
        r = self.config.render_size
        check_camera("camera", camera, b, width=r, height=r)
        self._noise_mode(rng, train)  # fail before any work
        vertices = self.posed_vertices(params, avatar, driving_params)
        out = self.splat(avatar, vertices, camera)
        refined = self.refine(params, out.image, rng=rng, train=train)
        aux = {
            "coarse": out.image[..., :3],
            "features": out.image,
            "alpha": out.alpha,
            "depth": out.depth,
            "overflow": out.overflow,
            "num_intersections": out.num_intersections,
            "flame_vertices": vertices,
            "lifted_points": avatar.lifted_points,
        }
        return refined, aux


def params_from_weights(
    model: GAGAvatar, weights: Any, *, vit_params: Any = None
) -> dict[str, Any]:
    """Model parameters from a converted checkpoint (``convert.gagavatar.load_gagavatar``).

    Args:
      model: The family object; its config must match the checkpoint (paper size
        for ``GAGAvatar.pt``; take ``config.vit`` from ``weights.dino[0]``).
      weights: A ``GAGAvatarWeights``.
      vit_params: DINOv2 params when ``weights.dino`` is None (``convert.load_dinov2``).

    Returns:
      ``{"trainable", "frozen", "constants"}`` with the FLAME model of the config.
    """
    if vit_params is None:
        if weights.dino is None:
            raise ValueError("weights carry no DINOv2 tensors: pass vit_params (load_dinov2)")
        vit_cfg, vit_params = weights.dino
        if (vit_cfg.hidden_size, vit_cfg.num_layers) != (
            model.config.vit.hidden_size,
            model.config.vit.num_layers,
        ):
            raise ValueError(
                f"checkpoint ViT {vit_cfg} does not match config.vit {model.config.vit}"
            )
    fm = model.flame_model()
    if weights.head_base.shape[0] != fm.num_vertices:
        raise ValueError(
            f"head_base has {weights.head_base.shape[0]} rows but the FLAME model has "
            f"{fm.num_vertices} vertices"
        )
    as_jnp = functools.partial(jax.tree.map, jnp.asarray)
    trainable = {
        "dpt": as_jnp(weights.dpt),
        "gs_generator_g": as_jnp(weights.gs_generator_g),
        "gs_generator_l0": as_jnp(weights.gs_generator_l0),
        "gs_generator_l1": as_jnp(weights.gs_generator_l1),
        "upsampler": {"params": as_jnp(weights.upsampler["params"])},
        "head_base": jnp.asarray(weights.head_base),
    }
    frozen = {"vit": as_jnp(vit_params), "upsampler_buffers": as_jnp(weights.upsampler["buffers"])}
    return {TRAINABLE: trainable, FROZEN: frozen, CONSTANTS: {"flame": fm}}


# ----------------------------------------------------------------------------- named configs


@register_model("gagavatar")
def gagavatar(**overrides: Any) -> GAGAvatar:
    """Paper size: DINOv2 B/14 at 518^2, 296^2 planes, 5023 vertices, 32 ch, 512^2."""
    return GAGAvatar(GAGAvatarConfig(**overrides), name="gagavatar")


@register_model("gagavatar-tiny")
def gagavatar_tiny(**overrides: Any) -> GAGAvatar:
    """CPU-test size: tiny ViT (2 blocks), 32^2 planes, 1000-vertex stand-in, 64^2 output."""
    return GAGAvatar(GAGAvatarConfig(**{**TINY, **overrides}), name="gagavatar-tiny")
