"""RAR: the reconstruction-and-reenactment separated Gaussian head (Ye et al. 2025).

"Reconstruction and Reenactment Separated Method for Realistic Gaussian Head"
(arXiv 2509.05582): a large WebSSL (DINOv2-architecture) ViT reconstructs a head of 3D
Gaussians once per identity; per frame, an ultra-light avatar -- FLAME skinning, a small
reenactment MLP, RGB splatting -- renders it (90 FPS at 512^2 in the paper). Quality
scales with the encoder while the driving cost does not depend on it: the avatar holds
only per-Gaussian tensors, and ``drive`` never touches the encoder.

    model = get_model("rar-L")                     # or "rar-1B", "rar-tiny"
    params = model.init(jax.random.key(0))
    avatar = jax.jit(model.reconstruct)(params, source_image, source_params, source_camera)
    image, aux = jax.jit(model.drive)(params, avatar, driving_params, camera)

Pipeline (docs/models.md, RAR section, says which parts the paper fixes and which we
chose): source image -> ViT tokens -> ``SurfaceTokens`` (one query per FLAME vertex
cross-attending to the tokens) -> per-anchor heads on ~80k UV-sampled surface anchors
(``rar_surface``): appearance (colour, opacity, scale, rotation, with pixel-aligned
source features) and geometry (normal offset; latent z_k of the dynamic anchors).
``drive``: FLAME with the source shape and the driver's expression/jaw/eyes/pose,
static Gaussians carried rigidly by their posed triangles, dynamic ones offset by
``ReenactmentMLP(alpha, z_k)`` in the triangle frame, splat RGB, optional light refiner.

World units are FLAME metres x ``world_scale`` (5, GAGAvatar's world and the data
pipeline's cameras, docs/data.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from gshead_jax import _compat, flame, splat
from gshead_jax.camera import Camera, project
from gshead_jax.flame import FlameModel, FlameParams
from gshead_jax.models import rar_nets
from gshead_jax.models.base import (
    CONSTANTS,
    FROZEN,
    TRAINABLE,
    Avatar,
    AvatarModel,
    check_camera,
    check_flame_params,
    check_image,
    group_mask,
    param_count,
    register_model,
)
from gshead_jax.models.rar_config import RAR_CONFIGS, RARConfig, rar_config
from gshead_jax.models.rar_surface import SurfaceAnchors, carry, matrix_to_quat, quat_multiply
from gshead_jax.models.rar_surface import sample_anchors as _sample_anchors
from gshead_jax.nn.preprocess import gagavatar_dino_input
from gshead_jax.nn.vit import DinoViT
from gshead_jax.nn.vit_config import vit_config

__all__ = ["RAR", "RARAvatar", "RARConfig", "RAR_CONFIGS", "rar_config"]

# Surface area of a FLAME-sized head in m^2 (the stand-in template: 0.163; FLAME 2020's
# template is of the same size): sets the initial Gaussian scale to the anchor spacing.
_HEAD_AREA = 0.16


def _fast_compile(num_values: int) -> dict[str, Any] | None:
    """XLA options for a program that runs once (init) drawing ``num_values`` numbers.

    Small models: no backend optimisation -- the ~100 threefry draws of an init compile
    3-5x faster, which is most of a CPU test's time. Large ones: the default, since an
    unoptimised threefry draws ~6x slower (seconds per 100M values on a CPU).
    """
    return {"xla_backend_optimization_level": 0} if num_values < 20_000_000 else None


# Sub-trees of params["trainable"] that stage 2 (texture) trains.
_STAGE2 = ("appearance", "refiner")


@flax.struct.dataclass
class RARAvatar(Avatar):
    """A RAR avatar: per-Gaussian tensors only, static anchors first (B avatars).

    Attributes:
        flame_shape: The source's FLAME identity. [B, S]
        colors: RGB (+ feature channels) in [0, 1]. [B, N, C]
        opacities: In (0, 1). [B, N]
        scales: Linear scales, world units. [B, N, 3]
        quats: Unit rotations (w, x, y, z) in the anchor's triangle frame. [B, N, 4]
        normal_offsets: Offsets along the posed triangle normal, world units. [B, N]
        latents: The dynamic Gaussians' latents z_k. [B, N_dynamic, L]
    """

    colors: jax.Array
    opacities: jax.Array
    scales: jax.Array
    quats: jax.Array
    normal_offsets: jax.Array
    latents: jax.Array


@functools.lru_cache(maxsize=4)
def _flame_and_anchors(
    flame_path: str | None, standin_vertices: int, num: int, num_dynamic: int, seed: int
) -> tuple[FlameModel, SurfaceAnchors]:
    # Evaluated eagerly even when first called under a trace (eval_shape of init),
    # so the cache never holds tracers.
    with jax.ensure_compile_time_eval():
        model = (
            flame.load(flame_path) if flame_path else flame.standin(num_vertices=standin_vertices)
        )
        return model, _sample_anchors(model, num, num_dynamic, seed=seed)


def _normalized(points: jax.Array, reference: jax.Array) -> jax.Array:
    """Points divided by the template's largest |coordinate| (about [-1, 1])."""
    return points / jnp.max(jnp.abs(reference))


@dataclasses.dataclass(frozen=True)
class RAR(AvatarModel):
    """The RAR family (see the module docstring); ``config`` is its only state."""

    config: RARConfig = RARConfig()

    @property
    def name(self) -> str:
        return self.config.name

    # --------------------------------------------------------------------------- modules

    def _vit(self) -> DinoViT:
        c = self.config
        return DinoViT(vit_config(c.encoder), dtype=c.dtype, remat=c.remat, attention=c.attention)

    def _modules(self, num_vertices: int) -> dict[str, Any]:
        c = self.config
        init_scale = min(c.world_scale * math.sqrt(_HEAD_AREA / c.num_anchors), 0.5 * c.max_scale)
        mods = {
            "tokens": rar_nets.SurfaceTokens(
                num_vertices=num_vertices,
                dim=c.dim,
                depth=c.depth,
                num_heads=c.num_heads,
                self_attention=c.self_attention,
                num_freqs=c.num_freqs,
                dtype=c.dtype,
                remat=c.remat,
                attention=c.attention,
            ),
            "geometry": rar_nets.GeometryHead(
                c.head_width, c.head_layers, c.latent_dim, c.max_normal_offset, c.dtype
            ),
            "appearance": rar_nets.AppearanceHead(
                c.head_width,
                c.head_layers,
                c.pixel_dim,
                3 + c.feature_channels,
                c.max_scale,
                init_scale,
                c.dtype,
            ),
            "reenactment": rar_nets.ReenactmentMLP(
                c.reenact_width, c.reenact_layers, c.max_dynamic_offset
            ),
        }
        if c.refiner:
            mods["refiner"] = rar_nets.LightRefiner(c.refiner_width, c.refiner_blocks, c.dtype)
        return mods

    # ------------------------------------------------------------------------------ init

    def init(self, rng: jax.Array) -> dict[str, Any]:
        """Random parameters: ``trainable`` (generator, reenactment, refiner [, encoder]),
        ``frozen`` (the encoder unless fine-tuned), ``constants`` (``flame``, ``anchors``).

        Args:
            rng: A PRNG key.

        Returns:
            The params dict (models.base groups).
        """
        model, anchors = self.flame_and_anchors()
        # One compiled program (an eager Flax init dispatches and compiles op by op),
        # without XLA's backend optimisations: ~100 threefry draws otherwise take most
        # of a CPU test's time to compile, for a program that runs once.
        init_nets = functools.partial(
            self._init_nets,
            num_vertices=model.num_vertices,
            num_expression=model.num_expression,
            num_static=anchors.num_static,
        )
        if not _compat.is_tracer(rng):  # under a trace (eval_shape) it inlines
            size = param_count(jax.eval_shape(init_nets, rng))
            init_nets = jax.jit(init_nets, compiler_options=_fast_compile(size))
        nets = init_nets(rng)
        frozen = {}
        if not self.config.finetune_encoder:
            frozen["encoder"] = nets.pop("encoder")
        return {
            TRAINABLE: nets,
            FROZEN: frozen,
            CONSTANTS: {"flame": model, "anchors": anchors},
        }

    def _init_nets(
        self, rng: jax.Array, *, num_vertices: int, num_expression: int, num_static: int
    ) -> dict[str, Any]:
        c = self.config
        mods = self._modules(num_vertices)
        k = jax.random.split(rng, 7)
        vit = self._vit()
        s = c.encoder_image_size
        vc = vit_config(c.encoder)
        g = s // vc.patch_size
        tokens_in = jnp.zeros((1, vc.num_prefix_tokens + g * g, vc.hidden_size), jnp.float32)
        n, nd = c.num_anchors, c.num_anchors - num_static
        feat = jnp.zeros((1, n, c.anchor_dim + 5 * (1 + 2 * c.num_freqs)), jnp.float32)
        nets = {
            "encoder": vit.init(k[0], jnp.zeros((1, s, s, 3), jnp.float32))["params"],
            "tokens": mods["tokens"].init(k[1], tokens_in, jnp.zeros((num_vertices, 3)))["params"],
            "anchor_proj": {
                "kernel": 0.02 * jax.random.normal(k[2], (c.dim, c.anchor_dim), jnp.float32),
                "bias": jnp.zeros((c.anchor_dim,), jnp.float32),
            },
            "geometry": mods["geometry"].init(k[3], feat, num_static)["params"],
            "appearance": mods["appearance"].init(
                k[4],
                feat,
                jnp.zeros((1, g, g, vc.hidden_size)),
                jnp.zeros((1, 8, 8, 3)),
                jnp.zeros((1, n, 2)),
                jnp.zeros((1, n)),
            )["params"],
            "reenactment": mods["reenactment"].init(
                k[5], jnp.zeros((1, num_expression + 9)), jnp.zeros((1, nd, c.latent_dim))
            )["params"],
        }
        if c.refiner:
            ch = 3 + c.feature_channels
            nets["refiner"] = mods["refiner"].init(
                k[6], jnp.zeros((1, 16, 16, ch)), jnp.zeros((1, 16, 16, 1))
            )["params"]
        return nets

    def flame_and_anchors(self) -> tuple[FlameModel, SurfaceAnchors]:
        """The FLAME model and the surface anchors of this config (cached, deterministic)."""
        c = self.config
        return _flame_and_anchors(
            c.flame_path, c.standin_vertices, c.num_anchors, c.num_dynamic, c.anchor_seed
        )

    def trainable_mask(self, params: dict[str, Any], stage: int | str | None = None) -> Any:
        """Which leaves train in RAR's two stages.

        Stage 1 (generalisation; ``None`` or 1): every ``trainable`` leaf -- generator,
        reenactment module, refiner, and the encoder when ``finetune_encoder``.
        Stage 2 (high-frequency texture; 2): geometry frozen -- the encoder, surface
        tokens, geometry head (normal offsets, latents) and reenactment module keep
        their stage-1 values, so every Gaussian position is fixed; the appearance head
        (colour, opacity, scale, rotation, pixel-aligned features) and the refiner train.

        Args:
            params: The params (or their ``jax.eval_shape``).
            stage: None, 1 or 2.

        Returns:
            A bool pytree shaped like ``params``.
        """
        mask = group_mask(params, TRAINABLE)
        if stage in (None, 1):
            return mask
        if stage != 2:
            raise ValueError(f"RAR has training stages 1 and 2 (or None), got {stage!r}")
        mask[TRAINABLE] = {
            key: jax.tree.map(lambda _, key=key: key in _STAGE2, sub)
            for key, sub in params[TRAINABLE].items()
        }
        return mask

    # ----------------------------------------------------------------------- reconstruct

    def reconstruct(
        self,
        params: dict[str, Any],
        source_image: jax.Array,
        source_params: FlameParams,
        source_camera: Camera,
    ) -> RARAvatar:
        """Build the avatars of the source portraits (runs the encoder; once per identity).

        Args:
            params: The model parameters.
            source_image: Source portraits, RGB in [0, 1], any square size. [B, S, S, 3]
            source_params: The sources' FLAME parameters, batch [B].
            source_camera: The sources' cameras (OpenCV, world = FLAME m x world_scale), [B].

        Returns:
            The ``RARAvatar``.
        """
        c = self.config
        b, _ = check_image("source_image", source_image)
        check_flame_params("source_params", source_params, b)
        check_camera("source_camera", source_camera, b)
        trainable, consts = params[TRAINABLE], params[CONSTANTS]
        model: FlameModel = consts["flame"]
        anchors: SurfaceAnchors = consts["anchors"]
        mods = self._modules(model.num_vertices)

        # Encoder: all tokens of the last layer (normed), and the patch grid as a map.
        enc = trainable["encoder"] if c.finetune_encoder else params[FROZEN]["encoder"]
        vc = vit_config(c.encoder)
        pixels = gagavatar_dino_input(source_image, c.encoder_image_size)
        tokens = self._vit().apply({"params": enc}, pixels).last_hidden_state
        if not c.finetune_encoder:
            tokens = jax.lax.stop_gradient(tokens)
        g = c.encoder_image_size // vc.patch_size
        patch_map = tokens[:, vc.num_prefix_tokens :].reshape(b, g, g, vc.hidden_size)

        # Surface tokens, then each anchor's barycentric mix of its triangle's tokens.
        template = model.v_template
        surf = mods["tokens"].apply(
            {"params": trainable["tokens"]}, tokens, _normalized(template, template)
        )
        proj = trainable["anchor_proj"]
        surf = surf @ proj["kernel"] + proj["bias"]  # [B, V, anchor_dim]
        bary = anchors.bary
        mix = sum(
            bary[:, k, None] * jnp.take(surf, anchors.vertex_index[:, k], axis=1) for k in range(3)
        )  # [B, N, anchor_dim]
        pos_code = jnp.concatenate(
            [anchors.uv * 2.0 - 1.0, _normalized(anchors.template, template)], axis=-1
        )
        pe = rar_nets.fourier_features(pos_code, c.num_freqs)  # [N, 5 * (1 + 2F)]
        feat = jnp.concatenate([mix, jnp.broadcast_to(pe, (b,) + pe.shape)], axis=-1)

        offsets, latents = mods["geometry"].apply(
            {"params": trainable["geometry"]}, feat, anchors.num_static
        )

        # Pixel-aligned inputs: where each anchor lies in the source view (source-posed
        # FLAME, on the surface) and whether its triangle faces the source camera.
        verts = flame.forward(model, source_params, check=False).vertices * c.world_scale
        points, frames = carry(verts, anchors, jnp.zeros(verts.shape[:1] + bary.shape[:1]))
        pix, _ = project(source_camera, points)
        size = jnp.array([source_camera.width, source_camera.height], pix.dtype)
        to_cam = source_camera.position[:, None, :] - points
        to_cam = to_cam * jax.lax.rsqrt(jnp.maximum(jnp.sum(to_cam**2, -1, keepdims=True), 1e-12))
        facing = jnp.sum(frames[..., :, 2] * to_cam, -1)
        look = mods["appearance"].apply(
            {"params": trainable["appearance"]},
            feat,
            patch_map,
            source_image,
            jax.lax.stop_gradient(pix / size),
            jax.lax.stop_gradient(facing),
        )
        return RARAvatar(
            flame_shape=source_params.shape,
            colors=look["colors"],
            opacities=look["opacities"],
            scales=look["scales"],
            quats=look["quats"],
            normal_offsets=offsets,
            latents=latents,
        )

    # ----------------------------------------------------------------------------- drive

    def drive(
        self,
        params: dict[str, Any],
        avatar: RARAvatar,
        driving_params: FlameParams,
        camera: Camera,
        *,
        rng: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Render avatars for new FLAME parameters and cameras: no image, no encoder.

        FLAME with the avatar's shape and the driver's expression, jaw, eyes, neck,
        global pose and translation; static Gaussians on their posed triangles;
        dynamic ones plus the reenactment module's offsets; RGB splat; the refiner if
        configured. Deterministic (``rng`` and ``train`` are unused).

        Args:
            params: The model parameters (only the reenactment module, the refiner and
                the FLAME constants are read).
            avatar: From ``reconstruct``, batch B.
            driving_params: Driving FLAME parameters, batch [B] (``shape`` is ignored:
                the avatar's identity is used).
            camera: Render cameras, batch [B], any image size.
            rng: Unused.
            train: Unused.

        Returns:
            ``(image [B, H, W, 3], aux)``; aux: ``coarse`` (splatted RGB), ``alpha``,
            ``depth``, ``overflow`` [B], ``num_intersections`` [B], ``features`` (all
            splatted channels), ``means`` [B, N, 3], ``quats`` [B, N, 4] (world
            rotations), ``dynamic_offsets`` [B, N_dyn, 3]
            (world units, for an offset regulariser), ``flame_vertices`` [B, V, 3] (posed
            FLAME, world units: GAGAvatar's key).
        """
        del rng, train
        c = self.config
        if not isinstance(avatar, RARAvatar):
            raise TypeError(f"avatar must be a RARAvatar, got {type(avatar).__name__}")
        b = avatar.batch_size
        check_flame_params("driving_params", driving_params, b)
        check_camera("camera", camera, b)
        trainable, consts = params[TRAINABLE], params[CONSTANTS]
        model: FlameModel = consts["flame"]
        anchors: SurfaceAnchors = consts["anchors"]
        ne = model.num_expression
        expression = driving_params.expression
        if expression.shape[-1] > ne:
            raise ValueError(
                f"driving_params.expression must be [B, <= {ne}], got {expression.shape}"
            )
        mods = self._modules(model.num_vertices)

        verts = flame.forward(
            model, driving_params.replace(shape=avatar.flame_shape), check=False
        ).vertices
        verts = verts * c.world_scale
        means, frames = carry(verts, anchors, avatar.normal_offsets)
        ns = anchors.num_static
        # The control signal alpha = (expression, jaw, eyes), expression zero-padded to E.
        control = jnp.concatenate(
            [
                jnp.pad(expression, ((0, 0), (0, ne - expression.shape[-1]))),
                driving_params.jaw,
                driving_params.eyes,
            ],
            axis=-1,
        ).astype(jnp.float32)
        local = mods["reenactment"].apply(
            {"params": trainable["reenactment"]}, control, avatar.latents
        )
        dyn = jnp.einsum(
            "bnij,bnj->bni", frames[:, ns:], local, precision=jax.lax.Precision.HIGHEST
        )
        means = jnp.concatenate([means[:, :ns], means[:, ns:] + dyn], axis=1)
        quats = quat_multiply(matrix_to_quat(frames), avatar.quats)

        render = functools.partial(
            splat.rasterize,
            width=camera.width,
            height=camera.height,
            capacity=c.capacity,
            backend=c.splat_backend,
        )
        inputs = (means, quats, avatar.scales, avatar.opacities, avatar.colors)
        inputs += (camera.viewmat, camera.K)
        if b == 1:
            # One frame (the real-time case): no batching rule in the way (the Pallas
            # kernels batch as a sequential loop).
            out = jax.tree.map(lambda x: x[None], render(*(x[0] for x in inputs)))
        else:
            out = jax.vmap(render)(*inputs)
        coarse = out.image[..., :3]
        image = coarse
        if c.refiner:
            image = mods["refiner"].apply({"params": trainable["refiner"]}, out.image, out.alpha)
        aux = {
            "coarse": coarse,
            "alpha": out.alpha,
            "depth": out.depth,
            "overflow": out.overflow,
            "num_intersections": out.num_intersections,
            "features": out.image,
            "means": means,
            "quats": quats,
            "dynamic_offsets": dyn,
            "flame_vertices": verts,
        }
        return image, aux


def _factory(name: str):
    def make(**overrides: Any) -> RAR:
        return RAR(rar_config(name, **overrides))

    make.__name__ = f"make_{name.replace('-', '_')}"
    make.__doc__ = f"The ``{name}`` RAR model (``RAR_CONFIGS``), config fields overridable."
    return make


for _name in RAR_CONFIGS:
    register_model(_name)(_factory(_name))
