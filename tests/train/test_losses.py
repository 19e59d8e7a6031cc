"""Training losses against GAGAvatar's official operations re-written in torch, and NumPy.

References written here: the official ``expand_bbox`` / ``calc_box_loss`` crop
(slice + ``F.interpolate(bilinear, antialias=True)``), ``square_distance`` with a
brute-force nearest neighbour in place of faiss (IndexFlatL2 is exact), and
``calc_metrics``' img/box/point terms. Tolerances: crops 1e-6 absolute (float32
rounding of the separable resampling), lifting values/gradients 1e-6 relative.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gshead_jax import metrics
from gshead_jax.train import losses

# ----------------------------------------------------------------------------- torch references


def _torch_expand_bbox(bbox: torch.Tensor, scale: float = 1.1) -> torch.Tensor:
    xmin, ymin, xmax, ymax = bbox.unbind(dim=-1)
    cenx, ceny = (xmin + xmax) / 2, (ymin + ymax) / 2
    side = torch.sqrt((ymax - ymin) * (xmax - xmin)) * scale
    for bound in (cenx * 2, ceny * 2, (1 - cenx) * 2, (1 - ceny) * 2):
        side = torch.min(side, bound)
    return torch.stack([cenx - side / 2, ceny - side / 2, cenx + side / 2, ceny + side / 2], -1)


def _torch_box_crops(images_nhwc: np.ndarray, bbox: np.ndarray, size: int) -> torch.Tensor:
    """GAGAvatar calc_box_loss crops (NCHW), x scaled by W and y by H."""
    x = torch.tensor(images_nhwc).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    b = _torch_expand_bbox(torch.tensor(bbox)).clamp(min=0, max=1)
    b = (b * torch.tensor([w, h, w, h], dtype=torch.float32)).long()
    crops = [
        F.interpolate(
            x[i : i + 1, :, bb[1] : bb[3], bb[0] : bb[2]],
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        for i, bb in enumerate(b)
    ]
    return torch.cat(crops)


def _torch_square_distance(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Official square_distance with exact brute-force search instead of faiss."""
    with torch.no_grad():
        idx = torch.cdist(src.double(), dst.double()).argmin(-1, keepdim=True)  # [B, V, 1]
    selected = torch.gather(dst, 1, idx.expand(-1, -1, dst.shape[-1]))
    return torch.sum((src - selected) ** 2, dim=-1) * 10


# Boxes: interior, touching the border, tiny (upsampled), full frame, wide.
BOXES = np.array(
    [
        [0.30, 0.30, 0.70, 0.70],
        [0.10, 0.20, 0.50, 0.90],
        [0.25, 0.25, 0.35, 0.40],
        [0.00, 0.00, 1.00, 1.00],
        [0.40, 0.45, 0.55, 0.60],
        [0.05, 0.30, 0.95, 0.80],
    ],
    np.float32,
)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(1)
    target = rng.random((6, 64, 64, 3), dtype=np.float32)
    pred = np.clip(target + rng.normal(0, 0.2, target.shape), 0, 1).astype(np.float32)
    return pred, target


@pytest.mark.parametrize("size", [48, 24])
def test_crop_to_box_matches_official(frames, size):
    _, target = frames
    got = np.asarray(metrics.crop_to_box(target, BOXES, size=size))
    ref = _torch_box_crops(target, BOXES, size).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_crop_to_box_non_square_image():
    rng = np.random.default_rng(2)
    img = rng.random((2, 40, 56, 3), dtype=np.float32)
    got = np.asarray(metrics.crop_to_box(img, BOXES[:2], size=(20, 28)))
    x = torch.tensor(img).permute(0, 3, 1, 2)
    b = _torch_expand_bbox(torch.tensor(BOXES[:2])).clamp(0, 1)
    b = (b * torch.tensor([56.0, 40.0, 56.0, 40.0])).long()
    for i, bb in enumerate(b):
        ref = F.interpolate(
            x[i : i + 1, :, bb[1] : bb[3], bb[0] : bb[2]],
            size=(20, 28),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        np.testing.assert_allclose(got[i], ref[0].permute(1, 2, 0).numpy(), atol=1e-6)


def test_l1_and_box_l1_match_official(frames):
    pred, target = frames
    np.testing.assert_allclose(
        losses.l1_loss(pred, target), F.l1_loss(torch.tensor(pred), torch.tensor(target)), 1e-6
    )
    got = jax.jit(losses.box_l1_loss, static_argnames=("size",))(pred, target, BOXES, size=48)
    ref = F.l1_loss(_torch_box_crops(pred, BOXES, 48), _torch_box_crops(target, BOXES, 48))
    np.testing.assert_allclose(got, ref.item(), rtol=1e-5)


def test_ssim_loss_is_one_minus_mean_ssim(frames):
    pred, target = frames[0][:2, :24, :24], frames[1][:2, :24, :24]
    want = 1.0 - np.mean(np.asarray(metrics.ssim(pred, target)))
    np.testing.assert_allclose(losses.ssim_loss(pred, target), want, rtol=1e-6)


# ----------------------------------------------------------------------------- lifting


def _np_nearest(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    d = ((t[:, :, None, :].astype(np.float64) - p[:, None, :, :]) ** 2).sum(-1)
    return d.argmin(-1)


def _brute_lifting(t, p):
    d = jnp.sum(jnp.square(t[:, :, None] - p[:, None]), -1)  # [B, V, N]
    idx = jax.lax.stop_gradient(jnp.argmin(d, -1))
    nearest = jnp.take_along_axis(p, idx[..., None], axis=1)
    return jnp.mean(jnp.sum(jnp.square(t - nearest), -1))


@pytest.fixture(scope="module")
def clouds():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(2, 37, 3)).astype(np.float32)
    p = rng.normal(size=(2, 300, 3)).astype(np.float32)
    return t, p


@pytest.mark.parametrize("chunk_size", [1, 8, 37, 64])
def test_nearest_indices_chunked_equal_brute_force(clouds, chunk_size):
    t, p = clouds
    got = np.asarray(losses.nearest_indices(t, p, chunk_size=chunk_size))
    np.testing.assert_array_equal(got, _np_nearest(t, p))


def test_lifting_loss_value_and_grads(clouds):
    t, p = clouds
    loss = lambda a, b: losses.lifting_loss(a, b, chunk_size=8)  # noqa: E731
    val, (gt, gp) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(t, p)
    # NumPy value.
    idx = _np_nearest(t, p)
    nearest = np.take_along_axis(p, idx[..., None], axis=1)
    np.testing.assert_allclose(val, ((t - nearest) ** 2).sum(-1).mean(), rtol=1e-6)
    # Autodiff of the unchunked brute force.
    bval, (bt, bp) = jax.value_and_grad(_brute_lifting, argnums=(0, 1))(t, p)
    np.testing.assert_allclose(val, bval, rtol=1e-6)
    np.testing.assert_allclose(gt, bt, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gp, bp, rtol=1e-6, atol=1e-9)
    # The official square_distance(...).mean() (x10 inside), torch autograd to both sets.
    ts = torch.tensor(t, requires_grad=True)
    ps = torch.tensor(p, requires_grad=True)
    official = _torch_square_distance(ts, ps).mean()
    official.backward()
    w = losses.GAGAVATAR_WEIGHTS["lifting"]
    np.testing.assert_allclose(w * val, official.item(), rtol=1e-6)
    np.testing.assert_allclose(w * np.asarray(gt), ts.grad.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(w * np.asarray(gp), ps.grad.numpy(), rtol=1e-5, atol=1e-8)
    assert np.count_nonzero(np.abs(gp).sum(-1)) > 0  # gradient reaches the lifted points


def test_lifting_bad_shapes(clouds):
    t, p = clouds
    with pytest.raises(ValueError, match=r"queries must be \[B, Q, 3\]"):
        losses.lifting_loss(t[0], p)
    with pytest.raises(ValueError, match=r"points must be \[B, N, 3\]"):
        losses.lifting_loss(t, p[:1])


# ----------------------------------------------------------------------------- combined


def test_gagavatar_loss_matches_calc_metrics(frames, clouds, caplog):
    pred, target = frames
    refined = np.clip(pred * 0.9 + 0.05, 0, 1).astype(np.float32)
    t, p = clouds
    t6, p6 = np.concatenate([t] * 3), np.concatenate([p] * 3)  # batch 6 like the images
    fn = jax.jit(losses.gagavatar_loss, static_argnames=("box_size", "chunk_size"))
    with caplog.at_level(logging.WARNING, logger="gshead_jax.train.losses"):
        total, terms = fn(pred, refined, target, BOXES, t6, p6, box_size=32, chunk_size=16)
    assert "perceptual term is OFF" in caplog.text  # default weights ask for it; none built
    # calc_metrics' terms, percep_loss excluded (no weights here).
    tt, tp, tr = (torch.tensor(a) for a in (target, pred, refined))
    nchw = lambda a: a.permute(0, 3, 1, 2)  # noqa: E731
    img = 0.5 * (F.l1_loss(nchw(tp), nchw(tt)) + F.l1_loss(nchw(tr), nchw(tt)))
    ct = _torch_box_crops(target, BOXES, 32)
    box = 0.5 * (
        F.l1_loss(_torch_box_crops(pred, BOXES, 32), ct)
        + F.l1_loss(_torch_box_crops(refined, BOXES, 32), ct)
    )
    point = _torch_square_distance(torch.tensor(t6), torch.tensor(p6)).mean()
    np.testing.assert_allclose(terms["l1"], img.item(), rtol=1e-5)
    np.testing.assert_allclose(terms["box_l1"], box.item(), rtol=1e-5)
    np.testing.assert_allclose(10 * terms["lifting"], point.item(), rtol=1e-5)
    np.testing.assert_allclose(total, (img + box + point).item(), rtol=1e-5)
    assert set(terms) == {"l1", "box_l1", "lifting"}


def test_gagavatar_loss_ssim_term_and_unknown_weight(frames, clouds):
    pred, target = frames[0][:2, :24, :24], frames[1][:2, :24, :24]
    t, p = clouds
    args = (pred, pred, target, BOXES[:2], t, p)
    total, terms = losses.gagavatar_loss(*args, weights={"ssim": 2.0})
    assert set(terms) == {"ssim"}
    np.testing.assert_allclose(total, 2.0 * losses.ssim_loss(pred, target), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown loss weights"):
        losses.gagavatar_loss(*args, weights={"lpips": 1.0})
