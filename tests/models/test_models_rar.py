"""The RAR family: rar-tiny end to end on CPU, rar-L / rar-1B abstractly (no compute).

One compiled reconstruct, one compiled drive and one compiled gradient program are
shared by all tests (module fixtures); the full-size checks use ``jax.eval_shape`` and
``jax.make_jaxpr`` only.
"""

import collections
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gshead_jax import camera, flame
from gshead_jax.flame import FlameParams
from gshead_jax.models import (
    CONSTANTS,
    FROZEN,
    TRAINABLE,
    combine,
    get_model,
    list_models,
    param_count,
    partition,
)
from gshead_jax.models.rar import RARAvatar

B, SIZE = 2, 64


def _params(rng, *, expression=0.0, jaw=(0.0, 0.0, 0.0), pose=0.0):
    """Random FLAME parameters of batch B with the given scales."""
    r = np.random.default_rng(rng)

    def f(*shape, scale=1.0):
        return jnp.asarray(r.normal(0.0, scale, (B, *shape)), jnp.float32)

    return FlameParams(
        shape=f(300, scale=0.3),
        expression=f(100, scale=expression),
        jaw=jnp.broadcast_to(jnp.asarray(jaw, jnp.float32), (B, 3)),
        eyes=f(6, scale=pose * 0.5),
        neck=f(3, scale=pose * 0.5),
        global_pose=f(3, scale=pose),
        translation=f(3, scale=pose * 0.05),
    )


def _cameras(yaw=(0.0, 0.0)):
    yaw = jnp.asarray(yaw, jnp.float32)
    return camera.head_camera(yaw, jnp.zeros_like(yaw), width=SIZE, height=SIZE)


@pytest.fixture(scope="module")
def tiny():
    model = get_model("rar-tiny")
    params = model.init(jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (B, 48, 48, 3))
    source = _params(1, expression=0.3)
    cams = _cameras((0.0, 0.4))
    rec, drv = jax.jit(model.reconstruct), jax.jit(model.drive)
    avatar = rec(params, images, source, cams)
    return types.SimpleNamespace(
        model=model,
        params=params,
        images=images,
        source=source,
        cams=cams,
        rec=rec,
        drv=drv,
        avatar=avatar,
    )


def _first_twice(avatar):
    return jax.tree.map(lambda x: jnp.stack([x[0], x[0]]), avatar)


def test_registry_names():
    assert {"rar-L", "rar-1B", "rar-tiny"} <= set(list_models())


def test_tiny_end_to_end(tiny):
    a = tiny.avatar
    n, nd = 3000, 750
    assert isinstance(a, RARAvatar)
    assert a.colors.shape == (B, n, 3) and a.opacities.shape == (B, n)
    assert a.scales.shape == (B, n, 3) and a.quats.shape == (B, n, 4)
    assert a.normal_offsets.shape == (B, n) and a.latents.shape == (B, nd, 8)
    for leaf in jax.tree.leaves(a):
        assert np.all(np.isfinite(np.asarray(leaf)))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(a.quats), axis=-1), 1.0, atol=1e-5)
    assert float(a.scales.min()) > 0 and float(a.scales.max()) < 0.1  # sigmoid * max_scale

    image, aux = tiny.drv(tiny.params, a, _params(2, expression=0.5, jaw=(0.1, 0, 0)), tiny.cams)
    assert image.shape == (B, SIZE, SIZE, 3)
    assert aux["coarse"].shape == (B, SIZE, SIZE, 3) and aux["alpha"].shape == (B, SIZE, SIZE, 1)
    assert aux["overflow"].shape == (B,) and not np.any(np.asarray(aux["overflow"]))
    img = np.asarray(image)
    assert np.all(np.isfinite(img)) and img.min() >= 0.0 and img.max() <= 1.0
    # The head covers the image centre, not the corners (camera framing of the head).
    alpha = np.asarray(aux["alpha"])[..., 0]
    assert alpha[:, 24:40, 24:40].mean() > 0.9 and alpha[:, :4, :4].max() < 0.05


def _mouth_and_forehead_masks(model, cams):
    """Pixel masks (frontal camera 0) of the mouth box and of the region above the brows."""
    labels = np.asarray(model.vertex_labels)
    open_jaw = flame.forward(model, jaw=jnp.array([0.35, 0.0, 0.0])).vertices * 5.0
    pix, _ = camera.project(jax.tree.map(lambda x: x[0], cams), open_jaw)
    pix = np.asarray(pix)
    mouth = np.isin(labels, [flame.Region.LIP_UPPER, flame.Region.LIP_LOWER, flame.Region.TEETH])
    (u0, v0), (u1, v1) = pix[mouth].min(0) - 3, pix[mouth].max(0) + 3
    brow_top = pix[labels == flame.Region.BROWS][:, 1].min() - 2
    jj, ii = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
    return (jj > u0) & (jj < u1) & (ii > v0) & (ii < v1), ii < brow_top


def test_drive_follows_the_jaw_in_the_mouth_region(tiny):
    model = tiny.params[CONSTANTS]["flame"]
    cams = _cameras()
    mouth, forehead = _mouth_and_forehead_masks(model, cams)
    closed = _params(3)
    opened = closed.replace(jaw=jnp.array([[0.0, 0.0, 0.0], [0.35, 0.0, 0.0]]))
    image, aux = tiny.drv(tiny.params, _first_twice(tiny.avatar), opened, cams)
    diff = np.abs(np.asarray(image[1] - image[0])).sum(-1)
    assert diff[mouth].mean() > 0.05
    assert diff[forehead].mean() < 0.05 * diff[mouth].mean()
    # The dynamic Gaussians respond to the control signal too (not only FLAME).
    dyn = np.asarray(aux["dynamic_offsets"])
    assert np.abs(dyn[1] - dyn[0]).max() > 1e-5


def test_drive_follows_the_expression(tiny):
    base = _params(4)
    expr = base.expression.at[1, flame.Expression.MOUTH_OPEN].set(1.5)
    image, aux = tiny.drv(
        tiny.params, _first_twice(tiny.avatar), base.replace(expression=expr), _cameras()
    )
    mouth, forehead = _mouth_and_forehead_masks(tiny.params[CONSTANTS]["flame"], _cameras())
    diff = np.abs(np.asarray(image[1] - image[0])).sum(-1)
    assert diff[mouth].mean() > 0.02
    assert diff[forehead].mean() < 0.05 * diff[mouth].mean()
    assert np.abs(np.asarray(aux["dynamic_offsets"][1] - aux["dynamic_offsets"][0])).max() > 1e-5


def test_drive_depends_only_on_avatar_driver_and_camera(tiny):
    driving = _params(5, expression=0.5, jaw=(0.2, 0.0, 0.0), pose=0.1)
    ref, _ = tiny.drv(tiny.params, tiny.avatar, driving, tiny.cams)
    # Every reconstruction-side weight (encoder, surface tokens, heads) changed: drive
    # reads only the reenactment module, the refiner and the FLAME constants.
    keep = ("reenactment", "refiner")
    changed = {
        TRAINABLE: {
            k: v if k in keep else jax.tree.map(lambda x: 1.5 * x + 0.1, v)
            for k, v in tiny.params[TRAINABLE].items()
        },
        FROZEN: jax.tree.map(lambda x: 1.5 * x + 0.1, tiny.params[FROZEN]),
        CONSTANTS: tiny.params[CONSTANTS],
    }
    again, _ = tiny.drv(changed, tiny.avatar, driving, tiny.cams)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(ref))
    # Another source gives another avatar and image; the first avatar still renders the
    # same (no state, no image input).
    other = tiny.rec(tiny.params, tiny.images[::-1], tiny.source, tiny.cams)
    moved, _ = tiny.drv(tiny.params, other, driving, tiny.cams)
    assert np.abs(np.asarray(moved) - np.asarray(ref)).max() > 1e-2
    same, _ = tiny.drv(tiny.params, tiny.avatar, driving, tiny.cams)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(ref))


def test_static_gaussians_follow_the_posed_mesh(tiny):
    driving = _params(6, expression=0.7, jaw=(0.25, 0.05, 0.0), pose=0.2)
    _, aux = tiny.drv(tiny.params, tiny.avatar, driving, tiny.cams)
    consts = tiny.params[CONSTANTS]
    anchors = consts["anchors"]
    ns = anchors.num_static
    posed = flame.forward(consts["flame"], driving.replace(shape=tiny.avatar.flame_shape))
    verts = np.asarray(posed.vertices, np.float64) * 5.0  # world = FLAME metres x 5
    c = verts[:, np.asarray(anchors.vertex_index)]  # [B, N, 3, 3]
    e1, e2 = c[..., 1, :] - c[..., 0, :], c[..., 2, :] - c[..., 0, :]
    n = np.cross(e1, e2)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    t = e1 / np.linalg.norm(e1, axis=-1, keepdims=True)
    on_mesh = np.einsum("nk,bnkc->bnc", np.asarray(anchors.bary, np.float64), c)
    offsets = np.asarray(tiny.avatar.normal_offsets, np.float64)
    expected = on_mesh + offsets[..., None] * n
    means = np.asarray(aux["means"], np.float64)
    np.testing.assert_allclose(means[:, :ns], expected[:, :ns], atol=5e-5)
    # Rotations: the triangle frame (t, n x t, n) times the avatar's local rotation.
    frame = np.stack([t, np.cross(n, t), n], axis=-1)
    local = Rotation.from_quat(np.asarray(tiny.avatar.quats).reshape(-1, 4)[:, [1, 2, 3, 0]])
    want = frame.reshape(-1, 3, 3) @ local.as_matrix()
    got = Rotation.from_quat(np.asarray(aux["quats"]).reshape(-1, 4)[:, [1, 2, 3, 0]])
    np.testing.assert_allclose(got.as_matrix(), want, atol=2e-3)
    # Dynamic Gaussians: the same surface point plus a bounded learned offset.
    residual = np.linalg.norm(means[:, ns:] - expected[:, ns:], axis=-1)
    assert residual.max() <= 0.1 * np.sqrt(3) + 1e-5 and residual.max() > 0.0


def test_every_trainable_parameter_gets_a_gradient(tiny):
    # The dense reference splat (gsplat semantics, like the tiled one) compiles its
    # backward pass several times faster on a CPU; the drive tests above use the
    # configured backend.
    model, params = get_model("rar-tiny", splat_backend="reference"), tiny.params
    learn, rest = partition(params, model.trainable_mask(params))
    driving = _params(7, expression=0.5, jaw=(0.2, 0.0, 0.0), pose=0.1)
    target = jax.random.uniform(jax.random.key(3), (B, SIZE, SIZE, 3))

    def loss(learn, rest):
        p = combine(learn, rest)
        avatar = model.reconstruct(p, tiny.images, tiny.source, tiny.cams)
        image, aux = model.drive(p, avatar, driving, tiny.cams)
        return jnp.mean((image - target) ** 2) + jnp.mean((aux["coarse"] - target) ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(learn, rest)
    assert np.isfinite(float(value))
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert len(flat) == len(jax.tree.leaves(params[TRAINABLE]))
    zero = [jax.tree_util.keystr(k) for k, g in flat if not np.abs(np.asarray(g)).max() > 0]
    bad = [jax.tree_util.keystr(k) for k, g in flat if not np.all(np.isfinite(np.asarray(g)))]
    assert not zero, f"no gradient for {zero}"
    assert not bad, f"non-finite gradient for {bad}"


def _abstract(name, batch=1, **overrides):
    model = get_model(name, **overrides)
    params = jax.eval_shape(model.init, jax.random.key(0))
    size = model.config.image_size
    f32 = jnp.float32
    fp = FlameParams(
        **{
            k: jax.ShapeDtypeStruct((batch, w), f32)
            for k, w in (
                ("shape", 300),
                ("expression", 100),
                ("jaw", 3),
                ("eyes", 6),
                ("neck", 3),
                ("global_pose", 3),
                ("translation", 3),
            )
        }
    )
    cam = camera.Camera(
        viewmat=jax.ShapeDtypeStruct((batch, 4, 4), f32),
        K=jax.ShapeDtypeStruct((batch, 3, 3), f32),
        width=size,
        height=size,
    )
    image = jax.ShapeDtypeStruct((batch, size, size, 3), f32)
    avatar = jax.eval_shape(model.reconstruct, params, image, fp, cam)
    drive = jax.make_jaxpr(model.drive)(params, avatar, fp, cam)
    return types.SimpleNamespace(model=model, params=params, avatar=avatar, drive=drive)


def _subjaxprs(param):
    if hasattr(param, "eqns"):
        yield param
    elif hasattr(getattr(param, "jaxpr", None), "eqns"):
        yield param.jaxpr
    elif isinstance(param, (tuple, list)):
        for p in param:
            yield from _subjaxprs(p)


def _primitives(jaxpr):
    """How many times each primitive occurs, inside nested jaxprs (jit, vjp, cond) too."""
    count = collections.Counter()
    for eqn in jaxpr.eqns:
        count[eqn.primitive.name] += 1
        for param in eqn.params.values():
            for sub in _subjaxprs(param):
                count.update(_primitives(sub))
    return count


def test_avatar_and_drive_do_not_depend_on_encoder_size():
    large, huge = _abstract("rar-L"), _abstract("rar-1B")
    enc_l = param_count(large.params[FROZEN]["encoder"])
    enc_1b = param_count(huge.params[FROZEN]["encoder"])
    assert enc_l > 250e6 and enc_1b > 2.5 * enc_l  # ViT-L/14 ~0.3B vs WebSSL 1B ~1.1B
    # The same avatar (structure, shapes, dtypes) ...
    assert jax.tree.structure(large.avatar) == jax.tree.structure(huge.avatar)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), large.avatar) == jax.tree.map(
        lambda x: (x.shape, x.dtype), huge.avatar
    )
    assert large.avatar.colors.shape == (1, 80_000, 3)
    assert large.avatar.latents.shape == (1, 20_000, 32)
    # ... and the same per-frame program: every operation, the same count of each.
    assert len(large.drive.jaxpr.eqns) == len(huge.drive.jaxpr.eqns)
    assert _primitives(large.drive.jaxpr) == _primitives(huge.drive.jaxpr)
    assert [v.aval for v in large.drive.jaxpr.outvars] == [v.aval for v in huge.drive.jaxpr.outvars]
    # The per-frame module is ultra-light; the avatar holds no encoder-sized tensor.
    assert param_count(large.params[TRAINABLE]["reenactment"]) < 20_000
    # The drive program reads no encoder or generator weight at all: of the params, only
    # the reenactment module (and refiner) and the constants are inputs of any operation.
    jaxpr = large.drive.jaxpr
    used = {id(v) for eqn in jaxpr.eqns for v in eqn.invars}
    paths = jax.tree_util.tree_flatten_with_path(large.params)[0]
    read = {
        jax.tree_util.keystr(path[:2])
        for (path, _), var in zip(paths, jaxpr.invars[: len(paths)])
        if id(var) in used
    }
    assert f"['{TRAINABLE}']['reenactment']" in read
    assert read <= {
        f"['{TRAINABLE}']['reenactment']",
        f"['{TRAINABLE}']['refiner']",
        f"['{CONSTANTS}']['flame']",
        f"['{CONSTANTS}']['anchors']",
    }, read


def test_feature_channels_and_no_refiner_shapes():
    a = _abstract("rar-tiny", batch=2, feature_channels=2, refiner=False)
    assert "refiner" not in a.params[TRAINABLE]
    assert a.avatar.colors.shape == (2, 3000, 5)
    shapes = [x.shape for x in a.drive.out_avals]
    assert shapes[0] == (2, SIZE, SIZE, 3)  # the image is RGB ...
    assert (2, SIZE, SIZE, 5) in shapes  # ... aux["features"] has every splatted channel


def test_trainable_masks_per_stage():
    model = get_model("rar-tiny")
    params = jax.eval_shape(model.init, jax.random.key(0))

    def on(mask):
        flat = jax.tree_util.tree_flatten_with_path(mask)[0]
        return {jax.tree_util.keystr(k[:2]) for k, v in flat if v}

    assert on(model.trainable_mask(params)) == {
        f"['{TRAINABLE}']['{k}']" for k in params[TRAINABLE]
    }
    assert on(model.trainable_mask(params, 2)) == {
        f"['{TRAINABLE}']['appearance']",
        f"['{TRAINABLE}']['refiner']",
    }
    assert "encoder" in params[FROZEN] and "encoder" not in params[TRAINABLE]
    with pytest.raises(ValueError, match="stage"):
        model.trainable_mask(params, 3)
    tuned = get_model("rar-tiny", finetune_encoder=True)
    tp = jax.eval_shape(tuned.init, jax.random.key(0))
    assert "encoder" in tp[TRAINABLE] and not tp[FROZEN]
    assert f"['{TRAINABLE}']['encoder']" in on(tuned.trainable_mask(tp, 1))
    assert f"['{TRAINABLE}']['encoder']" not in on(tuned.trainable_mask(tp, 2))


def test_bad_inputs_are_refused_by_name(tiny):
    m, p = tiny.model, tiny.params
    with pytest.raises(ValueError, match="source_image"):
        m.reconstruct(p, tiny.images[..., :2], tiny.source, tiny.cams)
    with pytest.raises(ValueError, match="source_params"):
        m.reconstruct(p, tiny.images, tiny.source.replace(jaw=jnp.zeros((3, 3))), tiny.cams)
    with pytest.raises(ValueError, match="camera"):
        m.drive(p, tiny.avatar, tiny.source, _cameras((0.0, 0.0, 0.0)))
    wide = tiny.source.replace(expression=jnp.zeros((B, 101)))
    with pytest.raises(ValueError, match="expression"):
        m.drive(p, tiny.avatar, wide, tiny.cams)
    with pytest.raises(TypeError, match="RARAvatar"):
        m.drive(p, {"colors": tiny.avatar.colors}, tiny.source, tiny.cams)
    with pytest.raises(ValueError, match="num_dynamic"):
        get_model("rar-tiny", num_dynamic=5000)
    with pytest.raises(ValueError, match="unknown ViT variant"):
        get_model("rar-tiny", encoder="XL/99")
