"""The family interface: registry, parameter groups, forward_batch wiring, input checks.

A toy family implementing ``AvatarModel`` (its programs are a few array ops) checks
that ``forward_batch`` routes every batch entry (docs/data.md layout) to the right
argument; the real families have their own end-to-end tests.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax import camera, flame
from gshead_jax.models import base
from gshead_jax.models.base import (
    CONSTANTS,
    FLAME_FIELDS,
    FROZEN,
    TRAINABLE,
    Avatar,
    AvatarModel,
    combine,
    get_model,
    group_mask,
    list_models,
    param_count,
    partition,
)

B, S, R = 2, 12, 8


@dataclasses.dataclass(frozen=True)
class Toy(AvatarModel):
    name: str = "toy"

    def init(self, rng):
        return {
            TRAINABLE: {"w": jax.random.normal(rng, (3,))},
            FROZEN: {"v": jnp.ones((2,))},
            CONSTANTS: {"flame": flame.standin(num_vertices=600, num_shape=4, num_expression=3)},
        }

    def reconstruct(self, params, source_image, source_params, source_camera):
        b, _ = base.check_image("source_image", source_image)
        base.check_flame_params("source_params", source_params, b)
        base.check_camera("source_camera", source_camera, b)
        mean = jnp.mean(source_image, axis=(1, 2, 3))[:, None]
        return Avatar(flame_shape=source_params.shape + mean + source_camera.viewmat[:, 0, 3:])

    def drive(self, params, avatar, driving_params, camera, *, rng=None, train=False):
        b = avatar.batch_size
        base.check_flame_params("driving_params", driving_params, b)
        base.check_camera("camera", camera, b)
        level = jnp.sum(avatar.flame_shape, -1) + jnp.sum(driving_params.jaw, -1)
        level = level + params[TRAINABLE]["w"][0] * params[FROZEN]["v"][0]
        if train:
            level = level + jax.random.uniform(rng, (b,))
        image = jnp.broadcast_to(level[:, None, None, None], (b, camera.height, camera.width, 3))
        aux = {"coarse": image, "alpha": jnp.ones(image.shape[:3] + (1,)), "K": camera.K}
        return image, {**aux, "overflow": jnp.zeros((b,), bool)}


def _flame_dict(rng, sizes=(4, 3)):
    widths = dict(shape=sizes[0], expression=sizes[1], jaw=3, eyes=6, neck=3, global_pose=3)
    widths["translation"] = 3
    return {k: jnp.asarray(rng.normal(size=(B, widths[k])), jnp.float32) for k in FLAME_FIELDS}


def _batch(rng):
    cam_s = camera.head_camera(jnp.zeros(B), width=S, height=S)
    cam_t = camera.head_camera(jnp.full(B, 0.3), width=R, height=R)
    return {
        "source_image": jnp.asarray(rng.uniform(size=(B, S, S, 3)), jnp.float32),
        "target_image": jnp.zeros((B, R, R, 3)),
        "source_params": _flame_dict(rng),
        "target_params": _flame_dict(rng),
        "source_viewmat": cam_s.viewmat,
        "source_K": cam_s.K,
        "target_viewmat": cam_t.viewmat,
        "target_K": cam_t.K,
        "target_bbox": jnp.zeros((B, 4)),
    }


def test_forward_batch_routes_the_batch():
    model = Toy()
    params = model.init(jax.random.key(0))
    batch = _batch(np.random.default_rng(0))
    image, aux = jax.jit(model.forward_batch)(params, batch)
    src = batch["source_params"]["shape"]
    mean = np.mean(np.asarray(batch["source_image"]), axis=(1, 2, 3))[:, None]
    want_shape = src + mean + np.asarray(batch["source_viewmat"])[:, 0, 3:]
    np.testing.assert_allclose(aux["avatar"].flame_shape, want_shape, rtol=1e-6)
    assert image.shape == (B, R, R, 3)  # render size = target image size
    np.testing.assert_array_equal(aux["K"], batch["target_K"])
    level = (
        want_shape.sum(-1)
        + np.asarray(batch["target_params"]["jaw"]).sum(-1)
        + float(params[TRAINABLE]["w"][0])
    )
    np.testing.assert_allclose(image[:, 0, 0, 0], level, rtol=1e-5)
    # train=True passes the rng through.
    noisy, _ = model.forward_batch(params, batch, rng=jax.random.key(1), train=True)
    assert not np.allclose(noisy, image)


def test_forward_batch_names_missing_entries():
    model = Toy()
    params = model.init(jax.random.key(0))
    batch = _batch(np.random.default_rng(0))
    with pytest.raises(KeyError, match="target_params"):
        model.forward_batch(params, {k: v for k, v in batch.items() if k != "target_params"})
    bad = {
        **batch,
        "source_params": {k: v for k, v in batch["source_params"].items() if k != "eyes"},
    }
    with pytest.raises(KeyError, match="eyes"):
        model.forward_batch(params, bad)
    with pytest.raises(KeyError, match="source_K"):
        model.forward_batch(params, {k: v for k, v in batch.items() if k != "source_K"})


def test_partition_combine_and_masks():
    model = Toy()
    params = model.init(jax.random.key(0))
    mask = model.trainable_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert all(jax.tree.leaves(mask[TRAINABLE])) and not any(jax.tree.leaves(mask[FROZEN]))
    assert not any(jax.tree.leaves(mask[CONSTANTS]))
    learn, rest = partition(params, mask)
    assert param_count(learn) == 3
    assert param_count(rest) == param_count(params) - 3
    back = combine(learn, rest)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)

    def loss(learn):
        p = combine(learn, rest)
        return jnp.sum(p[TRAINABLE]["w"] ** 2) * p[FROZEN]["v"][0]

    g = jax.grad(loss)(learn)
    np.testing.assert_allclose(g[TRAINABLE]["w"], 2 * params[TRAINABLE]["w"], rtol=1e-6)
    assert g[FROZEN]["v"] is None
    both = group_mask(params, TRAINABLE, FROZEN)
    assert all(jax.tree.leaves(both[FROZEN]))
    with pytest.raises(ValueError, match="one training stage"):
        model.trainable_mask(params, stage=2)
    with pytest.raises(ValueError, match="groups must be among"):
        group_mask(params, "weights")
    with pytest.raises(ValueError, match="params must be a dict"):
        group_mask({"weights": {}}, TRAINABLE)


def test_registry():
    names = list_models()
    assert {"gagavatar", "gagavatar-tiny"} <= set(names)
    assert names == tuple(sorted(names))
    model = get_model("gagavatar-tiny", render_size=32)
    assert model.config.render_size == 32 and model.name == "gagavatar-tiny"
    assert get_model("gagavatar").config.render_size == 512
    with pytest.raises(ValueError, match="unknown model 'nope'; known: .*gagavatar"):
        get_model("nope")
    with pytest.raises(TypeError):
        get_model("gagavatar-tiny", no_such_field=1)
    with pytest.raises(ValueError, match="vertex_rotation must be one of"):
        get_model("gagavatar-tiny", vertex_rotation="bogus")
    with pytest.raises(ValueError, match="already registered"):
        base.register_model("gagavatar")(lambda **kw: Toy())


def test_input_checks_name_the_argument():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"img must be \[B, S, S, 3\]"):
        base.check_image("img", jnp.zeros((2, 8, 9, 3)))
    with pytest.raises(ValueError, match=r"img must be \[B, 16, 16, 3\]"):
        base.check_image("img", jnp.zeros((2, 8, 8, 3)), size=16)
    with pytest.raises(TypeError, match="img must be floating point"):
        base.check_image("img", jnp.zeros((2, 8, 8, 3), jnp.uint8))
    fp = base.flame_params_from_dict(_flame_dict(rng))
    base.check_flame_params("p", fp, B)
    with pytest.raises(ValueError, match=r"p.jaw must be \[B=2, n\], got \(3, 3\)"):
        base.check_flame_params("p", fp.replace(jaw=jnp.zeros((3, 3))), B)
    with pytest.raises(TypeError, match="p must be a FlameParams"):
        base.check_flame_params("p", _flame_dict(rng), B)
    cam = camera.head_camera(jnp.zeros(B), width=R, height=R)
    base.check_camera("cam", cam, B, width=R, height=R)
    with pytest.raises(ValueError, match=r"cam must have viewmat \[B=3"):
        base.check_camera("cam", cam, 3)
    with pytest.raises(ValueError, match="cam must be 16x16 pixels"):
        base.check_camera("cam", cam, B, width=16, height=16)
    with pytest.raises(TypeError, match="cam must be a Camera"):
        base.check_camera("cam", cam.viewmat, B)
