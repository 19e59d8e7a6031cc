"""The synthetic source: schema, determinism, random access, identities, expressions, cameras.

Every render here shares one compiled function (64², 4096 Gaussians, the XLA
rasterizer): the first test pays the compilation, the rest reuse it.
"""

import math
import pickle

import numpy as np
import pytest

from gshead_jax import camera, flame
from gshead_jax.data import check_record
from gshead_jax.data import trajectories as tr
from gshead_jax.data.source import check_source
from gshead_jax.data.synth_render import render_states
from gshead_jax.data.synthetic import SyntheticConfig, SyntheticSource, mask_bbox

SIZE, NUM = 64, 4096
CONFIG = dict(identities=3, clips=2, frames=8, views=2, image_size=SIZE, num_gaussians=NUM)


@pytest.fixture(scope="module")
def src():
    return SyntheticSource(**CONFIG)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, b[k], err_msg=k)
        else:
            assert v == b[k], k


def test_records_follow_the_schema(src):
    check_source(src)
    assert src.source_kind == "synthetic" and len(src) == 3 * 2 * 8 * 2
    sizes = src.param_sizes
    assert sizes["shape"] == 300 and sizes["expression"] == 100
    for i in (0, 5, len(src) - 1):
        r = src[i]
        checked = check_record(r, source="t", image_size=SIZE, param_sizes=sizes)
        assert checked["source_kind"] == "synthetic"
        assert src.index.ids(i) == (r["identity"], r["clip"], r["frame"], r["view"])
        assert src.index.keys[i] == r["key"]
        # Head pose lives in the camera, as GAGAvatar's tracker does.
        for k in ("global_pose", "neck", "translation"):
            np.testing.assert_array_equal(r[k], 0.0)
        # GAGAvatar's intrinsics and extrinsics convention.
        np.testing.assert_allclose(r["K"], camera.intrinsics(12.0, SIZE, SIZE), rtol=1e-6)
        cam = camera.from_gagavatar(r["transform_matrix"], width=SIZE, height=SIZE)
        np.testing.assert_allclose(cam.viewmat, r["viewmat"], atol=1e-5)
        # The mask is the head (alpha), the box is the mask's (computed independently here).
        assert r["mask"].dtype == np.uint8 and r["mask"].max() == 255
        head = r["mask"][..., 0] >= 128
        ys, xs = np.nonzero(head)
        want = [xs.min() / SIZE, ys.min() / SIZE, (xs.max() + 1) / SIZE, (ys.max() + 1) / SIZE]
        np.testing.assert_allclose(r["bbox"], want)
        assert 0.05 < head.mean() < 0.9
        # Black background: where nothing is drawn the image is black.
        assert r["image"][r["mask"][..., 0] == 0].max() == 0
        assert r["image"][head].mean() > 20


def test_mask_bbox_empty_and_edges():
    m = np.zeros((8, 8, 1), np.uint8)
    np.testing.assert_array_equal(mask_bbox(m), [0, 0, 1, 1])
    m[2:5, 7:, 0] = 200
    np.testing.assert_allclose(mask_bbox(m), [7 / 8, 2 / 8, 1.0, 5 / 8])


def test_deterministic_and_random_access(src):
    # A fresh source that renders frame 7 first, with nothing else computed ...
    alone = SyntheticSource(**CONFIG)[7]
    # ... equals frame 7 of a sequential run over the clip in another source ...
    seq = [src[i] for i in range(8)]
    _assert_same(alone, seq[7])
    # ... and the record of a pickled copy (what a grain worker gets), out of order.
    copy = pickle.loads(pickle.dumps(src))
    assert len(pickle.dumps(src)) < 200_000  # the config and the index, not the model
    _assert_same(copy[7], alone)
    _assert_same(copy[2], seq[2])
    # A different seed is a different dataset.
    other = SyntheticSource(**dict(CONFIG, seed=1))[7]
    assert np.abs(other["image"].astype(int) - alone["image"]).mean() > 2


def test_frame_state_is_random_access():
    a = [tr.frame_state(3, 1, 2, f, num_expression=100) for f in range(40)]
    tr._clip.cache_clear()
    b = tr.frame_state(3, 1, 2, 37, num_expression=100)
    for field in ("expression", "jaw", "eyes", "head_rotation", "head_translation", "light"):
        np.testing.assert_array_equal(getattr(a[37], field), getattr(b, field), err_msg=field)


def test_identities_differ_more_than_frames(src):
    def img(i):
        return src[i]["image"].astype(np.float64)

    per_identity = 2 * 8 * 2  # records of one identity
    # Within an identity: consecutive frames (1/25 s apart), view 0.
    within = [np.abs(img(k * per_identity) - img(k * per_identity + 2)).mean() for k in range(3)]
    # Across identities: the same (clip, frame, view) numbers.
    across = [np.abs(img(a * per_identity) - img(b * per_identity)).mean() for a, b in
              ((0, 1), (0, 2), (1, 2))]  # fmt: skip
    assert min(across) > 4 * max(within), (across, within)
    # And the looks differ (not only the pose): the traits drawn per identity.
    looks = {(src.identity(k).traits.hair, src.identity(k).traits.hair_style) for k in range(3)}
    assert len(looks) == 3


def test_opening_the_jaw_changes_the_mouth_and_little_else(src):
    model = src.model
    K = camera.intrinsics(12.0, SIZE, SIZE)
    ratios = []
    for k in range(3):
        ident = src.identity(k)
        rest = tr.neutral(model.num_expression)
        expr = rest.expression.copy()
        expr[flame.Expression.MOUTH_OPEN] = 1.0
        opened = rest.replace(expression=expr, jaw=np.float32([0.3, 0.0, 0.0]))
        viewmat, light = tr.frame_camera(rest, 0.0, 0.0)
        images, _ = render_states(
            model,
            [ident.gaussians] * 2,
            [(ident.shape, rest), (ident.shape, opened)],
            np.stack([viewmat] * 2),
            np.stack([light] * 2),
            size=SIZE,
            batch=False,
        )
        diff = np.abs(images[1] - images[0]).sum(-1)
        # The mouth box: inner and outer lip landmarks and the chin, both states, projected.
        cam = camera.make_camera(viewmat, K, width=SIZE, height=SIZE)
        pts = []
        for s in (rest, opened):
            out = flame.forward(model, ident.shape, s.expression, jaw=s.jaw)
            lmk = np.asarray(out.landmarks)[list(range(48, 68)) + list(range(5, 12))]
            pts.append(np.asarray(camera.project(cam, lmk * 5.0)[0]))
        pts = np.concatenate(pts)
        x0, y0 = np.floor(pts.min(0) - 1).astype(int)
        x1, y1 = np.ceil(pts.max(0) + 1).astype(int)
        inside = np.zeros(diff.shape, bool)
        inside[y0:y1, x0:x1] = True
        assert diff[inside].mean() > 0.03  # the mouth visibly opened
        ratios.append(diff[inside].mean() / diff[~inside].mean())
        # Above the nose tip nothing moves.
        nose = flame.forward(model, ident.shape, rest.expression).landmarks[30]
        y_nose = int(np.asarray(camera.project(cam, np.asarray(nose)[None] * 5.0)[0])[0, 1])
        assert np.abs(images[1] - images[0])[:y_nose].max() < 0.03
    assert min(ratios) > 8, ratios


def test_views_share_the_frame_and_span_the_ranges(src):
    c = src.config
    per_frame = [src.frame_inputs(i) for i in (10, 11)]  # identity 0, clip 0, frame 5, views 0/1
    (i0, s0, v0, _), (i1, s1, v1, _) = per_frame
    assert i0 is i1
    np.testing.assert_array_equal(s0.expression, s1.expression)
    assert not np.allclose(v0, v1)
    yaws, pitches = [], []
    for clip in range(200):
        for view in range(1, 4):
            y, p = tr.view_angles(0, 0, clip, view, yaw_range=math.radians(60),
                                  pitch_range=math.radians(30))  # fmt: skip
            yaws.append(y)
            pitches.append(p)
    assert tr.view_angles(0, 0, 0, 0, yaw_range=1.0, pitch_range=1.0) == (0.0, 0.0)
    assert max(np.abs(yaws)) <= math.radians(60) and max(np.abs(pitches)) <= math.radians(30)
    assert min(yaws) < -math.radians(55) and max(yaws) > math.radians(55)
    assert min(pitches) < -math.radians(27) and max(pitches) > math.radians(27)
    assert c.yaw_range == 60.0


def test_camera_composition_matches_camera_module():
    state = tr.frame_state(0, 1, 0, 9, num_expression=100)
    yaw, pitch = 0.7, -0.3
    viewmat, light = tr.frame_camera(state, yaw, pitch)
    orbit = camera.head_camera(yaw, pitch, width=SIZE, height=SIZE)  # GAGAvatar's distance
    head = np.eye(4)
    head[:3, :3] = state.head_rotation
    head[:3, 3] = 5.0 * state.head_translation
    np.testing.assert_allclose(viewmat, np.asarray(orbit.viewmat) @ head, atol=1e-5)
    # Lights are fixed in the rig: in the head frame they turn against the head.
    np.testing.assert_allclose(state.head_rotation @ light[:3], state.light[:3], atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="identities"):
        SyntheticConfig(identities=0)
    with pytest.raises(ValueError, match="num_gaussians"):
        SyntheticConfig(num_gaussians=10)
    with pytest.raises(ValueError, match="yaw_range"):
        SyntheticConfig(yaw_range=200)
    with pytest.raises(TypeError, match="not both"):
        SyntheticSource(SyntheticConfig(), identities=2)
    with pytest.raises(IndexError, match="out of range"):
        SyntheticConfig(identities=1, clips=1, frames=2).ids(2)


def test_feeds_the_training_pipeline(src):
    from gshead_jax.data import train_pipeline

    it = iter(train_pipeline([src], batch_size=2, seed=0, pair_rule="multi_view", prefetch=0,
                             read_threads=2, shard=(0, 1)))  # fmt: skip
    batch = next(it)
    assert batch["target_image"].shape == (2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(batch["source_kind"], 1)
    meta = batch["meta"]
    for s, t in zip(meta["source_key"], meta["target_key"], strict=True):
        assert s != t and s[:-4] == t[:-4]  # another view of the same frame
    assert batch["valid"].all()
