"""gshead_jax.metrics against NumPy references written here (SSIM, PSNR, L1, masks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax import metrics


def _np_gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _np_filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of one [H, W] plane with the 1-D window g."""
    k = len(g)
    h, w = x.shape
    rows = np.stack([x[i : i + k].T @ g for i in range(h - k + 1)])  # [H', W]
    return np.stack([rows[:, j : j + k] @ g for j in range(w - k + 1)], axis=1)  # [H', W']


def _np_ssim_map(a: np.ndarray, b: np.ndarray, k1=0.01, k2=0.03, max_val=1.0) -> np.ndarray:
    """Wang et al. 2004 SSIM map of one [H, W] plane pair, Gaussian 11 / 1.5, float64."""
    g = _np_gaussian_window()
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = _np_filter_valid(a, g), _np_filter_valid(b, g)
    s_aa = _np_filter_valid(a * a, g) - mu_a**2
    s_bb = _np_filter_valid(b * b, g) - mu_b**2
    s_ab = _np_filter_valid(a * b, g) - mu_a * mu_b
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
    )


def _np_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM of [B, H, W, C] images: mean over channels and the valid map."""
    return np.array(
        [
            np.mean([_np_ssim_map(a[i, ..., c], b[i, ..., c]).mean() for c in range(a.shape[-1])])
            for i in range(a.shape[0])
        ]
    )


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    target = rng.random((3, 24, 20, 3), dtype=np.float32)
    # Correlated prediction: SSIM far from 0 and 1, so the test is sensitive.
    noise = rng.normal(0, 0.1, target.shape).astype(np.float32)
    pred = np.clip(target * 0.8 + 0.1 + noise, 0, 1).astype(np.float32)
    pred[2] = rng.random(pred[2].shape, dtype=np.float32)  # one unrelated pair
    mask = (rng.random((3, 24, 20, 1)) > 0.3).astype(np.float32)
    return pred, target, mask


def test_ssim_matches_numpy(images):
    pred, target, _ = images
    got = np.asarray(jax.jit(metrics.ssim)(pred, target))
    np.testing.assert_allclose(got, _np_ssim(pred, target), atol=1e-5, rtol=0)
    assert got.shape == (3,)


def test_ssim_grayscale_matches_numpy(images):
    pred, target, _ = images
    w = np.array([0.2989, 0.587, 0.114])  # torchvision rgb_to_grayscale
    ref = _np_ssim((pred @ w)[..., None], (target @ w)[..., None])
    got = np.asarray(metrics.ssim(pred, target, grayscale=True))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_ssim_masked_matches_numpy(images):
    pred, target, mask = images
    ref = []
    for i in range(pred.shape[0]):
        smap = np.mean([_np_ssim_map(pred[i, ..., c], target[i, ..., c]) for c in range(3)], 0)
        m = mask[i, 5:-5, 5:-5, 0]  # window centres of the valid map
        ref.append((smap * m).sum() / m.sum())
    got = np.asarray(metrics.ssim(pred, target, mask=mask))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_psnr_l1_match_numpy(images):
    pred, target, mask = images
    p, t = pred.astype(np.float64), target.astype(np.float64)
    mse = ((p - t) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(metrics.psnr(pred, target), -10 * np.log10(mse), rtol=1e-5)
    np.testing.assert_allclose(metrics.l1(pred, target), np.abs(p - t).mean((1, 2, 3)), rtol=1e-5)
    # Masked: the mean over masked pixels (all channels).
    m = mask.astype(np.float64)
    den = m.sum((1, 2, 3)) * 3
    mse_m = (((p - t) ** 2) * m).sum((1, 2, 3)) / den
    l1_m = (np.abs(p - t) * m).sum((1, 2, 3)) / den
    np.testing.assert_allclose(metrics.psnr(pred, target, mask), -10 * np.log10(mse_m), rtol=1e-5)
    np.testing.assert_allclose(metrics.l1(pred, target, mask), l1_m, rtol=1e-5)


def test_image_metrics_box_variants(images):
    pred, target, _ = images
    bbox = jnp.asarray([[0.2, 0.2, 0.8, 0.8], [0.1, 0.3, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]])
    fn = jax.jit(metrics.image_metrics, static_argnames=("box_size",))
    out = fn(pred, target, bbox=bbox, box_size=16)
    assert set(out) == {"psnr", "ssim", "l1", "box_psnr", "box_ssim", "box_l1"}
    cp = np.asarray(metrics.crop_to_box(pred, bbox, size=16))
    ct = np.asarray(metrics.crop_to_box(target, bbox, size=16))
    np.testing.assert_allclose(out["box_ssim"], _np_ssim(cp, ct), atol=1e-5)
    np.testing.assert_allclose(out["box_l1"], np.abs(cp - ct).mean((1, 2, 3)), rtol=1e-5)


def test_bad_inputs_raise(images):
    pred, target, _ = images
    with pytest.raises(ValueError, match="target must have"):
        metrics.psnr(pred, target[:, :10])
    with pytest.raises(ValueError, match=r"pred must be \[B, H, W, C\]"):
        metrics.l1(pred[0], target[0])
    with pytest.raises(ValueError, match="mask must be"):
        metrics.l1(pred, target, mask=np.ones((3, 24, 20, 3), np.float32))
    with pytest.raises(ValueError, match="H, W >= 11"):
        metrics.ssim(pred[:, :8], target[:, :8])
    with pytest.raises(ValueError, match="lpips needs imported weights"):
        metrics.lpips(pred, target, None)
    with pytest.raises(ValueError, match=r"bbox must be \[B, 4\]"):
        metrics.crop_to_box(pred, np.zeros((2, 4), np.float32), size=8)
