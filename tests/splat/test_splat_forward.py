"""Forward: tiled backends == dense reference == gsplat's per-pixel loop in NumPy.

Tolerance: max |ours - ref| <= 1e-5 * max(1, max |ref|) per output (float32).
"""

import functools

import jax
import numpy as np
import pytest
from splat_testing import (
    BACKENDS,
    max_rel_err,
    numpy_render,
    random_cotangents,
    random_scene,
    render,
    vjp_fn,
)

from gshead_jax import splat

# (seed, N, width, height, C, background): C = 1, 3, 32, 33; non-square; sizes
# not divisible by 16; with and without a background colour.
CASES = [
    (0, 96, 64, 48, 3, True),
    (1, 96, 37, 29, 1, False),
    (2, 64, 40, 24, 32, True),
    (3, 64, 37, 29, 33, True),
]
TOL = 1e-5


@functools.cache
def case_data(case):
    seed, n, width, height, channels, bg = case
    scene = random_scene(seed, n, width, height, channels)
    ref = render("reference", scene, width, height, background=bg)
    return scene, ref


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"s{c[0]}-{c[2]}x{c[3]}-c{c[4]}")
def test_reference_matches_numpy_loop(case):
    seed, n, width, height, channels, bg = case
    scene, ref = case_data(case)
    proj = splat.project(
        *[scene[k] for k in ("means", "quats", "scales", "opacities", "viewmat", "K")],
        width=width,
        height=height,
        near=0.01,
        far=1e10,
        eps2d=0.3,
    )
    proj = jax.tree.map(np.asarray, proj._asdict())
    background = scene["background"] if bg else np.zeros(channels, np.float32)
    stats = {}
    image, alpha, depth = numpy_render(
        proj, scene["features"], background, width=width, height=height, stats=stats
    )
    assert stats.get("stopped", 0) > 0  # the transmittance stop is exercised
    assert max_rel_err(ref.image, image) <= TOL
    assert max_rel_err(ref.alpha, alpha) <= TOL
    assert max_rel_err(ref.depth, depth) <= TOL
    assert np.isfinite(ref.image).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"s{c[0]}-{c[2]}x{c[3]}-c{c[4]}")
def test_forward_matches_reference(backend, case):
    seed, n, width, height, channels, bg = case
    scene, ref = case_data(case)
    out = render(backend, scene, width, height, background=bg)
    assert out.image.shape == (height, width, channels)
    assert out.alpha.shape == out.depth.shape == (height, width, 1)
    assert max_rel_err(out.image, ref.image) <= TOL
    assert max_rel_err(out.alpha, ref.alpha) <= TOL
    assert max_rel_err(out.depth, ref.depth) <= TOL
    assert int(out.num_intersections) == int(ref.num_intersections)
    assert not out.overflow


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_zero_gaussians_give_background(backend):
    scene = random_scene(4, 16, 40, 24, 3)
    empty = {k: (v[:0] if k not in ("viewmat", "K", "background") else v) for k, v in scene.items()}
    out = render(backend, empty, 40, 24)
    np.testing.assert_array_equal(out.image, np.broadcast_to(scene["background"], (24, 40, 3)))
    assert not out.alpha.any() and not out.depth.any()
    assert int(out.num_intersections) == 0 and not out.overflow


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_fully_culled_scene_is_clean(backend):
    # Every Gaussian behind the camera, plus degenerate (zero) scales: culling
    # must keep them out of the image and the gradients. Shapes as in
    # test_splat_backward.py, to share its compiled VJP.
    width, height = 40, 24
    scene = random_scene(5, 64, width, height, 3)
    scene["means"][:, 2] = -np.abs(scene["means"][:, 2]) - 2.0
    scene["scales"][:8] = 0.0
    cot = random_cotangents(0, height, width, 3)
    (image, alpha, depth), grads = vjp_fn(backend, width, height)(scene, cot)
    np.testing.assert_array_equal(image, np.broadcast_to(scene["background"], (height, width, 3)))
    assert not np.asarray(alpha).any() and not np.asarray(depth).any()
    for name, g in grads.items():
        g = np.asarray(g)
        assert np.isfinite(g).all()
        if name != "background":
            assert not g.any(), name
    # Nothing drawn: d image / d background is the identity.
    np.testing.assert_allclose(grads["background"], np.sum(cot[0], axis=(0, 1)), rtol=1e-5)
