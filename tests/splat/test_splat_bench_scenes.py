"""experiments/bench_splat.py regenerates shared/bench/scenes.py's scenes exactly,
and the default capacity rule covers them."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from splat_testing import numpy_tile_rects

from gshead_jax import splat

_REPO = Path(__file__).resolve().parents[2]
_SHARED_SCENES = _REPO.parent / "shared" / "bench" / "scenes.py"


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load(_REPO / "experiments" / "bench_splat.py", "bench_splat")


def test_port_is_identical(bench):
    if not _SHARED_SCENES.exists():
        pytest.skip(f"{_SHARED_SCENES} not present (it lives beside the repository)")
    shared = _load(_SHARED_SCENES, "shared_bench_scenes")
    assert set(bench.SCENES) == set(shared.SCENES)
    for name in shared.SCENES:
        ours, theirs = bench.make_scene(name), shared.make_scene(name)
        assert ours.keys() == theirs.keys(), name
        for key, value in theirs.items():
            a = np.asarray(ours[key])
            assert a.dtype == np.asarray(value).dtype, (name, key)
            np.testing.assert_array_equal(a, value, err_msg=f"{name}: {key}")


@pytest.mark.slow
def test_default_capacity_covers_bench_scenes(bench):
    # The rule's docstring promises >= 1.5x headroom on every benchmark scene.
    keys = ("means", "quats", "scales", "opacities", "viewmat", "K")
    for name in bench.SCENES:
        scene = bench.make_scene(name)
        width, height = scene["width"], scene["height"]
        proj = jax.jit(
            lambda *a, w=width, h=height: splat.project(
                *a, width=w, height=h, near=0.01, far=1e10, eps2d=0.3
            )
        )(*[scene[k] for k in keys])
        x0, x1, y0, y1 = numpy_tile_rects(
            np.asarray(proj.means2d),
            np.asarray(proj.radii),
            width=width,
            height=height,
            tile_size=16,
        )
        count = int(np.sum((x1 - x0) * (y1 - y0)))
        capacity = splat.default_capacity(len(scene["means"]), width, height)
        assert capacity >= 1.5 * count, (name, count, capacity)
