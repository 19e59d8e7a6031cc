"""RAR at full size on the GPU machine: rar-L / rar-1B reconstruct, drive and train.

Skipped without a CUDA GPU (tests/conftest.py). Run there with
``pytest -q tests/models/test_models_rar_gpu.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax import camera
from gshead_jax.flame import FlameParams
from gshead_jax.models import combine, get_model, partition

pytestmark = pytest.mark.gpu


def _inputs(batch, size=512):
    r = np.random.default_rng(0)
    zeros = FlameParams.zeros((batch,))
    source = zeros.replace(shape=jnp.asarray(r.normal(0, 0.5, (batch, 300)), jnp.float32))
    driving = source.replace(
        expression=jnp.asarray(r.normal(0, 0.5, (batch, 100)), jnp.float32),
        jaw=jnp.tile(jnp.array([[0.2, 0.0, 0.0]]), (batch, 1)),
    )
    yaw = jnp.linspace(-0.3, 0.3, batch)
    cams = camera.head_camera(yaw, jnp.zeros(batch), width=size, height=size)
    image = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
    return image, source, driving, cams


@pytest.mark.parametrize("name", ["rar-L", "rar-1B"])
def test_full_size_reconstruct_and_drive(name):
    model = get_model(name)
    params = model.init(jax.random.key(0))
    image, source, driving, cams = _inputs(1)
    avatar = jax.jit(model.reconstruct)(params, image, source, cams)
    assert avatar.colors.shape == (1, 80_000, 3) and avatar.latents.shape == (1, 20_000, 32)
    out, aux = jax.jit(model.drive)(params, avatar, driving, cams)
    assert out.shape == (1, 512, 512, 3)
    assert np.all(np.isfinite(np.asarray(out)))
    assert not bool(aux["overflow"].any()), int(aux["num_intersections"][0])
    assert float(aux["alpha"][0, 200:312, 200:312].mean()) > 0.9
    # Batch 1 renders without vmap; a batch of two (vmapped) gives the same frame.
    two = jax.tree.map(lambda x: jnp.concatenate([x, x]), (avatar, driving, cams))
    out2, _ = jax.jit(model.drive)(params, *two)
    np.testing.assert_allclose(np.asarray(out2[1]), np.asarray(out[0]), atol=1e-4)


def test_rar_l_training_step_is_finite():
    model = get_model("rar-L", remat=True)
    params = model.init(jax.random.key(0))
    image, source, driving, cams = _inputs(2)
    learn, rest = partition(params, model.trainable_mask(params))

    def loss(learn, rest):
        p = combine(learn, rest)
        avatar = model.reconstruct(p, image, source, cams)
        out, aux = model.drive(p, avatar, driving, cams)
        return jnp.mean(jnp.abs(out - image)) + jnp.mean(jnp.abs(aux["coarse"] - image))

    value, grads = jax.jit(jax.value_and_grad(loss))(learn, rest)
    assert np.isfinite(float(value))
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(g)))
