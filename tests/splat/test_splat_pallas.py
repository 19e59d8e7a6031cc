"""Pallas backend specifics: kernel options and the bf16x3 operand split.

The kernels run natively on Hopper GPUs and in Pallas' GPU interpreter elsewhere
(CI). Every kernel option must compute the same function as the XLA backend
(forward and VJP), and the operand split must be exact: an inexact split was a
silent 1e-3 error on the GPU once (XLA folded fused f32 -> bf16 -> f32 round trips).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from splat_testing import random_scene

from gshead_jax.splat import binning, pallas_gpu, project, xla

WIDTH, HEIGHT, CHANNELS = 40, 24, 5


@pytest.fixture(scope="module")
def screen():
    s = {k: jnp.asarray(v) for k, v in random_scene(4, 96, WIDTH, HEIGHT, CHANNELS).items()}
    proj = project(
        s["means"], s["quats"], s["scales"], s["opacities"], s["viewmat"], s["K"],
        width=WIDTH, height=HEIGHT, near=0.01, far=1e10, eps2d=0.3,
    )  # fmt: skip
    bins = binning.bin_gaussians(proj, width=WIDTH, height=HEIGHT, tile_size=16, capacity=4096)
    assert not bool(bins.overflow)
    background = jnp.linspace(0.1, 0.9, CHANNELS)
    return proj, s["features"], background, bins


def _value_and_vjp(composite, screen, **kwargs):
    proj, features, background, bins = screen
    primals = (proj.means2d, proj.conics, proj.opacities, features, proj.depths, background)

    def f(*args):
        return composite(
            *args, bins.tile_ranges, bins.gaussian_ids,
            width=WIDTH, height=HEIGHT, tile_size=16, **kwargs,
        )  # fmt: skip

    out, vjp = jax.vjp(f, *primals)
    rng = np.random.default_rng(0)
    cot = tuple(jnp.asarray(rng.normal(size=o.shape), o.dtype) for o in out)
    return out, vjp(cot)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30)


@pytest.mark.parametrize(
    "config",
    [
        pallas_gpu.Config(block_gaussians=32),
        pallas_gpu.Config(block_gaussians=64, prefetch=False),
        pallas_gpu.Config(block_gaussians=32, prefetch=False, auto_barriers=True),
    ],
    ids=["k32", "k64-unbuffered", "k32-unbuffered-barriers"],
)
def test_kernel_options_compute_the_xla_function(screen, config):
    ref_out, ref_grads = _value_and_vjp(xla.composite, screen)
    out, grads = _value_and_vjp(pallas_gpu.composite, screen, config=config)
    for name, a, b in zip(("image", "alpha", "depth"), out, ref_out):
        assert _rel(a, b) < 1e-5, name
    names = ("means2d", "conics", "opacities", "features", "depths", "background")
    for name, a, b in zip(names, grads, ref_grads):
        assert _rel(a, b) < 5e-5, name


def test_split_is_exact_under_jit():
    rng = np.random.default_rng(1)
    x = rng.normal(size=4096) * 10.0 ** rng.uniform(-8, 4, 4096)
    x = jnp.asarray(x, jnp.float32)
    parts = jax.jit(pallas_gpu._split3)(x)
    assert all(p.dtype == jnp.bfloat16 for p in parts)
    total = sum(np.asarray(p, np.float64) for p in parts)
    np.testing.assert_array_equal(total, np.asarray(x, np.float64))
    # The last part carries at most 8 significant bits: nothing is left over.
    assert float(jnp.max(jnp.abs(parts[1].astype(jnp.float32)))) > 0.0


def test_tile_size_other_than_16_is_refused(screen):
    proj, features, background, bins = screen
    with pytest.raises(ValueError, match="tile_size=16"):
        pallas_gpu.composite(
            proj.means2d, proj.conics, proj.opacities, features, proj.depths, background,
            bins.tile_ranges, bins.gaussian_ids, width=WIDTH, height=HEIGHT, tile_size=8,
        )  # fmt: skip
