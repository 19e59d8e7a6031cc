"""Landmarks embedded in the mesh surface: a triangle and barycentric weights each.

FLAME's static landmark embedding (``landmark_embedding.npy`` of DECA/EMOCA,
``full_lmk_faces_idx`` / ``full_lmk_bary_coords``: the 68 iBUG points) places
each landmark at fixed barycentric coordinates of one triangle, so landmarks
follow the mesh under any shape, expression and pose (the reference's
``vertices2landmarks``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["vertices_to_landmarks"]


def vertices_to_landmarks(
    vertices: jax.Array, faces: jax.Array, lmk_faces_idx: jax.Array, lmk_bary_coords: jax.Array
) -> jax.Array:
    """Barycentric interpolation of landmark positions on a mesh.

    Args:
        vertices: Mesh vertices. [..., V, 3]
        faces: Triangles. int [F, 3]
        lmk_faces_idx: Triangle of each landmark. int [L]
        lmk_bary_coords: Barycentric weights of each landmark. [L, 3]

    Returns:
        Landmark positions. [..., L, 3]
    """
    if vertices.ndim < 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [..., V, 3], got {vertices.shape}")
    if lmk_bary_coords.shape != lmk_faces_idx.shape + (3,):
        raise ValueError(
            f"lmk_bary_coords must be [L={lmk_faces_idx.shape[0]}, 3], got {lmk_bary_coords.shape}"
        )
    corners = jnp.asarray(faces)[jnp.asarray(lmk_faces_idx)]  # [L, 3]
    tri = vertices[..., corners, :]  # [..., L, 3, 3]
    bary = lmk_bary_coords.astype(vertices.dtype)
    return jnp.einsum("...lkc,lk->...lc", tri, bary, precision=jax.lax.Precision.HIGHEST)
