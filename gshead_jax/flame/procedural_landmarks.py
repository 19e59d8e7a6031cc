"""The stand-in's 68-point landmark embedding, in the iBUG-300W order.

Index ranges (image left = the subject's right = -x, as in iBUG): 0-16 jaw
contour from the right ear to the left, 17-21 right brow, 22-26 left brow,
27-30 nose bridge to tip, 31-35 nose base, 36-41 right eye, 42-47 left eye,
48-59 outer lips, 60-67 inner lips. Each point is placed by projecting a
frontal (x, y) position along -z onto the front-most skin triangle; the inner
lip points sit on the lip line's upper or lower rim so they part when the
mouth opens.
"""

from __future__ import annotations

import numpy as np

from gshead_jax.flame import procedural_shape as shp


def _frontal_targets():
    """(x, y) of the 68 points, with 'upper'/'lower' tags for the inner lip."""
    ex, ey, my = shp.EYE_X, shp.EYE_Y, shp.MOUTH_Y
    pts = []
    a = np.linspace(0.0, np.pi, 17)
    pts += list(zip(-0.068 * np.cos(a), 0.016 - 0.108 * np.sin(a)))  # 0-16
    bx = [0.056, 0.047, 0.037, 0.027, 0.016]
    byv = [0.041, 0.047, 0.050, 0.050, 0.047]
    pts += [(-x, y) for x, y in zip(bx, byv)]  # 17-21: right brow, outer to inner
    pts += [(x, y) for x, y in zip(bx[::-1], byv[::-1])]  # 22-26: left brow, inner to outer
    pts += [(0.0, 0.030), (0.0, 0.019), (0.0, 0.008), (0.0, shp.NOSE_TIP_Y - 0.001)]
    pts += [(-0.012, -0.016), (-0.006, -0.019), (0.0, -0.020), (0.006, -0.019), (0.012, -0.016)]
    hw, up, dn = 0.0118, 0.0046, -0.0038
    # 36-41 right eye, 42-47 left eye: clockwise in the image from the corner at
    # smaller x (the right eye's outer corner, the left eye's inner corner).
    for c in (-ex, ex):
        pts += [
            (c - hw, ey),
            (c - 0.004, ey + up),
            (c + 0.004, ey + up),
            (c + hw, ey),
            (c + 0.004, ey + dn),
            (c - 0.004, ey + dn),
        ]
    w = shp.MOUTH_HALF_WIDTH
    pts += [
        (-w, my), (-0.016, my + 0.0075), (-0.006, my + 0.0095), (0.0, my + 0.009),
        (0.006, my + 0.0095), (0.016, my + 0.0075), (w, my), (0.016, my - 0.0085),
        (0.006, my - 0.011), (0.0, my - 0.0115), (-0.006, my - 0.011), (-0.016, my - 0.0085),
    ]  # fmt: skip
    inner = [
        (-0.021, "upper"), (-0.009, "upper"), (0.0, "upper"), (0.009, "upper"),
        (0.021, "upper"), (0.009, "lower"), (0.0, "lower"), (-0.009, "lower"),
    ]  # fmt: skip
    assert len(pts) == 60
    return np.asarray(pts), inner


def _project(verts, faces, xy):
    """Front-most triangle under each (x, y) and its barycentrics. -> ([L], [L, 3])."""
    tri = verts[faces]  # [F, 3, 3]
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    v0, v1 = b - a, c - a
    den = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]  # [F], > 0 for front-facing
    ok = den > 1e-12
    rel = xy[:, None, :] - a[None]  # [L, F, 2]
    w1 = (rel[..., 0] * v1[None, :, 1] - rel[..., 1] * v1[None, :, 0]) / np.where(ok, den, 1.0)
    w2 = (v0[None, :, 0] * rel[..., 1] - v0[None, :, 1] * rel[..., 0]) / np.where(ok, den, 1.0)
    w0 = 1.0 - w1 - w2
    inside = ok[None] & (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
    depth = w0 * tri[None, :, 0, 2] + w1 * tri[None, :, 1, 2] + w2 * tri[None, :, 2, 2]
    depth = np.where(inside, depth, -np.inf)
    best = np.argmax(depth, axis=1)
    if not np.all(np.isfinite(depth[np.arange(len(xy)), best])):
        raise AssertionError("a landmark missed the mesh")
    bary = np.stack([w0, w1, w2], -1)[np.arange(len(xy)), best]
    return best, bary


def embed_landmarks(mesh):
    """(faces_idx [68], bary [68, 3]) for the stand-in mesh."""
    verts, faces = mesh.verts, mesh.faces
    skin_faces = np.nonzero((mesh.part[faces] == 0).all(axis=1))[0]
    xy, inner = _frontal_targets()
    idx, bary = _project(verts, faces[skin_faces], xy)
    idx = skin_faces[idx]
    # Inner lip: on the lip-line edges, in an upper- or lower-lip triangle.
    rim_lower = np.concatenate([[mesh.slit_corners[0]], mesh.slit_lower, [mesh.slit_corners[1]]])
    rim_upper = np.concatenate([[mesh.slit_corners[0]], mesh.slit_upper, [mesh.slit_corners[1]]])
    rim_x = verts[rim_lower, 0]
    in_idx, in_bary = [], []
    for x, side in inner:
        k = int(np.clip(np.searchsorted(rim_x, x) - 1, 0, len(rim_x) - 2))
        s = (x - rim_x[k]) / (rim_x[k + 1] - rim_x[k])
        rim = rim_upper if side == "upper" else rim_lower
        a, b = rim[k], rim[k + 1]
        has = (faces == a).any(axis=1) & (faces == b).any(axis=1)
        # The lower-lip triangle lies below the edge, the upper one above.
        cand = np.nonzero(has)[0]
        below = verts[faces[cand]].mean(axis=1)[:, 1] < verts[a, 1]
        f = cand[below] if side == "lower" else cand[~below]
        f = int(f[0])
        w = np.zeros(3)
        w[list(faces[f]).index(a)] = 1.0 - s
        w[list(faces[f]).index(b)] = s
        in_idx.append(f)
        in_bary.append(w)
    return (
        np.concatenate([idx, in_idx]).astype(np.int32),
        np.concatenate([bary, np.asarray(in_bary)]),
    )
