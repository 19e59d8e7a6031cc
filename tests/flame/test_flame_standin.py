"""The procedural stand-in: FLAME's structure, a closed mesh, joints that do their job."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax import flame

R = flame.Region
E = flame.Expression


@pytest.fixture(scope="module")
def model():
    return flame.standin(0)


@pytest.fixture(scope="module")
def posed(model):
    """One batched forward for every case below: name -> vertices [V, 3]."""
    cases = {
        "zero": {},
        "jaw": {"jaw": [0.25, 0.0, 0.0]},
        "left_eye": {"eyes": [0.1, 0.35, 0.0, 0.0, 0.0, 0.0]},
        "mouth_open": {"expression": {E.MOUTH_OPEN: 1.0}},
        "smile": {"expression": {E.SMILE: 1.0}},
        "blink_left": {"expression": {E.BLINK_LEFT: 1.0}},
        "neck": {"neck": [0.3, 0.2, 0.0]},
    }
    n = len(cases)
    arrays = {
        "expression": np.zeros((n, 100), np.float32),
        "jaw": np.zeros((n, 3), np.float32),
        "eyes": np.zeros((n, 6), np.float32),
        "neck": np.zeros((n, 3), np.float32),
    }
    for i, spec in enumerate(cases.values()):
        for key, val in spec.items():
            if key == "expression":
                for k, x in val.items():
                    arrays[key][i, int(k)] = x
            else:
                arrays[key][i] = val
    out = flame.forward(model, np.zeros((n, 300), np.float32), **arrays)
    verts, lmks = np.asarray(out.vertices), np.asarray(out.landmarks)
    return {k: (verts[i], lmks[i]) for i, k in enumerate(cases)}


def test_structure_matches_flame(model):
    assert (model.num_vertices, model.num_shape, model.num_expression) == (5023, 300, 100)
    assert model.parents == (-1, 0, 1, 1, 1) and model.num_landmarks == 68
    assert model.posedirs.shape == (36, 5023 * 3) and model.J_regressor.shape == (5, 5023)
    w = np.asarray(model.lbs_weights)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    assert w.min() >= 0.0
    vt, ft = np.asarray(model.vt), np.asarray(model.ft)
    assert ft.shape == model.faces.shape and vt.min() >= 0.0 and vt.max() <= 1.0
    labels = np.asarray(model.vertex_labels)
    assert set(np.unique(labels)) == {int(r) for r in R}  # every region is present


def test_mesh_is_closed_and_consistently_oriented(model):
    faces = np.asarray(model.faces)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    directed = {tuple(e) for e in edges.tolist()}
    assert len(directed) == len(edges)  # no directed edge twice: consistent orientation
    assert all((b, a) in directed for a, b in directed)  # every edge has its twin: closed
    # Outward orientation: positive signed volume (head and both eyeballs).
    v = np.asarray(model.v_template, np.float64)
    tri = v[faces]
    volume = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    assert 0.002 < volume < 0.006  # m^3: a head and neck
    height = v[:, 1].max() - v[:, 1].min()
    labels = np.asarray(model.vertex_labels)
    head = v[labels != R.NECK]
    assert 0.2 < head[:, 1].max() - head[:, 1].min() < 0.27 and height < 0.32


def test_zero_parameters_give_the_template(model, posed):
    # Identity transforms blended by weights that sum to 1 in float32: ~1e-8 off.
    np.testing.assert_allclose(posed["zero"][0], np.asarray(model.v_template), atol=1e-7)


def test_jaw_opens_the_mouth_and_leaves_the_skull(model, posed):
    labels = np.asarray(model.vertex_labels)
    rest, opened = posed["zero"][0], posed["jaw"][0]
    moved = opened - rest
    lower, upper = labels == R.LIP_LOWER, labels == R.LIP_UPPER
    assert moved[lower, 1].mean() < -0.012  # lower lip drops > 1.2 cm at 0.25 rad
    upper_moves = np.linalg.norm(moved[upper], axis=1)
    assert np.median(upper_moves) < 1e-4  # upper lip stays (only the corners blend)
    assert upper_moves.max() < 0.6 * np.linalg.norm(moved[lower], axis=1).mean()
    assert np.abs(moved[labels == R.SCALP]).max() == 0.0  # skull exactly still
    # Inner lip landmarks part: 62 (upper) and 66 (lower) separate vertically.
    gap = posed["jaw"][1][62, 1] - posed["jaw"][1][66, 1]
    assert posed["zero"][1][62, 1] - posed["zero"][1][66, 1] < 1e-4 and gap > 0.012


def test_eye_rotation_moves_only_that_eyeball(model, posed):
    labels = np.asarray(model.vertex_labels)
    moved = np.abs(posed["left_eye"][0] - posed["zero"][0]).max(axis=1) > 0
    left = np.isin(labels, [R.EYEBALL_LEFT, R.IRIS_LEFT])
    assert moved[left].mean() > 0.9 and not moved[~left].any()
    # It is a rotation about the eye joint: distances to the joint are kept.
    joint = np.asarray(model.J_regressor) @ np.asarray(model.v_template)
    d0 = np.linalg.norm(posed["zero"][0][left] - joint[3], axis=1)
    d1 = np.linalg.norm(posed["left_eye"][0][left] - joint[3], axis=1)
    np.testing.assert_allclose(d1, d0, atol=1e-6)
    # The iris turns with the gaze: +0.35 rad about y moves it towards +x.
    iris = labels == R.IRIS_LEFT
    assert (posed["left_eye"][0][iris, 0] - posed["zero"][0][iris, 0]).mean() > 0.002


def test_named_expressions(model, posed):
    z = posed["zero"]
    mo = posed["mouth_open"]
    assert mo[1][62, 1] - mo[1][66, 1] > 0.01  # lips part
    sm = posed["smile"]
    for corner in (48, 54):  # mouth corners go up
        assert sm[1][corner, 1] - z[1][corner, 1] > 0.003
    # Blink: the left lids cover the left eyeball (the opening's skin moves in front
    # of the iris), the right eye's skin is untouched.
    labels = np.asarray(model.vertex_labels)
    moved = np.abs(posed["blink_left"][0] - z[0]).max(axis=1)
    left_half = np.asarray(model.v_template)[:, 0] > 0
    region = labels == R.EYE_REGION
    assert moved[region & left_half].max() > 0.003 and moved[region & ~left_half].max() == 0.0
    iris = np.asarray(model.v_template)[labels == R.IRIS_LEFT]
    lid = posed["blink_left"][0][region & left_half]
    near = np.linalg.norm(lid[:, None, :2] - iris[None, :, :2], axis=-1).argmin(axis=0)
    assert np.all(lid[near, 2] > iris[:, 2] - 1e-4) or np.mean(lid[near, 2] > iris[:, 2]) > 0.9


def test_neck_rotation_keeps_the_neck_base(model, posed):
    v0 = np.asarray(model.v_template)
    base = v0[:, 1] < -0.15
    moved = np.linalg.norm(posed["neck"][0] - posed["zero"][0], axis=1)
    assert (
        moved[base].max() < 1e-3 and moved[np.asarray(model.vertex_labels) == R.SCALP].min() > 0.005
    )


def test_deterministic_and_seeded():
    a = flame.standin(3, num_vertices=900, num_shape=20, num_expression=12)
    b = flame.standin(3, num_vertices=900, num_shape=20, num_expression=12)
    c = flame.standin(4, num_vertices=900, num_shape=20, num_expression=12)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(a.v_template), np.asarray(c.v_template))
    assert not np.allclose(np.asarray(a.shapedirs[..., 8:]), np.asarray(c.shapedirs[..., 8:]))
    assert a.num_vertices == 900 and a.shapedirs.shape == (900, 3, 20)
    # Identity components are smooth: neighbouring vertices move alike.
    faces = np.asarray(a.faces)
    sd = np.asarray(a.shapedirs)
    edge_diff = np.abs(sd[faces[:, 0]] - sd[faces[:, 1]]).mean()
    pairs = np.random.default_rng(0).permutation(len(sd))
    assert edge_diff < 0.3 * np.abs(sd - sd[pairs]).mean()  # vs. unrelated vertices


def test_jit_with_model_argument(model, posed):
    # The model is a pytree argument (static parents), not a closed-over constant.
    f = jax.jit(lambda m, e: flame.forward(m, jnp.zeros(300), e).vertices)
    e = jnp.zeros(100).at[E.SMILE].set(1.0)
    np.testing.assert_allclose(np.asarray(f(model, e)), posed["smile"][0], atol=1e-6)
