"""A procedural head model with FLAME's structure: works without the licensed file.

:func:`standin` builds, deterministically and in about a second on a CPU, a
:class:`FlameModel` with FLAME's layout (5023 vertices by default, 300 shape
and 100 expression components, the 5-joint chain global / neck / jaw / left
eye / right eye, pose correctives, UV coordinates, a 68-point landmark
embedding in the iBUG order) plus per-vertex region labels (:class:`Region`)
that a synthetic-data generator paints an appearance from. The geometry is
described in ``procedural_shape.py`` and ``procedural_mesh.py``.
"""

from __future__ import annotations

import enum

import jax.numpy as jnp
import numpy as np

from gshead_jax.flame import procedural_mesh as pmesh
from gshead_jax.flame import procedural_shape as shp
from gshead_jax.flame.model import FlameModel, validate_model
from gshead_jax.flame.procedural_landmarks import embed_landmarks

__all__ = ["Expression", "Region", "standin"]


class Region(enum.IntEnum):
    """Region ids of the stand-in's ``vertex_labels``."""

    SKIN = 0  # face and head skin not listed below
    SCALP = 1  # where hair grows
    NECK = 2
    EARS = 3
    NOSE = 4
    BROWS = 5
    EYE_REGION = 6  # eyelids and the skin of the eye openings
    LIP_UPPER = 7
    LIP_LOWER = 8
    MOUTH_INTERIOR = 9
    TEETH = 10  # the front faces of the upper and lower teeth, inside the lips
    EYEBALL_LEFT = 11  # left = the subject's left, +x
    EYEBALL_RIGHT = 12
    IRIS_LEFT = 13  # iris and pupil (pupil: within 0.22 rad of the gaze axis, eyeball UV centre)
    IRIS_RIGHT = 14


class Expression(enum.IntEnum):
    """The named expression components of the stand-in (the rest are random, smooth).

    Coefficient 1 is a full action (blink 1 = closed); typical range [-1, 2].
    """

    MOUTH_OPEN = 0  # lips part, lower face drops ~1.2 cm (like FLAME's first component)
    SMILE = 1  # mouth corners up and back
    BROWS_UP = 2
    BLINK_LEFT = 3
    BLINK_RIGHT = 4
    FROWN = 5  # brows down and together
    PUCKER = 6  # lips forward and narrower
    MOUTH_WIDE = 7  # corners out


# Joint rest positions (metres): root at the base of the neck, neck at the skull
# base, the jaw hinge between the ears; the eye joints are the eyeball centres.
_ROOT = np.array([0.0, -0.115, -0.022])
_NECK = np.array([0.0, -0.068, -0.022])
_JAW = np.array([0.0, -0.012, 0.0])


def standin(
    seed: int = 0, *, num_vertices: int = 5023, num_shape: int = 300, num_expression: int = 100
) -> FlameModel:
    """A procedurally generated head with FLAME's structure (no licence needed).

    Closed head-shaped template (skull, face, nose, lips with a mouth opening
    into a closed pocket with a teeth ring, eye openings with separate
    eyeballs, ears, neck), faces, UVs, FLAME's 5-joint chain with skinning
    weights (the jaw opens the lower face and lips, the eye joints rotate the
    eyeballs), identity, expression and pose-corrective blendshapes, a 68-point
    landmark embedding (iBUG order) and ``vertex_labels`` (:class:`Region`).

    Identity components: 0 overall scale (+4 %), 1 width, 2 face length,
    3 depth, 4 nose size, 5 jaw width, 6 chin, 7 eye spacing; the rest are
    smooth random fields of decaying amplitude (~3 mm at index 8). Expression
    components: see :class:`Expression` for 0-7; the rest are smooth, local,
    random face deformations of decaying amplitude. Pose correctives are small
    smooth fields on the neck (neck joint) and the lower face (jaw joint); the
    eye joints have none, so an eye rotation moves only its eyeball.

    The template does not depend on ``seed``; the random components do.

    Args:
        seed: Seed of the random components.
        num_vertices: Vertex count (>= 600); 5023 matches FLAME (GAGAvatar's
            5023 vertex Gaussians).
        num_shape: Identity components (>= 8 for the named ones to all exist).
        num_expression: Expression components.

    Returns:
        The model (float32), with ``vt``/``ft``, landmarks and ``vertex_labels``.

    Example:
        >>> model = flame.standin()
        >>> expr = jnp.zeros(100).at[flame.Expression.SMILE].set(1.0)
        >>> out = flame.forward(model, jnp.zeros(300), expr, jaw=jnp.array([0.25, 0.0, 0.0]))
    """
    if num_vertices < 600:
        raise ValueError(f"num_vertices must be >= 600, got {num_vertices}")
    if num_shape < 0 or num_expression < 0:
        raise ValueError(f"component counts must be >= 0, got {num_shape}, {num_expression}")
    rng = np.random.default_rng(seed)
    mesh = pmesh.build(num_vertices)
    v = mesh.verts
    eyes = [np.nonzero(mesh.part == 2)[0], np.nonzero(mesh.part == 3)[0]]
    # Eyeballs move rigidly under identity changes: evaluate fields at their centres.
    anchor = v.copy()
    for e in (0, 1):
        anchor[eyes[e]] = mesh.eye_centres[e]
    w_jaw = _jaw_weight(mesh)
    weights = _skinning(mesh, w_jaw, eyes)
    regressor = _regressor(mesh, eyes)
    shapedirs = _identity(rng, anchor, num_shape)
    exprdirs = _expressions(rng, mesh, w_jaw, num_expression)
    posedirs = _correctives(rng, mesh, w_jaw)
    lmk_faces, lmk_bary = embed_landmarks(mesh)
    model = FlameModel(
        v_template=jnp.asarray(v, jnp.float32),
        shapedirs=jnp.asarray(shapedirs, jnp.float32),
        exprdirs=jnp.asarray(exprdirs, jnp.float32),
        posedirs=jnp.asarray(posedirs, jnp.float32),
        J_regressor=jnp.asarray(regressor, jnp.float32),
        lbs_weights=jnp.asarray(weights, jnp.float32),
        faces=jnp.asarray(mesh.faces, jnp.int32),
        parents=(-1, 0, 1, 1, 1),
        vt=jnp.asarray(mesh.vt, jnp.float32),
        ft=jnp.asarray(mesh.ft, jnp.int32),
        lmk_faces_idx=jnp.asarray(lmk_faces, jnp.int32),
        lmk_bary_coords=jnp.asarray(lmk_bary, jnp.float32),
        vertex_labels=jnp.asarray(_labels(mesh), jnp.int32),
    )
    return validate_model(model, f"standin(seed={seed})")


def _lip_line(mesh, x):
    """Height of the lip line (the slit) at x, held constant beyond the corners."""
    rim = np.concatenate([[mesh.slit_corners[0]], mesh.slit_lower, [mesh.slit_corners[1]]])
    return np.interp(x, mesh.verts[rim, 0], mesh.verts[rim, 1])


def _jaw_weight(mesh):
    """Jaw influence per vertex: the lower face below a line from the mouth corners
    back towards the hinge, fading into the cheeks and above the throat."""
    p = mesh.verts
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    out = np.maximum(np.abs(x) - shp.MOUTH_HALF_WIDTH, 0.0)
    line = _lip_line(mesh, x) + 0.35 * out
    band = 0.0015 + 0.45 * out
    w = shp.smoothstep(-1.0, 1.0, (line - y) / band)
    w = w * shp.smoothstep(-0.035, 0.005, z) * shp.smoothstep(-0.112, -0.092, y)
    w[mesh.slit_upper] = 0.0
    w[mesh.slit_lower] = 1.0
    w[mesh.slit_corners] = 0.5
    pocket = mesh.part == 1
    w[pocket] = 0.5 - 0.5 * mesh.pocket_side[pocket]
    w[mesh.part >= 2] = 0.0
    return w


def _skinning(mesh, w_jaw, eyes):
    y = mesh.verts[:, 1]
    w_root = (1.0 - shp.smoothstep(-0.135, -0.085, y)) * (1.0 - w_jaw)
    weights = np.zeros((len(y), 5))
    weights[:, 0] = w_root
    weights[:, 2] = w_jaw
    weights[:, 1] = 1.0 - w_root - w_jaw
    for e in (0, 1):
        weights[eyes[e]] = 0.0
        weights[eyes[e], 3 + e] = 1.0
    return weights


def _regressor_row(points, idx, target):
    """Weights on points[idx] closest to uniform whose weighted mean is exactly target."""
    p = points[idx]
    a = np.concatenate([p.T, np.ones((1, len(idx)))])  # [4, n]
    w0 = np.full(len(idx), 1.0 / len(idx))
    b = np.concatenate([target, [1.0]])
    w = w0 + np.linalg.pinv(a) @ (b - a @ w0)  # the minimum-norm correction
    if not np.allclose(a @ w, b, atol=1e-9):
        raise AssertionError(f"joint {target} is not spanned by its vertex set")
    row = np.zeros(len(points))
    row[idx] = w
    return row


def _bracketing(p, mask, target, axes):
    """Vertices of `mask` within a box around target that grows until, along each of
    `axes`, some lie on both sides of the target (so the target is in their hull)."""
    h = 0.01
    while True:
        sel = mask & np.all(np.abs(p[:, axes] - target[axes]) < h, axis=1)
        d = p[sel][:, axes] - target[axes]
        if sel.any() and np.all(d.min(axis=0) < -1e-4) and np.all(d.max(axis=0) > 1e-4):
            return np.nonzero(sel)[0]
        h *= 1.4


def _regressor(mesh, eyes):
    p = mesh.verts
    skin = mesh.part == 0
    rows = []
    for target in (_ROOT, _NECK):  # rings of neck skin around the joint
        rows.append(_regressor_row(p, _bracketing(p, skin, target, [1]), target))
    sides = skin & (np.abs(p[:, 0]) > 0.04)  # in front of both ears, around the hinge
    rows.append(_regressor_row(p, _bracketing(p, sides, _JAW, [1, 2]), _JAW))
    for e in (0, 1):
        rows.append(_regressor_row(p, eyes[e], mesh.eye_centres[e]))
    return np.stack(rows)


def _random_fields(rng, points, count, wavelength=(0.12, 0.35), terms=4):
    """Smooth random vector fields with unit RMS over points. -> [count, V, 3]"""
    lam = rng.uniform(*wavelength, size=(count, terms, 1))
    omega = rng.normal(size=(count, terms, 3))
    omega = omega / np.linalg.norm(omega, axis=-1, keepdims=True) * (2 * np.pi / lam)
    phase = rng.uniform(0, 2 * np.pi, size=(count * terms, 1))
    amp = rng.normal(size=(count, terms, 3)).astype(np.float32)
    # float32 and plain matmuls: this is the slowest step of standin().
    waves = omega.reshape(-1, 3).astype(np.float32) @ points.T.astype(np.float32)
    waves = np.sin(waves + phase.astype(np.float32)).reshape(count, terms, -1)  # [K, T, V]
    fields = np.swapaxes(np.swapaxes(amp, 1, 2) @ waves, 1, 2)  # [K, V, 3]
    rms = np.sqrt(np.mean(np.sum(fields**2, axis=-1), axis=-1))
    return fields / np.maximum(rms, 1e-12)[:, None, None]


def _identity(rng, anchor, count):
    x, y, z = anchor[:, 0], anchor[:, 1], anchor[:, 2]
    zero = np.zeros_like(x)
    front = shp.smoothstep(0.0, 0.05, z)
    lower = shp.smoothstep(0.0, -0.06, y) * front
    named = [
        0.04 * anchor,  # overall scale about the origin
        np.stack([0.05 * x, zero, zero], -1),  # width
        np.stack([zero, 0.07 * np.minimum(y - 0.03, 0.0), zero], -1),  # face length
        np.stack([zero, zero, 0.05 * z], -1),  # depth
        0.004 * shp.nose_relief(anchor)[:, None] / 0.021 * np.array([0.0, -0.2, 1.0]),
        np.stack([0.12 * x * lower, zero, zero], -1),  # jaw width
        0.005
        * shp.gauss(anchor, (0, shp.CHIN_Y, 0.08), (0.03, 0.02, 0.04))[:, None]
        * np.array([0.0, -0.6, 0.8]),  # chin
        np.stack(
            [
                0.003
                * np.tanh(x / 0.01)
                * shp.gauss(anchor, (0, shp.EYE_Y, 0.07), (0.05, 0.02, 0.04)),
                zero,
                zero,
            ],
            -1,
        ),
    ]
    dirs = np.zeros((count, len(x), 3))
    n_named = min(count, len(named))
    if n_named:
        dirs[:n_named] = np.stack(named[:n_named])
    if count > len(named):
        k = np.arange(count - len(named))
        amp = 0.003 / (1.0 + k / 25.0)
        dirs[len(named) :] = _random_fields(rng, anchor, len(k)) * amp[:, None, None]
    return np.moveaxis(dirs, 0, -1)  # [V, 3, S]


def _expressions(rng, mesh, w_jaw, count):
    p = mesh.verts
    x = p[:, 0]
    nv = len(p)
    sx = np.sign(x)
    corner = np.zeros(nv)
    for s in (-1.0, 1.0):
        corner += shp.gauss(
            p, (s * shp.MOUTH_HALF_WIDTH, shp.MOUTH_Y, np.inf), (0.014, 0.012, np.inf)
        )
    front = shp.smoothstep(0.0, 0.04, p[:, 2])
    corner *= front
    radial = p - shp.CENTER
    radial /= np.linalg.norm(radial, axis=-1, keepdims=True)
    brow_band = shp.gauss(p, (0.0, 0.05, np.inf), (0.06, 0.016, np.inf)) * front
    inner_brow = shp.gauss(p, (0.0, 0.045, np.inf), (0.03, 0.01, np.inf)) * front
    mouth = shp.gauss(p, (0.0, shp.MOUTH_Y, np.inf), (0.022, 0.013, np.inf)) * front
    cheek = shp.gauss(p, (0.0, -0.01, np.inf), (0.05, 0.015, np.inf)) * front
    # Blink: the opening's skin moves onto a sphere just outside the eyeball.
    blink = [mesh.lid_shift * (np.sign(x) == (1.0 if e == 0 else -1.0)) for e in (0, 1)]
    named = [
        w_jaw[:, None] * np.array([0.0, -0.012, -0.002]),
        corner[:, None] * np.stack([0.005 * sx, np.full(nv, 0.006), np.full(nv, -0.003)], -1)
        + cheek[:, None] * np.array([0.0, 0.0015, 0.001]),
        brow_band[:, None] * np.array([0.0, 0.008, 0.001]),
        blink[0][:, None] * radial,
        blink[1][:, None] * radial,
        inner_brow[:, None]
        * np.stack([-0.003 * np.tanh(x / 0.01), np.full(nv, -0.004), np.zeros(nv)], -1),
        mouth[:, None] * np.stack([-0.3 * x, np.zeros(nv), np.full(nv, 0.006)], -1),
        corner[:, None] * np.stack([0.006 * sx, np.full(nv, -0.0015), np.full(nv, -0.002)], -1),
    ]
    dirs = np.zeros((count, nv, 3))
    n_named = min(count, len(named))
    if n_named:
        dirs[:n_named] = np.stack(named[:n_named])
    if count > len(named):
        n = count - len(named)
        face = np.nonzero((mesh.part == 0) & (p[:, 2] > 0.04) & (np.abs(p[:, 1] + 0.02) < 0.07))[0]
        centres = p[rng.choice(face, size=n)]
        sigma = rng.uniform(0.012, 0.03, size=(n, 1))
        vec = rng.normal(size=(n, 3))
        vec /= np.linalg.norm(vec, axis=-1, keepdims=True)
        amp = 0.003 / (1.0 + np.arange(n) / 20.0)
        d2 = np.sum((p[None] - centres[:, None]) ** 2, axis=-1)  # [n, V]
        dirs[len(named) :] = (np.exp(-d2 / sigma**2) * amp[:, None])[..., None] * vec[:, None]
    dirs[:, mesh.part >= 2] = 0.0  # expressions never deform the eyeballs
    return np.moveaxis(dirs, 0, -1)  # [V, 3, E]


def _correctives(rng, mesh, w_jaw):
    """posedirs [36, V*3]: smooth mm-scale fields on the neck and the lower face."""
    p = mesh.verts
    nv = len(p)
    head = (mesh.part <= 1).astype(np.float64)
    neck = head * shp.smoothstep(-0.17, -0.13, p[:, 1]) * shp.smoothstep(-0.03, -0.07, p[:, 1])
    fields = _random_fields(rng, p, 18, wavelength=(0.08, 0.2))
    out = np.zeros((36, nv, 3))
    out[0:9] = 0.002 * fields[:9] * neck[None, :, None]
    out[9:18] = 0.0015 * fields[9:] * (w_jaw * head)[None, :, None]
    return out.reshape(36, nv * 3)


def _labels(mesh):
    p = mesh.verts
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    lab = np.full(len(p), Region.SKIN, np.int64)
    skin = mesh.part == 0
    lon = np.abs(np.arctan2(x, z))
    hairline = np.interp(
        lon, [0.0, 0.9, 1.3, 1.75, 2.4, np.pi], [0.068, 0.064, 0.035, 0.03, -0.03, -0.07]
    )
    lab[skin & (y > hairline)] = Region.SCALP
    lab[skin & ((y < -0.105) | ((y < -0.06) & (z < -0.01)) | ((y < -0.085) & (z < 0.03)))] = (
        Region.NECK
    )
    lab[skin & (shp.ear_relief(p) > 0.004)] = Region.EARS
    lab[skin & (shp.nose_relief(p) > 0.0025)] = Region.NOSE
    for s in (-1.0, 1.0):
        u = (s * x - 0.035) / 0.023
        arch = 0.047 + 0.004 * (1 - u * u)
        brow = (np.abs(u) < 1.0) & (np.abs(y - arch) < 0.0035 * (1.2 - 0.5 * u)) & (z > 0.03)
        lab[skin & brow] = Region.BROWS
    lab[skin & (mesh.opening > 0.02)] = Region.EYE_REGION
    u = x / shp.MOUTH_HALF_WIDTH
    lens = np.sqrt(np.clip(1 - u * u, 0, 1))
    front = z > 0.04
    dy = y - _lip_line(mesh, x)
    lab[skin & front & (dy > 0) & (dy < 0.0085 * lens)] = Region.LIP_UPPER
    lab[skin & front & (dy < 0) & (dy > -0.011 * lens)] = Region.LIP_LOWER
    lab[mesh.slit_upper] = Region.LIP_UPPER
    lab[mesh.slit_lower] = Region.LIP_LOWER
    lab[mesh.slit_corners] = Region.LIP_UPPER
    lab[mesh.part == 1] = Region.MOUTH_INTERIOR
    lip_ring = mesh.pocket_ring == pmesh.POCKET_LIP_RING
    lab[lip_ring & (mesh.pocket_side >= 0)] = Region.LIP_UPPER
    lab[lip_ring & (mesh.pocket_side < 0)] = Region.LIP_LOWER
    teeth = np.isin(mesh.pocket_ring, pmesh.POCKET_TEETH_RINGS) & (mesh.pocket_side != 0)
    lab[teeth] = Region.TEETH
    for e, (ball, iris) in enumerate(
        ((Region.EYEBALL_LEFT, Region.IRIS_LEFT), (Region.EYEBALL_RIGHT, Region.IRIS_RIGHT))
    ):
        on = mesh.part == 2 + e
        lab[on] = ball
        lab[on & (mesh.eye_angle <= pmesh.IRIS_ANGLE + 1e-6)] = iris
    return lab
