"""Paper-size GAGAvatar on the GPU (skipped without one): runs, fits, bf16 agrees.

References: the float32 model (HIGHEST matmul precision) for the bfloat16 one; the
batched (vmapped) splat for the batch-of-one path; the Gaussian count and the splat's
own intersection count for the capacity.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax import camera, flame
from gshead_jax.models import get_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def paper():
    model = get_model("gagavatar")
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    b = 2
    image = jnp.asarray(rng.uniform(size=(b, 512, 512, 3)), jnp.float32)
    sp = flame.FlameParams.zeros((b,), 300, 100)
    sp = sp.replace(expression=jnp.asarray(rng.normal(size=(b, 100)) * 0.5, jnp.float32))
    cam = camera.head_camera(jnp.array([0.0, 0.3]), width=512, height=512)
    return model, params, image, sp, cam


def _run(model, params, image, sp, cam):
    avatar = jax.jit(model.reconstruct)(params, image, sp, cam)
    rgb, aux = jax.jit(model.drive)(params, avatar, sp, cam)
    return avatar, rgb, aux


def test_paper_size_runs_without_overflow_and_bf16_agrees(paper):
    model, params, image, sp, cam = paper
    with jax.default_matmul_precision("highest"):
        avatar, rgb, aux = _run(model, params, image, sp, cam)
    assert avatar.means.shape == (2, 180_255, 3)
    assert np.all(np.isfinite(rgb)) and rgb.shape == (2, 512, 512, 3)
    assert not np.any(aux["overflow"]), aux["num_intersections"]
    assert np.all(aux["num_intersections"] < model.config.splat_capacity)
    bf16 = get_model("gagavatar", dtype=jnp.bfloat16)
    _, rgb16, aux16 = _run(bf16, params, image, sp, cam)
    assert rgb16.dtype == jnp.float32
    # bf16 compute (float32 params, Gaussians, splat): ~1 % relative through 4 networks.
    assert float(jnp.mean(jnp.abs(rgb16 - rgb))) < 2e-2
    assert float(jnp.mean(jnp.abs(aux16["coarse"] - aux["coarse"]))) < 2e-2


def test_batch_of_one_equals_the_batched_splat(paper):
    model, params, image, sp, cam = paper
    avatar, rgb, aux = _run(model, params, image, sp, cam)
    first = lambda tree: jax.tree.map(lambda x: x[:1], tree)  # noqa: E731
    rgb1, aux1 = jax.jit(model.drive)(params, first(avatar), first(sp), first(cam))
    np.testing.assert_allclose(aux1["features"], aux["features"][:1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rgb1, rgb[:1], atol=1e-3)
