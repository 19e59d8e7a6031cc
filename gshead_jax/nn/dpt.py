"""GAGAvatar's DPT-style fusion head on DINOv2 features (``DINOBase``), NHWC.

GAGAvatar (core/models/modules/dino_base.py, ``DINOBase(output_dim=256)``) turns
the last four DINOv2 ViT-B/14 blocks into a dense feature map with a DPT head
(Ranftl et al., "Vision Transformers for Dense Prediction", 2021), plus one
twist: every pyramid level gets the (ImageNet-normalised) input image, resized
to that level, concatenated in front of its features. For a 518 x 518 input
(37 x 37 patches), channels and sizes are:

=====  ==========  ============================  ===========  ============
level  1x1 proj    resize                        size         layer_rn 3x3
=====  ==========  ============================  ===========  ============
0      768 -> 256  ConvTranspose k4 s4           148 x 148    3+256 -> 256
1      768 -> 512  ConvTranspose k2 s2           74 x 74      3+512 -> 256
2      768 -> 1024 identity                      37 x 37      3+1024 -> 256
3      768 -> 1024 Conv 3x3 s2 p1                19 x 19      3+1024 -> 256
=====  ==========  ============================  ===========  ============

then RefineNet fusion (``FeatureFusionBlock``: residual conv units, bilinear
align-corners upsampling, 1x1 conv) 19 -> 37 -> 74 -> 148 -> 296, a 3x3 output
conv to ``output_dim`` channels and, if asked, an align-corners resize to
``output_size`` (GAGAvatar passes 296, the natural size, so it is a no-op).
Parameters at GAGAvatar's size: 29,331,712, i.e. the 30,511,872 of the torch
module minus ``refinenet[0].resConfUnit1`` (1,180,160), which the torch module
holds but never calls (its first fusion block gets one input) and which this
port therefore does not create.

The ViT is not part of this module (it is ``gshead_jax.nn.vit.DinoViT``): pass
the last four blocks' patch tokens **after the ViT's final LayerNorm**, as
DINOv2's ``get_intermediate_layers(x, 4)`` returns them (``norm=True``; class
and register tokens removed), reshaped to [B, h, w, D].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gshead_jax.nn.preprocess import imagenet_normalize
from gshead_jax.nn.preprocess import resize as torchvision_resize
from gshead_jax.nn.resize import resize_bilinear

__all__ = [
    "DPT_VARIANTS",
    "DPTHead",
    "DPTOutput",
    "FeatureFusionBlock",
    "ResidualConvUnit",
]

_PAD1 = ((1, 1), (1, 1))

DPT_VARIANTS = {
    # DINOBase(output_dim=256) with its fixed widths (dino_base.py).
    "gagavatar": dict(output_dim=256, hidden_dim=256, out_dims=(256, 512, 1024, 1024)),
    # Same structure, narrow, for CPU tests and demos.
    "tiny": dict(output_dim=16, hidden_dim=16, out_dims=(8, 16, 32, 32)),
}


class DPTOutput(NamedTuple):
    """What :class:`DPTHead` returns.

    Attributes:
      features: Dense local features. [B, S, S, output_dim]
      global_feature: The FIRST PATCH token of the last normed layer, not CLS. [B, D]
    """

    features: jnp.ndarray
    global_feature: jnp.ndarray


class ResidualConvUnit(nn.Module):
    """DPT's ``ResidualConvUnit`` without batch norm: ``x + conv(relu(conv(relu(x))))``."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        out = jax.nn.relu(x)
        out = nn.Conv(self.features, (3, 3), padding=_PAD1, dtype=self.dtype, name="conv1")(out)
        out = jax.nn.relu(out)
        out = nn.Conv(self.features, (3, 3), padding=_PAD1, dtype=self.dtype, name="conv2")(out)
        return out + x


class FeatureFusionBlock(nn.Module):
    """DPT's ``FeatureFusionBlock`` (no batch norm, no expand, align_corners=True).

    ``out_conv(resize(rcu2(x + rcu1(skip))))``; without ``skip`` the first unit
    is skipped (and, unlike the torch module, never created).
    """

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, skip: jnp.ndarray | None = None, *, size=None
    ) -> jnp.ndarray:
        """Fuse, refine and resize.

        Args:
          x: The coarser path. [B, h, w, F]
          skip: The lateral features at the same size, if any. [B, h, w, F]
          size: Output (height, width); None doubles the size (``scale_factor=2``).

        Returns:
          The fused features. [B, size[0], size[1], F]
        """
        if skip is not None:
            x = x + ResidualConvUnit(self.features, self.dtype, name="resConfUnit1")(skip)
        x = ResidualConvUnit(self.features, self.dtype, name="resConfUnit2")(x)
        if size is None:
            # align_corners=True ignores the scale factor: source = i (h-1)/(2h-1).
            size = (2 * x.shape[1], 2 * x.shape[2])
        x = resize_bilinear(x, size, align_corners=True)
        return nn.Conv(self.features, (1, 1), dtype=self.dtype, name="out_conv")(x)


class _KernelStrideConvTranspose(nn.Module):
    """``nn.ConvTranspose2d(c, c, kernel_size=s, stride=s, padding=0)``.

    With kernel == stride the patches do not overlap: each input pixel writes an
    s x s block, ``out[h s + i, w s + j] = x[h, w] @ kernel[i, j] + bias``, a
    matmul plus depth-to-space (no kernel flip question, unlike lax.conv_transpose).
    The kernel is [s, s, in, out], i.e. torch's [in, out, s, s] transposed (2, 3, 0, 1).
    """

    features: int
    stride: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        s = self.stride
        b, h, w, c = x.shape
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (s, s, c, self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        dtype = self.dtype or x.dtype
        y = jnp.einsum("bhwc,ijco->bhiwjo", x.astype(dtype), kernel.astype(dtype))
        y = y.reshape(b, h * s, w * s, self.features)  # [B, h s, w s, out]
        return y + bias.astype(dtype)


class DPTHead(nn.Module):
    """GAGAvatar's ``DINOBase`` head: four ViT levels -> dense features + global token.

    Attributes:
      output_dim: Output channels (GAGAvatar: 256).
      hidden_dim: Fusion width (256).
      out_dims: Channels of the four 1x1 projections ((256, 512, 1024, 1024)).
      dtype: Compute dtype (None: from the inputs); parameters stay float32.

    Example:
      >>> head = DPTHead(**DPT_VARIANTS["tiny"])
      >>> feats, images = [jnp.zeros((1, 4, 4, 32))] * 4, jnp.zeros((1, 56, 56, 3))
      >>> variables = head.init(jax.random.key(0), feats, images)
      >>> head.apply(variables, feats, images).features.shape
      (1, 32, 32, 16)
    """

    output_dim: int = 256
    hidden_dim: int = 256
    out_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dtype: Any = None

    @nn.compact
    def __call__(
        self, features: Sequence[jnp.ndarray], images: jnp.ndarray, *, output_size=None
    ) -> DPTOutput:
        """Fuse the ViT levels into one dense map.

        Args:
          features: The last four blocks' normed patch tokens, oldest first (the
            order of ``get_intermediate_layers``), each [B, h, w, D].
          images: The RGB input the ViT saw, in [0, 1] before ImageNet
            normalisation (this module normalises it again for the RGB
            concatenation, as DINOBase does). [B, H, W, 3]
          output_size: Final (height, width) or int, resized with
            align_corners=True; None keeps the natural 8h x 8w.

        Returns:
          :class:`DPTOutput`: ``features`` [B, S, S, output_dim] and
          ``global_feature`` [B, D] (the first patch token, see class docstring).
        """
        features = list(features)
        if len(features) != 4:
            raise ValueError(f"features must be a sequence of 4 arrays, got {len(features)}")
        f0 = features[0]
        if f0.ndim != 4:
            raise ValueError(f"features[0] must be [B, h, w, D], got {tuple(f0.shape)}")
        for i, f in enumerate(features):
            if f.shape != f0.shape:
                raise ValueError(
                    f"features[{i}] must have the shape of features[0] {tuple(f0.shape)}, "
                    f"got {tuple(f.shape)}"
                )
        if images.ndim != 4 or images.shape[0] != f0.shape[0] or images.shape[-1] != 3:
            raise ValueError(
                f"images must be [B={f0.shape[0]}, H, W, 3], got {tuple(images.shape)}"
            )
        dt = self.dtype
        rgb = jax.lax.stop_gradient(imagenet_normalize(images))  # DINOBase: .detach()
        resized = []
        for i, (f, c) in enumerate(zip(features, self.out_dims)):
            f = nn.Conv(c, (1, 1), dtype=dt, name=f"projects_{i}")(f)
            if i == 0:
                f = _KernelStrideConvTranspose(c, 4, dt, name="resize_layers_0")(f)
            elif i == 1:
                f = _KernelStrideConvTranspose(c, 2, dt, name="resize_layers_1")(f)
            elif i == 3:
                down = nn.Conv(
                    c, (3, 3), strides=2, padding=_PAD1, dtype=dt, name=f"resize_layers_{i}"
                )
                f = down(f)
            # RGB goes in front of the features (torch.cat([rgb, feature], dim=1)).
            # torchvision resize(antialias=True) of the normalised image, as DINOBase.
            r = torchvision_resize(rgb, f.shape[1:3], antialias=True).astype(f.dtype)
            f = jnp.concatenate([r, f], axis=-1)
            rn = nn.Conv(
                self.hidden_dim,
                (3, 3),
                padding=_PAD1,
                use_bias=False,
                dtype=dt,
                name=f"layer_rn_{i}",
            )
            resized.append(rn(f))
        fuse = [FeatureFusionBlock(self.hidden_dim, dt, name=f"refinenet_{i}") for i in range(4)]
        path = fuse[0](resized[3], size=resized[2].shape[1:3])
        path = fuse[1](path, resized[2], size=resized[1].shape[1:3])
        path = fuse[2](path, resized[1], size=resized[0].shape[1:3])
        path = fuse[3](path, resized[0])
        out = nn.Conv(self.output_dim, (3, 3), padding=_PAD1, dtype=dt, name="output_conv")(path)
        if output_size is not None:
            out = resize_bilinear(out, output_size, align_corners=True)
        # DINOBase: image_features[-1][:, 0] on patch tokens only -> the top-left
        # PATCH token of the last layer, not the CLS token.
        global_feature = features[-1][:, 0, 0, :]
        return DPTOutput(out, global_feature)
