"""GAGAvatar end to end at tiny size on CPU: geometry, driving, purity, gradients.

References: GAGAvatar's ``build_points_planes`` re-derived in NumPy, ``flame.forward``
(tested against a NumPy LBS in tests/flame), the dense splatting reference
(``backend="reference"``) and the FLAME skinning itself (which vertices a jaw moves).
One model, one init and one compiled reconstruct / drive / gradient program are
shared by every test (CPU compile time dominates).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax import camera, flame, splat
from gshead_jax.convert.gagavatar import GAGAvatarWeights
from gshead_jax.models import get_model
from gshead_jax.models.base import (
    FLAME_FIELDS,
    FROZEN,
    TRAINABLE,
    combine,
    group_mask,
    partition,
)
from gshead_jax.models.gagavatar import GAGAvatarAvatar, params_from_weights
from gshead_jax.train.losses import gagavatar_loss

B = 2
_O0 = {"xla_backend_optimization_level": 0}


pytestmark = pytest.mark.usefixtures("float32_matmuls")


@pytest.fixture(scope="module")
def setup():
    model = get_model("gagavatar-tiny")
    params = model.init(jax.random.key(0))
    fm = params["constants"]["flame"]
    rng = np.random.default_rng(0)
    r = model.config.render_size
    source = jnp.asarray(rng.uniform(size=(B, 96, 96, 3)), jnp.float32)
    sparams = flame.FlameParams.zeros((B,), fm.num_shape, fm.num_expression)
    sparams = sparams.replace(shape=jnp.asarray(rng.normal(size=(B, fm.num_shape)), jnp.float32))
    scam = camera.head_camera(jnp.array([0.0, 0.35]), jnp.array([0.0, 0.1]), width=r, height=r)
    rec = jax.jit(model.reconstruct)
    drv = jax.jit(model.drive, static_argnames="train")
    avatar = rec(params, source, sparams, scam)
    return dict(
        model=model, params=params, fm=fm, source=source, sparams=sparams, scam=scam,
        rec=rec, drv=drv, avatar=avatar,
    )  # fmt: skip


def _take(tree, idx):
    return jax.tree.map(lambda x: x[jnp.asarray(idx)], tree)


def _numpy_build_points_planes(size, m, focal=12.0):
    """core/data/loader_track.py build_points_planes, line by line in NumPy."""
    x, y = np.meshgrid(np.linspace(1, -1, size), np.linspace(1, -1, size), indexing="xy")
    r, t = m[:3, :3], m[:3, 3:]
    cam_dirs = (r @ np.array([[0.0], [0.0], [1.0]]))[:, 0]
    rays = np.stack([x / focal, y / focal, np.ones_like(x)], -1).reshape(-1, 3) @ r.T
    origins = -(r @ t)[:, 0]
    return origins + abs(origins @ cam_dirs) * rays, cam_dirs


def test_tiny_end_to_end(setup):
    s = setup
    _model, avatar, cfg = s["model"], s["avatar"], s["model"].config
    v, p, r = s["fm"].num_vertices, cfg.plane_size, cfg.render_size
    n = v + 2 * p * p
    assert isinstance(avatar, GAGAvatarAvatar)
    assert avatar.num_vertices == v
    for name, shape in [
        ("means", (B, n, 3)),
        ("quats", (B, n, 4)),
        ("scales", (B, n, 3)),
        ("opacities", (B, n)),
        ("colors", (B, n, cfg.color_dim)),
        ("flame_shape", (B, s["fm"].num_shape)),
    ]:
        assert getattr(avatar, name).shape == shape, name
    image, aux = s["drv"](s["params"], avatar, s["sparams"], s["scam"])
    assert image.shape == (B, r, r, 3)
    assert aux["coarse"].shape == (B, r, r, 3)
    assert aux["features"].shape == (B, r, r, cfg.color_dim)
    assert aux["alpha"].shape == (B, r, r, 1)
    assert aux["flame_vertices"].shape == (B, v, 3)
    assert aux["lifted_points"].shape == (B, 2 * p * p, 3)
    assert np.all(np.isfinite(image)) and np.all((image > 0) & (image < 1))  # sigmoid
    assert not np.any(aux["overflow"]) and np.all(aux["num_intersections"] > 0)
    np.testing.assert_array_equal(aux["coarse"], aux["features"][..., :3])
    # The head covers the image centre: splatted alpha there is high.
    assert float(jnp.min(aux["alpha"][:, r // 2, r // 2])) > 0.9
    # Gaussian attributes in the heads' ranges.
    norms = np.linalg.norm(np.asarray(avatar.quats), axis=-1)
    np.testing.assert_allclose(norms[:, :v], 1.0, atol=1e-5)  # first-order vertex quats
    # Plane heads: F.normalize, 0 for an all-zero output (dead ReLUs + zero bias at init).
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))
    assert np.all((avatar.scales > 0) & (avatar.scales < 0.05))
    assert np.all((avatar.opacities > 0) & (avatar.opacities < 1))
    np.testing.assert_array_equal(avatar.flame_shape, s["sparams"].shape)


def test_lifted_points_follow_the_official_planes(setup):
    s = setup
    avatar, cfg = s["avatar"], s["model"].config
    v, p = avatar.num_vertices, cfg.plane_size
    np.testing.assert_array_equal(avatar.means[:, :v], 0.0)  # placeholders for FLAME
    mats = np.asarray(camera.to_gagavatar(s["scam"]), np.float64)
    for b in range(B):
        plane, d = _numpy_build_points_planes(p, mats[b], cfg.plane_focal)
        for k, sign in ((0, 1.0), (1, -1.0)):
            pts = np.asarray(avatar.means[b, v + k * p * p : v + (k + 1) * p * p], np.float64)
            offset = pts - plane
            dist = offset @ d * sign  # pushed along +-d by the sigmoid distance
            np.testing.assert_allclose(offset, sign * dist[:, None] * d, atol=2e-5)
            assert np.all((dist > 0) & (dist < 1))
        np.testing.assert_array_equal(
            avatar.lifted_points[b], avatar.means[b, v:]
        )  # the lifting loss's points


def test_drive_poses_flame_and_splats_like_the_dense_reference(setup):
    s = setup
    model, avatar, fm = s["model"], s["avatar"], s["fm"]
    rng = np.random.default_rng(1)
    driver = s["sparams"].replace(
        shape=jnp.asarray(rng.normal(size=s["sparams"].shape.shape), jnp.float32),  # ignored
        expression=jnp.asarray(rng.normal(size=(B, fm.num_expression)), jnp.float32),
        jaw=jnp.array([[0.2, 0.0, 0.0], [0.05, 0.02, 0.0]]),
        eyes=jnp.asarray(rng.normal(size=(B, 6)) * 0.1, jnp.float32),
    )
    image, aux = s["drv"](s["params"], avatar, driver, s["scam"])
    # Identity from the source, expression / jaw / eyes from the driver, x 5 (GAGAvatar).
    want = (
        flame.forward(
            fm, s["sparams"].shape, driver.expression, jaw=driver.jaw, eyes=driver.eyes
        ).vertices
        * 5.0
    )
    np.testing.assert_allclose(aux["flame_vertices"], want, atol=1e-5)
    # The whole Gaussian set rendered by the dense reference compositor.
    r = model.config.render_size
    dense = jax.jit(
        jax.vmap(functools.partial(splat.rasterize, width=r, height=r, backend="reference"))
    )
    means = jnp.concatenate([want, avatar.means[:, avatar.num_vertices :]], axis=1)
    ref = dense(
        means,
        avatar.quats,
        avatar.scales,
        avatar.opacities,
        avatar.colors,
        s["scam"].viewmat,
        s["scam"].K,
    )
    np.testing.assert_allclose(aux["features"], ref.image, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(aux["alpha"], ref.alpha, atol=1e-4)


def test_jaw_open_changes_the_mouth_region_only(setup):
    s = setup
    avatar, fm, _cfg = _take(s["avatar"], [0, 0]), s["fm"], s["model"].config
    cam = _take(s["scam"], [0, 0])
    driver = _take(s["sparams"], [0, 0]).replace(jaw=jnp.array([[0.0, 0, 0], [0.35, 0, 0]]))
    image, aux = s["drv"](s["params"], avatar, driver, cam)
    feats = np.asarray(aux["features"])  # all 32 splatted channels, RGB first
    diff = np.abs(feats[1] - feats[0]).max(-1)  # [R, R]
    # Which vertices the jaw moves, and every pixel their Gaussians can reach
    # (splat radius <= 3.33 sigma of the blurred 2D covariance, +1 px).
    verts = np.asarray(aux["flame_vertices"])
    moved = np.linalg.norm(verts[1] - verts[0], axis=-1) > 1e-6
    assert 0 < moved.sum() < 0.6 * fm.num_vertices
    uv, depth = camera.project(_take(cam, 0), jnp.asarray(verts[:, moved]))
    uv, depth = np.asarray(uv).reshape(-1, 2), np.asarray(depth).reshape(-1)
    fx = float(cam.K[0, 0, 0])
    s_max = float(avatar.scales[0, : avatar.num_vertices].max())
    reach = int(np.ceil(3.33 * np.sqrt((fx * s_max / depth.min()) ** 2 + 0.3))) + 1
    centres = np.stack(np.meshgrid(np.arange(diff.shape[1]), np.arange(diff.shape[0])), -1) + 0.5
    near = np.abs(centres[:, :, None, :] - uv[None, None]).max(-1) <= reach  # [R, R, M]
    inside = near.any(-1)
    assert diff[inside].max() > 1e-2  # the mouth region changes...
    coarse = np.asarray(aux["coarse"])
    assert np.abs(coarse[1] - coarse[0])[inside].max() > 1e-3  # (RGB too)
    assert diff[~inside].max() < 1e-5  # ...and nothing the jaw cannot reach
    assert inside.mean() < 0.5  # (the region is a part of the image)
    # The jaw's vertices are the lower face: below the eyes, in front.
    assert verts[0, moved, 1].mean() < verts[0, :, 1].mean()
    assert float(jnp.abs(image[1] - image[0]).max()) > 0  # the refined image too


def test_drive_depends_only_on_avatar_driver_and_camera(setup):
    s = setup
    params, avatar, drv = s["params"], s["avatar"], s["drv"]
    image, _ = drv(params, avatar, s["sparams"], s["scam"])
    again, _ = drv(params, avatar, s["sparams"], s["scam"])
    np.testing.assert_array_equal(image, again)  # deterministic (eval noise: const)
    # Encoder-side parameters poisoned with NaN: drive never reads them.
    poisoned = jax.tree.map(lambda x: x, params)
    nan = functools.partial(jax.tree.map, lambda x: jnp.full_like(x, jnp.nan))
    poisoned[FROZEN] = {**params[FROZEN], "vit": nan(params[FROZEN]["vit"])}
    poisoned[TRAINABLE] = {
        k: nan(v) if k != "upsampler" else v for k, v in params[TRAINABLE].items()
    }
    np.testing.assert_array_equal(drv(poisoned, avatar, s["sparams"], s["scam"])[0], image)
    # A driver's own identity is ignored (flame_shape_from="source"); no image input.
    other = s["sparams"].replace(shape=s["sparams"].shape[::-1] + 1.0)
    np.testing.assert_array_equal(drv(params, avatar, other, s["scam"])[0], image)
    # Another camera renders another image.
    moved = _take(s["scam"], [1, 0])
    assert float(jnp.abs(drv(params, avatar, s["sparams"], moved)[0] - image).max()) > 1e-2


def _is_noise_strength(path) -> bool:
    # StyleConv's learned noise strength: .../style_conv*/weight, shape [1].
    keys = [getattr(k, "key", None) for k in path]
    return keys[-1] == "weight" and str(keys[-2]).startswith("style_conv")


def test_every_trainable_parameter_gets_a_gradient(setup):
    # Batch of one: the un-vmapped splat path (drive's other tests run the vmapped one).
    s = setup
    model, params = s["model"], s["params"]
    r = model.config.render_size
    rng = np.random.default_rng(2)
    sp, cam = _take(s["sparams"], [0]), _take(s["scam"], [0])
    tp, tcam = sp.replace(jaw=jnp.array([[0.1, 0.0, 0.0]])), _take(s["scam"], [1])
    batch = {
        "source_image": s["source"][:1],
        "target_image": jnp.asarray(rng.uniform(size=(1, r, r, 3)), jnp.float32),
        "source_params": {k: getattr(sp, k) for k in FLAME_FIELDS},
        "target_params": {k: getattr(tp, k) for k in FLAME_FIELDS},
        "source_viewmat": cam.viewmat,
        "source_K": cam.K,
        "target_viewmat": tcam.viewmat,
        "target_K": tcam.K,
        "target_bbox": jnp.array([[0.2, 0.15, 0.8, 0.9]]),
    }
    # Differentiate trainable AND frozen leaves: the frozen ViT must get exactly zero.
    mask = group_mask(params, TRAINABLE, FROZEN)
    learn, rest = partition(params, mask)

    def loss_fn(learn, batch, key):
        image, aux = model.forward_batch(combine(learn, rest), batch, rng=key, train=True)
        total, _ = gagavatar_loss(
            aux["coarse"], image, batch["target_image"], batch["target_bbox"],
            aux["flame_vertices"], aux["lifted_points"],
            weights={"l1": 1.0, "box_l1": 1.0, "lifting": 10.0}, box_size=r,
        )  # fmt: skip
        return total

    # One compiled program, built without XLA:CPU's backend optimisations: they cost
    # more compile time than the three runs below save (no effect on a GPU's compile).
    value_and_grad = (
        jax.jit(jax.value_and_grad(loss_fn)).lower(learn, batch, jax.random.key(3)).compile(_O0)
    )
    loss, grads = value_and_grad(learn, batch, jax.random.key(3))
    assert np.isfinite(loss)
    # Training draws StyleGAN noise from the rng (strengths are 0 at init: raise them).
    noisy = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.5 if _is_noise_strength(path) else x, learn
    )
    l3 = value_and_grad(noisy, batch, jax.random.key(3))[0]
    assert value_and_grad(noisy, batch, jax.random.key(4))[0] != l3
    flat = jax.tree_util.tree_flatten_with_path(grads[TRAINABLE])[0]
    assert len(flat) > 50
    for path, g in flat:
        name = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(g)), name
        assert np.any(g != 0), f"no gradient reaches trainable {name}"
    for path, g in jax.tree_util.tree_flatten_with_path(grads[FROZEN])[0]:
        assert not np.any(g), f"frozen {jax.tree_util.keystr(path)} got a gradient"


def test_bad_inputs_are_refused(setup):
    s = setup
    model, params, avatar = s["model"], s["params"], s["avatar"]
    with pytest.raises(ValueError, match="source_image must be"):
        model.reconstruct(params, s["source"][..., :2], s["sparams"], s["scam"])
    with pytest.raises(ValueError, match="source_params.shape must be"):
        model.reconstruct(params, s["source"], _take(s["sparams"], [0]), s["scam"])
    with pytest.raises(TypeError, match="source_camera must be a Camera"):
        model.reconstruct(params, s["source"], s["sparams"], s["scam"].viewmat)
    wrong = camera.head_camera(jnp.zeros(B), width=32, height=32)
    with pytest.raises(ValueError, match="camera must be 64x64"):
        model.drive(params, avatar, s["sparams"], wrong)
    with pytest.raises(TypeError, match="avatar must be a GAGAvatarAvatar"):
        model.drive(params, {"means": avatar.means}, s["sparams"], s["scam"])
    with pytest.raises(ValueError, match="rng is needed"):
        model.drive(params, avatar, s["sparams"], s["scam"], train=True)


def test_params_from_converted_weights(setup):
    # The importer's GAGAvatarWeights fields land in the model's parameter slots.
    s = setup
    model, params = s["model"], s["params"]
    tr, fr = params[TRAINABLE], params[FROZEN]
    weights = GAGAvatarWeights(
        dpt=tr["dpt"],
        gs_generator_g=tr["gs_generator_g"],
        gs_generator_l0=tr["gs_generator_l0"],
        gs_generator_l1=tr["gs_generator_l1"],
        upsampler={"params": tr["upsampler"]["params"], "buffers": fr["upsampler_buffers"]},
        head_base=np.asarray(tr["head_base"]),
        dino=(model.config.vit, fr["vit"]),
        skipped=(),
    )
    got = params_from_weights(model, weights)
    assert jax.tree.structure(got) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="pass vit_params"):
        params_from_weights(model, weights._replace(dino=None))
    with pytest.raises(ValueError, match="head_base has 7 rows"):
        params_from_weights(model, weights._replace(head_base=np.zeros((7, 16))))
