"""Backward: tiled VJPs against the dense reference's autodiff; the reference
itself against finite differences (jax.test_util.check_grads, float64).

Gradient tolerances are max |ours - ref| <= tol * max |ref| per input. They
differ per input because the tiled backward recomputes transmittance by
blocks and gets suffix sums as (total - prefix) where the reference
differentiates a sequential scan: the same maths, float32 rounding in another
order. Geometric inputs (means, quats, scales) reach the loss through 1/(1 - a)
and exp terms and get the looser bound.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from splat_testing import (
    BACKENDS,
    GRAD_ARGS,
    random_cotangents,
    random_scene,
    vjp_fn,
)

from gshead_jax import splat
from gshead_jax.splat import binning, reference, xla

# Measured with xla on CPU: 1e-7 .. 1.2e-6 for every input.
GRAD_TOL = {
    "means": 5e-5,
    "quats": 5e-5,
    "scales": 5e-5,
    "opacities": 5e-5,
    "features": 1e-5,
    "background": 1e-5,
}


def _composite(backend):
    if backend == "xla":
        # Short blocks and phases down to one tile: the tiny scene runs every
        # phase of the schedule (6 -> 3 -> 1 tiles, blocks 8 -> 16 -> 32).
        config = xla.XlaConfig(block_gaussians=8, max_block_gaussians=32, min_phase_tiles=1)
        assert config.phases(6) == ((6, 8), (3, 16), (1, 32))
        return functools.partial(xla.composite, config=config)
    from gshead_jax.splat import pallas_gpu

    return pallas_gpu.composite


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vjp_matches_reference(backend):
    width, height = 40, 24
    scene = random_scene(6, 64, width, height, 3)
    cot = random_cotangents(1, height, width, 3)
    out_ref, g_ref = vjp_fn("reference", width, height)(scene, cot)
    out, g = vjp_fn(backend, width, height)(scene, cot)
    for a, b in zip(out, out_ref):
        assert _rel(a, b) < 1e-5
    for name in GRAD_ARGS:
        assert np.isfinite(np.asarray(g[name])).all(), name
        assert np.abs(np.asarray(g_ref[name])).max() > 0, name  # the scene reaches it
        assert _rel(g[name], g_ref[name]) <= GRAD_TOL[name], name


@pytest.mark.parametrize("backend", BACKENDS)
def test_composite_vjp_matches_dense(backend):
    # The compositor alone, with gradients for every input of the shared
    # interface, C = 33 and a size not divisible by the tile.
    width, height, channels = 37, 29, 33
    scene = random_scene(7, 64, width, height, channels)
    cap = binning.default_capacity(64, width, height)

    @jax.jit
    def project_and_bin(arrays):
        proj = splat.project(*arrays, width=width, height=height, near=0.01, far=1e10, eps2d=0.3)
        bins = binning.bin_gaussians(proj, width=width, height=height, tile_size=16, capacity=cap)
        return proj, bins

    keys = ("means", "quats", "scales", "opacities", "viewmat", "K")
    proj, bins = project_and_bin([scene[k] for k in keys])
    inputs = (
        proj.means2d,
        proj.conics,
        proj.opacities,
        jnp.asarray(scene["features"]),
        proj.depths,
        jnp.asarray(scene["background"]),
    )
    sizes = dict(width=width, height=height, tile_size=16)
    composite = _composite(backend)

    def tiled(*x):
        return composite(*x, bins.tile_ranges, bins.gaussian_ids, **sizes)

    def dense(*x):
        return reference.composite_dense(*x, proj.radii, **sizes)

    cot = random_cotangents(2, height, width, channels)
    out, pull = jax.vjp(jax.jit(tiled), *inputs)
    out_ref, pull_ref = jax.vjp(jax.jit(dense), *inputs)
    for a, b in zip(out, out_ref):
        assert _rel(a, b) < 1e-5
    names = ("means2d", "conics", "opacities", "features", "depths", "background")
    tol = dict(means2d=5e-5, conics=5e-5, opacities=5e-5, features=1e-5, depths=1e-5)
    tol["background"] = 1e-5
    visible = np.asarray(proj.radii[:, 0] > 0)
    for name, g, g_ref in zip(names, pull(cot), pull_ref(cot)):
        g, g_ref = np.asarray(g), np.asarray(g_ref)
        assert np.isfinite(g).all(), name
        if name != "background":
            assert not g[~visible].any(), name  # culled: no gradient
        assert _rel(g, g_ref) <= tol[name], name


def test_reference_check_grads_float64():
    # Finite differences in float64 on a small scene: eps far below the scale
    # at which tile membership or alpha thresholds switch.
    width, height = 20, 12
    scene = random_scene(8, 16, width, height, 2)
    with jax.enable_x64(True):
        a = {k: jnp.asarray(v, jnp.float64) for k, v in scene.items()}

        def f(means, quats, scales, opacities, features, background):
            out = splat.rasterize(
                means,
                quats,
                scales,
                opacities,
                features,
                a["viewmat"],
                a["K"],
                width=width,
                height=height,
                background=background,
                backend="reference",
            )
            return out.image, out.alpha, out.depth

        args = tuple(a[k] for k in GRAD_ARGS)
        check_grads(jax.jit(f), args, order=1, modes=("rev",), eps=1e-6, atol=1e-5, rtol=1e-5)
