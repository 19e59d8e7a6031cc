"""RAR's surface anchors: fixed barycentric samples on FLAME's faces, and how they ride it.

Every RAR Gaussian is anchored on the FLAME template surface (Ye et al. 2025, Fig. 1:
"the positions of the static part are proposed by a mesh of FLAME"). Anchors are chosen
once, from the template alone, so they are the same for every identity:

* **UV sampling** (``sample_anchors``): the texel centres of a square raster of FLAME's
  UV layout (``vt``/``ft``) that fall inside a UV triangle, each giving (face,
  barycentric); the raster is the smallest that covers at least the requested count,
  and exactly that many texels are kept by even thinning of the row-major list. UV
  density follows the UV layout, which gives the face more samples than the scalp, as
  texture maps do. A model without UVs falls back to area-uniform samples (seeded).
* **Static / dynamic split**: the ``num_dynamic`` anchors where FLAME itself moves most
  under the control signal (unit expression coefficients, jaw and eye skinning) are
  dynamic (mouth, jaw, eyes, brows); the rest are static. Static anchors come first.

``carry`` places anchors on a posed mesh: the barycentric point of its posed triangle
plus an offset along the triangle normal, with the triangle's local frame (tangent along
the first edge, normal, bitangent) for rotating local quaternions and offsets. That is
GaussianAvatars' (Qian et al. 2024) triangle binding without the area scaling: RAR's
static part is carried rigidly.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax.flame import FlameModel

__all__ = [
    "SurfaceAnchors",
    "carry",
    "expressiveness",
    "matrix_to_quat",
    "quat_multiply",
    "sample_anchors",
    "triangle_frames",
]

_HIGHEST = jax.lax.Precision.HIGHEST
_MIN_AREA = 1e-12  # m^2: triangles below this have no usable frame and get no anchor


@flax.struct.dataclass
class SurfaceAnchors:
    """Anchors on the FLAME surface (a pytree: pass it to jitted code as an argument).

    Attributes:
        vertex_index: The anchor triangle's vertex ids (``faces[face_index]``). int32 [N, 3]
        face_index: The anchor triangle. int32 [N]
        bary: Barycentric coordinates in that triangle. [N, 3]
        uv: UV coordinates (the texel centre; uniform-sample UVs without a layout). [N, 2]
        template: Position on the template mesh, FLAME metres. [N, 3]
        num_static: Static anchors (the first ``num_static``); the rest are dynamic.
    """

    vertex_index: jax.Array
    face_index: jax.Array
    bary: jax.Array
    uv: jax.Array
    template: jax.Array
    num_static: int = flax.struct.field(pytree_node=False)

    @property
    def num_anchors(self) -> int:
        return int(self.bary.shape[0])

    @property
    def num_dynamic(self) -> int:
        return self.num_anchors - self.num_static


def _face_areas(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    p = verts[faces]
    return 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=-1)


def _uv_raster(vt: np.ndarray, ft: np.ndarray, usable: np.ndarray, res: int):
    """Texel centres inside UV triangles of a res x res raster: (face, bary, uv), row-major.

    A texel covered by several (overlapping) UV triangles goes to the lowest face id.
    """
    tri = vt[ft].astype(np.float64) * res - 0.5  # texel-centre coordinates, [F, 3, 2]
    faces = np.nonzero(usable)[0]
    tri = tri[faces]
    x0 = np.clip(np.ceil(tri[..., 0].min(1)), 0, res - 1).astype(np.int64)
    x1 = np.clip(np.floor(tri[..., 0].max(1)), 0, res - 1).astype(np.int64)
    y0 = np.clip(np.ceil(tri[..., 1].min(1)), 0, res - 1).astype(np.int64)
    y1 = np.clip(np.floor(tri[..., 1].max(1)), 0, res - 1).astype(np.int64)
    nx, ny = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    counts = nx * ny
    owner = np.repeat(np.arange(len(faces)), counts)  # one row per (triangle, bbox texel)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    px = x0[owner] + local % nx[owner]
    py = y0[owner] + local // nx[owner]
    a, b, c = tri[owner, 0], tri[owner, 1], tri[owner, 2]
    e1, e2, d = b - a, c - a, np.stack([px, py], -1) - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        l1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
        l2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
    l0 = 1.0 - l1 - l2
    eps = 1e-9
    inside = (np.abs(det) > 1e-12) & (l0 >= -eps) & (l1 >= -eps) & (l2 >= -eps)
    texel = (py * res + px)[inside]
    face = faces[owner[inside]]
    bary = np.clip(np.stack([l0, l1, l2], -1)[inside], 0.0, 1.0)
    bary /= bary.sum(-1, keepdims=True)
    # First (lowest face id) owner of each texel, then row-major texel order.
    order = np.lexsort((face, texel))
    texel, face, bary = texel[order], face[order], bary[order]
    first = np.ones(len(texel), bool)
    first[1:] = texel[1:] != texel[:-1]
    texel, face, bary = texel[first], face[first], bary[first]
    uv = (np.stack([texel % res, texel // res], -1) + 0.5) / res
    return face, bary, uv


def _uniform_samples(verts, faces, usable, num, seed):
    rng = np.random.default_rng(seed)
    area = _face_areas(verts, faces) * usable
    face = np.sort(rng.choice(len(faces), size=num, p=area / area.sum()))
    r1, r2 = rng.random(num), rng.random(num)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], -1)
    uv = np.stack([r1, r2], -1)  # no UV layout: a placeholder in [0, 1)^2
    return face, bary, uv


def expressiveness(model: FlameModel) -> np.ndarray:
    """How much FLAME moves each vertex under the control signal (expression, jaw, eyes).

    The root-sum-square over expression components of each vertex's blendshape
    displacement, relative to its maximum over the mesh, plus the vertex's skinning
    weights on the jaw and both eye joints (1 = rotates fully with them).

    Args:
        model: The head model.

    Returns:
        A score per vertex, >= 0. [V]
    """
    exprdirs = np.asarray(model.exprdirs, np.float64)
    expr = np.sqrt(np.sum(exprdirs**2, axis=(1, 2)))
    expr = expr / max(float(expr.max()), 1e-30)
    weights = np.asarray(model.lbs_weights, np.float64)
    return expr + weights[:, 2:5].sum(-1)  # joints: global, neck, jaw, left eye, right eye


def sample_anchors(
    model: FlameModel, num_anchors: int, num_dynamic: int, *, seed: int = 0
) -> SurfaceAnchors:
    """Fixed anchors on the template: UV-raster samples, dynamic ones where FLAME moves most.

    Deterministic: the same model and counts always give the same anchors (``seed`` is
    used only without a UV layout).

    Args:
        model: The head model (its template, faces, UVs, blendshapes, skinning weights).
        num_anchors: Total anchor count N.
        num_dynamic: How many of them are dynamic, 0 <= num_dynamic <= N.
        seed: Seed of the area-uniform fallback.

    Returns:
        ``SurfaceAnchors`` with the static anchors first.

    Example:
        >>> anchors = sample_anchors(flame.standin(), 80_000, 20_000)
        >>> anchors.num_static  # 60000
    """
    if not isinstance(model, FlameModel):
        raise TypeError(f"model must be a FlameModel, got {type(model).__name__}")
    for name, value in (("num_anchors", num_anchors), ("num_dynamic", num_dynamic)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if num_anchors < 1:
        raise ValueError(f"num_anchors must be >= 1, got {num_anchors}")
    if not 0 <= num_dynamic <= num_anchors:
        raise ValueError(
            f"num_dynamic must be in [0, num_anchors={num_anchors}], got {num_dynamic}"
        )
    verts = np.asarray(model.v_template, np.float64)
    faces = np.asarray(model.faces, np.int64)
    usable = _face_areas(verts, faces) > _MIN_AREA
    if model.vt is not None:
        vt, ft = np.asarray(model.vt, np.float64), np.asarray(model.ft, np.int64)
        # Start from the resolution whose texel count matches N at the UV layout's
        # coverage, grow by 5 % until enough texels are covered.
        tri = vt[ft[usable]]
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
        res = max(4, int(np.ceil(np.sqrt(num_anchors / max(min(uv_area, 1.0), 1e-3)))))
        while True:
            face, bary, uv = _uv_raster(vt, ft, usable, res)
            if len(face) >= num_anchors:
                break
            if res > 16384:
                raise ValueError(
                    f"the UV layout covers too little area for {num_anchors} anchors "
                    f"({len(face)} texels at {res}^2)"
                )
            res = int(np.ceil(res * 1.05))
        keep = np.round(np.linspace(0, len(face) - 1, num_anchors)).astype(np.int64)
        face, bary, uv = face[keep], bary[keep], uv[keep]
    else:
        face, bary, uv = _uniform_samples(verts, faces, usable, num_anchors, seed)

    vidx = faces[face]
    score = np.einsum("nk,nk->n", expressiveness(model)[vidx], bary)
    # Stable: among equal scores the raster order decides.
    dynamic = np.zeros(num_anchors, bool)
    dynamic[np.argsort(-score, kind="stable")[:num_dynamic]] = True
    order = np.concatenate([np.nonzero(~dynamic)[0], np.nonzero(dynamic)[0]])
    face, bary, uv, vidx = face[order], bary[order], uv[order], vidx[order]
    template = np.einsum("nk,nkc->nc", bary, verts[vidx])
    dtype = np.float32
    return SurfaceAnchors(
        vertex_index=jnp.asarray(vidx, jnp.int32),
        face_index=jnp.asarray(face, jnp.int32),
        bary=jnp.asarray(bary, dtype),
        uv=jnp.asarray(uv, dtype),
        template=jnp.asarray(template, dtype),
        num_static=int(num_anchors - num_dynamic),
    )


def _normalize(v: jax.Array) -> jax.Array:
    tiny = jnp.finfo(v.dtype).tiny
    return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, -1, keepdims=True), tiny))


def triangle_frames(corners: jax.Array) -> jax.Array:
    """Orthonormal frames of triangles: columns (tangent, bitangent, normal).

    Tangent = the first edge v1 - v0 normalised, normal = (v1 - v0) x (v2 - v0)
    normalised (outwards for counter-clockwise faces), bitangent = normal x tangent.

    Args:
        corners: Triangle corners v0, v1, v2. [..., 3, 3]

    Returns:
        Rotation matrices (local -> world). [..., 3, 3]
    """
    e1 = corners[..., 1, :] - corners[..., 0, :]
    e2 = corners[..., 2, :] - corners[..., 0, :]
    t = _normalize(e1)
    n = _normalize(jnp.cross(e1, e2))
    # Re-orthogonalised: for slivers the float32 cross product is not quite normal to e1.
    n = _normalize(n - jnp.sum(n * t, -1, keepdims=True) * t)
    b = jnp.cross(n, t)
    return jnp.stack([t, b, n], axis=-1)


def matrix_to_quat(rot: jax.Array) -> jax.Array:
    """Unit quaternions (w, x, y, z) of rotation matrices, stable near every angle.

    Picks, per matrix, the largest of |w|, |x|, |y|, |z| from the diagonal and derives
    the other components from the off-diagonal sums/differences (Shepperd 1978);
    branch-free, so gradients stay finite. The sign is chosen with the picked
    component positive (q and -q are the same rotation).

    Args:
        rot: Rotation matrices. [..., 3, 3]

    Returns:
        Quaternions. [..., 4]
    """
    m = rot
    d0, d1, d2 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    four_sq = jnp.stack(
        [1 + d0 + d1 + d2, 1 + d0 - d1 - d2, 1 - d0 + d1 - d2, 1 - d0 - d1 + d2], -1
    )  # 4 w^2, 4 x^2, 4 y^2, 4 z^2
    # Clamped so the unpicked candidates have finite values and gradients.
    mag = jnp.sqrt(jnp.maximum(four_sq, 1e-12))  # 2|w|, 2|x|, 2|y|, 2|z|
    sw = m[..., 2, 1] - m[..., 1, 2]  # 4 w x
    sx = m[..., 0, 2] - m[..., 2, 0]  # 4 w y
    sy = m[..., 1, 0] - m[..., 0, 1]  # 4 w z
    xy = m[..., 1, 0] + m[..., 0, 1]  # 4 x y
    xz = m[..., 0, 2] + m[..., 2, 0]  # 4 x z
    yz = m[..., 2, 1] + m[..., 1, 2]  # 4 y z
    cands = jnp.stack(
        [
            jnp.stack([four_sq[..., 0], sw, sx, sy], -1) / (2 * mag[..., 0:1]),
            jnp.stack([sw, four_sq[..., 1], xy, xz], -1) / (2 * mag[..., 1:2]),
            jnp.stack([sx, xy, four_sq[..., 2], yz], -1) / (2 * mag[..., 2:3]),
            jnp.stack([sy, xz, yz, four_sq[..., 3]], -1) / (2 * mag[..., 3:4]),
        ],
        -2,
    )  # [..., 4 candidates, 4]
    pick = jax.nn.one_hot(jnp.argmax(four_sq, -1), 4, dtype=m.dtype)
    q = jnp.einsum("...c,...cq->...q", pick, cands, precision=_HIGHEST)
    return q * jax.lax.rsqrt(jnp.maximum(jnp.sum(q * q, -1, keepdims=True), 1e-30))


def quat_multiply(a: jax.Array, b: jax.Array) -> jax.Array:
    """Hamilton product a * b of (w, x, y, z) quaternions (rotate by b, then by a).

    Args:
        a: Quaternions. [..., 4]
        b: Quaternions. [..., 4]

    Returns:
        Their product. [..., 4]
    """
    aw, ax, ay, az = (a[..., i] for i in range(4))
    bw, bx, by, bz = (b[..., i] for i in range(4))
    return jnp.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def carry(
    vertices: jax.Array, anchors: SurfaceAnchors, normal_offsets: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Anchor positions and frames on a posed mesh.

    Args:
        vertices: Posed mesh vertices (any units; offsets in the same). [..., V, 3]
        anchors: The anchors.
        normal_offsets: Signed distance along the posed triangle normal. [..., N]

    Returns:
        ``(positions [..., N, 3], frames [..., N, 3, 3])``: the barycentric point plus
        the normal offset, and the triangle frames (``triangle_frames``).
    """
    corners = jnp.take(vertices, anchors.vertex_index, axis=-2)  # [..., N, 3 corners, 3]
    frames = triangle_frames(corners)
    bary = anchors.bary.astype(corners.dtype)
    positions = jnp.einsum("nk,...nkc->...nc", bary, corners, precision=_HIGHEST)
    positions = positions + normal_offsets[..., None] * frames[..., :, 2]
    return positions, frames
