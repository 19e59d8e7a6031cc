"""Pair rules against a direct re-statement of GAGAvatar's TrackedData rules."""

import logging

import numpy as np
import pytest

from gshead_jax.data import pairs
from gshead_jax.data.source import FrameIndex


@pytest.fixture(scope="module")
def index():
    """Records in scrambled order; clips with gaps in frame numbers; one single-frame clip."""
    clips = {
        ("bob", "bob_a"): [10, 3, 7],
        ("bob", "bob_b"): [0, 1],
        ("amy", "amy_x"): [5, 2, 9, 4],
        ("cid", "cid_1"): [8],
        ("cid", "cid_0"): [6, 1],
    }
    rows = [(i, c, f) for (i, c), fs in clips.items() for f in fs]
    order = np.random.default_rng(0).permutation(len(rows))
    rows = [rows[j] for j in order]
    return FrameIndex.from_lists(
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [f"{r[1]}_{r[2]}" for r in rows],
    )


def _reference(index):
    """GAGAvatar's build_video_info, per (identity, clip): keys sorted by frame number."""
    clips = {}
    for i in range(len(index)):
        ident, clip, frame, _ = index.ids(i)
        clips.setdefault((ident, clip), []).append((frame, i))
    return {k: [i for _, i in sorted(v)] for k, v in clips.items()}


def test_eval_same_clip_source_is_first_frame(index):
    ref = _reference(index)
    want = {(t, members[0]) for members in ref.values() for t in members[1:]}
    got = pairs.make_plan(index, "same_clip", train=False).pairs()
    assert {tuple(p) for p in got.tolist()} == want and len(got) == len(want)


def test_train_same_clip_draws_every_other_frame_of_the_clip(index, caplog):
    ref = _reference(index)
    with caplog.at_level(logging.WARNING):
        plan = pairs.make_plan(index, "same_clip", train=True, name="idx")
    assert "idx: 1 single-frame clips cannot be paired" in caplog.text
    clip_of = {i: k for k, members in ref.items() for i in members}
    usable = {i for members in ref.values() if len(members) > 1 for i in members}
    assert set(plan.targets.tolist()) == usable and len(plan) == len(usable)
    rng = np.random.default_rng(0)
    seen = {t: set() for t in usable}
    for _ in range(60):
        for t, s in plan.pairs(rng).tolist():
            seen[t].add(s)
    for t in usable:  # exactly the other frames of the clip, each drawn at some point
        assert seen[t] == set(ref[clip_of[t]]) - {t}


def test_cross_identity_takes_the_next_identity_in_sorted_order(index):
    ref = _reference(index)
    next_id = {"amy": "bob", "bob": "cid", "cid": "amy"}  # sorted, wrapping
    ident = {i: k[0] for k, members in ref.items() for i in members}
    first_clip = {who: min(c for (i, c) in ref if i == who) for who in next_id}
    ev = pairs.make_plan(index, "cross_identity", train=False).pairs().tolist()
    want = {
        (t, ref[(next_id[who], first_clip[next_id[who]])][0])
        for (who, _), members in ref.items()
        for t in members[1:]
    }
    assert {tuple(p) for p in ev} == want
    plan = pairs.make_plan(index, "cross_identity", train=True)
    assert len(plan) == len(index)
    for t, s in plan.pairs(np.random.default_rng(1)).tolist():
        assert ident[s] == next_id[ident[t]]


def test_multi_view_pairs_share_identity_clip_and_frame():
    idx = FrameIndex.from_lists(
        ["a"] * 7,
        ["c0"] * 3 + ["c1"] * 4,
        [0, 0, 0, 0, 0, 1, 1],
        [f"k{i}" for i in range(7)],
        view=[2, 0, 1, 3, 1, 0, 5],
    )
    ev = pairs.make_plan(idx, "multi_view", train=False).pairs().tolist()
    assert sorted(ev) == [[0, 1], [2, 1], [3, 4], [6, 5]]  # lowest view is the source
    plan = pairs.make_plan(idx, "multi_view", train=True)
    for t, s in plan.pairs(np.random.default_rng(0)).tolist():
        assert t != s and idx.ids(t)[:3] == idx.ids(s)[:3]


def test_bad_rules_and_impossible_pairs():
    idx = FrameIndex.from_lists(["a", "a"], ["c", "c"], [0, 1], ["k0", "k1"])
    with pytest.raises(ValueError, match="pair rule must be one of"):
        pairs.make_plan(idx, "random", train=True)
    with pytest.raises(ValueError, match="need at least 2 identities"):
        pairs.make_plan(idx, "cross_identity", train=True)
    with pytest.raises(ValueError, match="no multi_view pair can be formed"):
        pairs.make_plan(idx, "multi_view", train=True)
    with pytest.raises(ValueError, match="same .identity, clip, frame, view."):
        FrameIndex.from_lists(["a", "a"], ["c", "c"], [0, 0], ["k0", "k1"])
