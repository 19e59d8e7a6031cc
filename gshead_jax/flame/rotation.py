"""Axis-angle rotations (Rodrigues' formula), batched and differentiable everywhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["rodrigues"]

# Below this squared angle the closed form loses precision (and its gradient
# is 0/0 at zero), so a Taylor series takes over; its first dropped terms are
# O(theta^6) ~ 1e-18 relative, below float64 resolution.
_SMALL_ANGLE_SQ = 1e-6


def rodrigues(rotvec: jax.Array) -> jax.Array:
    """Rotation matrices from axis-angle vectors (angle = norm, right-handed).

    ``R = I + a K + b K^2`` with ``K = [r]_x``, ``a = sin(t)/t``,
    ``b = (1 - cos t)/t^2`` and ``t = |r|``. FLAME's / SMPL-X's
    ``batch_rodrigues`` computes the same matrix but adds 1e-8 to the vector
    before normalising; here small angles use a series instead, so the result
    is exact at zero and ``jax.grad`` is finite there.

    Args:
        rotvec: Axis-angle vectors, radians. [..., 3]

    Returns:
        Rotation matrices. [..., 3, 3]
    """
    if rotvec.shape[-1:] != (3,):
        raise ValueError(f"rotvec must be [..., 3], got {rotvec.shape}")
    theta_sq = jnp.sum(rotvec * rotvec, axis=-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # Double-where: keep the closed form's inputs away from 0 so its gradient
    # is finite in the branch that is not selected.
    safe_sq = jnp.where(small, 1.0, theta_sq)
    theta = jnp.sqrt(safe_sq)
    a = jnp.where(small, 1.0 - theta_sq / 6.0 + theta_sq**2 / 120.0, jnp.sin(theta) / theta)
    b = jnp.where(
        small, 0.5 - theta_sq / 24.0 + theta_sq**2 / 720.0, (1.0 - jnp.cos(theta)) / safe_sq
    )
    x, y, z = rotvec[..., 0], rotvec[..., 1], rotvec[..., 2]
    zero = jnp.zeros_like(x)
    k = jnp.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1)
    k = k.reshape(rotvec.shape[:-1] + (3, 3))
    eye = jnp.eye(3, dtype=rotvec.dtype)
    kk = jnp.matmul(k, k, precision=jax.lax.Precision.HIGHEST)
    return eye + a[..., None, None] * k + b[..., None, None] * kk
