"""Tile binning: the (tile, depth)-sorted intersection list of static capacity.

gsplat 1.5.3 (``IntersectTile.cu``) writes one 64-bit key ``tile << 32 | depth
bits`` per (Gaussian, touched tile) and radix-sorts them; XLA has no 64-bit keys
without x64, so this module gets the same order in two cheap sorts:

1. sort the N Gaussians by (depth, index) -- a small sort;
2. lay out each Gaussian's tiles in that depth order (per-Gaussian tile counts,
   exclusive cumsum offsets, scatter + cumulative max into a static ``capacity``
   list), then one *stable* ``lax.sort`` on the int32 tile key.

The result is ordered by (tile, depth, Gaussian index): exactly gsplat's order
(its radix sort is stable over an index-ordered input, so depth ties go to the
lower index). Per-tile ranges come from a ``searchsorted`` of the sorted keys.

Because the list is laid out in depth order before the tile sort, a capacity
that is too small drops the *deepest* intersections; ``overflow`` reports it and
the caller must not trust the image. Any capacity >= the true count gives the
same list prefix, hence the same image.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gshead_jax.splat.project import Projection

# default_capacity: intersections budgeted per Gaussian and per tile (see its docstring).
_CAPACITY_PER_GAUSSIAN = 8
_CAPACITY_PER_TILE = 1024
_CAPACITY_ROUND = 1024


class Bins(NamedTuple):
    """The sorted tile-intersection list.

    Attributes:
        tile_ranges: (start, end) of each tile's slice of ``gaussian_ids``, tiles
            row-major (ty * tiles_x + tx). [T, 2] int32
        gaussian_ids: Gaussian index of each intersection, sorted by (tile, depth,
            index); entries past the last range are padding (value 0). [capacity] int32
        num_intersections: The true number of intersections (may exceed capacity;
            saturates at 2**31 - 1). int32 scalar
        overflow: True when ``num_intersections > capacity``. bool scalar
    """

    tile_ranges: jax.Array
    gaussian_ids: jax.Array
    num_intersections: jax.Array
    overflow: jax.Array


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """(tiles_x, tiles_y): whole tiles covering the image (rendering.py:632-633)."""
    return -(-width // tile_size), -(-height // tile_size)


def tile_rects(
    means2d: jax.Array, radii: jax.Array, *, width: int, height: int, tile_size: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Tile rectangles [min, max) each Gaussian touches, as gsplat's isect code computes them.

    IntersectTile.cu:55-77: tile-space centre and radius, floor/ceil, clamped to
    the grid; a Gaussian with a zero radius touches nothing. The reference
    renderer uses this same rule for its pixel membership.

    Args:
        means2d: Pixel-space centres. [N, 2]
        radii: Integer radii, 0 = culled. [N, 2]
        width: Image width in pixels.
        height: Image height in pixels.
        tile_size: Tile edge in pixels.

    Returns:
        (tx_min, tx_max, ty_min, ty_max), each [N] int32; an empty rectangle
        (min == max) for culled Gaussians.
    """
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    m = jax.lax.stop_gradient(means2d)
    rad = radii.astype(m.dtype)
    ts = float(tile_size)
    tile_x, tile_y = m[:, 0] / ts, m[:, 1] / ts
    tile_rx, tile_ry = rad[:, 0] / ts, rad[:, 1] / ts
    alive = (radii[:, 0] > 0) & (radii[:, 1] > 0)

    def clamp(v, hi):
        v = jnp.clip(v, 0, hi).astype(jnp.int32)
        return jnp.where(alive, v, 0)

    return (
        clamp(jnp.floor(tile_x - tile_rx), tiles_x),
        clamp(jnp.ceil(tile_x + tile_rx), tiles_x),
        clamp(jnp.floor(tile_y - tile_ry), tiles_y),
        clamp(jnp.ceil(tile_y + tile_ry), tiles_y),
    )


def default_capacity(num_gaussians: int, width: int, height: int, tile_size: int = 16) -> int:
    """The static intersection capacity used when ``rasterize(capacity=None)``.

    Rule: ``min(N * T, 8 * N + 1024 * T)`` rounded up to a multiple of 1024, with
    T the number of tiles. ``N * T`` is the most intersections possible (every
    Gaussian on every tile), so scenes with few Gaussians never overflow. The
    sum covers the measured benchmark scenes (docs/splat.md) with 1.5-1.9x
    headroom: 6.5-7.9 intersections per Gaussian for the dense heads, and up to
    ~800 per tile (40 per Gaussian) for the 20k head of large splats. It is not
    larger because the intersection sort costs time in proportion to the
    capacity. Overflow is always reported; a scene that needs more, or a hot
    loop that wants a tighter list, passes ``capacity`` explicitly.

    Args:
        num_gaussians: N.
        width: Image width in pixels.
        height: Image height in pixels.
        tile_size: Tile edge in pixels.

    Returns:
        The capacity (>= 1).
    """
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    num_tiles = tiles_x * tiles_y
    cap = min(
        num_gaussians * num_tiles,
        _CAPACITY_PER_GAUSSIAN * num_gaussians + _CAPACITY_PER_TILE * num_tiles,
    )
    return max(1, -(-cap // _CAPACITY_ROUND) * _CAPACITY_ROUND)


def bin_gaussians(
    proj: Projection, *, width: int, height: int, tile_size: int, capacity: int
) -> Bins:
    """Builds the (tile, depth)-sorted intersection list of static ``capacity``.

    Args:
        proj: Output of ``project``. Uses means2d, radii and depths.
        width: Image width in pixels.
        height: Image height in pixels.
        tile_size: Tile edge in pixels.
        capacity: Static length of ``gaussian_ids``.

    Returns:
        The ``Bins``.
    """
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    num_tiles = tiles_x * tiles_y
    n = proj.means2d.shape[0]
    if n == 0:  # static: an empty list
        return Bins(
            tile_ranges=jnp.zeros((num_tiles, 2), jnp.int32),
            gaussian_ids=jnp.zeros((capacity,), jnp.int32),
            num_intersections=jnp.zeros((), jnp.int32),
            overflow=jnp.zeros((), bool),
        )
    tx_min, tx_max, ty_min, ty_max = tile_rects(
        proj.means2d, proj.radii, width=width, height=height, tile_size=tile_size
    )
    rect_w = tx_max - tx_min
    counts = rect_w * (ty_max - ty_min)  # [N] int32

    # 1. Gaussians in (depth, index) order. Culled Gaussians have zero counts,
    #    so where they land does not matter.
    depths = jax.lax.stop_gradient(proj.depths)
    # One key + stable (not two keys): the same order, and XLA on GPU can use a
    # radix sort for a single-key (key, value) sort.
    _, order = jax.lax.sort((depths, jnp.arange(n, dtype=jnp.int32)), num_keys=1, is_stable=True)
    counts_o = counts[order]

    # 2. Exclusive offsets in that order. The true total in float32 as well, to
    #    detect int32 wrap-around of absurd scenes.
    ends = jnp.cumsum(counts_o)
    starts = ends - counts_o
    total_f = jnp.sum(counts_o.astype(jnp.float32))
    wrapped = total_f >= 2.0**31 - 1
    total = jnp.where(wrapped, jnp.int32(2**31 - 1), ends[-1])

    # Scatter each (depth-ordered) Gaussian's position at its first slot and fill
    # the others with a running max: slot -> position in depth order.
    pos = jnp.arange(n, dtype=jnp.int32)
    first = jnp.where((counts_o > 0) & ~wrapped, starts, capacity)
    owner = jnp.zeros((capacity,), jnp.int32).at[first].max(pos, mode="drop")
    owner = jax.lax.cummax(owner)
    slot = jnp.arange(capacity, dtype=jnp.int32)
    valid = slot < jnp.where(wrapped, 0, total)
    gid = order[owner]
    local = slot - starts[owner]  # index inside the Gaussian's rectangle
    w = jnp.maximum(rect_w[gid], 1)
    tile = (ty_min[gid] + local // w) * tiles_x + tx_min[gid] + local % w
    tile = jnp.where(valid, tile, num_tiles)  # padding sorts past every tile
    gid = jnp.where(valid, gid, 0)

    # 3. One stable sort on the tile key keeps the depth order inside each tile.
    tile_sorted, gid_sorted = jax.lax.sort((tile, gid), num_keys=1, is_stable=True)
    bounds = jnp.searchsorted(
        tile_sorted, jnp.arange(num_tiles + 1, dtype=jnp.int32), side="left", method="scan_unrolled"
    ).astype(jnp.int32)
    tile_ranges = jnp.stack([bounds[:-1], bounds[1:]], axis=-1)
    return Bins(
        tile_ranges=tile_ranges,
        gaussian_ids=gid_sorted,
        num_intersections=total,
        overflow=total > capacity,
    )
