"""vit_resample / preprocess against torch.nn.functional.interpolate (CPU, float32)."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from gshead_jax.nn import preprocess  # noqa: E402
from gshead_jax.nn.vit_resample import interpolation_matrix, resize  # noqa: E402

# (in_h, in_w, out_h, out_w): up, down, mixed, identity, 1-pixel and large sizes.
SIZES = [(4, 4, 6, 9), (16, 16, 37, 20), (37, 37, 37, 37), (37, 37, 5, 7), (3, 5, 5, 3),
         (1, 1, 3, 3), (64, 40, 19, 160), (300, 200, 301, 450)]  # fmt: skip


def _torch(x_nhwc, **kw):
    y = F.interpolate(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)), **kw)
    return y.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize(
    "mode,antialias,align_corners",
    [
        ("bicubic", False, False),  # DINOv2 position embeddings (HF, hub)
        ("bicubic", True, False),  # registers models
        ("bilinear", True, False),  # torchvision resize, GAGAvatar
        ("bilinear", False, False),
        ("bicubic", False, True),
        ("bilinear", False, True),
    ],
)
def test_resize_matches_torch(mode, antialias, align_corners):
    rng = np.random.default_rng(0)
    for ih, iw, oh, ow in SIZES:
        x = rng.standard_normal((1, ih, iw, 2)).astype(np.float32)
        kw = dict(mode=mode, antialias=antialias, align_corners=align_corners)
        want = _torch(x, size=(oh, ow), **kw)
        got = np.asarray(resize(jnp.asarray(x), (oh, ow), **kw))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=str((ih, iw, oh, ow)))


@pytest.mark.parametrize("antialias", [False, True])
def test_scale_factor_mode_matches_torch(antialias):
    """torch-hub's interpolate(scale_factor=(h + 0.1) / M): coordinates use 1 / scale."""
    rng = np.random.default_rng(1)
    for m, h, w in [(4, 6, 5), (16, 37, 20), (37, 37, 30), (16, 74, 3)]:
        sf = ((h + 0.1) / m, (w + 0.1) / m)
        x = rng.standard_normal((1, m, m, 3)).astype(np.float32)
        want = _torch(x, scale_factor=sf, mode="bicubic", antialias=antialias)
        assert want.shape[1:3] == (h, w)
        got = resize(jnp.asarray(x), (h, w), mode="bicubic", antialias=antialias, scale_factor=sf)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
        plain = resize(jnp.asarray(x), (h, w), mode="bicubic", antialias=antialias)
        if (h, w) != (m, m):  # the offset must matter, or the test proves nothing
            assert float(np.abs(np.asarray(plain) - want).max()) > 1e-4


def test_interpolation_matrix_properties():
    # Rows are partitions of unity (constant images stay constant) for every mode.
    for mode in ("bilinear", "bicubic"):
        for aa in (False, True):
            w = interpolation_matrix(37, 16, mode=mode, antialias=aa)
            np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        interpolation_matrix(4, 4, mode="nearest")
    with pytest.raises(ValueError, match="align_corners"):
        interpolation_matrix(4, 8, mode="bilinear", antialias=True, align_corners=True)


def test_gagavatar_preprocessing_matches_torch():
    """torchvision resize(x, (518, 518), antialias=True) (= bilinear antialiased interpolate
    on float tensors) then Normalize(ImageNet), written here with torch."""
    rng = np.random.default_rng(2)
    img = rng.random((1, 512, 512, 3), dtype=np.float32)
    t = F.interpolate(
        torch.from_numpy(img.transpose(0, 3, 1, 2)),
        size=(518, 518),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    want = ((t - mean) / std).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(preprocess.gagavatar_dino_input(jnp.asarray(img)))
    assert got.shape == (1, 518, 518, 3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # GAGAvatar's DPT also resizes the normalised image down to its feature sizes.
    for s in (148, 74, 19):
        small = preprocess.resize(jnp.asarray(want), (s, s))
        ref = _torch(want, size=(s, s), mode="bilinear", antialias=True)
        np.testing.assert_allclose(np.asarray(small), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        preprocess.gagavatar_dino_input(jnp.zeros((512, 512, 3)))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 3\]"):
        preprocess.imagenet_normalize(jnp.zeros((1, 8, 8, 4)))
