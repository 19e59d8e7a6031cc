"""Dense reference compositor: every Gaussian against every pixel, plain jnp.

The ground truth for the tiled backends. It walks the Gaussians front to back
in (depth, index) order with a ``lax.scan``, exactly like gsplat 1.5.3's
per-pixel loop (``RasterizeToPixels3DGSFwd.cu:115-170``), vectorised over all
pixels; gradients come from autodiff. A Gaussian touches a pixel only when the
pixel's tile lies in the Gaussian's tile rectangle (``binning.tile_rects``), the
same membership the tiled renderers get from their intersection list -- with an
opacity-aware radius the two differ from "every pixel" only where alpha is at
most 1/255 anyway, but matching them keeps the comparison exact.

Memory and time are O(N * H * W): small scenes only.
"""

import jax
import jax.numpy as jnp

from gshead_jax.splat.binning import tile_rects
from gshead_jax.splat.project import ALPHA_THRESHOLD

# RasterizeToPixels3DGSFwd.cu:148-154.
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4


def composite_dense(
    means2d: jax.Array,
    conics: jax.Array,
    opacities: jax.Array,
    features: jax.Array,
    depths: jax.Array,
    background: jax.Array,
    radii: jax.Array,
    *,
    width: int,
    height: int,
    tile_size: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Front-to-back alpha compositing of every Gaussian on every pixel.

    Args:
        means2d: Pixel-space centres. [N, 2]
        conics: Inverse 2D covariances (a, b, c). [N, 3]
        opacities: Opacities. [N]
        features: Per-Gaussian features. [N, C]
        depths: Camera z, the sort key and the depth channel. [N]
        background: Colour behind the Gaussians. [C]
        radii: Integer radii, 0 = culled. [N, 2]
        width: Image width in pixels.
        height: Image height in pixels.
        tile_size: Tile edge in pixels (for the membership rule).

    Returns:
        (image [H, W, C], alpha [H, W, 1], depth [H, W, 1]): the image with
        the background under the remaining transmittance T, alpha = 1 - T, and
        the expected depth sum_i w_i z_i / sum_i w_i (0 where nothing is drawn;
        gsplat divides by 1 - T, equal in exact arithmetic).
    """
    n = means2d.shape[0]
    dtype = means2d.dtype
    tx_min, tx_max, ty_min, ty_max = tile_rects(
        means2d, radii, width=width, height=height, tile_size=tile_size
    )
    # Pixel centres at (j + 0.5, i + 0.5) and the tile each pixel lies in.
    row = jnp.arange(height)[:, None]
    col = jnp.arange(width)[None, :]
    px = (col + 0.5).astype(dtype)  # [1, W]
    py = (row + 0.5).astype(dtype)  # [H, 1]
    ptx, pty = col // tile_size, row // tile_size

    # (depth, index) order: gsplat's stable radix sort on an index-ordered list.
    _, order = jax.lax.sort(
        (jax.lax.stop_gradient(depths), jnp.arange(n, dtype=jnp.int32)), num_keys=2
    )
    # Depth and a constant 1 as extra channels: the expected depth's numerator
    # and denominator.
    feats = jnp.concatenate([features, depths[:, None], jnp.ones_like(depths)[:, None]], axis=-1)
    per_gaussian = (
        means2d[order],
        conics[order],
        opacities[order],
        feats[order],
        jnp.stack([tx_min, tx_max, ty_min, ty_max], axis=-1)[order],
    )

    def step(carry, g):
        trans, done, acc = carry
        mean, conic, opacity, feat, rect = g
        dx, dy = mean[0] - px, mean[1] - py
        sigma = 0.5 * (conic[0] * dx * dx + conic[2] * dy * dy) + conic[1] * dx * dy
        # exp of max(sigma, 0): sigma < 0 is skipped anyway, and this keeps the
        # gradient of the skipped branch finite.
        alpha = jnp.minimum(MAX_ALPHA, opacity * jnp.exp(-jnp.maximum(sigma, 0.0)))
        member = (ptx >= rect[0]) & (ptx < rect[1]) & (pty >= rect[2]) & (pty < rect[3])
        use = member & ~done & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        next_t = trans * (1.0 - alpha)
        stop = use & (next_t <= MIN_TRANSMITTANCE)  # exclusive: this one is dropped
        use = use & ~stop
        weight = jnp.where(use, alpha * trans, 0.0)
        acc = acc + weight[..., None] * feat
        trans = jnp.where(use, next_t, trans)
        return (trans, done | stop, acc), None

    init = (
        jnp.ones((height, width), dtype),
        jnp.zeros((height, width), bool),
        jnp.zeros((height, width, feats.shape[-1]), dtype),
    )
    (trans, _, acc), _ = jax.lax.scan(step, init, per_gaussian)
    image = acc[..., :-2] + trans[..., None] * background
    z_sum, w_sum = acc[..., -2:-1], acc[..., -1:]
    has = w_sum > 0
    depth = jnp.where(has, z_sum / jnp.where(has, w_sum, 1.0), 0.0)
    return image, (1.0 - trans)[..., None], depth
