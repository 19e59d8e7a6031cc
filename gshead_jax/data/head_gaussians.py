"""Gaussians attached to a FLAME mesh: an identity's appearance as splats that follow the face.

Every Gaussian hangs on one mesh triangle: its centre is a barycentric point
of the *posed* triangle plus an offset in the triangle's local frame
(``t1`` = first edge, ``n`` = normal, ``t2 = n x t1``), and its rotation is the
frame's rotation composed with a fixed local one. So the Gaussians move with
the mesh under expressions, jaw, eyes and pose without any per-frame fitting.

Choice (docs/data.md, "Synthetic data"): surface Gaussians are *flat discs*
in their triangle's plane (normal axis 0.3 of the tangential ones), rotated
with the local frame, their tangential size scaled by ``sqrt(posed area /
rest area)`` so a stretching mouth or lid stays closed. Discs give crisp
silhouettes and keep skin from bleeding through eyelids and lips, which small
isotropic blobs of the same count do not. Hair volume Gaussians sit on their
root triangle, offset along its normal; the long-hair sheet and the glasses
hang rigidly on the crown triangle (no expression moves it).

Surface points are sampled systematically (stratified over the cumulative
weighted area, an R2 low-discrepancy pattern inside each triangle) so they
cover the surface evenly; the weights favour what the eye judges (irises,
lips, lids, teeth) and skip the never-visible back of the eyeballs.
"""

from __future__ import annotations

import flax.struct
import numpy as np

from gshead_jax import flame
from gshead_jax.data import appearance as app
from gshead_jax.flame import Region

# Sampling importance per region (multiplies the triangle area).
_REGION_WEIGHT = {
    Region.SKIN: 1.0,
    Region.SCALP: 0.8,
    Region.NECK: 0.6,
    Region.EARS: 1.0,
    Region.NOSE: 1.3,
    Region.BROWS: 1.6,
    Region.EYE_REGION: 2.5,
    Region.LIP_UPPER: 2.5,
    Region.LIP_LOWER: 2.5,
    Region.MOUTH_INTERIOR: 1.0,
    Region.TEETH: 2.5,
    Region.EYEBALL_LEFT: 3.0,
    Region.EYEBALL_RIGHT: 3.0,
    Region.IRIS_LEFT: 6.0,
    Region.IRIS_RIGHT: 6.0,
}
_DISC_SIZE = 0.95  # tangential sigma / point spacing
_DISC_FLAT = 0.3  # normal sigma / tangential sigma
_EYE_VISIBLE = 1.35  # radians from the gaze axis; farther back is never seen


@flax.struct.dataclass
class HeadGaussians:
    """Gaussians attached to mesh triangles (FLAME metres; a batch adds leading dims).

    Attributes:
      face: Anchor triangle. int32 [N]
      bary: Barycentric coordinates on it. [N, 3]
      offset: Offset from that point in the triangle's frame (t1, t2, n). [N, 3]
      quat: Rotation relative to the triangle's frame, (w, x, y, z). [N, 4]
      scale: Standard deviations along the rotated axes at rest. [N, 3]
      rest_area: Twice the anchor triangle's area at rest. [N]
      stretch: 1 to scale the first two axes with the triangle's area, else 0. [N]
      opacity: Opacity. [N]
      albedo: sRGB albedo. [N, 3]
      shade: How much the lighting darkens it, 0..1 (1 = Lambert). [N]
      normal: Shading normal in the triangle's frame (when ``smooth`` is 0). [N, 3]
      smooth: 1 to shade with the interpolated vertex normal instead. [N]
    """

    face: np.ndarray
    bary: np.ndarray
    offset: np.ndarray
    quat: np.ndarray
    scale: np.ndarray
    rest_area: np.ndarray
    stretch: np.ndarray
    opacity: np.ndarray
    albedo: np.ndarray
    shade: np.ndarray
    normal: np.ndarray
    smooth: np.ndarray

    @property
    def num(self) -> int:
        return int(self.face.shape[-1])


def concatenate(parts: list[HeadGaussians]) -> HeadGaussians:
    """One set from several (NumPy)."""
    names = [f.name for f in HeadGaussians.__dataclass_fields__.values()]
    return HeadGaussians(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def stack(heads: list[HeadGaussians]) -> HeadGaussians:
    """A batch [B, N, ...] from sets of equal size (NumPy)."""
    names = [f.name for f in HeadGaussians.__dataclass_fields__.values()]
    return HeadGaussians(**{n: np.stack([getattr(h, n) for h in heads]) for n in names})


def quat_from_matrix(m, xp=np):
    """Unit quaternions (w, x, y, z) of rotation matrices, NumPy or jnp (``xp``). [..., 3, 3]

    Shepperd's method: the candidate built from the largest of |w|, |x|, |y|, |z|
    (all four computed, one selected, so it vectorises and jits).
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    four = xp.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
        axis=-1,
    )
    q_abs = xp.sqrt(xp.maximum(four, 0.0))  # 2 |w|, 2 |x|, 2 |y|, 2 |z|
    cand = xp.stack(
        [
            xp.stack([four[..., 0], m21 - m12, m02 - m20, m10 - m01], axis=-1),
            xp.stack([m21 - m12, four[..., 1], m10 + m01, m02 + m20], axis=-1),
            xp.stack([m02 - m20, m10 + m01, four[..., 2], m12 + m21], axis=-1),
            xp.stack([m10 - m01, m20 + m02, m21 + m12, four[..., 3]], axis=-1),
        ],
        axis=-2,
    ) / (2.0 * xp.maximum(q_abs, 0.1)[..., None])
    best = xp.argmax(q_abs, axis=-1)
    onehot = (xp.arange(4) == best[..., None]).astype(m.dtype)
    q = xp.sum(cand * onehot[..., None], axis=-2)
    return q / xp.linalg.norm(q, axis=-1, keepdims=True)


def face_frames(v, faces, xp=np):
    """Local frames (columns t1, t2, n) and doubled areas of triangles. -> [F, 3, 3], [F]"""
    tri = v[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    cross = xp.cross(e1, e2)
    area2 = xp.linalg.norm(cross, axis=-1)
    n = cross / xp.maximum(area2, 1e-20)[:, None]
    t1 = e1 / xp.maximum(xp.linalg.norm(e1, axis=-1), 1e-20)[:, None]
    t2 = xp.cross(n, t1)
    return xp.stack([t1, t2, n], axis=-1), area2


def _about_normal(psi):
    """Quaternions rotating about the local normal (z) by psi. [N] -> [N, 4]"""
    z = np.zeros_like(psi)
    return np.stack([np.cos(psi / 2), z, z, np.sin(psi / 2)], axis=-1)


def _r2_triangle(index, offset):
    """Points of the R2 sequence folded into the unit triangle, as barycentrics. [N, 3]"""
    g = 1.32471795724474602596
    s = np.mod(offset[0] + index / g, 1.0)
    t = np.mod(offset[1] + index / g**2, 1.0)
    flip = s + t > 1
    s, t = np.where(flip, 1 - s, s), np.where(flip, 1 - t, t)
    return np.stack([1 - s - t, s, t], axis=-1)


def _systematic(weights, n, rng):
    """n draws from the weights' cumulative distribution at stratified positions. [n]"""
    cdf = np.cumsum(weights)
    u = (np.arange(n) + rng.uniform()) / n * cdf[-1]
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(weights) - 1)


def anchors_of(model: flame.FlameModel, rest: flame.FlameOutput) -> app.Anchors:
    """Measures `appearance.Anchors` on a rest mesh (FLAME metres)."""
    v = np.asarray(rest.vertices, np.float64)
    joints = np.asarray(rest.joints, np.float64)
    labels = np.asarray(model.vertex_labels)
    eyes = joints[3:5]
    ball = np.isin(labels, [Region.EYEBALL_LEFT, Region.IRIS_LEFT])
    radius = float(np.median(np.linalg.norm(v[ball] - eyes[0], axis=-1))) if ball.any() else 0.012
    skull = np.isin(labels, [Region.SKIN, Region.SCALP]) & (v[:, 1] > eyes[:, 1].mean())
    centre = v[skull].mean(axis=0) if skull.any() else v.mean(axis=0)
    lmk = None if rest.landmarks is None else np.asarray(rest.landmarks, np.float64)
    return app.Anchors(
        eyes=eyes,
        eye_radius=radius,
        centre=centre,
        brows=None if lmk is None or len(lmk) < 68 else lmk[17:27],
        mouth=None if lmk is None or len(lmk) < 68 else lmk[[48, 54]],
        top=v[np.argmax(v[:, 1])],
    )


def surface(v, faces, labels, frames, area2, anchors, traits, rng, n):
    table = np.zeros(max(int(labels.max()) + 1, len(Region)))
    for region, w in _REGION_WEIGHT.items():
        table[region] = w
    vw = table[labels]
    d = v - anchors.eyes[np.where(v[:, 0] >= anchors.eyes[:, 0].mean(), 0, 1)]
    eye_angle = np.arccos(np.clip(d[:, 2] / np.maximum(np.linalg.norm(d, axis=-1), 1e-12), -1, 1))
    on_ball = np.isin(
        labels, [Region.EYEBALL_LEFT, Region.EYEBALL_RIGHT, Region.IRIS_LEFT, Region.IRIS_RIGHT]
    )
    vw = np.where(on_ball & (eye_angle > _EYE_VISIBLE), 0.0, vw)
    vw = vw * np.where(v[:, 2] > anchors.centre[2], 1.3, 1.0)  # the face side
    face_w = vw[faces].mean(axis=1)
    weighted = 0.5 * area2 * face_w
    face = _systematic(weighted, n, rng)
    bary = _r2_triangle(np.arange(n), rng.uniform(size=2))
    corner = v[faces[face]]  # [n, 3, 3]
    p = np.einsum("nk,nkd->nd", bary, corner)
    # Colours of the three corner labels, blended by the barycentrics: smooth region edges.
    albedo = np.zeros((n, 3))
    hair = np.zeros(n)
    seed = rng.integers(2**31)
    for k in range(3):
        vk = faces[face, k]
        sub = np.random.default_rng(seed)  # the same fields for every corner
        a, h = app.surface_albedo(traits, anchors, p, labels[vk], eye_angle[vk], sub)
        albedo += bary[:, k : k + 1] * a
        hair += bary[:, k] * h
    spacing = np.sqrt(weighted.sum() / (n * np.maximum(face_w[face], 1e-6)))
    tangential = _DISC_SIZE * spacing
    scale = np.stack([tangential, tangential, _DISC_FLAT * tangential], axis=-1)
    ones = np.ones(n)
    return HeadGaussians(
        face=face.astype(np.int32),
        bary=bary.astype(np.float32),
        offset=np.zeros((n, 3), np.float32),
        quat=np.tile(np.array([1.0, 0, 0, 0], np.float32), (n, 1)),
        scale=scale.astype(np.float32),
        rest_area=area2[face].astype(np.float32),
        stretch=ones.astype(np.float32),
        opacity=np.full(n, 0.97, np.float32),
        albedo=albedo.astype(np.float32),
        shade=np.where(on_ball[faces[face, 0]], 0.6, 1.0).astype(np.float32),
        normal=np.tile(np.array([0.0, 0, 1], np.float32), (n, 1)),
        smooth=ones.astype(np.float32),
    ), hair


def crown_face(v, faces, labels, area2):
    """The highest well-shaped head triangle: the rigid anchor of the sheet and the glasses."""
    ok = np.isin(labels[faces], [Region.SKIN, Region.SCALP]).all(axis=1)
    ok &= area2 > np.median(area2)  # not a sliver at the pole: its frame must be stable
    y = np.where(ok, v[faces].mean(axis=1)[:, 1], -np.inf)
    return int(np.argmax(y))


def volume(v, faces, frames, area2, hair, anchors, traits, rng, n):
    """Hair over the cap: Gaussians offset from the scalp along the normal."""
    # Hair coverage per triangle from its centroid (the same field as the cap colour).
    centroid = v[faces].mean(axis=1)
    lon = app.longitude(anchors, centroid)
    y0 = app.hairline(traits, anchors, lon)
    cover = app.smoothstep(y0, y0 + 0.006, centroid[:, 1]) * (frames[:, 1, 2] > -0.5)
    del hair  # per-point coverage is for colours; roots use the triangle's
    face = _systematic(0.5 * area2 * cover + 1e-12, n, rng)
    bary = _r2_triangle(np.arange(n), rng.uniform(size=2))
    root = np.einsum("nk,nkd->nd", bary, v[faces[face]])
    lon = app.longitude(anchors, root)
    y0 = app.hairline(traits, anchors, lon)
    top = float(anchors.top[1])
    profile = app.smoothstep(y0, y0 + 0.018, root[:, 1]) * (
        0.7 + 0.3 * app.smoothstep(anchors.eye_y, top, root[:, 1])
    )
    quiff = np.exp(
        -np.sum(((root - (anchors.top + [0, -0.01, 0.06])) / [0.05, 0.04, 0.04]) ** 2, 1)
    )
    profile *= (1.0 + (traits.hair_top - 1.0) * quiff) * (1.0 - app.parting(traits, anchors, root))
    u = rng.uniform(size=n)
    h = traits.hair_thickness * profile * np.sqrt(u)
    fr = frames[face]
    if np.isfinite(traits.hair_part):  # combed away from the parting line
        whorl = np.stack([np.full(n, traits.hair_part), np.full(n, top), root[:, 2]], axis=-1)
    else:  # combed from a crown whorl
        whorl = anchors.top + np.array([0.0, 0.0, -0.035])
    comb = root - whorl
    psi = np.arctan2(
        np.einsum("nd,nd->n", comb, fr[:, :, 1]), np.einsum("nd,nd->n", comb, fr[:, :, 0])
    )
    psi += rng.normal(0, 0.25, n)
    curly = traits.hair_style == "curly"
    size = rng.uniform(0.75, 1.25, n)
    along = (0.0026 if curly else 0.0045) * size
    across = (0.0022 if curly else 0.0013) * size
    scale = np.stack([along, across, np.full(n, 0.0008)], axis=-1)
    strand = 1.0 + (0.28 if curly else 0.18) * rng.normal(size=(n, 1))
    depth = 0.7 + 0.3 * np.sqrt(u)[:, None]  # fake occlusion: darker towards the scalp
    albedo = np.clip(traits.hair_rgb * strand * depth, 0, 1)
    ones = np.ones(n)
    return HeadGaussians(
        face=face.astype(np.int32),
        bary=bary.astype(np.float32),
        offset=np.stack([0 * h, 0 * h, h], axis=-1).astype(np.float32),
        quat=_about_normal(psi).astype(np.float32),
        scale=scale.astype(np.float32),
        rest_area=area2[face].astype(np.float32),
        stretch=np.zeros(n, np.float32),
        opacity=np.full(n, 0.85, np.float32),
        albedo=albedo.astype(np.float32),
        shade=np.full(n, 0.9, np.float32),
        normal=np.tile(np.array([0.0, 0, 1], np.float32), (n, 1)),
        smooth=ones.astype(np.float32),
    )


def attach_rigid(pos, rot, normal, crown, v, faces, frames, area2, **fields) -> HeadGaussians:
    n = len(pos)
    frame = frames[crown]
    origin = v[faces[crown]].mean(axis=0)
    offset = (pos - origin) @ frame  # frame^T (p - origin)
    local = np.einsum("ji,njk->nik", frame, rot)
    return HeadGaussians(
        face=np.full(n, crown, np.int32),
        bary=np.full((n, 3), 1 / 3, np.float32),
        offset=offset.astype(np.float32),
        quat=quat_from_matrix(local).astype(np.float32),
        rest_area=np.full(n, area2[crown], np.float32),
        stretch=np.zeros(n, np.float32),
        normal=(normal @ frame).astype(np.float32),
        smooth=np.zeros(n, np.float32),
        **{k: np.asarray(x, np.float32) for k, x in fields.items()},
    )
