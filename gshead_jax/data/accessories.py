"""The parts of a synthetic head that do not lie on the mesh: a long-hair sheet and glasses.

Both hang rigidly on the crown triangle (`head_gaussians.attach_rigid`): no
expression deforms the skull, so they follow head pose exactly and ignore the
face's motion, as hair and glasses frames do.

* **Sheet** (long hair): strands falling straight down from the widest part of
  the head at the sides and back, at the head's radius plus the hair
  thickness (a cumulative maximum of the rest mesh's radius from the top down,
  per longitude), ending at a per-strand length; Gaussians elongated along the
  strand.
* **Glasses**: two superellipse rims (round to rectangular) in a plane ~1.4 cm
  in front of the corneas, kept 4 mm clear of the skin (they bend round the
  nose like pads), a bridge, and temples running back above the ears;
  Gaussians elongated along the frame.
"""

from __future__ import annotations

import numpy as np

from gshead_jax.data import appearance as app
from gshead_jax.data import head_gaussians as hg
from gshead_jax.flame import Region

_HEAD = (Region.SKIN, Region.SCALP, Region.NECK, Region.EARS)


def _frames_from(tangent, ref):
    """Rotation matrices with columns (tangent, ref x tangent-ish, ref orthogonalised). [N, 3, 3]"""
    a1 = tangent / np.linalg.norm(tangent, axis=-1, keepdims=True)
    a3 = ref - np.sum(ref * a1, axis=-1, keepdims=True) * a1
    a3 /= np.linalg.norm(a3, axis=-1, keepdims=True)
    a2 = np.cross(a3, a1)
    return np.stack([a1, a2, a3], axis=-1)


def sheet(v, labels, faces, frames, area2, crown, anchors, traits, rng, n) -> hg.HeadGaussians:
    """Long hair hanging at the sides and back of the head (``n`` Gaussians)."""
    c = anchors.centre
    q = v[np.isin(labels, _HEAD)]
    theta = np.arctan2(q[:, 0] - c[0], q[:, 2] - c[2])
    radius = np.hypot(q[:, 0] - c[0], q[:, 2] - c[2])
    y_top = anchors.eye_y + 0.035
    y_bot = anchors.eye_y - traits.hair_length
    n_t, dy = 96, 0.004
    n_y = int(np.ceil((y_top - y_bot) / dy)) + 6
    tb = np.floor((theta + np.pi) / (2 * np.pi) * n_t).astype(int) % n_t
    yb = np.floor((y_top - q[:, 1]) / dy).astype(int)
    ok = (yb >= 0) & (yb < n_y)
    table = np.zeros((n_t, n_y))
    np.maximum.at(table, (tb[ok], yb[ok]), radius[ok])
    # Falls straight down from the widest point above: the running maximum downwards,
    # then widened and smoothed around the head so the sheet has no folds (ears).
    table = np.maximum.accumulate(table, axis=1)
    table = np.max([np.roll(table, k, 0) for k in range(-2, 3)], axis=0)
    table = np.mean([np.roll(table, k, 0) for k in range(-3, 4)], axis=0)
    table += traits.hair_thickness + 0.003

    front = 1.2  # the sheet leaves the face free within this longitude
    span = 2 * np.pi - 2 * front
    height = y_top - y_bot
    perimeter = span * float(np.median(table[:, 0]))
    n_col = max(int(round(np.sqrt(n * 4 * perimeter / height))), 1)
    n_row = max(n // n_col, 1)
    n_col = n // n_row
    col = np.repeat(np.arange(n_col), n_row)
    row = np.tile(np.arange(n_row), n_col)
    extra = n - len(col)  # the remainder: random strands' points
    col = np.concatenate([col, rng.integers(n_col, size=extra)])
    row = np.concatenate([row, rng.integers(n_row, size=extra)])
    col_jitter = rng.uniform(-0.5, 0.5, n_col)
    length = height + rng.uniform(-0.02, 0.015, n_col)
    edge = np.abs(np.arange(n_col) / max(n_col - 1, 1) - 0.5)  # 0.5 at the face's edges
    length *= 1.0 - 0.45 * app.smoothstep(0.25, 0.5, edge)  # shorter towards the face
    t = front + (col + 0.5 + col_jitter[col]) / n_col * span
    th = np.mod(t + np.pi, 2 * np.pi) - np.pi
    s = (row + rng.uniform(0, 1, n)) / n_row  # 0 at the top, 1 at the strand's end
    y = y_top - s * length[col]
    ti = np.floor((th + np.pi) / (2 * np.pi) * n_t).astype(int) % n_t
    yi = np.clip(np.floor((y_top - y) / dy).astype(int), 0, n_y - 1)
    r = table[ti, yi] + rng.normal(0, 0.0015, n)
    pos = np.stack([c[0] + r * np.sin(th), y, c[2] + r * np.cos(th)], axis=-1)
    out = np.stack([np.sin(th), np.zeros(n), np.cos(th)], axis=-1)
    rot = _frames_from(np.tile([0.0, -1.0, 0.0], (n, 1)), out)
    step_y = length.mean() / n_row
    step_x = span / n_col * r  # the local spacing: wider where the ears push the sheet out
    scale = np.stack([np.full(n, 0.7 * step_y), 1.2 * step_x, np.full(n, 0.0008)], axis=-1)
    strand = 1.0 + 0.12 * rng.normal(size=n_col)[col]
    albedo = np.clip(traits.hair_rgb * (strand * (1 + 0.06 * rng.normal(size=n)))[:, None], 0, 1)
    opacity = 0.9 * app.smoothstep(1.0, 0.85, s) * app.smoothstep(-0.05, 0.05, s)
    return hg.attach_rigid(
        pos,
        rot,
        out,
        crown,
        v,
        faces,
        frames,
        area2,
        scale=scale,
        opacity=opacity,
        albedo=albedo,
        shade=np.full(n, 0.9),
    )


def _zfront(v, labels, anchors, xy, radius=0.004):
    """Highest skin z above each (x, y) within ``radius`` (-inf where there is none). [P]"""
    ok = np.isin(labels, _HEAD + (Region.NOSE, Region.BROWS, Region.EYE_REGION))
    q = v[ok & (v[:, 2] > anchors.eyes[:, 2].mean() - 0.03)]
    near = (np.abs(xy[:, None, 0] - q[None, :, 0]) < radius) & (
        np.abs(xy[:, None, 1] - q[None, :, 1]) < radius
    )
    return np.max(np.where(near, q[None, :, 2], -np.inf), axis=1)


def _resample(curves, n):
    """n points spread evenly by arc length over polylines; returns points and tangents."""
    lengths = [np.linalg.norm(np.diff(c, axis=0), axis=-1).sum() for c in curves]
    total = sum(lengths)
    counts = np.floor(np.array(lengths) / total * n).astype(int)
    counts[np.argmax(lengths)] += n - counts.sum()
    pts, tans = [], []
    for curve, k in zip(curves, counts, strict=True):
        seg = np.linalg.norm(np.diff(curve, axis=0), axis=-1)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        at = (np.arange(k) + 0.5) / k * arc[-1]
        i = np.clip(np.searchsorted(arc, at, side="right") - 1, 0, len(seg) - 1)
        w = ((at - arc[i]) / np.maximum(seg[i], 1e-12))[:, None]
        pts.append(curve[i] * (1 - w) + curve[i + 1] * w)
        tans.append(curve[i + 1] - curve[i])
    return np.concatenate(pts), np.concatenate(tans), total / n


def glasses(v, labels, faces, frames, area2, crown, anchors, traits, n) -> hg.HeadGaussians:
    """Glasses frames: rims, bridge and temples (``n`` Gaussians)."""
    eye_x = float(np.abs(anchors.eyes[:, 0]).mean())
    eye_z = float(anchors.eyes[:, 2].mean())
    cy = anchors.eye_y - 0.001
    plane = eye_z + anchors.eye_radius + 0.014
    a = traits.glasses_size
    b = a * (0.72 + 0.16 * traits.glasses_round)
    m = 2.0 + 4.0 * (1.0 - traits.glasses_round)  # superellipse exponent
    t = np.linspace(0.0, 2 * np.pi, 361)
    ct, st = np.cos(t), np.sin(t)
    curves = []
    for side in (-1.0, 1.0):
        cx = side * (eye_x + 0.002)
        x = cx + a * np.sign(ct) * np.abs(ct) ** (2 / m)
        y = cy + b * np.sign(st) * np.abs(st) ** (2 / m)
        curves.append(np.stack([x, y, np.full_like(x, plane)], axis=-1))
    x0 = eye_x + 0.002 - 0.95 * a
    xb = np.linspace(-x0, x0, 40)
    yb = cy + 0.35 * b + 0.003 * (1 - (xb / max(x0, 1e-6)) ** 2)
    curves.append(np.stack([xb, yb, np.full_like(xb, plane)], axis=-1))
    y_t = cy + 0.45 * b
    head = np.isin(labels, (Region.SKIN, Region.SCALP)) & (np.abs(v[:, 1] - y_t) < 0.006)
    x_t = float(np.abs(v[head & (v[:, 2] < eye_z), 0]).max()) + 0.004
    z_end = float(anchors.centre[2]) + 0.005
    for side in (-1.0, 1.0):
        x_out = side * (eye_x + 0.002 + a)
        knots = np.array(
            [[x_out, y_t, plane], [side * x_t, y_t, plane - 0.015], [side * x_t, y_t, z_end]]
        )
        s = np.linspace(0, 1, 30)[:, None]
        curves.append(
            np.concatenate([knots[0] * (1 - s) + knots[1] * s, knots[1] * (1 - s) + knots[2] * s])
        )
    pos, tangent, spacing = _resample(curves, n)
    front = pos[:, 2] >= plane - 1e-9
    clear = _zfront(v, labels, anchors, pos[:, :2]) + 0.004
    pos[:, 2] = np.where(front, np.maximum(pos[:, 2], clear), pos[:, 2])
    temple = ~front | (np.abs(pos[:, 0]) > eye_x + 0.002 + a + 1e-6)
    ref = np.where(temple[:, None], np.sign(pos[:, :1]) * [1.0, 0, 0], [0.0, 0, 1.0])
    rot = _frames_from(tangent + 1e-9, ref)
    scale = np.stack(
        [np.full(n, max(spacing, 0.0006)), np.full(n, 0.0011), np.full(n, 0.0007)], axis=-1
    )
    return hg.attach_rigid(
        pos,
        rot,
        rot[:, :, 2],
        crown,
        v,
        faces,
        frames,
        area2,
        scale=scale,
        opacity=np.full(n, 0.95),
        albedo=np.broadcast_to(traits.glasses_rgb, (n, 3)),
        shade=np.full(n, 0.6),
    )
