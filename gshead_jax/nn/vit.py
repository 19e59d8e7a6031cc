"""DINOv2 / WebSSL vision transformer in Flax Linen, numerically faithful to the reference.

``DinoViT`` computes what Hugging Face's ``Dinov2Model`` / ``Dinov2WithRegistersModel``
(transformers 5.x) and the torch-hub ``DinoVisionTransformer`` compute, from NHWC
pixels: a stride-p patch projection, an optional mask token, a CLS token, position
embeddings resized to the input grid with PyTorch's own bicubic (``vit_resample``),
register tokens inserted after CLS (with no position embedding), pre-norm blocks with
LayerScale and a GELU or fused-SwiGLU MLP, and a final LayerNorm. In float32 on CPU it
matches transformers to ~1e-6 (tests/nn/test_vit_parity.py).

Parameter tree (torch-hub names, so a checkpoint maps tensor by tensor)::

    patch_embed/{kernel [p, p, C, D], bias [D]}
    cls_token [1, 1, D]; pos_embed [1, 1 + M*M, D]
    register_tokens [1, R, D] (R > 0); mask_token [1, D] (use_mask_token)
    blocks_{i}/norm1, norm2: {scale, bias} [D]
    blocks_{i}/attn/qkv: {kernel [D, 3D] (q | k | v, heads major), bias [3D]}
    blocks_{i}/attn/proj: {kernel [D, D], bias [D]}
    blocks_{i}/ls1, ls2 [D] (layerscale)
    blocks_{i}/mlp/fc1, fc2 (mlp) or mlp/w12 [D, 2F] (gate | up), mlp/w3 (swiglu)
    norm: {scale, bias} [D]

Speed and memory: ``dtype`` is the compute dtype of matmuls and attention (e.g.
bfloat16) while parameters stay ``param_dtype`` (float32); the residual stream, the
LayerNorm statistics, LayerScale, the position-embedding resize and the outputs stay
float32
whatever ``dtype`` is (PyTorch's ``model.to(bfloat16)`` keeps the stream in bfloat16;
ours is about twice as accurate for the same matmul cost). ``remat=True`` wraps every block in
``jax.checkpoint``. Attention goes through ``jax.nn.dot_product_attention``; with
``attention="auto"`` it asks for cuDNN's fused flash attention on a GPU in half precision
(jax 0.10's ``implementation=None`` always picks the XLA path) and XLA otherwise. For
float32 results identical to PyTorch on a GPU, run under
``jax.default_matmul_precision("highest")`` (XLA otherwise may use TF32).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from gshead_jax import _compat
from gshead_jax.nn.vit_config import ViTConfig
from gshead_jax.nn.vit_resample import resize

Dtype = Any
_INIT = nn.initializers.normal(0.02)  # HF/hub: trunc_normal_(std=0.02), bounds +-2 (inert)


@flax.struct.dataclass
class ViTOutput:
    """Result of ``DinoViT``.

    Attributes:
        last_hidden_state: All tokens after the final LayerNorm: CLS, R registers, then
            the h*w patches in row-major order. [B, 1 + R + h*w, D]
        pooler_output: The normed CLS token. [B, D]
        hidden_states: When asked, the embedding output then every block's output,
            before the final norm (HF's definition): L + 1 arrays [B, 1 + R + h*w, D].
    """

    last_hidden_state: jax.Array
    pooler_output: jax.Array
    hidden_states: tuple[jax.Array, ...] | None = None


def _activation(name: str):
    # HF ACT2FN: "gelu" is the exact erf GELU; "gelu_new"/"gelu_pytorch_tanh" the tanh one.
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name in ("silu", "swish"):
        return jax.nn.silu
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unsupported hidden_act {name!r}")


def attention_implementation(attention: str, dtype: Dtype, head_dim: int) -> str:
    """Resolves ``DinoViT.attention`` to a ``jax.nn.dot_product_attention`` backend.

    Args:
        attention: ``"auto"``, ``"xla"`` or ``"cudnn"``.
        dtype: Compute dtype of q, k, v.
        head_dim: Per-head width.

    Returns:
        ``"cudnn"`` or ``"xla"``.
    """
    if attention in ("xla", "cudnn"):
        return attention
    if attention != "auto":
        raise ValueError(f"attention must be 'auto', 'xla' or 'cudnn', got {attention!r}")
    # cuDNN flash attention: fp16/bf16 only, head dim a multiple of 8 and <= 128
    # (256 on Hopper; every DINOv2/WebSSL variant has 64 or 128).
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if _compat.has_gpu() and half and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    return "xla"


def _layer_norm(config: ViTConfig, dtype: Dtype, param_dtype: Dtype, name: str | None = None):
    # Two-pass variance, as torch.nn.LayerNorm: Flax's fast E[x^2] - E[x]^2 variance
    # drifts by ~1e-6 relative on DINOv2's large-mean residual stream.
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        name=name,
    )


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches projected to D: the stride-p convolution as a matmul."""

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        c = self.config
        p, d = c.patch_size, c.hidden_size
        kernel = self.param("kernel", _INIT, (p, p, c.num_channels, d), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
        b, hh, ww, ch = pixels.shape
        h, w = hh // p, ww // p
        x = pixels.reshape(b, h, p, w, p, ch).transpose(0, 1, 3, 2, 4, 5)  # [B, h, w, p, p, C]
        x = x.reshape(b, h * w, p * p * ch)
        y = x @ kernel.reshape(p * p * ch, d).astype(self.dtype)
        return y + bias.astype(self.dtype)  # [B, h*w, D]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (hub ``attn.qkv`` layout)."""

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        b, t, d = x.shape
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_INIT)
        qkv = nn.Dense(3 * d, use_bias=c.qkv_bias, name="qkv", **dense)(x)
        qkv = qkv.reshape(b, t, 3, c.num_heads, c.head_dim)  # [B, T, 3, N, H]
        out = jax.nn.dot_product_attention(
            qkv[:, :, 0],
            qkv[:, :, 1],
            qkv[:, :, 2],
            scale=c.head_dim**-0.5,
            implementation=attention_implementation(self.attention, qkv.dtype, c.head_dim),
        )
        return nn.Dense(d, name="proj", **dense)(out.reshape(b, t, d))


class Mlp(nn.Module):
    """fc1 -> activation -> fc2, or SwiGLU: w12 = [gate | up], silu(gate) * up, w3."""

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_INIT)
        if c.mlp_kind == "swiglu":
            # One matmul for both halves, split as torch's x12.chunk(2, dim=-1).
            gate, up = jnp.split(nn.Dense(2 * c.mlp_dim, name="w12", **dense)(x), 2, axis=-1)
            return nn.Dense(c.hidden_size, name="w3", **dense)(jax.nn.silu(gate) * up)
        h = _activation(c.hidden_act)(nn.Dense(c.mlp_dim, name="fc1", **dense)(x))
        return nn.Dense(c.hidden_size, name="fc2", **dense)(h)


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1 * attn(norm1(x)), then x + ls2 * mlp(norm2(x))."""

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _layer_norm(c, name="norm1", **kw)(x)
        h = Attention(c, attention=self.attention, name="attn", **kw)(h)
        if c.layerscale:
            h = h * self._layerscale("ls1")
        x = x + h
        h = Mlp(c, name="mlp", **kw)(_layer_norm(c, name="norm2", **kw)(x))
        if c.layerscale:
            h = h * self._layerscale("ls2")
        return x + h

    def _layerscale(self, name: str) -> jax.Array:
        init = nn.initializers.constant(self.config.layerscale_value)
        # Applied in the (float32) stream dtype: the branch output is promoted here.
        stream = jnp.promote_types(self.dtype, jnp.float32)
        return self.param(name, init, (self.config.hidden_size,), self.param_dtype).astype(stream)


class DinoViT(nn.Module):
    """DINOv2 / WebSSL ViT (``Dinov2Model`` / ``Dinov2WithRegistersModel`` semantics).

    Attributes:
        config: The architecture (``vit_config("B/14")``, or from ``load_dinov2``).
        dtype: Compute dtype (float32 for reference results, bfloat16 for speed).
        param_dtype: Dtype of created parameters.
        remat: Recompute each block's activations in the backward pass.
        attention: ``"auto"`` (cuDNN on GPU in half precision, else XLA), ``"xla"``
            or ``"cudnn"``.

    Example:
        >>> config, params = load_dinov2("dinov2-base")          # gshead_jax.convert
        >>> y = DinoViT(config).apply({"params": params}, pixels, output_hidden_states=True)
        >>> y.last_hidden_state.shape                          # [B, 1 + R + h*w, D]
    """

    config: ViTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    attention: str = "auto"

    def setup(self):
        c = self.config
        d, m = c.hidden_size, c.grid_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        stream = jnp.promote_types(self.dtype, jnp.float32)
        self.patch_embed = PatchEmbed(c, **kw)
        self.cls_token = self.param("cls_token", _INIT, (1, 1, d), self.param_dtype)
        self.pos_embed = self.param("pos_embed", _INIT, (1, 1 + m * m, d), self.param_dtype)
        if c.num_register_tokens:
            self.register_tokens = self.param(
                "register_tokens",
                nn.initializers.zeros,
                (1, c.num_register_tokens, d),
                self.param_dtype,
            )
        if c.use_mask_token:
            self.mask_token = self.param(
                "mask_token", nn.initializers.zeros, (1, d), self.param_dtype
            )
        block = nn.remat(Block) if self.remat else Block
        self.blocks = [block(c, attention=self.attention, **kw) for _ in range(c.num_layers)]
        # Outputs in the stream dtype (float32 unless dtype is wider).
        self.norm = _layer_norm(c, stream, self.param_dtype)

    def _grid(self, pixels: jax.Array) -> tuple[int, int]:
        c = self.config
        if pixels.ndim != 4 or pixels.shape[-1] != c.num_channels:
            raise ValueError(
                f"pixels must be [B, H, W, {c.num_channels}] (NHWC), got {pixels.shape}"
            )
        if not jnp.issubdtype(pixels.dtype, jnp.floating):
            raise TypeError(f"pixels must be floating point, got {pixels.dtype}")
        _, hh, ww, _ = pixels.shape
        if hh % c.patch_size or ww % c.patch_size:
            # HF's convolution would silently drop the remainder; we refuse instead.
            raise ValueError(
                f"pixels height and width must be multiples of patch_size={c.patch_size}, "
                f"got {hh}x{ww}"
            )
        return hh // c.patch_size, ww // c.patch_size

    def position_embeddings(self, h: int, w: int) -> jax.Array:
        """Position embeddings for an h x w patch grid, resized as the reference does.

        Returns:
            CLS then row-major patch embeddings, float32 (parameter dtype promoted).
            [1, 1 + h*w, D]
        """
        c = self.config
        m = c.grid_size
        pos = self.pos_embed.astype(jnp.promote_types(self.pos_embed.dtype, jnp.float32))
        if (h, w) == (m, m):
            # HF and the hub skip interpolation when the grid matches (with the +0.1
            # offset, resizing to the same size would not be the identity).
            return pos
        grid = pos[0, 1:].reshape(m, m, c.hidden_size)
        scale = None
        if c.interpolate_offset:
            # torch-hub: F.interpolate(scale_factor=((h + offset) / M, (w + offset) / M)).
            scale = ((h + c.interpolate_offset) / m, (w + c.interpolate_offset) / m)
        grid = resize(
            grid,
            (h, w),
            mode="bicubic",
            antialias=c.interpolate_antialias,
            scale_factor=scale,
        )
        return jnp.concatenate([pos[:, :1], grid.reshape(1, h * w, c.hidden_size)], axis=1)

    def embed(self, pixels: jax.Array, bool_masked_pos: jax.Array | None = None) -> jax.Array:
        """Tokens entering the first block (HF's ``embeddings`` output).

        Args:
            pixels: Normalised images, NHWC. [B, H, W, C]
            bool_masked_pos: Patches replaced by the mask token, row-major. [B, h*w]

        Returns:
            CLS, registers, patches. [B, 1 + R + h*w, D]
        """
        c = self.config
        h, w = self._grid(pixels)
        b = pixels.shape[0]
        # The residual stream stays in (at least) float32 whatever the compute dtype:
        # only matmul / attention inputs are cast down, halving the bf16 error of a
        # bf16 stream at the price of a few elementwise float32 passes.
        stream = jnp.promote_types(self.dtype, jnp.float32)
        x = self.patch_embed(pixels.astype(self.dtype)).astype(stream)  # [B, h*w, D]
        if bool_masked_pos is not None:
            if not c.use_mask_token:
                raise ValueError("bool_masked_pos given but the config has use_mask_token=False")
            if bool_masked_pos.shape != (b, h * w):
                raise ValueError(
                    f"bool_masked_pos must be [B, h*w] = {(b, h * w)}, got {bool_masked_pos.shape}"
                )
            mask = bool_masked_pos.astype(bool)[..., None]
            x = jnp.where(mask, self.mask_token.astype(x.dtype)[None], x)
        cls = jnp.broadcast_to(self.cls_token.astype(x.dtype), (b, 1, c.hidden_size))
        x = jnp.concatenate([cls, x], axis=1)
        x = x + self.position_embeddings(h, w).astype(x.dtype)
        if c.num_register_tokens:
            reg = self.register_tokens.astype(x.dtype)
            reg = jnp.broadcast_to(reg, (b, c.num_register_tokens, c.hidden_size))
            x = jnp.concatenate([x[:, :1], reg, x[:, 1:]], axis=1)
        return x

    def __call__(
        self,
        pixels: jax.Array,
        *,
        bool_masked_pos: jax.Array | None = None,
        output_hidden_states: bool = False,
    ) -> ViTOutput:
        """Runs the ViT.

        Args:
            pixels: ImageNet-normalised images, NHWC, H and W multiples of the patch
                size (``nn.preprocess.imagenet_normalize``). [B, H, W, C]
            bool_masked_pos: Optional patches to replace by the mask token. [B, h*w]
            output_hidden_states: Also return the embedding and every block output.

        Returns:
            ViTOutput.
        """
        x = self.embed(pixels, bool_masked_pos)
        hidden = [x]
        for blk in self.blocks:
            x = blk(x)
            hidden.append(x)
        y = self.norm(x)
        return ViTOutput(
            last_hidden_state=y,
            pooler_output=y[:, 0],
            hidden_states=tuple(hidden) if output_hidden_states else None,
        )

    def intermediate_feature_maps(
        self,
        pixels: jax.Array,
        k: int = 4,
        *,
        norm: bool = True,
        return_class_token: bool = False,
    ):
        """The last k blocks' patch tokens as feature maps.

        DINOv2's ``get_intermediate_layers(x, k, reshape=True, norm=True)`` (GAGAvatar's
        use, with k=4), channels last.

        Args:
            pixels: ImageNet-normalised images, NHWC. [B, H, W, C]
            k: How many of the last blocks, 1 <= k <= num_layers.
            norm: Apply the final LayerNorm to each block's output (DINOv2 default).
            return_class_token: Also return each block's (normed) CLS token.

        Returns:
            A tuple of k maps [B, h, w, D], earliest block first; with
            ``return_class_token`` a tuple of k (map [B, h, w, D], cls [B, D]) pairs.
        """
        c = self.config
        if not 1 <= k <= c.num_layers:
            raise ValueError(f"k must be in [1, {c.num_layers}], got {k}")
        h, w = self._grid(pixels)
        x = self.embed(pixels)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i >= c.num_layers - k:
                outs.append(self.norm(x) if norm else x)
        maps = tuple(o[:, c.num_prefix_tokens :].reshape(o.shape[0], h, w, -1) for o in outs)
        if return_class_token:
            return tuple(zip(maps, (o[:, 0] for o in outs), strict=True))
        return maps


def intermediate_feature_maps(
    model: DinoViT, params: Any, pixels: jax.Array, k: int = 4, **kwargs: Any
) -> tuple[jax.Array, ...]:
    """Functional form of ``DinoViT.intermediate_feature_maps``.

    Args:
        model: The DinoViT module.
        params: Its parameters (the ``"params"`` collection).
        pixels: ImageNet-normalised images, NHWC. [B, H, W, C]
        k: How many of the last blocks.
        **kwargs: ``norm``, ``return_class_token``.

    Returns:
        k feature maps [B, h, w, D] (see the method).
    """
    return model.apply(
        {"params": params}, pixels, k, method=DinoViT.intermediate_feature_maps, **kwargs
    )
