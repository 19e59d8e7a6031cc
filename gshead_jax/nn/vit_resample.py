"""PyTorch-exact image resampling as separable weight matrices.

``jax.image.resize`` is not ``torch.nn.functional.interpolate``: PyTorch's bicubic
uses the Keys kernel with A = -0.75 and clamps the four taps at the border, while its
antialiased path (``antialias=True``, the PIL algorithm) uses A = -0.5 for bicubic, a
triangle for bilinear, and renormalises the weights over the taps that fall inside
the image. DINOv2 checkpoints were trained with (and Hugging Face's ``Dinov2Model``
evaluates) position embeddings resized by ``F.interpolate(mode="bicubic")``;
GAGAvatar feeds DINOv2 with ``torchvision`` resizes (``F.interpolate(mode="bilinear",
antialias=True)`` on float tensors). To reproduce them to float32 rounding, this module
builds, in float64 NumPy at trace time, the [out, in] matrix that PyTorch's CPU kernel
(``aten/src/ATen/native/cpu/UpSampleKernel.cpp``, ``UpSample.h``) applies along one
axis, and applies the two axes with ``einsum``. Sizes are static, so the matrices are
constants of the compiled program; the cost is two small matmuls.

Only ``align_corners=False`` is supported with ``antialias=True`` (as in torchvision).
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Mode = Literal["bilinear", "bicubic"]

# Keys cubic convolution constants: PyTorch uses A = -0.75 without antialiasing
# (OpenCV-compatible) and A = -0.5 with antialiasing (PIL-compatible), see
# HelperInterpCubic::aa_filter in UpSampleKernel.cpp.
_CUBIC_A = -0.75
_CUBIC_A_AA = -0.5


def _cubic_conv1(x: np.ndarray, a: float) -> np.ndarray:
    """Keys kernel for |x| <= 1 (``cubic_convolution1`` in UpSample.h)."""
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0


def _cubic_conv2(x: np.ndarray, a: float) -> np.ndarray:
    """Keys kernel for 1 < |x| < 2 (``cubic_convolution2`` in UpSample.h)."""
    return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a


_F32 = np.float32


def _source_scale(
    in_size: int, out_size: int, align_corners: bool, scale_factor: float | None
) -> np.float32:
    """``area_pixel_compute_scale`` in float32: input pixels per output pixel."""
    if align_corners:
        return _F32(in_size - 1) / _F32(out_size - 1) if out_size > 1 else _F32(0.0)
    if scale_factor is not None and scale_factor > 0:
        # With an explicit scale factor PyTorch maps coordinates with 1 / scale_factor
        # (computed in double, then rounded), not in / out: the DINOv2 "+0.1 offset"
        # relies on it.
        return _F32(1.0 / scale_factor)
    return _F32(in_size) / _F32(out_size)


def _matrix_no_aa(
    in_size: int, out_size: int, mode: Mode, align_corners: bool, scale_factor: float | None
) -> np.ndarray:
    """Weights of PyTorch's plain (not antialiased) bilinear / bicubic kernels."""
    w = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if mode == "bilinear" and in_size == out_size:
        # compute_source_index_and_lambda copies when the size is unchanged,
        # whatever the scale factor.
        w[rows, rows] = 1.0
        return w
    scale = _source_scale(in_size, out_size, align_corners, scale_factor)
    # PyTorch computes the scale and source coordinates in float32 (opmath of float):
    # at a few hundred pixels, float64 coordinates would differ by ~1e-5 px, enough
    # to move outputs by ~1e-4.
    if align_corners:
        src = scale * rows.astype(_F32)
    else:
        # area_pixel_compute_source_index: float scale times (index + 0.5) in double,
        # rounded to float on return.
        src = (np.float64(scale) * (rows + 0.5) - 0.5).astype(_F32)
        if mode == "bilinear":
            src = np.maximum(src, _F32(0.0))  # only the linear modes clamp at 0
    # guard_index_and_lambda
    idx = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - idx.astype(_F32), _F32(0.0), _F32(1.0)).astype(_F32)
    if mode == "bilinear":
        idx1 = idx + (idx < in_size - 1)
        np.add.at(w, (rows, idx), _F32(1.0) - lam)
        np.add.at(w, (rows, idx1), lam)
        return w
    a = _F32(_CUBIC_A)
    one = _F32(1.0)
    coeffs = (
        _cubic_conv2(lam + one, a),
        _cubic_conv1(lam, a),
        _cubic_conv1(one - lam, a),
        _cubic_conv2((one - lam) + one, a),
    )
    for j, c in enumerate(coeffs):
        # Taps outside the image are clamped onto the border pixel.
        np.add.at(w, (rows, np.clip(idx + j - 1, 0, in_size - 1)), c)
    return w


def _aa_filter(x: np.ndarray, mode: Mode) -> np.ndarray:
    x = np.abs(x).astype(_F32)
    if mode == "bilinear":
        return np.where(x < 1.0, _F32(1.0) - x, _F32(0.0))
    a = _F32(_CUBIC_A_AA)
    return np.where(x < 1.0, _cubic_conv1(x, a), np.where(x < 2.0, _cubic_conv2(x, a), _F32(0.0)))


def _matrix_aa(in_size: int, out_size: int, mode: Mode, scale_factor: float | None) -> np.ndarray:
    """Weights of PyTorch's antialiased kernel (``_compute_indices_min_size_weights_aa``)."""
    if in_size == out_size:
        # The separable CPU kernel skips a dimension whose size does not change.
        return np.eye(out_size, dtype=np.float64)
    interp_size = 2 if mode == "bilinear" else 4
    scale = _source_scale(in_size, out_size, False, scale_factor)
    support = _F32(interp_size * 0.5) * scale if scale >= 1.0 else _F32(interp_size * 0.5)
    max_taps = int(math.ceil(support)) * 2 + 1
    invscale = _F32(1.0 / float(scale)) if scale >= 1.0 else _F32(1.0)
    w = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        # Mixed float/double arithmetic exactly as the C++ (float scale, double 0.5).
        center = _F32(float(scale) * (i + 0.5))
        xmin = max(int(float(center - support) + 0.5), 0)  # int() truncates toward 0
        xsize = min(int(float(center + support) + 0.5), in_size) - xmin
        xsize = min(max(xsize, 0), max_taps)
        taps = (np.arange(xsize) + xmin).astype(_F32)
        wi = _aa_filter(((taps - center).astype(np.float64) + 0.5) * float(invscale), mode)
        total = np.sum(wi, dtype=_F32)
        if total != 0.0:
            wi = wi / total
        w[i, xmin : xmin + xsize] = wi
    return w


def interpolation_matrix(
    in_size: int,
    out_size: int,
    *,
    mode: Mode,
    antialias: bool = False,
    align_corners: bool = False,
    scale_factor: float | None = None,
) -> np.ndarray:
    """The matrix PyTorch's ``F.interpolate`` applies along one axis.

    Args:
        in_size: Input length along the axis.
        out_size: Output length along the axis.
        mode: ``"bilinear"`` or ``"bicubic"``.
        antialias: PyTorch's ``antialias`` flag.
        align_corners: PyTorch's ``align_corners`` flag (not with ``antialias``).
        scale_factor: The scale factor given to ``F.interpolate`` (with
            ``recompute_scale_factor`` unset), which PyTorch uses for the coordinate
            mapping instead of ``in_size / out_size``; None when a size was given.

    Returns:
        Float64 weights ``W`` with ``out = W @ in``. [out_size, in_size]
    """
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in_size={in_size}, out_size={out_size}")
    if antialias:
        if align_corners:
            raise ValueError("antialias=True is only supported with align_corners=False")
        return _matrix_aa(in_size, out_size, mode, scale_factor)
    return _matrix_no_aa(in_size, out_size, mode, align_corners, scale_factor)


def resize(
    x: jax.Array,
    size: tuple[int, int],
    *,
    mode: Mode,
    antialias: bool = False,
    align_corners: bool = False,
    scale_factor: tuple[float, float] | None = None,
) -> jax.Array:
    """Resizes channels-last images exactly as ``torch.nn.functional.interpolate``.

    The arithmetic is done in float32 (at least) with HIGHEST matmul precision, then
    cast back to the input dtype, as PyTorch does for the position embeddings.

    Args:
        x: Images, channels last. [..., H, W, C]
        size: Output (height, width).
        mode: ``"bilinear"`` or ``"bicubic"``.
        antialias: PyTorch's ``antialias`` flag.
        align_corners: PyTorch's ``align_corners`` flag.
        scale_factor: (height, width) scale factors when PyTorch was called with
            ``scale_factor=`` instead of ``size=`` (``size`` must then be
            ``floor(H * sh), floor(W * sw)``, as PyTorch computes it).

    Returns:
        The resized images. [..., size[0], size[1], C]
    """
    if x.ndim < 3:
        raise ValueError(f"x must be [..., H, W, C], got shape {x.shape}")
    in_h, in_w = x.shape[-3], x.shape[-2]
    out_h, out_w = (int(s) for s in size)
    sh, sw = (None, None) if scale_factor is None else scale_factor
    wh = interpolation_matrix(
        in_h, out_h, mode=mode, antialias=antialias, align_corners=align_corners, scale_factor=sh
    )
    ww = interpolation_matrix(
        in_w, out_w, mode=mode, antialias=antialias, align_corners=align_corners, scale_factor=sw
    )
    compute = jnp.promote_types(x.dtype, jnp.float32)
    y = jnp.einsum(
        "oh,...hwc->...owc",
        jnp.asarray(wh, compute),
        x.astype(compute),
        precision=jax.lax.Precision.HIGHEST,
    )
    y = jnp.einsum(
        "pw,...owc->...opc",
        jnp.asarray(ww, compute),
        y,
        precision=jax.lax.Precision.HIGHEST,
    )
    return y.astype(x.dtype)
