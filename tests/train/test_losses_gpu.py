"""GPU checks of the losses at GAGAvatar's sizes (skipped without a CUDA device).

Run on the GPU machine: ``python -m pytest -s -m gpu tests/train/test_losses_gpu.py``;
``-s`` shows the timings and peak memory it prints.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gshead_jax import metrics
from gshead_jax.train import losses

pytestmark = pytest.mark.gpu


def _timed(fn, *args, reps: int = 10) -> float:
    jax.block_until_ready(fn(*args))  # compile
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / reps * 1e3


def test_lifting_loss_full_size():
    """Batch 8, 5023 FLAME vertices, 2 x 296^2 lifted points: exact and fits in memory."""
    rng = np.random.default_rng(0)
    b, v, n = 8, 5023, 2 * 296 * 296
    pts = rng.uniform(-1, 1, (b, n, 3)).astype(np.float32)
    verts = rng.uniform(-1, 1, (b, v, 3)).astype(np.float32)
    fn = jax.jit(jax.value_and_grad(losses.lifting_loss, argnums=(0, 1)))
    t_ms = _timed(fn, verts, pts, reps=5)
    val, (gv, gp) = fn(verts, pts)
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use", 0) / 2**30
    print(f"\nlifting loss fwd+bwd B={b} V={v} N={n}: {t_ms:.2f} ms, peak {peak:.2f} GiB")
    # NumPy brute force (float64) on a subset of vertices of image 0.
    sub = np.arange(0, v, 97)
    d = ((verts[0, sub, None].astype(np.float64) - pts[0, None]) ** 2).sum(-1)  # [S, N]
    idx = np.asarray(losses.nearest_indices(verts[:1], pts[:1]))[0, sub]
    np.testing.assert_allclose(d[np.arange(len(sub)), idx], d.min(-1), rtol=1e-5, atol=1e-9)
    assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(gp)))
    assert np.count_nonzero(np.abs(np.asarray(gp)).sum(-1)) > 0
    assert peak < 16, f"peak GPU memory {peak:.1f} GiB: lower chunk_size"


def test_crop_to_box_512_matches_torch():
    rng = np.random.default_rng(1)
    img = rng.random((8, 512, 512, 3), dtype=np.float32)
    cx, cy = rng.uniform(0.35, 0.65, (2, 8))
    half = rng.uniform(0.05, 0.3, (8,))
    bbox = np.stack([cx - half, cy - half, cx + half, cy + half], -1).astype(np.float32)
    fn = jax.jit(lambda a, b: metrics.crop_to_box(a, b, size=512))
    got = np.asarray(fn(img, bbox))
    x = torch.tensor(img).permute(0, 3, 1, 2)
    px = np.asarray(metrics.box_to_pixels(metrics.expand_bbox(jnp.asarray(bbox)), 512, 512))
    for i, (x0, y0, x1, y1) in enumerate(px):
        ref = F.interpolate(
            x[i : i + 1, :, y0:y1, x0:x1],
            size=(512, 512),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        np.testing.assert_allclose(got[i], ref[0].permute(1, 2, 0).numpy(), atol=1e-5)
    box_loss = jax.jit(jax.value_and_grad(lambda a, b, c: losses.box_l1_loss(a, b, c)))
    t_ms = _timed(box_loss, img, img[::-1].copy(), bbox)
    print(f"\nbox L1 fwd+bwd, B=8, 512^2 crops of 512^2 images: {t_ms:.2f} ms")
