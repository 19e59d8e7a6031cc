"""Renders synthetic heads: pose the attached Gaussians with FLAME, light them, splat them.

Pure JAX and static-shaped, so one compiled function serves every frame of a
dataset (`render_frame`), and `render_batch` vmaps it over frames on the device
(many frames per call on a GPU).

World units are GAGAvatar's (FLAME metres x `camera.GAGAVATAR_FLAME_SCALE`),
like the tracked data: the cameras a record carries (``viewmat``) see FLAME
vertices scaled by 5. Lighting is Lambertian with a soft wrap (a key and a fill
light plus ambient) on an interpolated vertex normal; it is baked into the
colours, as real footage has it. The background is black (GAGAvatar's matted
crops).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax import camera, flame, splat
from gshead_jax.data import head_gaussians as hg
from gshead_jax.data.head_gaussians import HeadGaussians, face_frames, quat_from_matrix
from gshead_jax.splat import binning

#: Layout of the ``light`` vector: key direction (3), fill direction (3) -- unit
#: vectors from the head towards the lights, in the head's (FLAME) frame -- key
#: strength, fill strength, ambient.
LIGHT_SIZE = 9
_WRAP = 0.3  # wrap lighting: light reaches a little past the terminator (soft skin)
_PRECISION = jax.lax.Precision.HIGHEST
_MAX_CAPACITY_DOUBLINGS = 4


def _quat_mul(a, b):
    """Hamilton products a b of (w, x, y, z) quaternions. [..., 4]"""
    aw, ax, ay, az = jnp.moveaxis(a, -1, 0)
    bw, bx, by, bz = jnp.moveaxis(b, -1, 0)
    return jnp.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def pose_gaussians(model: flame.FlameModel, head: HeadGaussians, params: flame.FlameParams):
    """Places attached Gaussians on the posed mesh (FLAME metres).

    Args:
      model: The head model.
      head: One identity's Gaussians (unbatched). [N]
      params: One frame's FLAME parameters (unbatched).

    Returns:
      means [N, 3], quats [N, 4], scales [N, 3], normals [N, 3] (unit, for shading).
    """
    v = flame.forward(model, params, check=False).vertices
    faces = model.faces
    frames, area2 = face_frames(v, faces, xp=jnp)  # [F, 3, 3], [F]
    tri = v[faces[head.face]]  # [N, 3, 3]
    fr = frames[head.face]  # [N, 3, 3]
    means = jnp.einsum("nk,nkd->nd", head.bary, tri, precision=_PRECISION)
    means = means + jnp.einsum("nij,nj->ni", fr, head.offset, precision=_PRECISION)
    quats = _quat_mul(quat_from_matrix(fr, xp=jnp), head.quat)
    ratio = jnp.sqrt(area2[head.face] / jnp.maximum(head.rest_area, 1e-20))
    grow = jnp.where(head.stretch > 0, ratio, 1.0)[:, None]
    scales = head.scale * jnp.concatenate([grow, grow, jnp.ones_like(grow)], axis=-1)
    # Smooth normals: area-weighted face normals summed at the vertices, interpolated.
    face_n = frames[:, :, 2] * area2[:, None]
    vn = jnp.zeros_like(v).at[faces.reshape(-1)].add(jnp.repeat(face_n, 3, axis=0))
    vn = vn / jnp.maximum(jnp.linalg.norm(vn, axis=-1, keepdims=True), 1e-20)
    smooth_n = jnp.einsum("nk,nkd->nd", head.bary, vn[faces[head.face]], precision=_PRECISION)
    own_n = jnp.einsum("nij,nj->ni", fr, head.normal, precision=_PRECISION)
    normals = jnp.where(head.smooth[:, None] > 0, smooth_n, own_n)
    normals = normals / jnp.maximum(jnp.linalg.norm(normals, axis=-1, keepdims=True), 1e-20)
    return means, quats, scales, normals


def shade(albedo, normals, amount, light):
    """Lit colours: ``albedo * (1 - amount + amount * (ambient + key + fill))``.

    Args:
      albedo: sRGB albedo. [N, 3]
      normals: Unit normals in the head frame. [N, 3]
      amount: How much lighting applies per Gaussian, 0..1. [N]
      light: See `LIGHT_SIZE`. [9]

    Returns:
      Colours in [0, 1]. [N, 3]
    """
    key = jnp.maximum((normals @ light[0:3] + _WRAP) / (1.0 + _WRAP), 0.0)
    fill = jnp.maximum(normals @ light[3:6], 0.0)
    level = light[8] + light[6] * key + light[7] * fill
    factor = 1.0 - amount + amount * level
    return jnp.clip(albedo * factor[:, None], 0.0, 1.0)


def render_frame(
    model: flame.FlameModel,
    head: HeadGaussians,
    params: flame.FlameParams,
    viewmat,
    K,
    light,
    *,
    size: int,
    backend: str = "xla",
    capacity: int | None = None,
):
    """Renders one frame of a synthetic head (jit with the keyword arguments static).

    Args:
      model: The head model.
      head: The identity's Gaussians. [N]
      params: The frame's FLAME parameters.
      viewmat: World (FLAME x 5) to camera, OpenCV. [4, 4]
      K: Intrinsics in pixels. [3, 3]
      light: Lights in the head frame (`LIGHT_SIZE`). [9]
      size: Image side S.
      backend: `splat.rasterize` backend.
      capacity: Tile-intersection capacity (None: splat's default).

    Returns:
      image [S, S, 3] in [0, 1] on black, alpha [S, S, 1], overflow (bool scalar).
    """
    means, quats, scales, normals = pose_gaussians(model, head, params)
    colours = shade(head.albedo, normals, head.shade, light)
    s = camera.GAGAVATAR_FLAME_SCALE
    out = splat.rasterize(
        means * s,
        quats,
        scales * s,
        head.opacity,
        colours,
        viewmat,
        K,
        width=size,
        height=size,
        capacity=capacity,
        backend=backend,
    )
    return jnp.clip(out.image, 0.0, 1.0), out.alpha, out.overflow


@functools.partial(jax.jit, static_argnames=("size", "backend", "capacity"))
def render_jit(model, head, params, viewmat, K, light, *, size, backend="xla", capacity=None):
    """`render_frame`, jitted."""
    return render_frame(
        model, head, params, viewmat, K, light, size=size, backend=backend, capacity=capacity
    )


@functools.partial(jax.jit, static_argnames=("size", "backend", "capacity"))
def render_batch(
    model, heads, params, viewmats, Ks, lights, which=None, *, size, backend="auto", capacity=None
):
    """`render_frame` over a batch of frames: many frames per call on the device.

    XLA backends vmap the frames; the Pallas kernels (Mosaic GPU kernels have no
    batching rule) run them in a device-side loop (`jax.lax.map`), still one call.

    Args:
      model: The head model (shared).
      heads: Each frame's identity Gaussians [B, N], or the distinct ones [U, N]
        with ``which``.
      params: FLAME parameters per frame (leading dim B).
      viewmats: [B, 4, 4]
      Ks: [B, 3, 3]
      lights: [B, 9]
      which: Row of ``heads`` per frame (frames of one identity share its
        Gaussians: less to transfer), or None. int32 [B]
      size: Image side S.
      backend: `splat.rasterize` backend ("auto": Pallas on Hopper GPUs, else XLA).
      capacity: Tile-intersection capacity per frame.

    Returns:
      images [B, S, S, 3], alphas [B, S, S, 1], overflow [B].
    """
    if which is not None:
        heads = jax.tree.map(lambda x: x[which], heads)
    backend = resolve_backend(backend)
    fn = functools.partial(render_frame, size=size, backend=backend, capacity=capacity)
    if backend == "pallas":
        return jax.lax.map(lambda x: fn(model, *x), (heads, params, viewmats, Ks, lights))
    return jax.vmap(fn, in_axes=(None, 0, 0, 0, 0, 0))(model, heads, params, viewmats, Ks, lights)


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``pallas`` where its kernels run (Hopper GPUs), else ``xla``."""
    if backend != "auto":
        return backend
    try:
        from gshead_jax.splat import pallas_gpu
    except ImportError:
        return "xla"
    return "pallas" if pallas_gpu.is_supported() else "xla"


def intrinsics(size: int) -> np.ndarray:
    """GAGAvatar's K at size S (`camera.intrinsics(12, S, S)`), NumPy. [3, 3]"""
    f = camera.GAGAVATAR_FOCAL * size / 2.0
    return np.array([[f, 0, size / 2.0], [0, f, size / 2.0], [0, 0, 1]], np.float32)


def render_states(
    model: flame.FlameModel,
    heads: Sequence[hg.HeadGaussians],
    shapes_states: Sequence[tuple[np.ndarray, Any]],
    viewmats: np.ndarray,
    lights: np.ndarray,
    *,
    size: int,
    backend: str = "xla",
    batch: bool = True,
    owner: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Renders frames given identities, motion states and cameras; retries on overflow.

    Args:
      model: The head model.
      heads: Each frame's Gaussians (equal counts). B x [N]
      shapes_states: Each frame's (shape coefficients, `trajectories.FrameState`).
      viewmats: [B, 4, 4]
      lights: Head-frame lights. [B, 9]
      size: S.
      backend: Rasterizer backend.
      batch: One `render_batch` call, or `render_jit` per frame.
      owner: An object whose ``_capacity`` remembers an enlarged capacity.

    Returns:
      images float32 [B, S, S, 3] in [0, 1], alphas [B, S, S, 1].
    """
    b = len(heads)
    zeros = np.zeros((b, 3), np.float32)
    params = flame.FlameParams(
        shape=np.stack([s for s, _ in shapes_states]),
        expression=np.stack([st.expression for _, st in shapes_states]),
        jaw=np.stack([st.jaw for _, st in shapes_states]),
        eyes=np.stack([st.eyes for _, st in shapes_states]),
        neck=zeros,
        global_pose=zeros,
        translation=zeros,
    )
    K = np.broadcast_to(intrinsics(size), (b, 3, 3))
    distinct, which = [], []  # frames of one identity share its Gaussians
    for h in heads:
        same = [u for u, g in enumerate(distinct) if g is h]
        if not same:
            distinct.append(h)
        which.append(same[0] if same else len(distinct) - 1)
    stacked = hg.stack(distinct) if batch else None
    capacity = getattr(owner, "_capacity", None)
    for _ in range(_MAX_CAPACITY_DOUBLINGS + 1):
        if batch:
            images, alphas, overflow = render_batch(
                model, stacked, params, viewmats, K, lights, np.asarray(which, np.int32),
                size=size, backend=backend, capacity=capacity,
            )  # fmt: skip
        else:
            outs = [
                render_jit(
                    model,
                    heads[j],
                    jax.tree.map(lambda x, j=j: x[j], params),
                    viewmats[j],
                    K[j],
                    lights[j],
                    size=size,
                    backend=backend,
                    capacity=capacity,
                )
                for j in range(b)
            ]
            images, alphas, overflow = (jnp.stack(z) for z in zip(*outs, strict=True))
        if not bool(np.any(overflow)):
            return np.asarray(images), np.asarray(alphas)
        n = heads[0].num
        capacity = 2 * (capacity or binning.default_capacity(n, size, size))
        if owner is not None:
            owner._capacity = capacity
    raise RuntimeError(f"tile-intersection capacity still overflows at {capacity}")
