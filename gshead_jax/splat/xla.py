"""Tile-based compositing in pure JAX (any XLA backend), with a custom VJP.

Layout: the pixel grid is padded to whole tiles and handled tile-major, [T, P]
with P = tile_size**2 pixels per tile. Tiles advance together (vmapped
lockstep) through their ranges of the sorted intersection list, one block of
intersections per step of a ``lax.while_loop``.

Lockstep wastes work where tiles differ: a tile whose pixels all saturated, or
whose range ended, idles while the longest one runs. So the loop runs in
*phases* (``XlaConfig``): phase 0 steps all T tiles; once at most T/2 tiles are
still active, the active ones are gathered into a state of T/2 tiles and
stepped with blocks twice as long, and so on. Each step then costs about the
same, while the number of steps along the longest tile shrinks. (Measured on
head-180k-512: plain lockstep with blocks of 32 evaluates 688M (pixel,
intersection) pairs in 82 steps; docs/splat_perf_notes.md has the numbers.)

Inside a block the front-to-back recursion T_{j+1} = T_j (1 - a_j) of gsplat's
per-pixel loop (RasterizeToPixels3DGSFwd.cu:140-169) becomes a cumulative
product along the block; the "stop before the Gaussian that takes T to <= 1e-4"
rule is the first position where that product falls to 1e-4. The feature
accumulation is a batched matrix product weights [P, B] @ features [B, C + 2]:
the depth and a constant 1 ride along as channels C and C + 1. The expected
depth is sum w z / sum w: gsplat's sum w z / (1 - T) in exact arithmetic,
without the float32 cancellation of 1 - T where alpha is near 1/255.

Backward (recompute, no per-step tape): the forward keeps per pixel the final
transmittance, the accumulated channels and the list index of the last
contributing intersection. The backward walks the same lists front to back,
recomputes alpha and T_i, and gets the suffix sums the gradient needs as
(total - inclusive prefix). With g the pixel cotangent over the C + 2 channels
(the depth quotient's cotangent on the last two):

    dL/da_i = T_i g.f_i - (S_i + T_final g.bg - v_alpha T_final) / (1 - a_i),
    S_i = g.acc - sum_{k<=i} w_k g.f_k.

Each block yields one gradient row per intersection (summed over the tile's
pixels), scatter-added per Gaussian: the segment sum over the intersection list.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from gshead_jax.splat.binning import tile_grid
from gshead_jax.splat.project import ALPHA_THRESHOLD
from gshead_jax.splat.reference import MAX_ALPHA, MIN_TRANSMITTANCE

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class XlaConfig:
    """Static schedule of the XLA compositor.

    Attributes:
        block_gaussians: Intersections per tile per step in phase 0.
        max_block_gaussians: Cap of the block length as phases double it.
        min_phase_tiles: No phase has fewer tiles than this (1 = halve to one tile).
    """

    block_gaussians: int = 32
    max_block_gaussians: int = 256
    min_phase_tiles: int = 8

    def __post_init__(self):
        for name in ("block_gaussians", "max_block_gaussians", "min_phase_tiles"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_block_gaussians < self.block_gaussians:
            raise ValueError("max_block_gaussians must be >= block_gaussians")

    def phases(self, num_tiles: int) -> tuple[tuple[int, int], ...]:
        """((tiles, block), ...): tiles halve and blocks double, phase by phase."""
        out = [(num_tiles, self.block_gaussians)]
        while out[-1][0] // 2 >= max(self.min_phase_tiles, 1):
            tiles, block = out[-1]
            out.append((tiles // 2, min(2 * block, self.max_block_gaussians)))
        return tuple(out)


def composite(
    means2d: jax.Array,
    conics: jax.Array,
    opacities: jax.Array,
    features: jax.Array,
    depths: jax.Array,
    background: jax.Array,
    tile_ranges: jax.Array,
    gaussian_ids: jax.Array,
    *,
    width: int,
    height: int,
    tile_size: int,
    config: XlaConfig = XlaConfig(),
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Front-to-back alpha compositing over the sorted tile intersection list.

    The interface every tiled backend implements (``pallas_gpu.composite`` too).
    Differentiable (``jax.custom_vjp``) w.r.t. means2d, conics, opacities,
    features, depths and background.

    Args:
        means2d: Pixel-space centres. [N, 2]
        conics: Inverse 2D covariances (a, b, c). [N, 3]
        opacities: Opacities. [N]
        features: Per-Gaussian features, any C >= 1. [N, C]
        depths: Camera z (composited as an extra channel). [N]
        background: Colour under the remaining transmittance. [C]
        tile_ranges: (start, end) per row-major tile into ``gaussian_ids``. [T, 2] int32
        gaussian_ids: Gaussian of each intersection, sorted by (tile, depth). [I] int32
        width: Image width in pixels.
        height: Image height in pixels.
        tile_size: Tile edge in pixels.
        config: The static step schedule (speed only; results do not depend on it
            beyond float rounding).

    Returns:
        (image [H, W, C], alpha [H, W, 1], depth [H, W, 1]): image =
        sum_i w_i f_i + T * background; alpha = 1 - T, with T the final
        transmittance; depth = sum_i w_i z_i / sum_i w_i, the expected depth
        (0 where no Gaussian contributes). w_i = alpha_i T_i.
    """
    inputs = (means2d, conics, opacities, features, depths, background)
    return _composite(*inputs, tile_ranges, gaussian_ids, (width, height, tile_size, config))


def extend_features(features: jax.Array, depths: jax.Array) -> jax.Array:
    """Features with the depth and a constant 1 appended as channels. [N, C + 2]"""
    ones = jnp.ones_like(depths)
    return jnp.concatenate([features, depths[:, None], ones[:, None]], axis=-1)


def expected_depth(acc: jax.Array) -> jax.Array:
    """sum w z / sum w from the last two accumulated channels, 0 where sum w = 0. [...]"""
    z_sum, w_sum = acc[..., -2], acc[..., -1]
    has = w_sum > 0
    return jnp.where(has, z_sum / jnp.where(has, w_sum, 1.0), 0.0)


def _pixel_grid(width, height, tile_size, dtype):
    """Pixel centres and in-image mask, tile-major. Each [T, P]."""
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    t = jnp.arange(tiles_x * tiles_y)
    p = jnp.arange(tile_size * tile_size)
    row = (t // tiles_x)[:, None] * tile_size + (p // tile_size)[None, :]
    col = (t % tiles_x)[:, None] * tile_size + (p % tile_size)[None, :]
    inside = (row < height) & (col < width)
    return (col + 0.5).astype(dtype), (row + 0.5).astype(dtype), inside


def _untile(x, width, height, tile_size):
    """[T, P, ...] tile-major -> [H, W, ...] image (padding cropped)."""
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    rest = x.shape[2:]
    x = x.reshape(tiles_y, tiles_x, tile_size, tile_size, *rest)
    x = jnp.swapaxes(x, 1, 2).reshape(tiles_y * tile_size, tiles_x * tile_size, *rest)
    return x[:height, :width]


def _tile(x, width, height, tile_size):
    """[H, W, ...] image -> [T, P, ...] tile-major, zero padded."""
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    rest = x.shape[2:]
    pad = [(0, tiles_y * tile_size - height), (0, tiles_x * tile_size - width)]
    x = jnp.pad(x, pad + [(0, 0)] * len(rest))
    x = x.reshape(tiles_y, tile_size, tiles_x, tile_size, *rest)
    return jnp.swapaxes(x, 1, 2).reshape(tiles_y * tiles_x, tile_size * tile_size, *rest)


def _phased(phases, carry, consts, totals, is_active, step):
    """Runs ``step`` over shrinking sets of tiles (see the module docstring).

    Args:
        phases: ((tiles, block), ...) from ``XlaConfig.phases``; phases[0][0] = T.
        carry: Per-tile state, leading axis T; gathered per phase and written back.
        consts: Per-tile constants, leading axis T; gathered per phase.
        totals: State that is not per tile (gradient sums); carried as is.
        is_active: (carry, consts) -> [tiles] bool, the tiles with work left.
        step: (carry, consts, totals, block) -> (carry, totals), one block per tile.

    Returns:
        (carry, totals) after every tile is inactive.
    """
    num_tiles = phases[0][0]
    for j, (tiles, block) in enumerate(phases):
        # A phase ends once the active tiles fit in the next, smaller one.
        floor = phases[j + 1][0] if j + 1 < len(phases) else 0
        if tiles == num_tiles:
            ids, c, k = None, carry, consts
        else:
            # The active tiles first (at most `tiles` of them), then filler
            # tiles, which step as no-ops.
            ids = jnp.argsort(~is_active(carry, consts), stable=True)[:tiles]
            c, k = jax.tree.map(lambda x, ids=ids: x[ids], (carry, consts))

        def cond(state, k=k, floor=floor):
            return jnp.sum(is_active(state[0], k)) > floor

        def body(state, k=k, block=block):
            return step(state[0], k, state[1], block)

        c, totals = jax.lax.while_loop(cond, body, (c, totals))
        if ids is None:
            carry = c
        else:
            carry = jax.tree.map(lambda x, y, ids=ids: x.at[ids].set(y), carry, c)
    return carry, totals


def _block(pos, ends, gaussian_ids, block):
    """List indices of the next block of every tile, validity, Gaussian ids. Each [T, B]."""
    idx = pos[:, None] + jnp.arange(block, dtype=jnp.int32)[None, :]
    valid = idx < ends[:, None]
    gid = gaussian_ids[jnp.clip(idx, 0, gaussian_ids.shape[0] - 1)]
    return idx, valid, gid


def _alpha(px, py, mean, conic, opacity):
    """Per (pixel, intersection) alpha, the keep mask and the geometry. [T, P, B] each."""
    dx = mean[:, None, :, 0] - px[..., None]
    dy = mean[:, None, :, 1] - py[..., None]
    ca, cb, cc = (conic[:, None, :, i] for i in range(3))
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    gauss = jnp.exp(-jnp.maximum(sigma, 0.0))  # sigma < 0 is skipped below
    raw = opacity[:, None, :] * gauss
    alpha = jnp.minimum(MAX_ALPHA, raw)
    keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    return alpha, keep, (dx, dy, ca, cb, cc, gauss, raw)


def _transmittance(alpha, contrib, trans0):
    """T before each contributing intersection and the weights. [T, P, B] each."""
    a = jnp.where(contrib, alpha, 0.0)
    incl = jnp.cumprod(1.0 - a, axis=-1)
    excl = jnp.concatenate([jnp.ones_like(incl[..., :1]), incl[..., :-1]], axis=-1)
    t_before = trans0[..., None] * excl
    return a, t_before, a * t_before


def _forward(means2d, conics, opacities, feats, tile_ranges, gaussian_ids, dims):
    width, height, tile_size, config = dims
    dtype = means2d.dtype
    px, py, inside = _pixel_grid(width, height, tile_size, dtype)
    num_tiles, num_pix = px.shape

    def is_active(carry, consts):
        pos, _, done, _, _ = carry
        return (pos < consts[2]) & ~jnp.all(done, axis=1)

    def step(carry, consts, totals, block):
        pos, trans, done, acc, last = carry
        px, py, ends = consts
        idx, valid, gid = _block(pos, ends, gaussian_ids, block)
        alpha, keep, _ = _alpha(px, py, means2d[gid], conics[gid], opacities[gid])
        kept = keep & valid[:, None, :] & ~done[..., None]
        t_after = trans[..., None] * jnp.cumprod(1.0 - jnp.where(kept, alpha, 0.0), axis=-1)
        stop = kept & (t_after <= MIN_TRANSMITTANCE)
        contrib = kept & (jnp.cumsum(stop, axis=-1) == 0)
        _, _, weight = _transmittance(alpha, contrib, trans)
        acc = acc + jnp.einsum("tpb,tbc->tpc", weight, feats[gid], precision=_HIGHEST)
        # T after the last contributing one (products only decrease along the block).
        trans = jnp.minimum(trans, jnp.min(jnp.where(contrib, t_after, 1.0), axis=-1))
        last = jnp.maximum(last, jnp.max(jnp.where(contrib, idx[:, None, :], -1), axis=-1))
        done = done | jnp.any(stop, axis=-1)
        return (pos + block, trans, done, acc, last), totals

    carry = (
        tile_ranges[:, 0],
        jnp.ones((num_tiles, num_pix), dtype),
        ~inside,  # padding pixels never render (gsplat: done = !inside)
        jnp.zeros((num_tiles, num_pix, feats.shape[-1]), dtype),
        jnp.full((num_tiles, num_pix), -1, jnp.int32),
    )
    consts = (px, py, tile_ranges[:, 1])
    carry, _ = _phased(config.phases(num_tiles), carry, consts, (), is_active, step)
    _, trans, _, acc, last = carry
    return trans, acc, last


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _composite(
    means2d, conics, opacities, features, depths, background, tile_ranges, gaussian_ids, dims
):
    inputs = (means2d, conics, opacities, features, depths, background)
    out, _ = _composite_fwd(*inputs, tile_ranges, gaussian_ids, dims)
    return out


def _composite_fwd(
    means2d, conics, opacities, features, depths, background, tile_ranges, gaussian_ids, dims
):
    width, height, tile_size, _ = dims
    feats = extend_features(features, depths)  # [N, C + 2]
    trans, acc, last = _forward(means2d, conics, opacities, feats, tile_ranges, gaussian_ids, dims)
    image = acc[..., :-2] + trans[..., None] * background
    outputs = (
        _untile(image, width, height, tile_size),
        _untile((1.0 - trans)[..., None], width, height, tile_size),
        _untile(expected_depth(acc)[..., None], width, height, tile_size),
    )
    residuals = (means2d, conics, opacities, feats, background, tile_ranges, gaussian_ids)
    return outputs, residuals + (trans, acc, last)


def _composite_bwd(dims, residuals, cotangents):
    width, height, tile_size, config = dims
    means2d, conics, opacities, feats, background, tile_ranges, gaussian_ids = residuals[:7]
    trans_final, acc, last = residuals[7:]
    v_image, v_alpha, v_depth = cotangents
    dtype = means2d.dtype
    n = means2d.shape[0]
    px, py, _ = _pixel_grid(width, height, tile_size, dtype)
    num_tiles, num_pix = px.shape
    starts = tile_ranges[:, 0]

    g_image = _tile(v_image, width, height, tile_size)  # [T, P, C]
    g_alpha = _tile(v_alpha, width, height, tile_size)[..., 0]  # [T, P]
    g_depth = _tile(v_depth, width, height, tile_size)  # [T, P, 1]
    # Cotangents of the depth and ones channels through depth = acc_z / acc_1.
    w_sum = acc[..., -1:]
    inv = jnp.where(w_sum > 0, 1.0 / jnp.where(w_sum > 0, w_sum, 1.0), 0.0)
    g = jnp.concatenate(
        [g_image, g_depth * inv, -g_depth * expected_depth(acc)[..., None] * inv], axis=-1
    )  # [T, P, C + 2]
    v_background = jnp.einsum("tpc,tp->c", g_image, trans_final, precision=_HIGHEST)
    g_total = jnp.sum(g * acc, axis=-1)  # g . acc, [T, P]
    g_bg = jnp.einsum("tpc,c->tp", g_image, background, precision=_HIGHEST)
    # Terms of dL/da_i shared by every i of a pixel (divided by 1 - a_i below).
    tail = trans_final * (g_bg - g_alpha)
    # Each tile's list up to the last intersection any of its pixels used.
    ends_used = jnp.maximum(jnp.max(last, axis=1) + 1, starts)

    def is_active(carry, consts):
        return carry[0] < consts[2]

    def step(carry, consts, totals, block):
        pos, prefix = carry  # prefix: (g . sum_{k<i} w_k f_k, T_i) per pixel
        px, py, ends, last, g, g_total, tail = consts
        v_geo, v_feats = totals
        idx, valid, gid = _block(pos, ends, gaussian_ids, block)
        mean, conic, opacity, feat = means2d[gid], conics[gid], opacities[gid], feats[gid]
        alpha, keep, geo = _alpha(px, py, mean, conic, opacity)
        dx, dy, ca, cb, cc, gauss, raw = geo
        contrib = keep & valid[:, None, :] & (idx[:, None, :] <= last[..., None])
        a, t_before, weight = _transmittance(alpha, contrib, prefix[..., 1])
        gf = jnp.einsum("tpc,tbc->tpb", g, feat, precision=_HIGHEST)
        q_incl = prefix[..., :1] + jnp.cumsum(weight * gf, axis=-1)
        suffix = g_total[..., None] - q_incl
        v_a = t_before * gf - (suffix + tail[..., None]) / (1.0 - a)
        v_a = jnp.where(contrib, v_a, 0.0)
        v_raw = jnp.where(raw < MAX_ALPHA, v_a, 0.0)  # the 0.999 clamp has no gradient
        v_sigma = -v_raw * raw  # d raw / d sigma = -raw
        rows = jnp.stack(
            [
                jnp.sum(v_sigma * (ca * dx + cb * dy), axis=1),
                jnp.sum(v_sigma * (cb * dx + cc * dy), axis=1),
                jnp.sum(v_sigma * 0.5 * dx * dx, axis=1),
                jnp.sum(v_sigma * dx * dy, axis=1),
                jnp.sum(v_sigma * 0.5 * dy * dy, axis=1),
                jnp.sum(v_raw * gauss, axis=1),
            ],
            axis=-1,
        )  # [T, B, 6]: means2d (2), conics (3), opacity (1)
        feat_rows = jnp.einsum("tpb,tpc->tbc", weight, g, precision=_HIGHEST)  # [T, B, C + 2]
        seg = jnp.where(valid, gid, n).reshape(-1)  # invalid rows dropped
        v_geo = v_geo.at[seg].add(rows.reshape(-1, 6), mode="drop")
        v_feats = v_feats.at[seg].add(feat_rows.reshape(-1, feat_rows.shape[-1]), mode="drop")
        trans_next = prefix[..., 1] * jnp.prod(1.0 - a, axis=-1)
        prefix = jnp.stack([q_incl[..., -1], trans_next], axis=-1)
        return (pos + block, prefix), (v_geo, v_feats)

    prefix0 = jnp.stack([jnp.zeros((num_tiles, num_pix), dtype), jnp.ones_like(px)], axis=-1)
    consts = (px, py, ends_used, last, g, g_total, tail)
    totals = (jnp.zeros((n, 6), dtype), jnp.zeros(feats.shape, dtype))
    phases = config.phases(num_tiles)
    _, (v_geo, v_feats) = _phased(phases, (starts, prefix0), consts, totals, is_active, step)
    return (
        v_geo[:, 0:2],
        v_geo[:, 2:5],
        v_geo[:, 5],
        v_feats[:, :-2],
        v_feats[:, -2],
        v_background,
        None,
        None,
    )


_composite.defvjp(_composite_fwd, _composite_bwd)
