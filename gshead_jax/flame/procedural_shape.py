"""The stand-in head's surface: a star-shaped head built from simple primitives.

Frame and units are FLAME's: metres, y up, the face looking +z, x towards
the subject's left. The head surface is star-shaped around ``CENTER``: for a
unit direction d it is ``CENTER + radius(d) d``, where ``radius`` is the first
crossing of the ray with a smooth union of a skull ellipsoid, a lower-face
ellipsoid and a neck cylinder, plus radial relief (nose, brows, orbits,
cheekbones, lips, chin, ears) evaluated at the base surface point, minus the
eye openings where the eyeballs show.

All sizes are adult-average guesses (head ~0.23 m from chin to crown), not
measurements of any FLAME asset.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CENTER = np.array([0.0, -0.02, -0.005])

# Anatomical anchors (x = subject's left).
EYE_X, EYE_Y = 0.032, 0.030  # eyeball centres at (+-EYE_X, EYE_Y, z from the surface)
EYE_RADIUS = 0.012
EYE_HALF_WIDTH, EYE_HALF_UP, EYE_HALF_DOWN = 0.0145, 0.0078, 0.0062  # the eye opening
LID_GAP_OPEN = 0.002  # open: the opening's skin lies this far inside the eyeball sphere
LID_GAP_SHUT = 0.0015  # shut: the lids lie this far outside it
EYE_MARGIN = 0.001  # the eyeball stays this far behind the skin outside the openings
MOUTH_Y = -0.046  # height of the lip line at the midline
MOUTH_HALF_WIDTH = 0.024
NOSE_TIP_Y = -0.004
CHIN_Y = -0.090


def smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def gauss(p, c, s):
    """exp(-|(p - c) / s|^2) over the axes where s is finite. p [..., 3]."""
    c, s = np.asarray(c, np.float64), np.asarray(s, np.float64)
    q = np.where(np.isfinite(s), (p - c) / np.where(np.isfinite(s), s, 1.0), 0.0)
    return np.exp(-np.sum(q * q, axis=-1))


def _smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _ellipsoid(p, c, r):
    q = (p - np.asarray(c)) / np.asarray(r)
    return (np.linalg.norm(q, axis=-1) - 1.0) * min(r)


def _neck(p):
    radial = np.hypot(p[..., 0], (p[..., 2] + 0.022) / 1.06) - 0.046
    vertical = np.abs(p[..., 1] + 0.09) - 0.078  # y from -0.168 to -0.012
    outside = np.hypot(np.maximum(radial, 0.0), np.maximum(vertical, 0.0))
    return np.minimum(np.maximum(radial, vertical), 0.0) + outside - 0.004


def base_sdf(p):
    """Signed distance (approximately) to the head without relief. p [..., 3]."""
    skull = _ellipsoid(p, (0.0, 0.026, -0.014), (0.077, 0.099, 0.100))
    face = _ellipsoid(p, (0.0, -0.034, 0.018), (0.064, 0.068, 0.071))
    d = _smin(skull, face, 0.03)
    return _smin(d, _neck(p), 0.03)


def base_radius(dirs, *, t_min=0.035, t_max=0.3, step=0.004):
    """First crossing of rays CENTER + t d with the base surface. dirs [N, 3] -> [N].

    Marches from t_min (inside for every direction: CENTER is >= 4.5 cm deep)
    in steps smaller than any feature of the base shape, then bisects.
    """
    dirs = np.asarray(dirs, np.float64)
    ts = np.arange(t_min, t_max, step)
    inside = base_sdf(CENTER + ts[:, None, None] * dirs[None]) < 0  # [T, N]
    first_out = np.argmax(~inside, axis=0)
    lo = np.where(first_out > 0, ts[np.maximum(first_out - 1, 0)], 0.0)
    assert np.all(first_out > 0), "CENTER must be inside the head"
    hi = ts[first_out]
    for _ in range(22):
        mid = 0.5 * (lo + hi)
        out = base_sdf(CENTER + mid[:, None] * dirs) >= 0
        hi = np.where(out, mid, hi)
        lo = np.where(out, lo, mid)
    return 0.5 * (lo + hi)


def nose_relief(p):
    """Radial nose relief at base-surface points p [..., 3] (metres)."""
    x, y = p[..., 0], p[..., 1]
    dy = y - NOSE_TIP_Y
    # Asymmetric profile: a long dorsum above the tip, a short columella below.
    sigma = np.where(dy > 0, 0.026, 0.0072)
    profile = 0.021 * np.exp(-((dy / sigma) ** 2))
    width = 0.0065 + 0.0075 * smoothstep(0.02, -0.015, y)
    front = smoothstep(0.03, 0.07, p[..., 2])
    alae = 0.0055 * (
        gauss(p, (0.0125, -0.013, np.inf), (0.0062, 0.0058, np.inf))
        + gauss(p, (-0.0125, -0.013, np.inf), (0.0062, 0.0058, np.inf))
    )
    return front * (profile * np.exp(-((x / width) ** 2)) + alae)


def ear_relief(p):
    """Radial ear relief: an oval rim with a hollow, on both sides."""
    out = np.zeros(p.shape[:-1])
    side = smoothstep(0.045, 0.065, np.abs(p[..., 0]))
    for sx in (-1.0, 1.0):
        q = p * np.array([sx, 1.0, 1.0])
        rim = gauss(q, (np.inf, 0.004, -0.016), (np.inf, 0.030, 0.017))
        hollow = gauss(q, (np.inf, 0.000, -0.012), (np.inf, 0.013, 0.008))
        out = out + (np.sign(p[..., 0]) == sx) * (0.026 * rim - 0.009 * hollow)
    return side * out


def lip_relief(p):
    """Radial relief of the lips, the lip line and the chin."""
    front = smoothstep(0.03, 0.07, p[..., 2])
    w = MOUTH_HALF_WIDTH
    upper = 0.0055 * gauss(p, (0.0, MOUTH_Y + 0.0055, np.inf), (w * 0.85, 0.0055, np.inf))
    lower = 0.0065 * gauss(p, (0.0, MOUTH_Y - 0.0070, np.inf), (w * 0.78, 0.0060, np.inf))
    line = -0.0022 * gauss(p, (0.0, MOUTH_Y, np.inf), (w * 1.05, 0.0016, np.inf))
    muzzle = 0.005 * gauss(p, (0.0, MOUTH_Y, np.inf), (0.032, 0.026, np.inf))
    sulcus = -0.0025 * gauss(p, (0.0, MOUTH_Y - 0.019, np.inf), (0.02, 0.0045, np.inf))
    chin = 0.0075 * gauss(p, (0.0, CHIN_Y + 0.004, np.inf), (0.017, 0.012, np.inf))
    philtrum = 0.0012 * gauss(p, (0.0, MOUTH_Y + 0.015, np.inf), (0.004, 0.008, np.inf))
    return front * (upper + lower + line + muzzle + sulcus + chin + philtrum)


def upper_face_relief(p):
    """Radial relief of brows, orbits and cheekbones."""
    front = smoothstep(0.02, 0.06, p[..., 2])
    out = np.zeros(p.shape[:-1])
    for sx in (-1.0, 1.0):
        out = out + 0.0055 * gauss(p, (sx * 0.030, 0.047, np.inf), (0.022, 0.0085, np.inf))
        out = out - 0.0050 * gauss(p, (sx * EYE_X, EYE_Y - 0.001, np.inf), (0.017, 0.011, np.inf))
        out = out + 0.0055 * gauss(p, (sx * 0.049, -0.004, np.inf), (0.018, 0.016, np.inf))
    return front * out


def eye_opening(p, eye_centres):
    """Mask of the eye openings (1 inside, smooth to 0 at the rim). p [..., 3].

    An almond around each eyeball's axis: pointed corners, a higher upper lid.
    """
    return sum(_one_opening(p, c) for c in eye_centres)


def _one_opening(p, c):
    u = (p[..., 0] - c[0]) / EYE_HALF_WIDTH
    dv = p[..., 1] - c[1] + 0.0008 * u  # outer corner slightly higher
    v = dv / np.where(dv > 0, EYE_HALF_UP, EYE_HALF_DOWN)
    lid = np.clip(1.0 - u * u, 0.0, None) ** 0.75
    s = np.where(lid > 1e-6, np.abs(v) / np.maximum(lid, 1e-6), 10.0)
    s = np.maximum(s, np.abs(u))
    return (p[..., 2] > c[2]) * smoothstep(1.0, 0.72, s)


def relief(p):
    """All relief except the eye openings, at base-surface points p [..., 3]."""
    return nose_relief(p) + ear_relief(p) + lip_relief(p) + upper_face_relief(p)


def _sphere_exit(dirs, centre, radius):
    """Distance from CENTER along dirs to where the ray leaves a sphere (clamped at a miss)."""
    oc = np.asarray(centre) - CENTER
    b = dirs @ oc
    return b + np.sqrt(np.maximum(b * b - oc @ oc + radius * radius, 0.0))


class Surface(NamedTuple):
    points: np.ndarray  # [N, 3] head surface
    base: np.ndarray  # [N, 3] base surface (before relief) on the same rays
    opening: np.ndarray  # [N] eye-opening mask
    lid_shift: np.ndarray  # [N] radial displacement that closes the eye (blink = 1)


def surface_points(dirs, eye_centres=None) -> Surface:
    """Head surface for unit directions from CENTER. dirs [N, 3].

    In the eye openings the skin is pulled onto a sphere LID_GAP_OPEN inside
    the eyeball (so the eyeball shows); a blink moves it onto a sphere
    LID_GAP_SHUT outside it, so closed lids hug the eyeball.
    """
    dirs = np.asarray(dirs, np.float64)
    base = CENTER + base_radius(dirs)[:, None] * dirs
    r = np.linalg.norm(base - CENTER, axis=-1) + relief(base)
    opening = np.zeros(len(dirs))
    shift = np.zeros(len(dirs))
    for c in () if eye_centres is None else eye_centres:
        m = _one_opening(base, c)
        inner = _sphere_exit(dirs, c, EYE_RADIUS - LID_GAP_OPEN)
        outer = _sphere_exit(dirs, c, EYE_RADIUS + LID_GAP_SHUT)
        r = (1.0 - m) * r + m * inner
        opening += m
        shift += m * (outer - inner)
    return Surface(CENTER + r[:, None] * dirs, base, opening, shift)


def eye_centres():
    """Eyeball centres [2, 3] (left = +x first).

    As far forward as possible while the whole front of the eyeball stays at
    least EYE_MARGIN behind the skin (so only the openings reveal it).
    """
    theta, phi = np.meshgrid(np.linspace(0.0, 1.2, 7), np.linspace(0, 2 * np.pi, 13)[:-1])
    unit = np.stack(
        [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1
    ).reshape(-1, 3)
    lo, hi = 0.0, 0.1  # z of the centre: lo is hidden, hi is not
    for _ in range(18):
        z = 0.5 * (lo + hi)
        pts = np.array([EYE_X, EYE_Y, z]) + EYE_RADIUS * unit
        d = pts - CENTER
        dist = np.linalg.norm(d, axis=-1)
        skin = np.linalg.norm(surface_points(d / dist[:, None]).points - CENTER, axis=-1)
        if np.all(dist + EYE_MARGIN <= skin):
            lo = z
        else:
            hi = z
    return np.array([[EYE_X, EYE_Y, lo], [-EYE_X, EYE_Y, lo]])


def direction(lon, lat):
    """Unit directions from longitude (about +y, 0 = +z, + towards +x) and latitude."""
    lon, lat = np.broadcast_arrays(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    return np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], axis=-1)
