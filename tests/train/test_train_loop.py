"""The loop: bit-for-bit resume, stage switches that freeze, skipped updates, strict mode.

The real ``gagavatar-tiny`` at 32^2 on a tiny noise dataset (``train_testing``);
compiled steps are shared across tests (``loop._train_step`` is cached).
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_testing as tt
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gshead_jax.models.base import TRAINABLE, group_mask
from gshead_jax.train import loop, stages
from gshead_jax.train.stages import flat_paths
from gshead_jax.train.state import init_state, replicate
from gshead_jax.train.step import make_train_step
from gshead_jax.train.summaries import read_metrics


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tt.write_dataset(str(tmp_path_factory.mktemp("data") / "ar"))


def _equal_trees(a, b):
    fa, fb = flat_paths(jax.device_get(a)), flat_paths(jax.device_get(b))
    assert fa.keys() == fb.keys()
    return [k for k in fa if not np.array_equal(np.asarray(fa[k]), np.asarray(fb[k]))]


def test_resume_continues_bit_for_bit(tmp_path, data_dir):
    """6 steps == 3 steps (checkpoint at 2, step 3 lost as in a kill) + restart + the rest."""
    c = tt.config(data_dir, steps=6, **{"checkpoint.every": 2})
    run = loop.Run.create(c, str(tmp_path))  # one model init for the three calls
    full = loop.train_and_evaluate(c, str(tmp_path / "full"), run=run)
    part = loop.train_and_evaluate(c, str(tmp_path / "resumed"), run=run, stop_at=3)
    assert part["preempted"] and part["step"] == 3
    rest = loop.train_and_evaluate(c, str(tmp_path / "resumed"), run=run)
    assert full["step"] == rest["step"] == 6
    a, b = full["state"], rest["state"]
    assert _equal_trees(a.params, b.params) == []
    assert _equal_trees(a.opt_state, b.opt_state) == []
    assert int(a.step) == int(b.step) == 6 and int(a.skipped) == int(b.skipped)
    # Data order: the same batch at every step (per-step losses), and the same
    # iterator state in the final checkpoints.
    losses = [
        [r["loss"] for r in read_metrics(str(tmp_path / w), "train")] for w in ("full", "resumed")
    ]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    states = []
    for w in ("full", "resumed"):
        d = tmp_path / w / "checkpoints" / "6" / "data"
        (f,) = [p for p in os.listdir(d) if p.startswith("process_0")]
        states.append(json.loads((d / f).read_text()))
    assert states[0] == states[1]


def test_stage_switch_freezes_what_the_stage_says(tmp_path, data_dir):
    c = tt.config(data_dir, steps=1)
    two = dict(c.stages.main)
    two["freeze"] = ("gs_generator", "head_base", "dpt")
    c.stages.two = two
    c.stage_order = ("main", "two")
    run = loop.Run.create(c, str(tmp_path))
    first = loop.train_and_evaluate(c, str(tmp_path / "run"), run=run, stop_at=1)  # ckpt at 1
    second = loop.train_and_evaluate(c, str(tmp_path / "run"), run=run)  # restore, stage two
    before, after = (
        flat_paths(jax.device_get(first["state"].params)),
        flat_paths(jax.device_get(second["state"].params)),
    )
    frozen = [k for k in before if k.startswith("frozen/") or any(p in k for p in two["freeze"])]
    trained = [k for k in before if k.startswith("trainable/upsampler")]
    assert frozen and trained
    for k in frozen:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    changed = [k for k in trained if not np.array_equal(before[k], after[k])]
    assert len(changed) > 0.9 * len(trained)  # (StyleGAN noise strengths may stay 0)
    # Stage two's optimiser holds state for the upsampler only.
    opt_keys = [k for k in flat_paths(second["state"].opt_state) if "/trainable/" in k]
    assert opt_keys and all("/trainable/upsampler/" in k for k in opt_keys)
    rows = read_metrics(str(tmp_path / "run"), "train")
    assert [r["stage"] for r in rows] == [0, 1]


# ----------------------------------------------------------------------------- skipped updates


@dataclasses.dataclass(frozen=True)
class FakeModel:
    """A two-parameter "avatar": image = sigmoid(w) * scale; overflow when the source's
    first pixel is > 0.5 (so a test decides which examples overflow)."""

    name: str = "fake"

    def trainable_mask(self, params, stage=None):
        return group_mask(params, TRAINABLE)

    def forward_batch(self, params, batch, *, rng=None, train=False):
        w = params[TRAINABLE]
        shape = batch["target_image"].shape
        image = jnp.broadcast_to(jax.nn.sigmoid(w["w"]) * w["scale"], shape)
        noise = 0.01 * jax.random.normal(rng, shape) if train else 0.0
        image = image + noise
        b = shape[0]
        aux = {
            "coarse": image,
            "overflow": batch["source_image"][:, 0, 0, 0] > 0.5,
            "num_intersections": jnp.zeros(b, jnp.int32),
        }
        return image, aux


def _fake_batch(mesh, overflow_first=False, nan=False):
    b, s = 2, 16
    r = np.random.default_rng(0)
    src = np.zeros((b, s, s, 3), np.float32)
    src[0, 0, 0, 0] = 1.0 if overflow_first else 0.0
    tgt = r.uniform(size=(b, s, s, 3)).astype(np.float32)
    if nan:
        tgt[1, 3, 3, 0] = np.nan
    p = {k: np.zeros((b, 3), np.float32) for k in ("shape", "expression", "jaw", "neck",
                                                     "global_pose", "translation")}  # fmt: skip
    p["eyes"] = np.zeros((b, 6), np.float32)
    batch = {
        "source_image": src, "target_image": tgt, "source_params": p, "target_params": p,
        "source_viewmat": np.tile(np.eye(4, dtype=np.float32), (b, 1, 1)),
        "target_viewmat": np.tile(np.eye(4, dtype=np.float32), (b, 1, 1)),
        "source_K": np.tile(np.eye(3, dtype=np.float32), (b, 1, 1)),
        "target_K": np.tile(np.eye(3, dtype=np.float32), (b, 1, 1)),
        "target_bbox": np.tile(np.array([0.1, 0.1, 0.9, 0.9], np.float32), (b, 1)),
        "valid": np.ones(b, bool),
    }  # fmt: skip
    sharding = NamedSharding(mesh, P("data"))
    return jax.tree.map(lambda x: jax.device_put(x, sharding), batch)


def test_overflowed_or_nonfinite_updates_are_skipped_and_counted():
    model, mesh = FakeModel(), loop.make_mesh(1)
    owned = {TRAINABLE: {"w": jnp.zeros(3), "scale": jnp.ones(())}, "frozen": {}}
    stage = stages.Stage(
        name="s", steps=10, sources=("a",), weights=(1.0,), pair_rule="same_clip",
        losses=(("l1", 1.0),), model_stage=None, freeze=(),
        optimizer=stages.OptimizerSpec(lr=0.1),
    )  # fmt: skip
    paths = stages.learned_paths(model, {**owned, "constants": {}}, stage)
    opt = stages.make_optimizer(stage.optimizer, paths)
    step = make_train_step(model, stage, opt, paths, mesh, stage_start=0)
    rng = replicate(jax.random.key_data(jax.random.key(0)), mesh)
    state = replicate(init_state(owned, opt, paths), mesh)
    w0 = np.asarray(state.params[TRAINABLE]["w"])
    opt0 = jax.device_get(state.opt_state)

    state, m = step(state, _fake_batch(mesh, overflow_first=True), rng, {}, None)
    assert int(m["overflow"]) == 1 and int(m["skipped"]) == 1 and int(m["nonfinite"]) == 0
    assert int(state.step) == 1 and int(state.skipped) == 1
    np.testing.assert_array_equal(state.params[TRAINABLE]["w"], w0)
    assert _equal_trees(state.opt_state, opt0) == []  # the optimiser state is kept too
    with pytest.raises(
        loop.StrictModeError, match="step 0: update refused .*overflowed renders: 1"
    ):
        loop.check_strict(m, 0)

    state, m = step(state, _fake_batch(mesh, nan=True), rng, {}, None)
    assert int(m["nonfinite"]) == 1 and int(m["skipped"]) == 1 and int(state.skipped) == 2
    np.testing.assert_array_equal(state.params[TRAINABLE]["w"], w0)
    with pytest.raises(loop.StrictModeError, match="non-finite"):
        loop.check_strict(m, 1)

    state, m = step(state, _fake_batch(mesh), rng, {}, None)
    assert int(m["skipped"]) == 0 and int(state.skipped) == 2 and int(state.step) == 3
    assert not np.array_equal(np.asarray(state.params[TRAINABLE]["w"]), w0)
    loop.check_strict(m, 2)  # a clean step passes strict mode
