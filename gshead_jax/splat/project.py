"""EWA projection of 3D Gaussians to screen space, as gsplat 1.5.3 does it.

Reproduces ``projection_ewa_3dgs_fused_fwd_kernel`` (gsplat v1.5.3,
``gsplat/cuda/csrc/ProjectionEWA3DGSFused.cu``) for a pinhole camera with
``packed=False``: quaternion + scale -> covariance, world -> camera, the
perspective Jacobian with its clamped lateral limits, the ``eps2d`` screen blur,
the conic (inverse 2D covariance), near/far culling, the opacity-aware radius
and the off-image cull. docs/splat.md lists every rule with its source line.

Culled Gaussians get ``radii == 0`` and zeros elsewhere; every intermediate is
computed on "safe" values so that gradients of culled Gaussians are exactly
zero instead of NaN.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

# gsplat v1.5.3 Common.h:54, ALPHA_THRESHOLD (1.f / 255.f).
ALPHA_THRESHOLD = 1.0 / 255.0
# ProjectionEWA3DGSFused.cu:164, the cap of the opacity-aware extend (in sigmas).
MAX_EXTEND = 3.33
# Utils.cuh:516-519, the Jacobian's lateral clamp: 30% of the half field of view
# beyond the image border.
_FOV_MARGIN = 0.3


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """float32-exact matmul: JAX's default on GPUs is TF32 (10-bit mantissa), which
    moves radii by a pixel and images by ~1e-4 relative (measured on an H200)."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


class Projection(NamedTuple):
    """Screen-space Gaussians (the interface between projection and compositing).

    Attributes:
        means2d: Pixel-space centres (x, y). [N, 2]
        conics: Inverse 2D covariance (a, b, c): sigma = 0.5 (a dx^2 + c dy^2) + b dx dy. [N, 3]
        depths: Camera-space z. [N]
        radii: Integer pixel half-extents (x, y) of the bounding box; 0 = culled. [N, 2] int32
        opacities: The opacities, passed through (gsplat's "classic" mode). [N]
    """

    means2d: jax.Array
    conics: jax.Array
    depths: jax.Array
    radii: jax.Array
    opacities: jax.Array


def quat_to_rotmat(quats: jax.Array) -> jax.Array:
    """Rotation matrices of (w, x, y, z) quaternions, normalised first (Utils.cuh:142-164).

    A quaternion of norm at most the dtype's epsilon (zero included) gives the identity
    and a zero gradient instead of NaN: the norm is only taken of the others (a
    ``where`` on both sides, so that no infinite derivative reaches the masked ones).

    Args:
        quats: Quaternions (w, x, y, z), any norm. [..., 4]

    Returns:
        Rotation matrices. [..., 3, 3]
    """
    sq = jnp.sum(quats * quats, axis=-1, keepdims=True)
    ok = sq > jnp.finfo(quats.dtype).eps ** 2
    unit = quats * jax.lax.rsqrt(jnp.where(ok, sq, jnp.ones_like(sq)))
    q = jnp.where(ok, unit, jnp.asarray([1, 0, 0, 0], quats.dtype))
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def covariance(quats: jax.Array, scales: jax.Array) -> jax.Array:
    """World covariances R S S^T R^T from rotations and linear scales (Utils.cuh:191-205).

    Args:
        quats: Quaternions (w, x, y, z). [N, 4]
        scales: Linear standard deviations along the local axes. [N, 3]

    Returns:
        Covariance matrices. [N, 3, 3]
    """
    m = quat_to_rotmat(quats) * scales[..., None, :]  # R @ diag(s), [N, 3, 3]
    return _matmul(m, jnp.swapaxes(m, -1, -2))


def project(
    means: jax.Array,
    quats: jax.Array,
    scales: jax.Array,
    opacities: jax.Array,
    viewmat: jax.Array,
    K: jax.Array,
    *,
    width: int,
    height: int,
    near: float,
    far: float,
    eps2d: float,
) -> Projection:
    """Projects 3D Gaussians to screen space with gsplat 1.5.3's pinhole EWA rules.

    Differentiable by autodiff in every float input; radii are integers (no
    gradient). Shapes are not checked here (see ``api.rasterize``).

    Args:
        means: World-space centres. [N, 3]
        quats: Rotations (w, x, y, z), normalised here. [N, 4]
        scales: Linear standard deviations. [N, 3]
        opacities: Opacities in [0, 1]; below 1/255 the Gaussian is culled. [N]
        viewmat: World -> camera transform, OpenCV axes. [4, 4]
        K: Pinhole intrinsics in pixels. [3, 3]
        width: Image width in pixels.
        height: Image height in pixels.
        near: Gaussians with camera z < near are culled.
        far: Gaussians with camera z > far are culled.
        eps2d: Screen-space blur added to the 2D covariance diagonal, px^2.

    Returns:
        The ``Projection`` (culled Gaussians: radii 0 and zeros elsewhere).
    """
    dtype = means.dtype
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]

    # ProjectionEWA3DGSFused.cu:70-76: camera-space centre, near/far cull on z.
    mean_c = _matmul(means, rot.T) + trans  # [N, 3]
    z = mean_c[:, 2]
    in_depth = (z >= near) & (z <= far)
    z_safe = jnp.where(in_depth, z, jnp.ones_like(z))
    x, y = mean_c[:, 0], mean_c[:, 1]

    cov_c = _matmul(_matmul(rot, covariance(quats, scales)), rot.T)  # [N, 3, 3]

    # Utils.cuh:498-537 persp_proj: the Jacobian uses x/z, y/z clamped to 1.3x the
    # half field of view (for a centred principal point), the mean does not.
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + _FOV_MARGIN * tan_fovx
    lim_x_neg = cx / fx + _FOV_MARGIN * tan_fovx
    lim_y_pos = (height - cy) / fy + _FOV_MARGIN * tan_fovy
    lim_y_neg = cy / fy + _FOV_MARGIN * tan_fovy
    rz = 1.0 / z_safe
    rz2 = rz * rz
    tx = z_safe * jnp.minimum(lim_x_pos, jnp.maximum(-lim_x_neg, x * rz))
    ty = z_safe * jnp.minimum(lim_y_pos, jnp.maximum(-lim_y_neg, y * rz))
    zero = jnp.zeros_like(z)
    jac = jnp.stack(
        [
            jnp.stack([fx * rz, zero, -fx * tx * rz2], axis=-1),
            jnp.stack([zero, fy * rz, -fy * ty * rz2], axis=-1),
        ],
        axis=-2,
    )  # [N, 2, 3]
    cov2d = _matmul(_matmul(jac, cov_c), jnp.swapaxes(jac, -1, -2))  # [N, 2, 2]
    mean2d = jnp.stack([fx * x * rz + cx, fy * y * rz + cy], axis=-1)

    # Utils.cuh:381-388 add_blur, then ProjectionEWA3DGSFused.cu:155 culls det <= 0.
    cov_a = cov2d[:, 0, 0] + eps2d
    cov_b = cov2d[:, 0, 1]
    cov_c2 = cov2d[:, 1, 1] + eps2d
    det = cov_a * cov_c2 - cov_b * cov_b
    det_ok = det > 0
    # glm::inverse of a 2x2 multiplies by the reciprocal determinant.
    inv_det = 1.0 / jnp.where(det_ok, det, jnp.ones_like(det))
    conics = jnp.stack([cov_c2 * inv_det, -cov_b * inv_det, cov_a * inv_det], axis=-1)

    # ProjectionEWA3DGSFused.cu:164-184: opacity-aware extend (arXiv 2402.00525,
    # B.2), per-axis radius from the blurred covariance diagonal. Integer output,
    # so computed on stopped gradients.
    o = jax.lax.stop_gradient(opacities)
    opaque_enough = o >= ALPHA_THRESHOLD
    log_ratio = jnp.log(jnp.where(opaque_enough, o, jnp.ones_like(o)) / ALPHA_THRESHOLD)
    extend = jnp.minimum(MAX_EXTEND, jnp.sqrt(2.0 * jnp.maximum(log_ratio, 0.0)))
    var_x = jnp.maximum(jax.lax.stop_gradient(cov_a), 0.0)
    var_y = jnp.maximum(jax.lax.stop_gradient(cov_c2), 0.0)
    radius_x = jnp.ceil(extend * jnp.sqrt(var_x))
    radius_y = jnp.ceil(extend * jnp.sqrt(var_y))

    # ProjectionEWA3DGSFused.cu:186-198: radius_clip = 0 cull, then off-image cull.
    m2 = jax.lax.stop_gradient(mean2d)
    on_image = ~(
        (m2[:, 0] + radius_x <= 0)
        | (m2[:, 0] - radius_x >= width)
        | (m2[:, 1] + radius_y <= 0)
        | (m2[:, 1] - radius_y >= height)
    )
    visible = in_depth & det_ok & opaque_enough & ((radius_x > 0) | (radius_y > 0)) & on_image

    radii = jnp.where(visible[:, None], jnp.stack([radius_x, radius_y], -1), 0).astype(jnp.int32)
    vis_f = visible.astype(dtype)
    return Projection(
        means2d=mean2d * vis_f[:, None],
        conics=conics * vis_f[:, None],
        depths=z * vis_f,
        radii=radii,
        opacities=opacities,
    )
