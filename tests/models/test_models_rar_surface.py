"""RAR's surface anchors and triangle frames vs NumPy (independent formulas)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gshead_jax import flame
from gshead_jax.models import rar_surface


@pytest.fixture(scope="module")
def model():
    return flame.standin()


@pytest.fixture(scope="module")
def anchors(model):
    return rar_surface.sample_anchors(model, 4000, 1000)


def test_anchor_counts_and_barycentrics(anchors, model):
    assert anchors.num_anchors == 4000 and anchors.num_static == 3000
    assert anchors.num_dynamic == 1000
    bary = np.asarray(anchors.bary)
    assert bary.min() >= 0.0 and np.allclose(bary.sum(-1), 1.0, atol=1e-6)
    faces = np.asarray(model.faces)
    face = np.asarray(anchors.face_index)
    np.testing.assert_array_equal(np.asarray(anchors.vertex_index), faces[face])
    # Template positions are the barycentric points of the template triangles.
    v = np.asarray(model.v_template, np.float64)
    expected = np.einsum("nk,nkc->nc", bary, v[faces[face]])
    np.testing.assert_allclose(np.asarray(anchors.template), expected, atol=1e-6)
    # No anchor on a degenerate triangle (it would have no frame).
    p = v[faces[face]]
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=-1)
    assert area.min() > 1e-12


def test_anchors_are_uv_texels_of_their_triangle(anchors, model):
    # The UV of an anchor is a texel centre, and its barycentric coordinates in the
    # triangle's UV corners reproduce it (the raster found the right triangle).
    vt, ft = np.asarray(model.vt, np.float64), np.asarray(model.ft)
    corners = vt[ft[np.asarray(anchors.face_index)]]  # [N, 3, 2]
    uv = np.einsum("nk,nkc->nc", np.asarray(anchors.bary, np.float64), corners)
    np.testing.assert_allclose(np.asarray(anchors.uv), uv, atol=1e-5)
    # All anchors distinct texels, spread over the layout.
    assert len(np.unique(np.round(np.asarray(anchors.uv) * 1e5), axis=0)) == anchors.num_anchors


def test_dynamic_anchors_are_where_flame_moves_most(anchors, model):
    score = rar_surface.expressiveness(model)  # [V]
    s = np.einsum("nk,nk->n", score[np.asarray(anchors.vertex_index)], np.asarray(anchors.bary))
    ns = anchors.num_static
    assert s[ns:].min() >= s[:ns].max() - 1e-6
    # Independent check of the score on the stand-in: jaw-driven lower lip and eyeballs
    # are dynamic, the scalp is static.
    labels = np.asarray(model.vertex_labels)[np.asarray(anchors.vertex_index)[:, 0]]
    dyn = labels[ns:]
    assert np.all(labels[:ns] != flame.Region.LIP_LOWER)
    assert np.sum(dyn == flame.Region.EYEBALL_LEFT) > 0
    assert np.all(dyn != flame.Region.SCALP)


def test_sampling_is_deterministic_and_has_a_fallback(model, anchors):
    again = rar_surface.sample_anchors(model, 4000, 1000)
    for a, b in zip(jax.tree.leaves(anchors), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    no_uv = rar_surface.sample_anchors(model.replace(vt=None, ft=None), 500, 100, seed=3)
    assert no_uv.num_anchors == 500 and no_uv.num_static == 400
    assert np.asarray(no_uv.bary).min() >= 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_anchors=0, num_dynamic=0), "num_anchors"),
        (dict(num_anchors=10, num_dynamic=11), "num_dynamic"),
        (dict(num_anchors=10.0, num_dynamic=1), "num_anchors"),
    ],
)
def test_sampling_refuses_bad_counts(model, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        rar_surface.sample_anchors(model, **kwargs)


def test_carry_and_frames_vs_numpy(model, anchors):
    rng = np.random.default_rng(0)
    verts = np.asarray(model.v_template, np.float64) + rng.normal(0, 2e-3, (model.num_vertices, 3))
    offsets = rng.normal(0, 0.01, anchors.num_anchors)
    pos, frames = jax.jit(rar_surface.carry)(
        jnp.asarray(verts, jnp.float32), anchors, jnp.asarray(offsets, jnp.float32)
    )
    c = verts[np.asarray(anchors.vertex_index)]
    n = np.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0])
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    t = (c[:, 1] - c[:, 0]) / np.linalg.norm(c[:, 1] - c[:, 0], axis=-1, keepdims=True)
    expected = np.einsum("nk,nkc->nc", np.asarray(anchors.bary), c) + offsets[:, None] * n
    np.testing.assert_allclose(np.asarray(pos), expected, atol=2e-6)
    f = np.asarray(frames, np.float64)
    np.testing.assert_allclose(f[..., 2], n, atol=2e-4)
    np.testing.assert_allclose(f[..., 0], t, atol=2e-4)
    np.testing.assert_allclose(np.linalg.det(f), 1.0, atol=1e-4)


def test_quaternions_vs_scipy():
    rot = Rotation.random(2000, random_state=1)
    mats = rot.as_matrix()
    # Include the hard cases: identity, and 180-degree turns about each axis.
    mats = np.concatenate([mats, np.eye(3)[None], np.diag([1, -1, -1])[None]])
    mats = np.concatenate([mats, np.diag([-1, 1, -1])[None], np.diag([-1, -1, 1])[None]])
    to_quat = jax.jit(rar_surface.matrix_to_quat)
    q = np.asarray(to_quat(jnp.asarray(mats, jnp.float32)), np.float64)
    back = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy: (x, y, z, w)
    np.testing.assert_allclose(back, mats, atol=1e-5)
    a, b = Rotation.random(100, random_state=2), Rotation.random(100, random_state=3)
    qa, qb = (jnp.asarray(r.as_quat()[:, [3, 0, 1, 2]], jnp.float32) for r in (a, b))
    prod = np.asarray(jax.jit(rar_surface.quat_multiply)(qa, qb), np.float64)
    np.testing.assert_allclose(
        Rotation.from_quat(prod[:, [1, 2, 3, 0]]).as_matrix(), (a * b).as_matrix(), atol=1e-5
    )
    grad = jax.jit(jax.grad(lambda m: to_quat(m).sum()))(jnp.asarray(mats, jnp.float32))
    assert np.all(np.isfinite(np.asarray(grad)))
