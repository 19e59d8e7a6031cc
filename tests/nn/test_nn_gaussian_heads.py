"""Gaussian heads against the official modules (fixtures) and a NumPy re-derivation."""

import jax
import numpy as np
import pytest
from gagavatar_testing import load_fixture

from gshead_jax.convert.gagavatar import convert_module_state_dict
from gshead_jax.nn.gaussian_heads import ConvGSGenerator, LinearGSGenerator

FIELDS = ("colors", "opacities", "scales", "rotations", "positions")


pytestmark = pytest.mark.usefixtures("float32_matmuls")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _normalize(x, axis):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _numpy_linear_head(sd, feats, direnc, quirks):
    """models.py LinearGSGenerator.forward in NumPy, from the torch-named weights."""

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    x = feats
    for i in (0, 2, 4, 6):
        x = lin(np.maximum(x, 0) if i else x, f"feature_layers.{i}")
    x = np.concatenate([x, np.broadcast_to(direnc[:, None], (*x.shape[:2], direnc.shape[1]))], -1)

    def branch(name):
        return lin(np.maximum(lin(x, f"{name}.0"), 0), f"{name}.2")

    colors = branch("color_layers")
    colors[..., :3] = _sigmoid(colors[..., :3])
    rot = branch("rotation_layers")
    return dict(
        colors=colors,
        opacities=_sigmoid(branch("opacity_layers")),
        scales=_sigmoid(branch("scale_layers")) * 0.05,
        rotations=_normalize(rot, 1 if quirks else -1),
    )


def _check(out, ref, fields):
    for f in fields:
        got = np.asarray(getattr(out, f))
        assert got.shape == ref[f].shape, f
        # All outputs are bounded O(1) values: absolute tolerance 1e-4 (issue).
        np.testing.assert_allclose(got, ref[f], atol=1e-4, rtol=0, err_msg=f)


def test_linear_head_matches_official_and_numpy():
    meta, arrays, sd = load_fixture("gs_linear.npz")
    head = LinearGSGenerator(**meta["args"])
    variables, skipped = convert_module_state_dict(sd, head)
    assert skipped == ()
    feats, direnc = arrays["in/features"], arrays["in/direnc"]
    out = jax.jit(head.apply)(variables, feats, direnc)
    assert out.positions is None
    _check(out, {f: arrays[f"out/{f}"] for f in FIELDS[:4]}, FIELDS[:4])
    # The quirk is real: rotations are unit along the vertex axis, not per quaternion.
    np.testing.assert_allclose(np.linalg.norm(out.rotations, axis=1), 1.0, rtol=1e-5)
    intended = head.clone(official_quirks=False).apply(variables, feats, direnc)
    ref = _numpy_linear_head(sd, feats.astype(np.float64), direnc.astype(np.float64), False)
    _check(intended, ref, FIELDS[:4])
    np.testing.assert_allclose(np.linalg.norm(intended.rotations, axis=-1), 1.0, rtol=1e-5)


def test_conv_head_matches_official_and_intended_variant():
    meta, arrays, sd = load_fixture("gs_conv.npz")
    head = ConvGSGenerator(**meta["args"])
    variables, _ = convert_module_state_dict(sd, head)
    feats, direnc = arrays["in/features"], arrays["in/direnc"]
    b, h, w, _ = feats.shape
    out = jax.jit(head.apply)(variables, feats, direnc)
    _check(out, {f: arrays[f"out/{f}"] for f in FIELDS}, FIELDS)
    # Official colours: sigmoid on image columns 0-2 (all channels), raw elsewhere.
    intended = head.clone(official_quirks=False).apply(variables, feats, direnc)
    off = np.asarray(out.colors).reshape(b, h, w, -1)
    raw = np.asarray(intended.colors).reshape(b, h, w, -1)
    logits = raw.copy()
    logits[..., :3] = np.log(raw[..., :3] / (1 - raw[..., :3]))  # undo the intended sigmoid
    np.testing.assert_allclose(off[:, :, :3], _sigmoid(logits[:, :, :3]), atol=1e-5)
    np.testing.assert_allclose(off[:, :, 3:], logits[:, :, 3:], atol=1e-4)
    for f in FIELDS[1:]:  # everything but colour is the same in both variants
        np.testing.assert_allclose(getattr(out, f), getattr(intended, f), atol=1e-6)


def test_heads_reject_bad_shapes():
    lin = LinearGSGenerator(in_dim=8, dir_dim=3, color_dim=4, hidden_dim=4)
    with pytest.raises(ValueError, match=r"features must be \[B, N, 8\]"):
        lin.init(jax.random.key(0), np.zeros((1, 5, 7)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"direnc must be \[B=1, 3\]"):
        lin.init(jax.random.key(0), np.zeros((1, 5, 8)), np.zeros((2, 3)))
    conv = ConvGSGenerator(in_dim=8, dir_dim=3, color_dim=4)
    with pytest.raises(ValueError, match=r"features must be \[B, H, W, 8\]"):
        conv.init(jax.random.key(0), np.zeros((1, 5, 8)), np.zeros((1, 3)))
