"""RAR's networks: the Gaussian generator (once per identity), the reenactment MLP and the
light refiner (per frame).

Ye et al. 2025 (arXiv 2509.05582, Fig. 1) describe the generator as predicting
"appearance details (colors, opacity, scales)" for Gaussians split into a static and a
dynamic part, and an "ultra-lightweight" reenactment module mapping the control signal
alpha_d to the dynamic part's positions; the layer design below is ours
(docs/models.md, RAR section):

* ``SurfaceTokens``: one token per FLAME vertex (learned embedding + Fourier features
  of the template position) that cross-attends to the encoder tokens, then optionally
  self-attends, then an MLP (pre-norm blocks). Anchors read the barycentric mix of
  their triangle's tokens, so the expensive attention runs over V (5023) tokens, not
  over the ~80k Gaussians.
* ``GeometryHead`` (per anchor): normal offset for every anchor and the latent z_k of
  each dynamic anchor. ``AppearanceHead`` (per anchor): colour (+ optional feature
  channels), opacity, scale, local rotation, from the token mix, the anchor's Fourier
  features, and pixel-aligned features -- the encoder's patch map and the source RGB
  sampled where the anchor projects in the source view, with the facing cosine, so
  that visible texture reaches the Gaussians at full resolution.
* ``ReenactmentMLP``: offsets of the dynamic Gaussians (local triangle frame) from the
  control signal and z_k; its first layer is split so the control part is computed
  once per frame, not per Gaussian.
* ``LightRefiner``: a few 3x3 convolutions on the splatted image, residual in logit
  space.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gshead_jax.nn.vit import attention_implementation

__all__ = [
    "AppearanceHead",
    "GeometryHead",
    "LightRefiner",
    "ReenactmentMLP",
    "SurfaceTokens",
    "fourier_features",
    "sample_bilinear",
]

Dtype = Any
_INIT = nn.initializers.normal(0.02)


def fourier_features(x: jax.Array, num_freqs: int) -> jax.Array:
    """NeRF-style encoding: x, then sin and cos of 2^k * pi * x for k < num_freqs.

    Args:
        x: Coordinates, roughly in [-1, 1]. [..., d]
        num_freqs: Frequencies per coordinate.

    Returns:
        Features. [..., d * (1 + 2 * num_freqs)]
    """
    freqs = jnp.pi * 2.0 ** jnp.arange(num_freqs, dtype=x.dtype)
    ang = (x[..., :, None] * freqs).reshape(x.shape[:-1] + (-1,))  # [..., d * F]
    return jnp.concatenate([x, jnp.sin(ang), jnp.cos(ang)], axis=-1)


def sample_bilinear(image: jax.Array, xy: jax.Array) -> jax.Array:
    """Bilinear samples of an image at continuous positions, clamped at the border.

    Args:
        image: The image (or feature map), channels last. [H, W, C]
        xy: Positions in [0, 1]^2 of the image extent (x right, y down); pixel (i, j)
            has its centre at ((j + 0.5) / W, (i + 0.5) / H). [N, 2]

    Returns:
        The samples. [N, C]
    """
    h, w = image.shape[0], image.shape[1]
    x = jnp.clip(xy[:, 0] * w - 0.5, 0.0, w - 1.0)
    y = jnp.clip(xy[:, 1] * h - 0.5, 0.0, h - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, max(w - 2, 0)).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, max(h - 2, 0)).astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    flat = image.reshape(h * w, -1)

    def at(yy, xx):
        return jnp.take(flat, yy * w + xx, axis=0)

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


class _Attention(nn.Module):
    """Multi-head attention of queries x over a context (self-attention when ctx is x)."""

    dim: int
    num_heads: int
    dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, ctx: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        s = ctx.shape[1]
        hd = self.dim // self.num_heads
        dense = dict(dtype=self.dtype, kernel_init=_INIT)
        q = nn.Dense(self.dim, name="q", **dense)(x).reshape(b, t, self.num_heads, hd)
        kv = nn.Dense(2 * self.dim, name="kv", **dense)(ctx).reshape(b, s, 2, self.num_heads, hd)
        impl = attention_implementation(self.attention, q.dtype, hd)
        if impl == "cudnn" and self.attention == "auto" and (t % 64 or s % 64):
            # cuDNN's fused attention refuses these lengths in its training path
            # (seen on an H200: "Unsupported sequence length Q 5023, KV 1370").
            impl = "xla"
        out = jax.nn.dot_product_attention(
            q, kv[:, :, 0], kv[:, :, 1], scale=hd**-0.5, implementation=impl
        )
        return nn.Dense(self.dim, name="out", **dense)(out.reshape(b, t, self.dim))


class _Block(nn.Module):
    """Pre-norm: x += cross(LN x, ctx); [x += self(LN x)]; x += MLP(LN x)."""

    dim: int
    num_heads: int
    mlp_ratio: float
    self_attention: bool
    dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, ctx: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, attention=self.attention)
        ln = dict(dtype=jnp.float32, use_fast_variance=False)
        x = x + _Attention(self.dim, self.num_heads, name="cross", **kw)(
            nn.LayerNorm(name="norm_q", **ln)(x), ctx
        )
        if self.self_attention:
            h = nn.LayerNorm(name="norm_self", **ln)(x)
            x = x + _Attention(self.dim, self.num_heads, name="self", **kw)(h, h)
        h = nn.LayerNorm(name="norm_mlp", **ln)(x)
        h = nn.Dense(int(self.dim * self.mlp_ratio), dtype=self.dtype, name="fc1")(h)
        h = nn.Dense(self.dim, dtype=self.dtype, name="fc2")(jax.nn.gelu(h))
        return x + h.astype(x.dtype)


class SurfaceTokens(nn.Module):
    """Per-vertex tokens of one identity: queries on the FLAME surface read the image.

    Attributes:
        num_vertices: V, one learned query per template vertex.
        dim: Token width.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP width over ``dim``.
        self_attention: Whether the blocks also attend among the surface tokens.
        num_freqs: Fourier frequencies of the template position.
        dtype: Compute dtype of the matmuls (LayerNorms and the stream stay float32).
        remat: Recompute each block in the backward pass.
        attention: ``jax.nn.dot_product_attention`` backend (``nn.vit`` semantics).
    """

    num_vertices: int
    dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    self_attention: bool = True
    num_freqs: int = 6
    dtype: Dtype = jnp.float32
    remat: bool = False
    attention: str = "auto"

    @nn.compact
    def __call__(self, image_tokens: jax.Array, template: jax.Array) -> jax.Array:
        """Surface tokens.

        Args:
            image_tokens: Encoder tokens (CLS, registers, patches). [B, T, D_enc]
            template: Template vertices, normalised to about [-1, 1]. [V, 3]

        Returns:
            Normed tokens, float32. [B, V, dim]
        """
        b = image_tokens.shape[0]
        ctx = nn.Dense(self.dim, dtype=self.dtype, name="context")(image_tokens)
        ctx = nn.LayerNorm(dtype=jnp.float32, use_fast_variance=False, name="norm_context")(ctx)
        ctx = ctx.astype(self.dtype)
        embed = self.param("embed", _INIT, (self.num_vertices, self.dim))
        pos = nn.Dense(self.dim, name="position")(fourier_features(template, self.num_freqs))
        x = jnp.broadcast_to((embed + pos)[None], (b, self.num_vertices, self.dim))
        block = nn.remat(_Block) if self.remat else _Block
        for i in range(self.depth):
            x = block(
                self.dim,
                self.num_heads,
                self.mlp_ratio,
                self.self_attention,
                dtype=self.dtype,
                attention=self.attention,
                name=f"blocks_{i}",
            )(x, ctx)
        return nn.LayerNorm(dtype=jnp.float32, use_fast_variance=False, name="norm")(x)


def _mlp(x: jax.Array, width: int, layers: int, out: int, dtype: Dtype, out_init=None):
    for i in range(layers):
        x = jax.nn.relu(nn.Dense(width, dtype=dtype, name=f"hidden_{i}")(x))
    init = out_init or nn.initializers.lecun_normal()
    return nn.Dense(out, dtype=dtype, kernel_init=init, name="out")(x).astype(jnp.float32)


class GeometryHead(nn.Module):
    """Per anchor: the normal offset (all anchors) and the latent z_k (dynamic anchors).

    Attributes:
        width: Hidden width.
        layers: Hidden layers.
        latent_dim: Width of z_k.
        max_offset: Largest normal offset, world units (tanh-bounded).
        dtype: Compute dtype.
    """

    width: int
    layers: int
    latent_dim: int
    max_offset: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, num_static: int) -> tuple[jax.Array, jax.Array]:
        """Geometry of the anchors.

        Args:
            features: Token mix and Fourier features per anchor, static first. [B, N, F]
            num_static: Static anchors (the first ones).

        Returns:
            ``(normal_offsets [B, N], latents [B, N - num_static, latent_dim])``.
        """
        # Small output weights: offsets start near the surface (tanh ~ linear).
        y = _mlp(
            features,
            self.width,
            self.layers,
            1 + self.latent_dim,
            self.dtype,
            nn.initializers.normal(1e-2),
        )
        return self.max_offset * jnp.tanh(y[..., 0]), y[:, num_static:, 1:]


class AppearanceHead(nn.Module):
    """Per anchor: colour (+ feature channels), opacity, scale and local rotation.

    Activations as GAGAvatar's heads: sigmoid colour and opacity, sigmoid * max_scale
    scales, normalised quaternions (w, x, y, z) in the anchor's triangle frame. The
    scale bias starts at ``init_scale`` and the rotation bias at the identity.

    Attributes:
        width: Hidden width.
        layers: Hidden layers.
        pixel_dim: Width of the projected encoder patch map sampled per anchor.
        channels: Colour channels (3) plus extra splatted feature channels.
        max_scale: Largest scale, world units.
        init_scale: Initial scale, world units (< max_scale).
        dtype: Compute dtype.
    """

    width: int
    layers: int
    pixel_dim: int
    channels: int
    max_scale: float
    init_scale: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        features: jax.Array,
        patch_map: jax.Array,
        source_image: jax.Array,
        source_xy: jax.Array,
        facing: jax.Array,
    ) -> dict[str, jax.Array]:
        """Appearance of the anchors.

        Args:
            features: Token mix and Fourier features per anchor. [B, N, F]
            patch_map: Encoder patch tokens as a map. [B, h, w, D_enc]
            source_image: The source image in [0, 1]. [B, S, S, 3]
            source_xy: Where each anchor projects in the source view, in [0, 1]^2. [B, N, 2]
            facing: Cosine between the source-posed normal and the direction to the
                source camera. [B, N]

        Returns:
            ``colors [B, N, C]``, ``opacities [B, N]``, ``scales [B, N, 3]``,
            ``quats [B, N, 4]`` (unit, local frame).
        """
        pmap = nn.Dense(self.pixel_dim, dtype=self.dtype, name="pixel_proj")(patch_map)
        pmap = pmap.astype(jnp.float32)
        pix = jax.vmap(sample_bilinear)(pmap, source_xy)  # [B, N, pixel_dim]
        rgb = jax.vmap(sample_bilinear)(source_image.astype(jnp.float32), source_xy)
        x = jnp.concatenate([features, pix, rgb, facing[..., None]], axis=-1)
        c = self.channels
        y = _mlp(x, self.width, self.layers, c + 1 + 3 + 4, self.dtype)
        colour, opacity = y[..., :c], y[..., c]
        scale, quat = y[..., c + 1 : c + 4], y[..., c + 4 :]
        scale_bias = jnp.log(self.init_scale / (self.max_scale - self.init_scale))
        quat = quat + jnp.array([1.0, 0.0, 0.0, 0.0])
        quat = quat * jax.lax.rsqrt(jnp.maximum(jnp.sum(quat * quat, -1, keepdims=True), 1e-12))
        return {
            "colors": jax.nn.sigmoid(colour),
            "opacities": jax.nn.sigmoid(opacity),
            "scales": self.max_scale * jax.nn.sigmoid(scale + scale_bias),
            "quats": quat,
        }


class ReenactmentMLP(nn.Module):
    """Offsets of the dynamic Gaussians from the control signal and their latents.

    ``h_1 = relu(W_a alpha + W_z z_k + b)`` is the first layer of an MLP on
    ``[alpha, z_k]``, split so ``W_a alpha`` is computed once per frame; then
    ``layers - 1`` more hidden layers and a linear output, bounded by
    ``max_offset * tanh``. Output in the anchor's triangle frame.

    Attributes:
        width: Hidden width.
        layers: Hidden layers (>= 1).
        max_offset: Largest offset per axis, world units.
    """

    width: int
    layers: int
    max_offset: float

    @nn.compact
    def __call__(self, control: jax.Array, latents: jax.Array) -> jax.Array:
        """Per-frame offsets.

        Args:
            control: The control signal alpha = [expression, jaw, eyes]. [B, A]
            latents: Per-Gaussian latents z_k. [B, K, L]

        Returns:
            Offsets in the local triangle frames, world units. [B, K, 3]
        """
        h = nn.Dense(self.width, name="control")(control)[:, None, :]
        h = jax.nn.relu(h + nn.Dense(self.width, use_bias=False, name="latent")(latents))
        for i in range(1, self.layers):
            h = jax.nn.relu(nn.Dense(self.width, name=f"hidden_{i}")(h))
        y = nn.Dense(3, kernel_init=nn.initializers.normal(1e-2), name="out")(h)
        return self.max_offset * jnp.tanh(y)


class LightRefiner(nn.Module):
    """A small residual CNN on the splatted image: 3x3 convs at full resolution.

    ``rgb = sigmoid(logit(coarse) + conv(...))``: the identity at initialisation up to
    the small output weights, always in (0, 1).

    Attributes:
        width: Channels of the hidden convs.
        blocks: Residual blocks (two 3x3 convs each).
        dtype: Compute dtype.
    """

    width: int
    blocks: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, alpha: jax.Array) -> jax.Array:
        """Refined RGB.

        Args:
            features: Splatted channels, RGB first. [B, H, W, C]
            alpha: Splatted opacity. [B, H, W, 1]

        Returns:
            RGB in (0, 1). [B, H, W, 3]
        """
        conv = dict(kernel_size=(3, 3), padding="SAME", dtype=self.dtype)
        x = jnp.concatenate([features, alpha], axis=-1)
        h = jax.nn.relu(nn.Conv(self.width, name="conv_in", **conv)(x))
        for i in range(self.blocks):
            r = jax.nn.relu(nn.Conv(self.width, name=f"block_{i}_a", **conv)(h))
            h = h + nn.Conv(self.width, name=f"block_{i}_b", **conv)(r)
        out_init = nn.initializers.normal(1e-3)
        res = nn.Conv(3, name="conv_out", kernel_init=out_init, **conv)(jax.nn.relu(h))
        coarse = jnp.clip(features[..., :3], 1e-4, 1 - 1e-4)
        return jax.nn.sigmoid(jnp.log(coarse) - jnp.log1p(-coarse) + res.astype(jnp.float32))
