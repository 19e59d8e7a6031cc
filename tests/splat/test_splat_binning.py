"""Binning: the sorted intersection list against NumPy; capacity and overflow."""

import functools

import jax
import numpy as np
import pytest
from splat_testing import BACKENDS, numpy_intersections, random_scene, render

from gshead_jax import splat
from gshead_jax.splat import binning

WIDTH, HEIGHT = 64, 48  # the shapes of test_splat_forward.py's first case
_PROJ_KEYS = ("means", "quats", "scales", "opacities", "viewmat", "K")


@functools.partial(jax.jit, static_argnames=("capacity",))
def _project_and_bin(arrays, capacity):
    proj = splat.project(*arrays, width=WIDTH, height=HEIGHT, near=0.01, far=1e10, eps2d=0.3)
    bins = binning.bin_gaussians(proj, width=WIDTH, height=HEIGHT, tile_size=16, capacity=capacity)
    return proj, bins


def _scene_proj_bins(seed, capacity):
    scene = random_scene(seed, 96, WIDTH, HEIGHT, 3)
    proj, bins = _project_and_bin([scene[k] for k in _PROJ_KEYS], capacity)
    return scene, jax.tree.map(np.asarray, proj._asdict()), jax.tree.map(np.asarray, bins)


def test_bins_match_numpy():
    _, proj, bins = _scene_proj_bins(0, 4096)
    tiles, gids = numpy_intersections(proj, width=WIDTH, height=HEIGHT, tile_size=16)
    count = len(gids)
    assert count > 100
    assert int(bins.num_intersections) == count and not bins.overflow
    # Same (tile, depth, index) order; ties in depth broken by index.
    np.testing.assert_array_equal(bins.gaussian_ids[:count], gids)
    num_tiles = bins.tile_ranges.shape[0]
    bounds = np.searchsorted(tiles, np.arange(num_tiles + 1))
    np.testing.assert_array_equal(bins.tile_ranges, np.stack([bounds[:-1], bounds[1:]], -1))
    assert bins.tile_ranges[:, 1].max() == count  # padding is outside every range


def test_depth_ties_break_by_index():
    # Duplicate Gaussians have identical depths; gsplat's stable radix sort on
    # an index-ordered list puts the lower index first.
    scene = random_scene(1, 96, WIDTH, HEIGHT, 3)
    for k in _PROJ_KEYS[:4]:
        scene[k][48:] = scene[k][:48]
    proj, bins = _project_and_bin([scene[k] for k in _PROJ_KEYS], 4096)
    proj, bins = jax.tree.map(np.asarray, proj._asdict()), jax.tree.map(np.asarray, bins)
    _, gids = numpy_intersections(proj, width=WIDTH, height=HEIGHT, tile_size=16)
    count = int(bins.num_intersections)
    np.testing.assert_array_equal(bins.gaussian_ids[:count], gids)
    ids = bins.gaussian_ids[:count].tolist()
    pairs = [(g, g + 48) for g in range(48) if g in ids]
    assert pairs and all(ids.index(a) < ids.index(b) for a, b in pairs)


def test_overflow_reports_true_count():
    _, proj, full = _scene_proj_bins(2, 4096)
    count = int(full.num_intersections)
    _, _, small = _scene_proj_bins(2, 64)
    assert count > 64
    assert bool(small.overflow) and int(small.num_intersections) == count
    # What is kept are the nearest Gaussians' intersections: no dropped
    # Gaussian is nearer than a kept one.
    assert small.tile_ranges[:, 1].max() == 64
    kept = set(small.gaussian_ids[:64].tolist())
    dropped = set(full.gaussian_ids[:count].tolist()) - kept
    assert dropped
    depths = proj["depths"]
    assert max(depths[list(kept)]) <= min(depths[list(dropped)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_independent_of_capacity(backend):
    scene = random_scene(0, 96, WIDTH, HEIGHT, 3)
    default = render(backend, scene, WIDTH, HEIGHT)  # shared with test_splat_forward
    count = int(default.num_intersections)
    assert not default.overflow
    exact = render(backend, scene, WIDTH, HEIGHT, capacity=count)
    assert not exact.overflow
    for field in ("image", "alpha", "depth"):
        np.testing.assert_array_equal(getattr(exact, field), getattr(default, field))


def test_default_capacity_rule():
    # Small scenes: the N * T bound, so they can never overflow.
    assert splat.default_capacity(5, 40, 24) >= 5 * 3 * 2
    assert splat.default_capacity(0, 40, 24) >= 1
    # Monotone in every size.
    base = splat.default_capacity(10_000, 256, 256)
    assert splat.default_capacity(20_000, 256, 256) >= base
    assert splat.default_capacity(10_000, 512, 256) >= base
