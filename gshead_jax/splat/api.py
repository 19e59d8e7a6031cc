"""``rasterize``: the one public entry point of the splatting package.

Semantics of gsplat 1.5.3's ``rasterization(..., packed=False,
rasterize_mode="classic", render_mode="RGB+ED")`` for one camera; see
docs/splat.md. Backends share projection and binning and differ only in the
compositor: "reference" (dense, autodiff), "xla" (tiled, pure JAX, custom VJP),
"pallas" (Mosaic GPU kernels, Hopper and newer), "auto" (pallas where supported,
else xla).
"""

import importlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax.splat import binning, reference, xla
from gshead_jax.splat.project import Projection, project

_PALLAS_MODULE = "gshead_jax.splat.pallas_gpu"


class RasterOutput(NamedTuple):
    """What ``rasterize`` returns.

    Attributes:
        image: Features composited over the background. [H, W, C]
        alpha: Accumulated opacity, 1 - final transmittance. [H, W, 1]
        depth: Expected depth sum_i w_i z_i / alpha (0 where alpha is 0),
            gsplat's "ED" render mode; computed as sum_i w_i z_i / sum_i w_i,
            which equals it without float32 cancellation in 1 - T. [H, W, 1]
        num_intersections: True number of (Gaussian, tile) intersections. int32 scalar
        overflow: True when num_intersections exceeded the capacity; the image is
            then incomplete (the deepest intersections are dropped) and must not be
            trusted. bool scalar
    """

    image: jax.Array
    alpha: jax.Array
    depth: jax.Array
    num_intersections: jax.Array
    overflow: jax.Array


def _pallas():
    return importlib.import_module(_PALLAS_MODULE)


def _pallas_supported() -> bool:
    try:
        return bool(_pallas().is_supported())
    except ImportError:
        return False


def _render_reference(proj, features, background, *, width, height, tile_size, capacity, config):
    del capacity, config  # dense: no intersection list, no schedule
    image, alpha, depth = reference.composite_dense(
        proj.means2d,
        proj.conics,
        proj.opacities,
        features,
        proj.depths,
        background,
        proj.radii,
        width=width,
        height=height,
        tile_size=tile_size,
    )
    tx0, tx1, ty0, ty1 = binning.tile_rects(
        proj.means2d, proj.radii, width=width, height=height, tile_size=tile_size
    )
    count = jnp.sum((tx1 - tx0) * (ty1 - ty0))
    return image, alpha, depth, count, jnp.zeros((), bool)


def _tiled(composite: Callable) -> Callable:
    def render(proj, features, background, *, width, height, tile_size, capacity, config):
        bins = binning.bin_gaussians(
            proj, width=width, height=height, tile_size=tile_size, capacity=capacity
        )
        image, alpha, depth = composite(
            proj.means2d,
            proj.conics,
            proj.opacities,
            features,
            proj.depths,
            background,
            bins.tile_ranges,
            bins.gaussian_ids,
            width=width,
            height=height,
            tile_size=tile_size,
            **({} if config is None else {"config": config}),
        )
        return image, alpha, depth, bins.num_intersections, bins.overflow

    return render


def _pallas_composite(*args, **kwargs):
    return _pallas().composite(*args, **kwargs)


_BACKENDS = {
    "reference": _render_reference,
    "xla": _tiled(xla.composite),
    "pallas": _tiled(_pallas_composite),
}


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a Python int (static), got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_shape(name, x, expected, shape_text):
    shape = tuple(np.shape(x))
    ok = len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))
    if not ok:
        raise ValueError(f"{name} must be {shape_text}, got shape {shape}")


def _check_finite(name, x):
    # Only concrete values can be checked; under jit/vmap/grad they are tracers.
    try:
        value = np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} has non-finite values (NaN or inf)")


def rasterize(
    means: jax.Array,
    quats: jax.Array,
    scales: jax.Array,
    opacities: jax.Array,
    features: jax.Array,
    viewmat: jax.Array,
    K: jax.Array,
    *,
    width: int,
    height: int,
    background: jax.Array | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 16,
    capacity: int | None = None,
    backend: str = "auto",
    config: object | None = None,
) -> RasterOutput:
    """Renders 3D Gaussians with features into an image, as gsplat 1.5.3 does.

    Pure and static-shaped: jit it with ``width``, ``height``, ``tile_size``,
    ``capacity`` and ``backend`` static; vmap it over any array argument; grad
    flows to means, quats, scales, opacities, features and background. Input
    values are checked for NaN/inf only when concrete (not under a trace).

    Example:
        out = rasterize(means, quats, scales, opacities, colors, viewmat, K,
                        width=512, height=512, backend="xla")
        assert not out.overflow; image = out.image  # [512, 512, C]

    Args:
        means: World-space centres. [N, 3]
        quats: Rotations (w, x, y, z), normalised internally. [N, 4]
        scales: Linear (not log) standard deviations. [N, 3]
        opacities: Opacities in [0, 1]. [N]
        features: Per-Gaussian features (colours or anything), C >= 1. [N, C]
        viewmat: World -> camera transform, OpenCV axes. [4, 4]
        K: Pinhole intrinsics in pixels. [3, 3]
        width: Image width in pixels.
        height: Image height in pixels.
        background: Colour behind the Gaussians; zeros when None. [C]
        near: Near clipping plane on camera z.
        far: Far clipping plane on camera z.
        eps2d: Screen-space blur added to the 2D covariance, px^2.
        tile_size: Tile edge in pixels.
        capacity: Static length of the intersection list;
            ``binning.default_capacity`` when None.
        backend: "reference", "xla", "pallas" or "auto".
        config: Static schedule options of the chosen tiled backend
            (``xla.XlaConfig`` or ``pallas_gpu.Config``); None = its default.
            Speed only: results do not depend on it beyond float rounding.

    Returns:
        A ``RasterOutput``.

    Raises:
        ValueError: Wrong shapes, mismatched N, C < 1, non-finite concrete
            values, unknown backend.
        TypeError: Non-integer static sizes.
    """
    for name, value in (("width", width), ("height", height), ("tile_size", tile_size)):
        _check_positive_int(name, value)
    if capacity is not None:
        _check_positive_int("capacity", capacity)
    if backend == "auto":
        backend = "pallas" if _pallas_supported() else "xla"
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *_BACKENDS]}, got {backend!r}")
    if backend == "reference" and config is not None:
        raise ValueError(f"the reference backend takes no config, got {config!r}")

    _check_shape("means", means, (None, 3), "[N, 3]")
    n = np.shape(means)[0]
    _check_shape("quats", quats, (n, 4), f"[N, 4] with N = {n} (from means)")
    _check_shape("scales", scales, (n, 3), f"[N, 3] with N = {n} (from means)")
    _check_shape("opacities", opacities, (n,), f"[N] with N = {n} (from means)")
    _check_shape("features", features, (n, None), f"[N, C] with N = {n} (from means)")
    c = np.shape(features)[1]
    if c < 1:
        raise ValueError(f"features must have C >= 1 channels, got shape {np.shape(features)}")
    _check_shape("viewmat", viewmat, (4, 4), "[4, 4]")
    _check_shape("K", K, (3, 3), "[3, 3]")
    if background is not None:
        _check_shape("background", background, (c,), f"[C] with C = {c} (from features)")

    dtype = jnp.result_type(means)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    arrays = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "features": features,
        "viewmat": viewmat,
        "K": K,
    }
    if background is not None:
        arrays["background"] = background
    for name, x in arrays.items():
        _check_finite(name, x)
    arrays = {name: jnp.asarray(x, dtype) for name, x in arrays.items()}
    bg = arrays.get("background", jnp.zeros((c,), dtype))

    if n == 0:  # static: nothing to draw
        zeros = jnp.zeros((height, width, 1), dtype)
        image = jnp.broadcast_to(bg, (height, width, c))
        return RasterOutput(image, zeros, zeros, jnp.zeros((), jnp.int32), jnp.zeros((), bool))

    proj: Projection = project(
        arrays["means"],
        arrays["quats"],
        arrays["scales"],
        arrays["opacities"],
        arrays["viewmat"],
        arrays["K"],
        width=width,
        height=height,
        near=near,
        far=far,
        eps2d=eps2d,
    )
    if capacity is None:
        capacity = binning.default_capacity(n, width, height, tile_size)
    image, alpha, depth, count, overflow = _BACKENDS[backend](
        proj,
        arrays["features"],
        bg,
        width=width,
        height=height,
        tile_size=tile_size,
        capacity=capacity,
        config=config,
    )
    return RasterOutput(image, alpha, depth, count.astype(jnp.int32), overflow)
