"""GAGAvatar's StyleUNet refiner: a U-Net encoder driving a StyleGAN2 decoder via SFT.

A port of core/models/modules/style_unet.py (GAGAvatar, ``StyleUNet(in_size=512,
in_dim=32, out_dim=3, out_size=512)``: the 32-channel splatted image -> RGB), NHWC.
The design follows GFPGAN (Wang et al., CVPR 2021): the encoder both produces the
style code (from its 4x4 bottleneck) and, on the way back up, spatial
(scale, shift) maps that modulate every decoder level (Spatial Feature
Transform).

Data flow for ``in_size = out_size = 512`` (channels from ``GAGAVATAR_CHANNELS``;
the decoder uses twice the U-Net width at each resolution, which the SFT maps
need: ``condition_*`` convs output ``2 * ch``)::

    x [B, 512, 512, 32] -> 1x1 conv -> 16 ch, LeakyReLU(0.2)
    7 ResBlocks down  512 -> 4   (16, 32, 64, 128, 256, 256, 256 ch), skips kept
    3x3 conv at 4x4 (256), LeakyReLU;  style = Linear(256*4*4 -> 512) (NCHW flatten)
    7 ResBlocks up 4 -> 512, adding the skip before each; after each, two
      3x3-LeakyReLU-3x3 heads give scale and shift (2 * ch channels)
    StyleGAN2 decoder (nn/stylegan.py) 4 -> 512 (512, 512, 512, 512, 256, 128,
      64, 32 ch) with SFT at every level, ToRGB skips; then sigmoid.

ResBlock: ``leaky(conv2(resample(leaky(conv1(x))))) + conv1x1(resample(x))`` with
bilinear x2 / x0.5 (align_corners=False) resampling and no 1/sqrt(2) scaling.
Parameters at GAGAvatar's size: 48,672,343, i.e. the torch module's 48,675,388
minus its ``toRGB`` 1x1 convs (3,045), which the official forward never calls and
this port does not create; plus 699,024 fixed noise values in ``"buffers"``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gshead_jax.nn.resize import downsample2x, resize_bilinear, upsample2x
from gshead_jax.nn.stylegan import NOISE_MODES, StyleGAN2DecoderCSFT

__all__ = [
    "GAGAVATAR_CHANNELS",
    "STYLEUNET_VARIANTS",
    "TINY_CHANNELS",
    "ResBlock",
    "StyleUNet",
    "make_styleunet",
]

# U-Net channels per resolution, style_unet.py's ``channels`` dict. The decoder
# doubles them (StyleGAN2GeneratorCSFT's own table: 512 ... 512, 256, 128, 64, 32, 16).
GAGAVATAR_CHANNELS = (
    (4, 256),
    (8, 256),
    (16, 256),
    (32, 256),
    (64, 128),
    (128, 64),
    (256, 32),
    (512, 16),
    (1024, 8),
)
# Small table for CPU tests and demos (same structure, ~1/8 to 1/2 the width).
TINY_CHANNELS = ((4, 32), (8, 32), (16, 16), (32, 8), (64, 8), (128, 8))

STYLEUNET_VARIANTS = {
    # GAGAvatar, models.py: StyleUNet(in_size=512, in_dim=32, out_dim=3, out_size=512)
    "gagavatar": dict(in_size=512, out_size=512, in_dim=32, out_dim=3),
    "tiny": dict(
        in_size=32,
        out_size=32,
        in_dim=32,
        out_dim=3,
        num_style_feat=32,
        num_mlp=2,
        channels=TINY_CHANNELS,
    ),
}

_PAD1 = ((1, 1), (1, 1))


def _leaky(x: jnp.ndarray) -> jnp.ndarray:
    return jax.nn.leaky_relu(x, negative_slope=0.2)


class ResBlock(nn.Module):
    """Residual block with bilinear down- or up-sampling (style_unet.py ``ResBlock``)."""

    out_channels: int
    mode: str  # "down" or "up"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Args: x [B, H, W, C]. Returns [B, H/2 or 2H, W/2 or 2W, out_channels]."""
        if self.mode not in ("down", "up"):
            raise ValueError(f"mode must be 'down' or 'up', got {self.mode!r}")
        resample = downsample2x if self.mode == "down" else upsample2x
        c = x.shape[-1]
        out = _leaky(nn.Conv(c, (3, 3), padding=_PAD1, dtype=self.dtype, name="conv1")(x))
        out = resample(out)
        out = nn.Conv(self.out_channels, (3, 3), padding=_PAD1, dtype=self.dtype, name="conv2")(out)
        out = _leaky(out)
        skip = nn.Conv(self.out_channels, (1, 1), use_bias=False, dtype=self.dtype, name="skip")(
            resample(x)
        )
        return out + skip


class StyleUNet(nn.Module):
    """GAGAvatar's StyleUNet.

    Attributes:
      in_size: Input side; selects the first stage: ``in_size <= out_size`` a 1x1
        conv at ``out_size`` (inputs smaller than ``out_size`` are first resized
        up bilinearly), ``in_size == 2 * out_size`` a 1x1 conv + down ResBlock.
      out_size: Output side, power of two >= 8.
      in_dim: Input channels (GAGAvatar: 32 splatted feature channels).
      out_dim: Output channels (3).
      num_style_feat: Style code width (512).
      num_mlp: Style MLP depth (8).
      activation: Sigmoid on the output (the official default, True).
      channels: U-Net ``(resolution, channels)`` table covering 4 ... max(in, out).
      dtype: Compute dtype (None: the input's); parameters stay float32.

    Example:
      >>> net = make_styleunet("tiny")
      >>> x = jnp.zeros((1, 32, 32, 32))
      >>> variables = net.init(jax.random.key(0), x, noise_mode="none")
      >>> net.apply(variables, x, noise_mode="none").shape
      (1, 32, 32, 3)
    """

    in_size: int
    out_size: int
    in_dim: int
    out_dim: int
    num_style_feat: int = 512
    num_mlp: int = 8
    activation: bool = True
    channels: tuple[tuple[int, int], ...] = GAGAVATAR_CHANNELS
    dtype: Any = None

    def _check_config(self) -> dict[int, int]:
        ch = dict(self.channels)
        for name, size in (("in_size", self.in_size), ("out_size", self.out_size)):
            if size < 8 or size & (size - 1):
                raise ValueError(f"{name} must be a power of two >= 8, got {size}")
            if size not in ch:
                raise ValueError(f"channels has no entry for {name}={size}: {self.channels}")
        if self.in_size > 2 * self.out_size:
            raise ValueError(f"in_size must be <= 2 * out_size, got {self.in_size}/{self.out_size}")
        missing = [2**i for i in range(2, int(math.log2(self.out_size)) + 1) if 2**i not in ch]
        if missing:
            raise ValueError(f"channels misses resolutions {missing}: {self.channels}")
        return ch

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, noise_mode: str = "random") -> jnp.ndarray:
        """Refine a feature image into RGB.

        Args:
          x: The input image, square. [B, S, S, in_dim]
          noise_mode: "random" (official default; needs ``rngs={"noise": key}``),
            "const" (the stored ``"buffers"`` noise, official
            ``randomize_noise=False``) or "none" (no noise).

        Returns:
          The refined image, in (0, 1) with ``activation``. [B, out_size, out_size, out_dim]
        """
        ch = self._check_config()
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[-1] != self.in_dim:
            raise ValueError(f"x must be [B, S, S, {self.in_dim}], got {tuple(x.shape)}")
        if x.shape[2] < self.out_size:
            x = resize_bilinear(x, (self.out_size, self.out_size), align_corners=False)
        expect = self.out_size if self.in_size <= self.out_size else self.in_size
        if x.shape[1] != expect:
            raise ValueError(
                f"x must be [B, {expect}, {expect}, {self.in_dim}] (or smaller than out_size), "
                f"got {tuple(x.shape)}"
            )
        dt = self.dtype
        log_size = int(math.log2(self.out_size))
        # U-Net down
        if self.in_size <= self.out_size:
            feat = nn.Conv(ch[self.out_size], (1, 1), dtype=dt, name="conv_body_first")(x)
            feat = _leaky(feat)
        else:
            feat = _leaky(nn.Conv(ch[self.in_size], (1, 1), dtype=dt, name="conv_body_first_0")(x))
            feat = ResBlock(ch[self.out_size], "down", dt, name="conv_body_first_1")(feat)
        skips = []
        for j, i in enumerate(range(log_size, 2, -1)):
            feat = ResBlock(ch[2 ** (i - 1)], "down", dt, name=f"conv_body_down_{j}")(feat)
            skips.insert(0, feat)
        feat = _leaky(nn.Conv(ch[4], (3, 3), padding=_PAD1, dtype=dt, name="final_conv")(feat))
        # The torch Linear sees feat.reshape(B, -1) of an NCHW tensor: flatten as (C, H, W).
        flat = jnp.transpose(feat, (0, 3, 1, 2)).reshape(feat.shape[0], -1)
        style_code = nn.Dense(self.num_style_feat, dtype=dt, name="final_linear")(flat)
        # U-Net up with SFT condition heads
        conditions = []
        for j in range(log_size - 2):
            c = ch[2 ** (j + 3)]
            feat = feat + skips[j]
            feat = ResBlock(c, "up", dt, name=f"conv_body_up_{j}")(feat)
            pair = []
            for kind in ("condition_scale", "condition_shift"):
                h = nn.Conv(c, (3, 3), padding=_PAD1, dtype=dt, name=f"{kind}_{j}_0")(feat)
                h = nn.Conv(2 * c, (3, 3), padding=_PAD1, dtype=dt, name=f"{kind}_{j}_2")(_leaky(h))
                pair.append(h)
            conditions.append(tuple(pair))
        decoder_channels = tuple((r, 2 * c) for r, c in self.channels)
        image = StyleGAN2DecoderCSFT(
            out_size=self.out_size,
            out_dim=self.out_dim,
            channels=decoder_channels,
            num_style_feat=self.num_style_feat,
            num_mlp=self.num_mlp,
            dtype=dt,
            name="stylegan_decoder",
        )(style_code, conditions, noise_mode=noise_mode)
        if self.activation:
            image = jax.nn.sigmoid(image)
        return image


def make_styleunet(variant: str = "gagavatar", **overrides) -> StyleUNet:
    """A :class:`StyleUNet` of a named size (``STYLEUNET_VARIANTS``), fields overridable."""
    if variant not in STYLEUNET_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(STYLEUNET_VARIANTS)}, got {variant!r}")
    return StyleUNet(**{**STYLEUNET_VARIANTS[variant], **overrides})
