"""StyleGAN2 decoder pieces with SFT conditions, as GAGAvatar's StyleUNet uses them.

A port of GAGAvatar's core/models/modules/style_clean.py (itself GFPGAN's "clean"
StyleGAN2, Karras et al. 2020, without equalised-learning-rate runtime scaling:
the 1/sqrt(fan_in) is folded into the initial weights) and of
``StyleGAN2GeneratorCSFT`` in style_unet.py, NHWC:

* ``ModulatedConv2d``: per-sample weights ``W * s`` with ``s = Linear(w)``,
  demodulated by ``rsqrt(sum (W s)^2 + 1e-8)`` per output channel; the
  ``'upsample'`` mode resizes the input bilinearly x2 *before* a normal conv
  (not a transposed conv). Computed here as ``conv(x * s, W) * demod``, the
  algebraically identical form of StyleGAN2 (``fused_modconv=False``) that needs
  no grouped conv.
* ``StyleConv``: ``leaky_relu_0.2(modconv * sqrt(2) + strength * noise + bias)``.
* ``ToRGB``: 1x1 modulated conv without demodulation, ``+ bias``, plus the
  previous level's output upsampled x2 (bilinear).
* Decoder: NormStyleCode + ``num_mlp`` x (Linear, LeakyReLU 0.2) style MLP, a
  learned 4x4 constant, then per level an upsampling StyleConv, the SFT
  ``out = out * scale + shift`` (no ``1 +``), a second StyleConv and a ToRGB.
  All layers get the same latent (no style mixing at inference).

Noise (``noise_mode``): ``"random"`` draws fresh N(0, 1) noise per layer from the
``"noise"`` RNG stream, like the official default ``randomize_noise=True``
(GAGAvatar's forward and inference both use it); ``"const"`` uses the fixed
buffers ``noise0..noise{n-1}`` stored in the ``"buffers"`` collection (official
``randomize_noise=False``); ``"none"`` injects nothing (deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gshead_jax.nn.resize import upsample2x

__all__ = [
    "NOISE_MODES",
    "ModulatedConv2d",
    "StyleConv",
    "StyleGAN2DecoderCSFT",
    "ToRGB",
    "noise_resolutions",
]

NOISE_MODES = ("random", "const", "none")

# kaiming_normal_(a=0.2, mode="fan_in", nonlinearity="leaky_relu") of the style MLP.
_STYLE_MLP_INIT = nn.initializers.variance_scaling(2.0 / (1.0 + 0.2**2), "fan_in", "normal")
# kaiming_normal_(a=0, nonlinearity="linear"): std 1 / sqrt(fan_in); bias filled with 1.
_MODULATION_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def _leaky(x: jnp.ndarray) -> jnp.ndarray:
    return jax.nn.leaky_relu(x, negative_slope=0.2)


def noise_resolutions(out_size: int) -> list[int]:
    """Spatial sizes of the decoder's noise inputs: ``2 ** ((i + 5) // 2)``, i < 2 log2(out) - 3."""
    log_size = int(math.log2(out_size))
    return [2 ** ((i + 5) // 2) for i in range((log_size - 2) * 2 + 1)]


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv (no bias). Kernel ``weight`` is [k, k, in, out].

    Attributes:
      features: Output channels.
      kernel_size: Square kernel side (3 for StyleConv, 1 for ToRGB).
      demodulate: Normalise each output channel's modulated weights.
      upsample: Bilinear x2 (align_corners=False) of the input before the conv.
      eps: Added under the demodulation rsqrt (1e-8).
      dtype: Compute dtype (None: the input's).
    """

    features: int
    kernel_size: int
    demodulate: bool = True
    upsample: bool = False
    eps: float = 1e-8
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, style: jnp.ndarray) -> jnp.ndarray:
        """Apply the conv modulated by ``style``.

        Args:
          x: Input features. [B, H, W, C]
          style: Latent code. [B, S]

        Returns:
          Features. [B, H', W', features], H' = 2H when upsampling.
        """
        k, c = self.kernel_size, x.shape[-1]
        s = nn.Dense(
            c, kernel_init=_MODULATION_INIT, bias_init=nn.initializers.ones, name="modulation"
        )(style)
        weight = self.param(
            "weight",
            nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
            (k, k, c, self.features),
            jnp.float32,
        )
        dtype = self.dtype or x.dtype
        if self.upsample:
            x = upsample2x(x)
        x = (x * s[:, None, None, :]).astype(dtype)
        pad = k // 2
        y = jax.lax.conv_general_dilated(
            x,
            weight.astype(dtype),
            (1, 1),
            ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if self.demodulate:
            # sum_{kh, kw, i} (W[kh, kw, i, o] s[b, i])^2 = (s^2 @ sum_k W^2)[b, o]
            wsq = jnp.sum(jnp.square(weight), axis=(0, 1))  # [in, out]
            demod = jax.lax.rsqrt(jnp.square(s) @ wsq + self.eps)  # [B, out]
            y = y * demod[:, None, None, :].astype(dtype)
        return y


class StyleConv(nn.Module):
    """``leaky_relu(modconv(x, w) * sqrt(2) + weight * noise + bias, 0.2)``.

    ``weight`` (shape [1], zero-initialised) is the learned noise strength.
    """

    features: int
    kernel_size: int = 3
    upsample: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, style: jnp.ndarray, noise: jnp.ndarray | None
    ) -> jnp.ndarray:
        """Args: x [B, H, W, C]; style [B, S]; noise [B or 1, H', W', 1] or None (no noise)."""
        out = ModulatedConv2d(
            self.features,
            self.kernel_size,
            True,
            self.upsample,
            dtype=self.dtype,
            name="modulated_conv",
        )(x, style)
        out = out * math.sqrt(2.0)  # "for conversion" in the official code
        strength = self.param("weight", nn.initializers.zeros, (1,), jnp.float32)
        if noise is not None:
            if noise.shape[1:] != (*out.shape[1:3], 1):
                raise ValueError(
                    f"noise must be [B, {out.shape[1]}, {out.shape[2]}, 1], "
                    f"got {tuple(noise.shape)}"
                )
            out = out + strength.astype(out.dtype) * noise.astype(out.dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return _leaky(out + bias.astype(out.dtype))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) + bias, plus the upsampled previous skip."""

    features: int
    upsample: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, style: jnp.ndarray, skip: jnp.ndarray | None = None
    ) -> jnp.ndarray:
        """Args: x [B, H, W, C]; style [B, S]; skip [B, H/2, W/2, out] (or [B, H, W, out])."""
        out = ModulatedConv2d(
            self.features, 1, False, False, dtype=self.dtype, name="modulated_conv"
        )(x, style)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        out = out + bias.astype(out.dtype)
        if skip is not None:
            if self.upsample:
                skip = upsample2x(skip)
            out = out + skip.astype(out.dtype)
        return out


class _NoiseBuffers(nn.Module):
    """The fixed noise maps ``noise{i}`` (torch buffers [1, 1, R, R], stored as [R, R])."""

    resolutions: tuple[int, ...]

    @nn.compact
    def __call__(self) -> list[jnp.ndarray]:
        out = []
        for i, r in enumerate(self.resolutions):

            def init(r=r):
                return jax.random.normal(self.make_rng("params"), (r, r), jnp.float32)

            out.append(self.variable("buffers", f"noise{i}", init).value)
        return out


class _ConstantInput(nn.Module):
    """The learned 4x4 input ``weight`` [4, 4, C] (torch [1, C, 4, 4], randn init)."""

    features: int

    @nn.compact
    def __call__(self) -> jnp.ndarray:
        return self.param("weight", nn.initializers.normal(1.0), (4, 4, self.features))


class StyleGAN2DecoderCSFT(nn.Module):
    """GAGAvatar's ``StyleGAN2GeneratorCSFT``: StyleGAN2 decoder with SFT conditions.

    Attributes:
      out_size: Output side, a power of two >= 8 (GAGAvatar: 512).
      out_dim: Output channels (3).
      channels: ``(resolution, channels)`` pairs for 4 ... out_size (GAGAvatar:
        512 up to 32, then 256, 128, 64, 32 at 512; see styleunet.py).
      num_style_feat: Latent width (512).
      num_mlp: Style MLP depth (8).
      dtype: Compute dtype (None: the inputs').
    """

    out_size: int
    out_dim: int
    channels: tuple[tuple[int, int], ...]
    num_style_feat: int = 512
    num_mlp: int = 8
    dtype: Any = None

    @nn.compact
    def __call__(
        self,
        styles: jnp.ndarray,
        conditions: Sequence[tuple[jnp.ndarray, jnp.ndarray]],
        *,
        noise_mode: str = "random",
    ) -> jnp.ndarray:
        """Decode a style code, modulating each level by (scale, shift) maps.

        Args:
          styles: Style codes before the style MLP. [B, num_style_feat]
          conditions: Per level 8, 16, ..., out_size, the SFT (scale, shift),
            each [B, R, R, channels[R]]; fewer levels than the decoder has are
            allowed (later levels are then unconditioned).
          noise_mode: "random" (needs the "noise" RNG), "const" (needs the
            "buffers" collection) or "none".

        Returns:
          The decoder output before any activation. [B, out_size, out_size, out_dim]
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ch = dict(self.channels)
        log_size = int(math.log2(self.out_size))
        # NormStyleCode, then Linear + LeakyReLU pairs at Sequential indices 1, 3, 5, ...
        w = styles * jax.lax.rsqrt(jnp.mean(jnp.square(styles), axis=1, keepdims=True) + 1e-8)
        for i in range(self.num_mlp):
            w = _leaky(
                nn.Dense(
                    self.num_style_feat, kernel_init=_STYLE_MLP_INIT, name=f"style_mlp_{2 * i + 1}"
                )(w)
            )
        b = styles.shape[0]
        resolutions = noise_resolutions(self.out_size)
        if noise_mode == "const" or self.is_initializing():
            buffers = _NoiseBuffers(tuple(resolutions), name="noises")()
        if noise_mode == "random":
            keys = jax.random.split(self.make_rng("noise"), len(resolutions))
            noise = [jax.random.normal(kk, (b, r, r, 1)) for kk, r in zip(keys, resolutions)]
        elif noise_mode == "const":
            noise = [n[None, :, :, None] for n in buffers]
        else:
            noise = [None] * len(resolutions)

        const = _ConstantInput(ch[4], name="constant_input")()
        out = jnp.broadcast_to(const, (b, 4, 4, ch[4])).astype(self.dtype or styles.dtype)
        out = StyleConv(ch[4], dtype=self.dtype, name="style_conv1")(out, w, noise[0])
        skip = ToRGB(self.out_dim, upsample=False, dtype=self.dtype, name="to_rgb1")(out, w)
        for level, i in enumerate(range(3, log_size + 1)):
            c = ch[2**i]
            out = StyleConv(c, upsample=True, dtype=self.dtype, name=f"style_convs_{2 * level}")(
                out, w, noise[2 * level + 1]
            )
            if level < len(conditions):
                scale, shift = conditions[level]
                out = out * scale + shift  # SFT, exactly as the official (no 1 + scale)
            out = StyleConv(c, dtype=self.dtype, name=f"style_convs_{2 * level + 1}")(
                out, w, noise[2 * level + 2]
            )
            skip = ToRGB(self.out_dim, dtype=self.dtype, name=f"to_rgbs_{level}")(out, w, skip)
        return skip
