"""rasterize(): input validation, backend dispatch, vmap and jit composition."""

import jax
import numpy as np
import pytest
from splat_testing import ARGS, BACKENDS, random_scene, render_fn

from gshead_jax import splat
from gshead_jax.splat import api, xla

W, H = 40, 24


def _args(scene):
    return [scene[k] for k in ARGS]


def _call(scene, **kwargs):
    kwargs = {"width": W, "height": H, "backend": "xla", **kwargs}
    return splat.rasterize(*_args(scene), **kwargs)


@pytest.fixture
def scene():
    return random_scene(9, 16, W, H, 3)


@pytest.mark.parametrize(
    "name,bad,expected",
    [
        ("means", np.zeros((16, 2), np.float32), "[N, 3]"),
        ("means", np.zeros((16,), np.float32), "[N, 3]"),
        ("quats", np.zeros((16, 3), np.float32), "[N, 4]"),
        ("quats", np.zeros((15, 4), np.float32), "N = 16"),
        ("scales", np.zeros((16, 3, 1), np.float32), "[N, 3]"),
        ("opacities", np.zeros((16, 1), np.float32), "[N]"),
        ("features", np.zeros((16,), np.float32), "[N, C]"),
        ("features", np.zeros((17, 3), np.float32), "N = 16"),
        ("features", np.zeros((16, 0), np.float32), "C >= 1"),
        ("viewmat", np.eye(3, dtype=np.float32), "[4, 4]"),
        ("K", np.eye(4, dtype=np.float32), "[3, 3]"),
    ],
)
def test_bad_shapes_name_the_argument(scene, name, bad, expected):
    scene[name] = bad
    with pytest.raises(ValueError, match=rf"{name}.*{expected}".replace("[", r"\[")):
        _call(scene)


def test_bad_background_shape(scene):
    with pytest.raises(ValueError, match=r"background must be \[C\] with C = 3"):
        _call(scene, background=np.zeros(4, np.float32))


@pytest.mark.parametrize("name", ["means", "quats", "scales", "opacities", "features", "K"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_rejected(scene, name, value):
    scene[name] = scene[name].copy()
    scene[name].flat[1] = value
    with pytest.raises(ValueError, match=f"{name} has non-finite"):
        _call(scene)


def test_non_finite_background_rejected(scene):
    with pytest.raises(ValueError, match="background has non-finite"):
        _call(scene, background=np.array([0.0, np.nan, 0.0], np.float32))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"width": 40.0}, TypeError, "width must be a Python int"),
        ({"height": 0}, ValueError, "height must be >= 1"),
        ({"tile_size": -16}, ValueError, "tile_size must be >= 1"),
        ({"capacity": 0}, ValueError, "capacity must be >= 1"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"backend": "reference", "config": 1}, ValueError, "reference backend takes no config"),
    ],
)
def test_bad_static_arguments(scene, kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(scene, **kwargs)


def test_auto_backend_resolves():
    # Without a Hopper GPU "auto" must be "xla"; with one, pallas must say it is supported.
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("covered by the GPU tests")
    assert not api._pallas_supported()


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_over_cameras_equals_loop(backend):
    scene = random_scene(10, 64, W, H, 3)  # the shapes of test_splat_backward.py
    angles = [-0.05, 0.0, 0.08]
    viewmats = []
    for a in angles:
        vm = scene["viewmat"].copy()
        c, s = np.cos(a), np.sin(a)
        vm[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32) @ vm[:3, :3]
        viewmats.append(vm)
    fn = render_fn(backend, W, H)
    arrays = _args(scene)
    in_axes = ([None] * 5 + [0, None], None)
    batched = jax.jit(jax.vmap(fn, in_axes=in_axes))(
        arrays[:5] + [np.stack(viewmats), arrays[6]], scene["background"]
    )
    for i, vm in enumerate(viewmats):
        single = fn(arrays[:5] + [vm, arrays[6]], scene["background"])
        for field in ("image", "alpha", "depth"):
            np.testing.assert_allclose(
                getattr(batched, field)[i], getattr(single, field), rtol=1e-6, atol=1e-6
            )
        assert int(batched.num_intersections[i]) == int(single.num_intersections)
    # The cameras see different images (the batch is not one camera broadcast).
    assert not np.allclose(batched.image[0], batched.image[2])


def test_non_finite_check_skipped_under_jit():
    # Under a trace values are unknown: no error, and NaN propagates visibly.
    # (The shapes of test_splat_forward.py's C = 32 case: no new compilation.)
    scene = random_scene(9, 64, W, H, 32)
    scene["features"][:] = np.nan
    out = render_fn("reference", W, H)(_args(scene), scene["background"])
    assert np.isnan(np.asarray(out.image)).any()


def test_config_reaches_the_backend(scene):
    # Traced only (no compilation): the xla schedule's phases are while loops.
    def count_loops(config):
        jaxpr = jax.make_jaxpr(
            lambda *a: splat.rasterize(*a, width=W, height=H, backend="xla", config=config)
        )(*_args(scene))
        return str(jaxpr).count("while[")

    phased = xla.XlaConfig(block_gaussians=8, max_block_gaussians=32, min_phase_tiles=1)
    assert len(phased.phases(6)) == 3 and len(xla.XlaConfig().phases(6)) == 1
    assert count_loops(phased) - count_loops(None) == 2
