"""Shared test material for tests/splat: seeded scenes and NumPy ground truths.

The NumPy functions are written from gsplat 1.5.3's CUDA sources (not from the
package under test) and use scipy for quaternions, so the package's projection,
binning and compositing are each checked against an independent implementation.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from gshead_jax import splat

ALPHA_THRESHOLD = np.float32(1.0 / 255.0)

# Backends checked against the dense reference. "pallas" runs its Mosaic GPU
# kernels natively on Hopper GPUs and in Pallas' GPU interpreter elsewhere (CI).
BACKENDS = ["xla", "pallas"]


def random_scene(seed: int, n: int, width: int, height: int, channels: int) -> dict:
    """A seeded scene exercising every culling and clamping rule, with n >= 16.

    Mostly ordinary splats in front of the camera (some beyond the image edge),
    plus Gaussians behind the camera, across the near plane, huge (covering the
    image), tiny (eps2d-dominated), nearly opaque (clamped at 0.999, saturating
    pixels), below 1/255 opacity (culled), and far off-image.
    """
    rng = np.random.default_rng(seed)
    z = rng.uniform(2.0, 6.0, n)
    x = rng.uniform(-0.75, 0.75, n) * z
    y = rng.uniform(-0.6, 0.6, n) * z
    means = np.stack([x, y, z], -1)
    scales = np.exp(rng.normal(-2.6, 0.6, (n, 3)))
    opacities = rng.uniform(0.05, 0.95, n)
    k = n // 16  # each special group has k members
    groups = np.split(rng.permutation(n), [k * i for i in range(1, 8)])
    behind, near, huge, tiny, opaque, faint, far_off = groups[:7]
    means[behind, 2] = rng.uniform(-3.0, -0.1, k)
    means[near, 2] = rng.uniform(-0.02, 0.06, k)  # both sides of near = 0.01
    means[near, :2] = rng.uniform(-0.03, 0.03, (k, 2))
    scales[near] = rng.uniform(0.005, 0.05, (k, 3))
    scales[huge] = rng.uniform(1.0, 3.0, (k, 3))
    scales[tiny] = rng.uniform(1e-5, 1e-3, (k, 3))
    opacities[opaque] = rng.uniform(0.995, 1.0, k)
    means[opaque, :2] = rng.uniform(-0.08, 0.08, (k, 2)) * means[opaque, 2:]  # overlapping
    scales[opaque] = rng.uniform(0.15, 0.4, (k, 3))
    opacities[faint] = rng.uniform(0.0, 1.0 / 255.0, k)
    means[far_off, 0] = rng.choice([-1.0, 1.0], k) * rng.uniform(3.0, 10.0, k) * means[far_off, 2]
    quats = rng.normal(size=(n, 4))
    # A slightly rotated camera, non-square focal, off-centre principal point
    # (so the Jacobian clamp limits differ per side). The positions above are
    # camera-space; map them to world space.
    rot = Rotation.from_euler("xyz", rng.uniform(-0.1, 0.1, 3)).as_matrix()
    trans = np.array([0.05, -0.03, 0.5])
    means = (means - trans) @ rot  # R^T (p_c - t), row vectors
    viewmat = np.eye(4)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = trans
    f = 0.9 * width
    K = np.array([[f, 0, 0.47 * width], [0, 1.1 * f, 0.53 * height], [0, 0, 1]])
    f32 = np.float32
    return {
        "means": means.astype(f32),
        "quats": quats.astype(f32),
        "scales": scales.astype(f32),
        "opacities": opacities.astype(f32),
        "features": rng.uniform(0.0, 1.0, (n, channels)).astype(f32),
        "viewmat": viewmat.astype(f32),
        "K": K.astype(f32),
        "background": rng.uniform(0.0, 1.0, channels).astype(f32),
    }


ARGS = ("means", "quats", "scales", "opacities", "features", "viewmat", "K")
GRAD_ARGS = ("means", "quats", "scales", "opacities", "features", "background")


# Compiled functions are cached per (backend, static sizes) and shared by every
# test file, so each configuration compiles once per test session.
@functools.cache
def render_fn(backend, width, height, capacity=None):
    """jit of (arrays in ARGS order, background) -> RasterOutput."""

    def render(arrays, background):
        return splat.rasterize(
            *arrays,
            width=width,
            height=height,
            background=background,
            capacity=capacity,
            backend=backend,
        )

    return jax.jit(render)


def render(backend, scene, width, height, *, background=True, capacity=None):
    """RasterOutput of numpy arrays for a scene dict."""
    bg = scene["background"] if background else None
    out = render_fn(backend, width, height, capacity)([scene[k] for k in ARGS], bg)
    return jax.tree.map(np.asarray, out)


@functools.cache
def vjp_fn(backend, width, height):
    """jit of (scene arrays dict, cotangents (image, alpha, depth)) -> (outputs, grads).

    Grads are a dict over GRAD_ARGS.
    """

    def run(arrays, cotangents):
        def f(*grad_arrays):
            a = dict(arrays, **dict(zip(GRAD_ARGS, grad_arrays)))
            out = splat.rasterize(
                *[a[k] for k in ARGS],
                width=width,
                height=height,
                background=a["background"],
                backend=backend,
            )
            return out.image, out.alpha, out.depth

        outputs, pullback = jax.vjp(f, *[arrays[k] for k in GRAD_ARGS])
        return outputs, dict(zip(GRAD_ARGS, pullback(cotangents)))

    return jax.jit(run)


def random_cotangents(seed, height, width, channels):
    rng = np.random.default_rng(seed)
    return tuple(
        jnp.asarray(rng.normal(size=(height, width, c)).astype(np.float32))
        for c in (channels, 1, 1)
    )


def numpy_project(scene, *, width, height, near=0.01, far=1e10, eps2d=0.3):
    """gsplat 1.5.3's pinhole EWA projection in float64 NumPy.

    Returns a dict: means2d [N, 2], conics [N, 3], depths [N], radii [N, 2]
    (0 = culled), extent [N, 2] (the radii before ceil) and margin [N] (how far
    each Gaussian is from its nearest culling boundary, to skip ties).
    """
    means = scene["means"].astype(np.float64)
    q = scene["quats"].astype(np.float64)
    rot_g = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy wants (x, y, z, w)
    s2 = scene["scales"].astype(np.float64) ** 2
    cov = np.einsum("nij,nj,nkj->nik", rot_g, s2, rot_g)
    vm = scene["viewmat"].astype(np.float64)
    K = scene["K"].astype(np.float64)
    r, t = vm[:3, :3], vm[:3, 3]
    pc = means @ r.T + t
    cov_c = r @ cov @ r.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    z = pc[:, 2]
    zs = np.where(z > 0, z, 1.0)
    # Clamp of x/z, y/z to the field of view + 30% of half of it (Utils.cuh persp_proj).
    lxp = (width - cx) / fx + 0.3 * 0.5 * width / fx
    lxn = cx / fx + 0.3 * 0.5 * width / fx
    lyp = (height - cy) / fy + 0.3 * 0.5 * height / fy
    lyn = cy / fy + 0.3 * 0.5 * height / fy
    tx = zs * np.clip(pc[:, 0] / zs, -lxn, lxp)
    ty = zs * np.clip(pc[:, 1] / zs, -lyn, lyp)
    jac = np.zeros((len(z), 2, 3))
    jac[:, 0, 0] = fx / zs
    jac[:, 0, 2] = -fx * tx / zs**2
    jac[:, 1, 1] = fy / zs
    jac[:, 1, 2] = -fy * ty / zs**2
    cov2d = jac @ cov_c @ jac.transpose(0, 2, 1) + eps2d * np.eye(2)
    conic_m = np.linalg.inv(cov2d)
    m2d = np.stack([fx * pc[:, 0] / zs + cx, fy * pc[:, 1] / zs + cy], -1)
    o = scene["opacities"].astype(np.float64)
    extend = np.minimum(3.33, np.sqrt(2.0 * np.log(np.maximum(o, 1e-30) * 255.0).clip(0)))
    extent = extend[:, None] * np.sqrt(np.stack([cov2d[:, 0, 0], cov2d[:, 1, 1]], -1))
    rad = np.ceil(extent)
    in_depth = (z >= near) & (z <= far)
    on_image = (
        (m2d[:, 0] + rad[:, 0] > 0)
        & (m2d[:, 0] - rad[:, 0] < width)
        & (m2d[:, 1] + rad[:, 1] > 0)
        & (m2d[:, 1] - rad[:, 1] < height)
    )
    visible = in_depth & (o >= 1.0 / 255.0) & (rad.max(-1) > 0) & on_image
    margin = np.min(
        np.abs(
            np.stack(
                [
                    z - near,
                    m2d[:, 0] + rad[:, 0],
                    m2d[:, 0] - rad[:, 0] - width,
                    m2d[:, 1] + rad[:, 1],
                    m2d[:, 1] - rad[:, 1] - height,
                ],
                -1,
            )
        ),
        -1,
    )
    return {
        "means2d": m2d,
        "conics": np.stack([conic_m[:, 0, 0], conic_m[:, 0, 1], conic_m[:, 1, 1]], -1),
        "depths": z,
        "radii": np.where(visible[:, None], rad, 0).astype(np.int32),
        "extent": extent,
        "margin": margin,
    }


def numpy_tile_rects(means2d, radii, *, width, height, tile_size):
    """IntersectTile.cu's tile rectangles [min, max) in float32 NumPy. Each [N] int."""
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    m = np.asarray(means2d, np.float32)
    r = np.asarray(radii).astype(np.float32)
    ts = np.float32(tile_size)
    alive = (np.asarray(radii) > 0).all(-1)
    out = []
    for lo, axis, hi in (
        (True, 0, tiles_x),
        (False, 0, tiles_x),
        (True, 1, tiles_y),
        (False, 1, tiles_y),
    ):
        v = m[:, axis] / ts - r[:, axis] / ts if lo else m[:, axis] / ts + r[:, axis] / ts
        v = np.floor(v) if lo else np.ceil(v)
        out.append(np.where(alive, np.clip(v, 0, hi), 0).astype(np.int64))
    return tuple(out)


def numpy_intersections(proj, *, width, height, tile_size):
    """The (tile, depth, index)-sorted intersection list, as gsplat builds it.

    Returns (tiles [I], gaussian ids [I]) in sorted order.
    """
    x0, x1, y0, y1 = numpy_tile_rects(
        proj["means2d"], proj["radii"], width=width, height=height, tile_size=tile_size
    )
    tiles_x = -(-width // tile_size)
    tiles, gids = [], []
    for g in range(len(x0)):
        for ty in range(y0[g], y1[g]):
            for tx in range(x0[g], x1[g]):
                tiles.append(ty * tiles_x + tx)
                gids.append(g)
    tiles, gids = np.asarray(tiles, np.int64), np.asarray(gids, np.int64)
    depths = np.asarray(proj["depths"], np.float32)
    order = np.lexsort((gids, depths[gids] if len(gids) else gids, tiles))
    return tiles[order], gids[order]


def numpy_render(proj, features, background, *, width, height, tile_size=16, stats=None):
    """gsplat 1.5.3's per-pixel compositing loop, literally, in float32 NumPy.

    Per tile, the tile's sorted Gaussians front to back (RasterizeToPixels3DGSFwd.cu).
    Depth is returned as sum w z / sum w (gsplat's sum w z / (1 - T) up to rounding).
    Returns (image [H, W, C], alpha [H, W, 1], depth [H, W, 1]); when ``stats``
    is a dict, counts pixels that hit the transmittance stop under "stopped".
    """
    f32 = np.float32
    tiles, gids = numpy_intersections(proj, width=width, height=height, tile_size=tile_size)
    tiles_x = -(-width // tile_size)
    m = np.asarray(proj["means2d"], f32)
    con = np.asarray(proj["conics"], f32)
    op = np.asarray(proj["opacities"], f32)
    z = np.asarray(proj["depths"], f32)
    feat = np.asarray(features, f32)
    channels = feat.shape[1]
    image = np.zeros((height, width, channels), f32)
    alpha_out = np.zeros((height, width, 1), f32)
    depth_out = np.zeros((height, width, 1), f32)
    per_tile = {t: gids[tiles == t] for t in np.unique(tiles)}
    for i in range(height):
        for j in range(width):
            tile = (i // tile_size) * tiles_x + j // tile_size
            px, py = f32(j + 0.5), f32(i + 0.5)
            t = f32(1.0)
            acc = np.zeros(channels, f32)
            zw, w_sum = f32(0.0), f32(0.0)
            for g in per_tile.get(tile, ()):
                dx, dy = m[g, 0] - px, m[g, 1] - py
                sigma = f32(0.5) * (con[g, 0] * dx * dx + con[g, 2] * dy * dy) + con[g, 1] * dx * dy
                alpha = min(f32(0.999), op[g] * np.exp(-sigma))
                if sigma < 0 or alpha < ALPHA_THRESHOLD:
                    continue
                next_t = t * (f32(1.0) - alpha)
                if next_t <= f32(1e-4):
                    if stats is not None:
                        stats["stopped"] = stats.get("stopped", 0) + 1
                    break
                w = alpha * t
                acc += feat[g] * w
                zw += z[g] * w
                w_sum += w
                t = next_t
            image[i, j] = acc + t * background
            alpha_out[i, j, 0] = f32(1.0) - t
            depth_out[i, j, 0] = zw / w_sum if w_sum > 0 else 0.0
    return image, alpha_out, depth_out


def max_rel_err(actual, expected) -> float:
    """max |actual - expected| / max(1, max |expected|): relative to the output's scale."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale
