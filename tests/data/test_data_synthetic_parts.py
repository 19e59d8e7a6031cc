"""The synthetic generator's parts: attached Gaussians, rotations, identities, motion.

No rendering here: posing, sampling and trajectories against independent
NumPy / SciPy computations.
"""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gshead_jax import flame
from gshead_jax.data import appearance as app
from gshead_jax.data import head_gaussians as hg
from gshead_jax.data import identity as idm
from gshead_jax.data import synth_render as sr
from gshead_jax.data import trajectories as tr


@pytest.fixture(scope="module")
def model():
    return flame.standin(0)


@pytest.fixture(scope="module")
def people(model):
    return [idm.make_identity(model, 0, i, num_gaussians=4096) for i in range(8)]


def test_quat_from_matrix_matches_scipy():
    rots = Rotation.random(500, random_state=0)
    # Include the branches: near-identity, 180 degrees about each axis.
    extra = Rotation.from_rotvec(np.array([[1e-7, 0, 0], [np.pi, 0, 0], [0, np.pi, 0],
                                           [0, 0, np.pi], [0, 2.0, 2.0]]))  # fmt: skip
    mats = np.concatenate([rots.as_matrix(), extra.as_matrix()])
    got = hg.quat_from_matrix(mats)
    want = Rotation.from_matrix(mats).as_quat(scalar_first=True)
    # q and -q are the same rotation.
    sign = np.sign(np.sum(got * want, axis=-1, keepdims=True))
    np.testing.assert_allclose(got * sign, want, atol=1e-9)


def _quat_to_matrix(q):
    return Rotation.from_quat(np.asarray(q, np.float64), scalar_first=True).as_matrix()


def test_gaussians_follow_the_posed_mesh(model, people):
    head = people[3].gaussians  # with a hair volume and more
    expr = np.zeros(100, np.float32)
    expr[:3] = (1.0, 0.8, 0.5)
    params = flame.FlameParams(
        shape=people[3].shape,
        expression=expr,
        jaw=np.float32([0.25, 0.05, 0.0]),
        eyes=np.float32([0.1, 0.3, 0.0, 0.1, 0.3, 0.0]),
        neck=np.float32([0.1, 0.2, 0.0]),
        global_pose=np.float32([0.0, 0.3, 0.1]),
        translation=np.float32([0.01, 0.0, 0.02]),
    )
    means, quats, scales, normals = (np.asarray(x, np.float64) for x in
                                     sr.pose_gaussians(model, head, params))  # fmt: skip
    # Reference in NumPy float64: barycentric point + offset in the triangle frame.
    v = np.asarray(flame.forward(model, params).vertices, np.float64)
    tri = v[np.asarray(model.faces)[head.face]]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    n = np.cross(e1, e2)
    area2 = np.linalg.norm(n, axis=-1)
    n /= area2[:, None]
    t1 = e1 / np.linalg.norm(e1, axis=-1, keepdims=True)
    frame = np.stack([t1, np.cross(n, t1), n], axis=-1)
    want = np.einsum("nk,nkd->nd", head.bary, tri) + np.einsum("nij,nj->ni", frame, head.offset)
    np.testing.assert_allclose(means, want, atol=2e-6)
    rot = frame @ _quat_to_matrix(head.quat)
    np.testing.assert_allclose(_quat_to_matrix(quats), rot, atol=2e-5)
    grow = np.where(head.stretch > 0, np.sqrt(area2 / head.rest_area), 1.0)
    np.testing.assert_allclose(scales[:, :2], head.scale[:, :2] * grow[:, None], rtol=2e-4)
    np.testing.assert_allclose(scales[:, 2], head.scale[:, 2], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    # Surface discs: flat, lying in their posed triangle's plane.
    surface = (head.stretch > 0) & np.all(head.offset == 0, axis=-1)
    assert surface.mean() > 0.5
    np.testing.assert_allclose(rot[surface][:, :, 2], n[surface], atol=2e-5)
    assert np.all(head.scale[surface, 2] < head.scale[surface, 0])


def test_rigid_parts_ride_on_the_head(model, people):
    glasses = next(p for p in people if p.traits.glasses)
    head = glasses.gaussians
    rigid = head.stretch == 0
    rest = flame.FlameParams.zeros((), 300, 100).replace(shape=glasses.shape)
    expr = np.zeros(100, np.float32)
    expr[:8] = 1.0
    moved = rest.replace(expression=expr, jaw=np.float32([0.3, 0, 0]))
    a = np.asarray(sr.pose_gaussians(model, head, rest)[0])
    b = np.asarray(sr.pose_gaussians(model, head, moved)[0])
    crown = head.face == head.face[-1]  # glasses and sheet hang on the crown triangle
    assert crown.sum() >= int(4096 / 24)
    np.testing.assert_allclose(a[crown], b[crown], atol=1e-6)  # expressions do not move them
    assert np.abs(a[~rigid] - b[~rigid]).max() > 0.005  # the face does move
    # Glasses sit in front of the eyes.
    joints = np.asarray(flame.forward(model, glasses.shape).joints)
    front = a[crown][:, 2] > joints[3, 2] + 0.01
    assert front.mean() > 0.5


def test_identities_are_deterministic_and_varied(model, people):
    again = idm.make_identity(model, 0, 5, num_gaussians=4096)
    for name in ("face", "bary", "offset", "quat", "scale", "opacity", "albedo"):
        np.testing.assert_array_equal(
            getattr(again.gaussians, name), getattr(people[5].gaussians, name), err_msg=name
        )
    np.testing.assert_array_equal(again.shape, people[5].shape)
    assert all(p.gaussians.num == 4096 for p in people)
    for p in people:
        g = p.gaussians
        assert np.all(np.isfinite(g.albedo)) and g.albedo.min() >= 0 and g.albedo.max() <= 1
        assert np.all(g.scale > 0) and np.all((g.opacity >= 0) & (g.opacity <= 1))
    mean_skin = [p.traits.skin.mean() for p in people]
    assert max(mean_skin) - min(mean_skin) > 0.15
    assert len({p.traits.hair for p in people}) >= 4
    assert len({p.traits.hair_style for p in people}) >= 3


def test_eyes_have_iris_and_pupil_colours(model, people):
    """Eyeball Gaussians: a dark pupil at the gaze axis, the identity's iris, white sclera."""
    p = people[2]
    g = p.gaussians
    labels = np.asarray(model.vertex_labels)
    v = np.asarray(flame.forward(model, p.shape).vertices)
    joints = np.asarray(flame.forward(model, p.shape).joints)
    face_label = labels[np.asarray(model.faces)[g.face, 0]]
    pos = np.einsum("nk,nkd->nd", g.bary, v[np.asarray(model.faces)[g.face]])
    ball = face_label == flame.Region.EYEBALL_LEFT
    iris = face_label == flame.Region.IRIS_LEFT
    d = pos - joints[3]
    angle = np.arccos(d[:, 2] / np.linalg.norm(d, axis=-1))
    pupil = iris & (angle < p.traits.pupil - 0.03)
    assert pupil.sum() >= 2
    assert g.albedo[pupil].max() < 0.05
    sclera = ball & (angle > 0.7)
    assert g.albedo[sclera].mean() > 0.75
    ring = iris & (angle > p.traits.pupil + 0.1) & (angle < 0.4)
    np.testing.assert_allclose(
        g.albedo[ring].mean(0) / g.albedo[ring].mean(),
        p.traits.eye_rgb / p.traits.eye_rgb.mean(),
        atol=0.15,
    )


def test_trajectories_are_smooth_talking_heads():
    f = np.arange(0, 500)
    states = [tr.frame_state(0, 2, 1, int(k), num_expression=100) for k in f]
    jaw = np.array([s.jaw[0] for s in states])
    blink = np.array([s.expression[flame.Expression.BLINK_LEFT] for s in states])
    yaw = np.array([np.arctan2(s.head_rotation[0, 2], s.head_rotation[2, 2]) for s in states])
    gaze = np.array([s.eyes[1] for s in states])
    # Smooth: frame-to-frame steps far below the ranges covered.
    assert np.abs(np.diff(yaw)).max() < 0.05 < np.ptp(yaw)
    assert np.abs(np.diff(gaze)).max() < 0.08 < np.ptp(gaze)
    # Talking: the jaw opens and closes many times; blinks happen and end.
    assert jaw.max() > 0.12 and jaw.min() < 0.05
    opens = np.sum((jaw[1:] > 0.1) & (jaw[:-1] <= 0.1))
    assert opens >= 5
    assert blink.max() > 0.9 and np.sum((blink[1:] > 0.5) & (blink[:-1] <= 0.5)) >= 2
    assert np.median(blink) < 0.05
    # Rotations are rotations.
    r = states[123].head_rotation
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)


def test_model_without_labels_is_refused(model):
    with pytest.raises(ValueError, match="vertex_labels"):
        idm.build_head(model.replace(vertex_labels=None), np.zeros(300), app.sample_traits(
            np.random.default_rng(0)), np.random.default_rng(0), num_gaussians=2048)  # fmt: skip
    with pytest.raises(ValueError, match="num_gaussians"):
        idm.make_identity(model, 0, 0, num_gaussians=100)


def test_overflow_is_rendered_again_with_more_capacity(model, people):
    """A capacity below the true intersection count: retried, never a truncated image."""
    import types

    from gshead_jax.data.synth_render import render_states

    small = idm.make_identity(model, 0, 1, num_gaussians=1024)
    state = tr.neutral(100)
    viewmat, light = tr.frame_camera(state, 0.0, 0.0)
    args = (model, [small.gaussians], [(small.shape, state)], viewmat[None], light[None])
    full, _ = render_states(*args, size=16, batch=False)
    owner = types.SimpleNamespace(_capacity=512)  # ~700 intersections needed
    again, _ = render_states(*args, size=16, batch=False, owner=owner)
    assert owner._capacity == 1024
    np.testing.assert_array_equal(again, full)
    assert full.max() > 0.2
