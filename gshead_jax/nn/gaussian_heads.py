"""GAGAvatar's Gaussian parameter heads: per-vertex MLP and per-pixel conv.

Both heads map features plus the 27-D harmonic embedding of the source view
direction (:func:`gshead_jax.nn.embedding.harmonic_embedding`, one vector per
image, broadcast to every Gaussian) to Gaussian attributes, with GAGAvatar's
activations (core/models/GAGAvatar/models.py, ``LinearGSGenerator`` and
``ConvGSGenerator``):

=============  ===========================  ===================================
attribute      channels                     activation
=============  ===========================  ===================================
colors         32 (RGB + 29 free features)  sigmoid on the RGB part (see below)
opacities      1                            sigmoid
scales         3                            0.05 * sigmoid  (linear scales)
rotations      4 (w, x, y, z)               L2 normalisation (see below)
positions      1 (conv head only)           sigmoid: the lift distance in [0, 1]
=============  ===========================  ===================================

**Two indexing quirks of the released code**, reproduced by default
(``official_quirks=True``) because the released weights were trained through them:

* ``ConvGSGenerator`` applies ``colors[..., :3] = sigmoid(...)`` to an NCHW
  tensor, so the sigmoid hits the first three *image columns* of all 32 channels,
  not the RGB channels; every other colour value stays unbounded.
* ``LinearGSGenerator`` calls ``F.normalize(rotations)`` (``dim=1``) on a
  [B, N, 4] tensor, normalising each quaternion *component* over the N vertices
  instead of each quaternion. Note that GAGAvatar's rasteriser (3DGS's
  ``diff_gaussian_rasterization``) does not re-normalise quaternions while
  ``gshead_jax.splat`` (gsplat semantics) does, so a checkpoint-faithful render
  of the vertex Gaussians needs the model to account for that (docs/gagavatar.md).

``official_quirks=False`` gives what the paper describes: sigmoid on colour
channels 0-2 for every Gaussian and one unit quaternion per Gaussian.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ConvGSGenerator", "GaussianParams", "LinearGSGenerator"]

# GAGAvatar's rasteriser is compiled for 32 feature channels (NUM_CHANNELS = 32).
_COLOR_DIM = 32
_SCALE_MAX = 0.05  # scales = sigmoid(.) * 0.05 in both heads


class GaussianParams(NamedTuple):
    """Per-Gaussian attributes as the heads emit them.

    Attributes:
      colors: Feature channels, RGB first. [B, N, C]
      opacities: In (0, 1). [B, N, 1]
      scales: Linear scales in (0, 0.05). [B, N, 3]
      rotations: Quaternions (w, x, y, z). [B, N, 4]
      positions: Lift distances in (0, 1) (conv head); None for the vertex head. [B, N, 1]
    """

    colors: jnp.ndarray
    opacities: jnp.ndarray
    scales: jnp.ndarray
    rotations: jnp.ndarray
    positions: jnp.ndarray | None = None


def _l2_normalize(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    # torch.nn.functional.normalize: x / max(||x||, 1e-12). The norm is taken of a
    # clamped square sum so that an all-zero vector has a finite gradient (sqrt'(0)
    # is infinite and 0 * inf = NaN), as torch's own backward does.
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, 1e-24))


def _check_direnc(direnc: jnp.ndarray, batch: int, dir_dim: int) -> None:
    if direnc.shape != (batch, dir_dim):
        raise ValueError(f"direnc must be [B={batch}, {dir_dim}], got {tuple(direnc.shape)}")


class LinearGSGenerator(nn.Module):
    """Per-vertex MLP head (GAGAvatar's ``gs_generator_g``).

    GAGAvatar feeds it ``concat([head_base (5023 x 256), global_feature (768)])``
    per FLAME vertex, hence ``in_dim = 1024``: a 4-layer trunk to ``in_dim // 4``,
    then the view embedding is appended and four 2-layer branches (hidden 128)
    emit colour, opacity, scale and rotation.

    Attributes:
      in_dim: Input feature width (GAGAvatar: 1024).
      dir_dim: View-direction embedding width (27).
      color_dim: Colour/feature channels (32).
      hidden_dim: Branch hidden width (128).
      official_quirks: Reproduce the released code's rotation normalisation over
        the vertex axis (module docstring); False normalises each quaternion.
      dtype: Compute dtype of the layers (None: the inputs'); params stay float32.
    """

    in_dim: int = 1024
    dir_dim: int = 27
    color_dim: int = _COLOR_DIM
    hidden_dim: int = 128
    official_quirks: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, features: jnp.ndarray, direnc: jnp.ndarray) -> GaussianParams:
        """Predict Gaussian attributes per vertex.

        Args:
          features: Per-vertex input features. [B, N, in_dim]
          direnc: Harmonic embedding of the source view direction. [B, dir_dim]

        Returns:
          :class:`GaussianParams` with ``positions=None``, each [B, N, .].
        """
        if features.ndim != 3 or features.shape[-1] != self.in_dim:
            raise ValueError(f"features must be [B, N, {self.in_dim}], got {features.shape}")
        b, n, _ = features.shape
        _check_direnc(direnc, b, self.dir_dim)
        # Sequential indices of the torch module (Linear at 0, 2, 4, 6).
        width = self.in_dim // 4
        x = features
        for i in (0, 2, 4, 6):
            if i:
                x = jax.nn.relu(x)
            x = nn.Dense(width, dtype=self.dtype, name=f"feature_layers_{i}")(x)
        d = jnp.broadcast_to(direnc[:, None], (b, n, self.dir_dim)).astype(x.dtype)
        x = jnp.concatenate([x, d], -1)

        def branch(name: str, out: int) -> jnp.ndarray:
            h = jax.nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name=f"{name}_0")(x))
            return nn.Dense(out, dtype=self.dtype, name=f"{name}_2")(h)

        f32 = lambda a: a.astype(jnp.promote_types(a.dtype, jnp.float32))  # noqa: E731
        colors = f32(branch("color_layers", self.color_dim))
        colors = jnp.concatenate([jax.nn.sigmoid(colors[..., :3]), colors[..., 3:]], -1)
        opacities = jax.nn.sigmoid(f32(branch("opacity_layers", 1)))
        scales = jax.nn.sigmoid(f32(branch("scale_layers", 3))) * _SCALE_MAX
        rotations = f32(branch("rotation_layers", 4))
        # F.normalize(rotations) defaults to dim=1: the vertex axis of [B, N, 4].
        rotations = _l2_normalize(rotations, axis=1 if self.official_quirks else -1)
        return GaussianParams(colors, opacities, scales, rotations)


class ConvGSGenerator(nn.Module):
    """Per-pixel conv head (GAGAvatar's ``gs_generator_l0`` / ``gs_generator_l1``).

    ``concat([features, direnc broadcast])`` (256 + 27 = 283 channels) through
    3x3 convs to ``in_dim // 2`` (x3, ReLU) and a 1x1 conv to 41 channels:
    colour 32 | opacity 1 | scale 3 | rotation 4 | lift distance 1.

    Attributes:
      in_dim: Feature channels (GAGAvatar: 256, the DPT output).
      dir_dim: View-direction embedding width (27).
      color_dim: Colour/feature channels (32).
      official_quirks: Reproduce the released code's colour sigmoid on the first
        three image columns (module docstring); False applies it to channels 0-2.
      dtype: Compute dtype of the convs (None: the inputs'); params stay float32.
    """

    in_dim: int = 256
    dir_dim: int = 27
    color_dim: int = _COLOR_DIM
    official_quirks: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, features: jnp.ndarray, direnc: jnp.ndarray) -> GaussianParams:
        """Predict one Gaussian per feature pixel.

        Args:
          features: Feature map, e.g. the DPT output. [B, H, W, in_dim]
          direnc: Harmonic embedding of the source view direction. [B, dir_dim]

        Returns:
          :class:`GaussianParams`, each [B, H * W, .] in row-major pixel order
          (the order of :func:`gshead_jax.nn.lifting.lifting_plane`'s points).
        """
        if features.ndim != 4 or features.shape[-1] != self.in_dim:
            raise ValueError(f"features must be [B, H, W, {self.in_dim}], got {features.shape}")
        b, h, w, _ = features.shape
        _check_direnc(direnc, b, self.dir_dim)
        d = jnp.broadcast_to(direnc[:, None, None], (b, h, w, self.dir_dim))
        x = jnp.concatenate([features, d.astype(features.dtype)], axis=-1)
        hidden = self.in_dim // 2
        pad = ((1, 1), (1, 1))
        for i in (0, 2, 4):
            x = nn.Conv(hidden, (3, 3), padding=pad, dtype=self.dtype, name=f"gaussian_conv_{i}")(x)
            x = jax.nn.relu(x)
        c = self.color_dim
        x = nn.Conv(c + 9, (1, 1), padding="VALID", dtype=self.dtype, name="gaussian_conv_6")(x)
        # Activations in float32 whatever the compute dtype (normalisation, sigmoid).
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        colors = x[..., :c]
        if self.official_quirks:
            # NCHW colors[..., :3] is the first three columns (module docstring).
            colors = colors.at[:, :, :3].set(jax.nn.sigmoid(colors[:, :, :3]))
        else:
            colors = jnp.concatenate([jax.nn.sigmoid(colors[..., :3]), colors[..., 3:]], -1)
        opacities = jax.nn.sigmoid(x[..., c : c + 1])
        scales = jax.nn.sigmoid(x[..., c + 1 : c + 4]) * _SCALE_MAX
        rotations = _l2_normalize(x[..., c + 4 : c + 8], axis=-1)
        positions = jax.nn.sigmoid(x[..., c + 8 : c + 9])

        def flat(a: jnp.ndarray) -> jnp.ndarray:
            return a.reshape(b, h * w, a.shape[-1])  # [B, H * W, .]

        return GaussianParams(
            flat(colors), flat(opacities), flat(scales), flat(rotations), flat(positions)
        )
