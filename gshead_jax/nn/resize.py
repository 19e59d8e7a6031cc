"""Bilinear resampling of feature maps with PyTorch's exact semantics, NHWC.

GAGAvatar's DPT head and StyleUNet resample wide feature maps (256 channels at
296 x 296, 16-512 channels up to 512 x 512) with ``torch.nn.functional.interpolate``;
a faithful port has to reproduce the sampling positions, because the released
weights were trained through them:

* ``resize_bilinear(x, size, align_corners=True)``: the DPT fusion blocks
  (``FeatureFusionBlock``) and the final resize of the DPT output.
* ``upsample2x`` / ``downsample2x``: ``interpolate(scale_factor=2 or 0.5,
  mode="bilinear", align_corners=False)`` in the StyleUNet / StyleGAN2 decoder.

``gshead_jax.nn.vit_resample.resize`` computes the same functions (and the
antialiased / bicubic ones) as dense [out, in] matrices; that suits images and
position embeddings, but on these feature maps a dense matmul costs ~size/2 times
the FLOPs of the two taps used here (a gather for arbitrary sizes, fixed
(1/4, 3/4) and (1/2, 1/2) stencils for the x2 cases, which XLA fuses).
Sizes are static Python ints: the tap tables are built with NumPy at trace time.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = [
    "downsample2x",
    "resize_bilinear",
    "upsample2x",
]


def _check_nhwc(x: jnp.ndarray, name: str = "x") -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be [B, H, W, C], got shape {tuple(x.shape)}")


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be an int or (height, width) of positive ints, got {size}")
    return int(size[0]), int(size[1])


def _linear_taps(in_size: int, out_size: int, align_corners: bool):
    """Two-tap indices and weights of PyTorch's ``upsample_bilinear2d`` on one axis.

    Mirrors ``area_pixel_compute_scale`` / ``area_pixel_compute_source_index``
    (aten/src/ATen/native/UpSample.h) for an explicit output ``size``.
    """
    # Float32 arithmetic on purpose: PyTorch computes scales and source
    # coordinates in the input's opmath type (float for float32 inputs), and at
    # a few hundred pixels float64 coordinates would move the lerp weights by ~1e-5.
    f32 = np.float32
    i = np.arange(out_size, dtype=f32)
    if align_corners:
        scale = f32(in_size - 1) / f32(out_size - 1) if out_size > 1 else f32(0.0)
        src = scale * i
    else:
        scale = f32(in_size) / f32(out_size)
        # PyTorch clamps negative source coordinates to 0 (not to -0.5).
        src = np.maximum(scale * (i + f32(0.5)) - f32(0.5), f32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0.astype(f32)).astype(f32)
    return i0, i1, w1


def _lerp_axis(x: jnp.ndarray, axis: int, out_size: int, align_corners: bool) -> jnp.ndarray:
    in_size = x.shape[axis]
    if in_size == out_size:
        # Same size: both conventions sample exactly the input pixels.
        return x
    i0, i1, w1 = _linear_taps(in_size, out_size, align_corners)
    shape = [1] * x.ndim
    shape[axis] = out_size
    w1 = jnp.asarray(w1, dtype=x.dtype).reshape(shape)
    x0 = jnp.take(x, jnp.asarray(i0), axis=axis)
    x1 = jnp.take(x, jnp.asarray(i1), axis=axis)
    return x0 * (1 - w1) + x1 * w1


def resize_bilinear(x: jnp.ndarray, size, *, align_corners: bool) -> jnp.ndarray:
    """``torch.nn.functional.interpolate(x, size, mode="bilinear")`` on NHWC.

    No antialiasing (like PyTorch's default): downsampling reads only the two
    nearest input pixels per axis.

    Args:
      x: The input. [B, H, W, C]
      size: Output ``(height, width)`` or one int for a square output.
      align_corners: PyTorch's flag: True maps corner pixel centres onto each
        other (source = i * (in - 1) / (out - 1)); False uses half-pixel
        centres with the source clamped at 0.

    Returns:
      The resized array. [B, size[0], size[1], C]
    """
    _check_nhwc(x)
    out_h, out_w = _check_size(size)
    y = _lerp_axis(x, 1, out_h, align_corners)
    return _lerp_axis(y, 2, out_w, align_corners)


def upsample2x(x: jnp.ndarray) -> jnp.ndarray:
    """``interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)``.

    Output pixel 2k samples source k - 1/4 and 2k + 1 samples k + 1/4, with
    PyTorch's edge clamping, i.e. fixed weights (1/4, 3/4): written as shifted
    sums so it fuses into neighbouring ops instead of gathering.

    Args:
      x: The input. [B, H, W, C]

    Returns:
      The upsampled array. [B, 2H, 2W, C]
    """
    _check_nhwc(x)
    return _up2_axis(_up2_axis(x, 1), 2)


def _up2_axis(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    n = x.shape[axis]
    first = jnp.take(x, jnp.asarray([0]), axis=axis)
    last = jnp.take(x, jnp.asarray([n - 1]), axis=axis)
    prev = jnp.concatenate([first, jnp.take(x, jnp.arange(n - 1), axis=axis)], axis=axis)
    nxt = jnp.concatenate([jnp.take(x, jnp.arange(1, n), axis=axis), last], axis=axis)
    even = 0.25 * prev + 0.75 * x
    odd = 0.75 * x + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)  # [..., n, 2, ...]
    shape = list(x.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def downsample2x(x: jnp.ndarray) -> jnp.ndarray:
    """``interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)``.

    With an exact factor 2 every output pixel samples the midpoint of a 2x2
    block (source 2k + 1/2), so the result is the 2x2 mean.

    Args:
      x: The input with even height and width. [B, H, W, C]

    Returns:
      The downsampled array. [B, H/2, W/2, C]
    """
    _check_nhwc(x)
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"x must have even height and width, got {tuple(x.shape)}")
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
