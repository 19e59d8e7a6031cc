"""Stages, optimiser groups and schedules against independent references (NumPy Adam, torch).

Fast: no avatar model; a toy "model" provides the trainable mask.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections as mc
import numpy as np
import pytest

from gshead_jax.train import stages as st
from gshead_jax.train.state import init_state, learned_of, with_learned


@dataclasses.dataclass(frozen=True)
class ToyModel:
    """Trains the ``trainable`` group; stage 2 only ``trainable/head``."""

    def trainable_mask(self, params, stage=None):
        mask = {g: jax.tree.map(lambda _, g=g: g == "trainable", sub) for g, sub in params.items()}
        if stage == 2:
            mask["trainable"] = {
                k: jax.tree.map(lambda _, k=k: k == "head", v)
                for k, v in params["trainable"].items()
            }
        return mask


def toy_params():
    r = np.random.default_rng(0)
    f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)  # noqa: E731
    return {
        "trainable": {
            "body": {"kernel": f(3, 2), "bias": f(2)},
            "upsampler": {
                "params": {"final_linear": {"kernel": f(2, 2)}, "style_mlp_1": {"bias": f(2)}}
            },
            "head": {"kernel": f(2)},
        },
        "frozen": {"vit": {"kernel": f(4)}},
    }


def stage(**kw):
    base = dict(
        name="s", steps=5, sources=("a",), weights=(1.0,), pair_rule="same_clip",
        losses=(("l1", 1.0),), model_stage=None, freeze=(), optimizer=st.OptimizerSpec(),
    )  # fmt: skip
    return st.Stage(**{**base, **kw})


def test_learned_paths_follow_mask_and_freeze():
    params, model = toy_params(), ToyModel()
    all_train = st.learned_paths(model, params, stage())
    assert all_train == tuple(
        sorted(p for p in st.flat_paths(params) if p.startswith("trainable/"))
    )
    frozen_body = st.learned_paths(model, params, stage(freeze=("trainable/body",)))
    assert not any(p.startswith("trainable/body") for p in frozen_body)
    assert st.learned_paths(model, params, stage(model_stage=2)) == ("trainable/head/kernel",)
    with pytest.raises(ValueError, match="trains no parameter"):
        st.learned_paths(model, params, stage(freeze=(".",)))


def numpy_adam(params, grads_seq, lrs, b1, b2, eps):
    """torch.optim.Adam (bias-corrected, eps outside the sqrt), one lr sequence per leaf."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, grads in enumerate(grads_seq, 1):
        for k in p:
            g = np.asarray(grads[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            mh, vh = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            p[k] = p[k] - lrs[k][t - 1] * mh / (np.sqrt(vh) + eps)
    return p


def test_gagavatar_groups_and_linear_decay_match_numpy_adam():
    """Adam(0, 0.99), 0.1x on style_mlp / final_linear, torch LinearLR to 0.1x over 3 steps."""
    params, model = toy_params(), ToyModel()
    spec = st.OptimizerSpec(
        lr=1e-2, b1=0.0, b2=0.99, schedule="linear", end_factor=0.1, decay_steps=3,
        lr_groups=(("style", ("style_mlp", "final_linear"), 0.1),),
    )  # fmt: skip
    s = stage(optimizer=spec)
    paths = st.learned_paths(model, params, s)
    labels = st.lr_labels(spec, paths)
    assert {p for p, g in labels.items() if g == "style"} == {
        "trainable/upsampler/params/final_linear/kernel",
        "trainable/upsampler/params/style_mlp_1/bias",
    }
    tx = st.make_optimizer(spec, paths)
    state = init_state(params, tx, paths)
    r = np.random.default_rng(1)
    grads_seq = [{p: r.normal(size=np.shape(x)) for p, x in learned_of(params, paths).items()}
                 for _ in range(5)]  # fmt: skip
    learned, opt_state = learned_of(state.params, paths), state.opt_state
    for g in grads_seq:
        updates, opt_state = tx.update({k: jnp.asarray(v, jnp.float32) for k, v in g.items()},
                                       opt_state, learned)  # fmt: skip
        learned = jax.tree.map(lambda a, u: a + u, learned, updates)
    # torch LinearLR(start 1, end 0.1, total_iters 3) stepped after each update.
    factors = [1.0, 0.7, 0.4, 0.1, 0.1]
    lrs = {p: [1e-2 * f * (0.1 if labels[p] == "style" else 1.0) for f in factors] for p in paths}
    ref = numpy_adam(learned_of(params, paths), grads_seq, lrs, 0.0, 0.99, 1e-8)
    for p in paths:
        np.testing.assert_allclose(np.asarray(learned[p]), ref[p], rtol=1e-5, atol=1e-6, err_msg=p)
    # Params outside the learned set are untouched by with_learned.
    new = with_learned(params, learned)
    np.testing.assert_array_equal(new["frozen"]["vit"]["kernel"], params["frozen"]["vit"]["kernel"])


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    spec = st.OptimizerSpec(lr=0.5, schedule="linear", end_factor=0.1, decay_steps=7)
    cos = st.OptimizerSpec(lr=0.5, schedule="cosine", end_factor=0.1, decay_steps=7)
    w = torch.nn.Parameter(torch.zeros(1))
    opt_l, opt_c = torch.optim.SGD([w], lr=0.5), torch.optim.SGD([w], lr=0.5)
    lin = torch.optim.lr_scheduler.LinearLR(opt_l, 1.0, 0.1, total_iters=7)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt_c, T_max=7, eta_min=0.05)
    f_lin, f_cos = st.make_schedule(spec), st.make_schedule(cos)
    for k in range(10):
        np.testing.assert_allclose(float(f_lin(k)), opt_l.param_groups[0]["lr"], rtol=1e-6)
        if k <= 7:
            np.testing.assert_allclose(float(f_cos(k)), opt_c.param_groups[0]["lr"], rtol=1e-5)
        opt_l.step(), opt_c.step(), lin.step(), cosine.step()


def test_stage_walk_and_config_errors():
    c = mc.ConfigDict()
    c.data = dict(sources=dict(a=dict(kind="synthetic"), b=dict(kind="synthetic")))
    opt = dict(lr=1e-3)
    c.stages = dict(
        one=dict(steps=3, data=dict(sources=("a",)), losses=dict(l1=1.0), optimizer=opt),
        two=dict(steps=2, data=dict(sources=("a", "b"), weights=(3.0, 1.0)),
                 losses=dict(l1=1.0, perceptual=0.1), model_stage=2, optimizer=opt),
    )  # fmt: skip
    c.stage_order = ("one", "two")
    stages = st.stages_from_config(c)
    assert [s.name for s in stages] == ["one", "two"]
    assert st.stage_starts(stages) == (0, 3, 5)
    assert [st.stage_at(stages, k) for k in range(7)] == [0, 0, 0, 1, 1, 1, 1]
    assert stages[1].weights == (3.0, 1.0) and stages[1].model_stage == 2
    c.stages.two.losses.bogus = 1.0
    with pytest.raises(ValueError, match="unknown terms"):
        st.stages_from_config(c)
    del c.stages.two.losses["bogus"]
    c.stages.two.data.sources = ("a", "zzz")
    with pytest.raises(ValueError, match="config.stages.two.data.sources"):
        st.stages_from_config(c)
