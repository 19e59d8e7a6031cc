"""GAGAvatar's source-view lifting plane and the dual-lifting push along the view axis.

GAGAvatar (Chu & Harada, NeurIPS 2024, Sec. 3.2 "dual-lifting") predicts two
Gaussians per DPT feature pixel: each sits on a plane through the world origin
that faces the source camera, and is pushed forward / backward along the camera's
viewing axis by a predicted non-negative distance. The plane is built once per
source image by ``build_points_planes`` (core/data/loader_track.py)::

    x, y = meshgrid(linspace(1, -1, P), linspace(1, -1, P), indexing="xy")
    ray  = R @ [x / f, y / f, 1]        (f = 12, GAGAvatar's normalised focal)
    dir  = R @ [0, 0, 1]
    o    = -R @ T                       (the camera centre)
    plane_points = o + |o . dir| * ray  [P * P, 3], row-major over (y, x)

with ``[R | T]`` GAGAvatar's PyTorch3D-style (x left, y up) transform matrix.
Written for an OpenCV camera (x right, y down, z forward; ``gshead_jax.camera``
converts GAGAvatar's matrices) the same grid is: pixel row ``i`` / column ``j``
of a ``P x P`` grid whose *corner* samples (not pixel centres) lie on the image
border at normalised focal ``f``::

    u_j = linspace(-1, 1, P)[j] / f,   v_i = linspace(-1, 1, P)[i] / f
    plane_points[i * P + j] = C + |C . z| * (u_j * x_axis + v_i * y_axis + z)

where ``x_axis``, ``y_axis``, ``z`` are the camera axes in world coordinates and
``C`` the camera centre. With the camera looking at the origin, every point
satisfies ``point . z = 0``: the plane through the origin facing the camera.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["LiftingPlane", "lift", "lifting_plane"]


class LiftingPlane(NamedTuple):
    """Source-view plane samples.

    Attributes:
      points: Points on the plane, row-major over the P x P grid. [..., P * P, 3]
      dirs: The source camera's viewing axis (unit, world frame). [..., 3]
    """

    points: jnp.ndarray
    dirs: jnp.ndarray


def lifting_plane(viewmat: jnp.ndarray, *, size: int = 296, focal: float = 12.0) -> LiftingPlane:
    """GAGAvatar's ``build_points_planes`` for an OpenCV world-to-camera matrix.

    Args:
      viewmat: World-to-camera rigid transform, OpenCV axes. [..., 4, 4]
      size: Grid side P (GAGAvatar: 296, the DPT output size).
      focal: Focal length in units of the half image width (GAGAvatar: 12).

    Returns:
      A :class:`LiftingPlane` with ``points`` [..., P * P, 3] and ``dirs`` [..., 3].

    Example:
      >>> cam = jnp.eye(4).at[2, 3].set(5.0)  # 5 units in front of the origin
      >>> plane = lifting_plane(cam, size=4)
      >>> plane.points.shape, plane.dirs.shape
      ((16, 3), (3,))
    """
    if viewmat.ndim < 2 or viewmat.shape[-2:] != (4, 4):
        raise ValueError(f"viewmat must be [..., 4, 4], got {tuple(viewmat.shape)}")
    if int(size) != size or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size}")
    rot = viewmat[..., :3, :3]  # rows: camera x, y, z axes in world coordinates
    trans = viewmat[..., :3, 3]
    centre = -jnp.einsum("...ji,...j->...i", rot, trans)  # C = -R^T t
    x_axis, y_axis, z_axis = rot[..., 0, :], rot[..., 1, :], rot[..., 2, :]
    dist = jnp.abs(jnp.sum(centre * z_axis, axis=-1))[..., None, None]  # [..., 1, 1]
    # GAGAvatar samples linspace(1, -1) along its flipped x / y axes, i.e.
    # linspace(-1, 1) along OpenCV's; corners included (align-corners grid).
    g = jnp.asarray(np.linspace(-1.0, 1.0, size, dtype=np.float32) / np.float32(focal))
    g = g.astype(viewmat.dtype)
    v, u = jnp.meshgrid(g, g, indexing="ij")  # [P, P]: v varies along rows, u along columns
    u = u.reshape(-1, 1)
    v = v.reshape(-1, 1)
    rays = u * x_axis[..., None, :] + v * y_axis[..., None, :] + z_axis[..., None, :]
    points = centre[..., None, :] + dist * rays  # [..., P * P, 3]
    return LiftingPlane(points=points, dirs=z_axis)


def lift(plane: LiftingPlane, distances: jnp.ndarray, sign: float) -> jnp.ndarray:
    """Push plane points along the viewing axis: GAGAvatar's dual lifting.

    GAGAvatar (models.py, ``forward``): ``xyz_l0 = plane_points + d0 * dirs``
    and ``xyz_l1 = plane_points - d1 * dirs`` with ``d = sigmoid(...)`` in [0, 1].

    Args:
      plane: The source plane, ``points`` [..., N, 3], ``dirs`` [..., 3].
      distances: Non-negative offsets per point. [..., N, 1]
      sign: +1 pushes away from the source camera (GAGAvatar's ``gs_generator_l0``),
        -1 towards it (``gs_generator_l1``).

    Returns:
      The lifted points. [..., N, 3]
    """
    if distances.shape[-1:] != (1,) or distances.shape[:-1] != plane.points.shape[:-1]:
        raise ValueError(
            f"distances must be [..., N, 1] matching plane.points {tuple(plane.points.shape)}, "
            f"got {tuple(distances.shape)}"
        )
    return plane.points + sign * distances * plane.dirs[..., None, :]
