"""Renders the FLAME stand-in (or a real FLAME file) in expressions and head poses.

A plain NumPy z-buffer mesh rasteriser with Lambert shading, per-vertex colours
from the model's region labels (a skin tone when a model has none), GAGAvatar's
camera (focal 12, 1.86 m) and ``gshead_jax.flame.forward`` for the poses.

  python experiments/show_head.py --out head.png
  python experiments/show_head.py --out flame.png --flame third_party/assets/flame/generic_model.pkl
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from gshead_jax import camera, flame

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "head.png", "Output PNG path.")
flags.DEFINE_integer("size", 256, "Size of one panel in pixels.")
flags.DEFINE_string("flame", None, "Optional FLAME model file (.pkl, .npz or .pt).")
flags.DEFINE_string("landmarks", None, "Optional landmark embedding for --flame (drawn as dots).")
flags.DEFINE_integer("seed", 0, "Stand-in seed.")
flags.DEFINE_bool("show_landmarks", False, "Draw the 68 landmarks.")

R = flame.Region
PALETTE = {
    R.SKIN: (0.86, 0.66, 0.54),
    R.SCALP: (0.23, 0.15, 0.10),
    R.NECK: (0.83, 0.63, 0.52),
    R.EARS: (0.85, 0.62, 0.52),
    R.NOSE: (0.87, 0.64, 0.53),
    R.BROWS: (0.28, 0.18, 0.12),
    R.EYE_REGION: (0.80, 0.58, 0.50),
    R.LIP_UPPER: (0.72, 0.36, 0.36),
    R.LIP_LOWER: (0.76, 0.40, 0.40),
    R.MOUTH_INTERIOR: (0.30, 0.07, 0.08),
    R.TEETH: (0.93, 0.92, 0.86),
    R.EYEBALL_LEFT: (0.95, 0.95, 0.93),
    R.EYEBALL_RIGHT: (0.95, 0.95, 0.93),
    R.IRIS_LEFT: (0.27, 0.42, 0.58),
    R.IRIS_RIGHT: (0.27, 0.42, 0.58),
}
PUPIL_ANGLE = 0.22  # radians from the gaze axis (the stand-in's pupil)


def vertex_colours(model: flame.FlameModel) -> np.ndarray:
    """Per-vertex RGB [V, 3] from the region labels (skin for models without)."""
    nv = model.num_vertices
    if model.vertex_labels is None:
        return np.tile(np.array(PALETTE[R.SKIN]), (nv, 1))
    labels = np.asarray(model.vertex_labels)
    table = np.array([PALETTE[r] for r in R])
    colours = table[labels]
    # Pupils: iris vertices close to the gaze axis (+z at rest) through the eye joint.
    joints = np.asarray(model.J_regressor) @ np.asarray(model.v_template)
    v = np.asarray(model.v_template)
    for joint, iris in ((3, R.IRIS_LEFT), (4, R.IRIS_RIGHT)):
        d = v - joints[joint]
        angle = np.arccos(np.clip(d[:, 2] / np.linalg.norm(d, axis=-1), -1, 1))
        colours[(labels == iris) & (angle < PUPIL_ANGLE)] = (0.05, 0.05, 0.06)
    return colours


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals [V, 3]."""
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(verts)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def rasterize(px: np.ndarray, depth: np.ndarray, faces: np.ndarray, width: int, height: int):
    """Z-buffer rasterisation of front-facing triangles.

    Args:
        px: Vertex pixel coordinates, pixel centres at +0.5. [V, 2]
        depth: Vertex camera depth. [V]
        faces: Triangles, counter-clockwise from outside. [F, 3]
        width: Image width.
        height: Image height.

    Returns:
        face: Triangle per pixel, -1 for background. [H, W]
        bary: Barycentric weights per pixel. [H, W, 3]
    """
    tri = px[faces]  # [F, 3, 2]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    # Counter-clockwise in a y-up view is clockwise in y-down pixels: area < 0 faces us.
    keep = (area < -1e-12) & (depth[faces] > 1e-6).all(axis=1)
    lo = np.floor(tri.min(axis=1) - 0.5).astype(np.int64) + 1
    hi = np.floor(tri.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    span = np.max(hi - lo + 1, axis=1)
    keep &= span > 0
    zbuf = np.full(height * width, np.inf)
    hits = []
    for block in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048):
        sel = np.nonzero(keep & (span <= block) & (span > block // 2 if block > 2 else True))[0]
        if len(sel) == 0:
            continue
        dy, dx = np.meshgrid(np.arange(block), np.arange(block), indexing="ij")
        jx = lo[sel, 0, None] + dx.reshape(-1)[None]  # [S, B*B]
        iy = lo[sel, 1, None] + dy.reshape(-1)[None]
        valid = (jx <= hi[sel, 0, None]) & (iy <= hi[sel, 1, None])
        s_idx, k = np.nonzero(valid)
        f = sel[s_idx]
        x, y = jx[s_idx, k] + 0.5, iy[s_idx, k] + 0.5
        ta, tb, tc = a[f], b[f], c[f]
        w0 = (tb[:, 0] - x) * (tc[:, 1] - y) - (tb[:, 1] - y) * (tc[:, 0] - x)
        w1 = (tc[:, 0] - x) * (ta[:, 1] - y) - (tc[:, 1] - y) * (ta[:, 0] - x)
        w2 = (ta[:, 0] - x) * (tb[:, 1] - y) - (ta[:, 1] - y) * (tb[:, 0] - x)
        w = np.stack([w0, w1, w2], -1) / area[f, None]
        inside = (w >= -1e-9).all(axis=1)
        f, w = f[inside], w[inside]
        pix = (iy[s_idx, k] * width + jx[s_idx, k])[inside]
        z = np.einsum("nk,nk->n", w, depth[faces[f]])
        np.minimum.at(zbuf, pix, z)
        hits.append((pix, z, f, w))
    face = np.full(height * width, -1)
    bary = np.zeros((height * width, 3))
    for pix, z, f, w in hits:
        win = z <= zbuf[pix]
        face[pix[win]] = f[win]
        bary[pix[win]] = w[win]
    return face.reshape(height, width), bary.reshape(height, width, 3)


def shade(verts_cam, faces, colours, face, bary, background=(1.0, 1.0, 1.0)):
    """Lambert + ambient shading of a rasterised mesh. -> [H, W, 3] in [0, 1]."""
    normals = vertex_normals(verts_cam, faces)
    hit = face >= 0
    corners = faces[face[hit]]  # [P, 3]
    w = bary[hit]
    n = np.einsum("pk,pkc->pc", w, normals[corners])
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    col = np.einsum("pk,pkc->pc", w, colours[corners])
    light = np.array([-0.35, -0.45, -0.82])  # towards the camera, from the upper left
    light /= np.linalg.norm(light)
    fill = np.array([0.6, 0.1, -0.8])
    fill /= np.linalg.norm(fill)
    lambert = np.clip(n @ light, 0, None) * 0.75 + np.clip(n @ fill, 0, None) * 0.2
    img = np.tile(np.asarray(background, np.float64), face.shape + (1,))
    img[hit] = np.clip(col * (0.22 + lambert[:, None]), 0, 1)
    return img


def panels(model: flame.FlameModel):
    """(caption, params dict, camera yaw) of each panel."""
    ne = model.num_expression
    E = flame.Expression

    def expr(**named):
        e = np.zeros(ne, np.float32)
        for k, val in named.items():
            e[int(k)] = val
        return e

    if model.vertex_labels is not None:  # the stand-in: named expressions

        def x(name):
            return int(E[name])

        rows = [
            ("neutral", {}, 0.0),
            (
                "mouth open",
                {"jaw": [0.28, 0, 0], "expression": expr(**{str(x("MOUTH_OPEN")): 0.4})},
                0.0,
            ),
            ("smile", {"expression": expr(**{str(x("SMILE")): 1.0})}, 0.0),
            ("brows up", {"expression": expr(**{str(x("BROWS_UP")): 1.0})}, 0.0),
            (
                "blink",
                {"expression": expr(**{str(x("BLINK_LEFT")): 1.0, str(x("BLINK_RIGHT")): 1.0})},
                0.0,
            ),
            ("gaze left", {"eyes": [0, 0.4, 0, 0, 0.4, 0]}, 0.0),
            ("frown", {"expression": expr(**{str(x("FROWN")): 1.0})}, 0.0),
            ("pucker", {"expression": expr(**{str(x("PUCKER")): 1.0})}, 0.0),
            ("turn left", {"global_pose": [0, 0.55, 0]}, 0.0),
            (
                "nod + smile",
                {"neck": [0.3, 0, 0], "expression": expr(**{str(x("SMILE")): 1.0})},
                0.0,
            ),
            ("3/4 view, jaw", {"jaw": [0.3, 0, 0]}, -0.7),
            ("profile, jaw", {"jaw": [0.3, 0, 0]}, -1.5708),
        ]
    else:  # a real FLAME file: its PCA components have no names
        rows = [("neutral", {}, 0.0), ("jaw open", {"jaw": [0.3, 0, 0]}, 0.0)]
        rows += [(f"expr[{k}] = +2", {"expression": expr(**{str(k): 2.0})}, 0.0) for k in range(4)]
        rows += [
            ("gaze left", {"eyes": [0, 0.4, 0, 0, 0.4, 0]}, 0.0),
            ("expr[0] = -2", {"expression": expr(**{"0": -2.0})}, 0.0),
            ("turn left", {"global_pose": [0, 0.55, 0]}, 0.0),
            ("nod", {"neck": [0.3, 0, 0]}, 0.0),
            ("3/4 view, jaw", {"jaw": [0.3, 0, 0]}, -0.7),
            ("profile, jaw", {"jaw": [0.3, 0, 0]}, -1.5708),
        ]
    return rows


def render_grid(model: flame.FlameModel, size: int, columns: int = 6, landmarks=False):
    """Renders all panels into one uint8 image [rows * (size + 18), columns * size, 3]."""
    spec = panels(model)
    n = len(spec)
    params = flame.FlameParams.zeros((n,), model.num_shape, model.num_expression)
    arrays = {
        k: np.array(getattr(params, k))
        for k in ("expression", "jaw", "eyes", "neck", "global_pose")
    }
    for i, (_, p, _) in enumerate(spec):
        for k, val in p.items():
            arrays[k][i] = val
    out = jax.jit(flame.forward)(
        model, jnp.zeros((n, model.num_shape)), **{k: jnp.asarray(v) for k, v in arrays.items()}
    )
    verts = np.asarray(out.vertices, np.float64)
    lmks = None if out.landmarks is None else np.asarray(out.landmarks, np.float64)
    faces = np.asarray(model.faces)
    colours = vertex_colours(model)
    ss = 2  # supersampling
    yaws = np.array([s[2] for s in spec])
    cams = camera.head_camera(yaws, 0.08, width=size * ss, height=size * ss, flame_scale=1.0)
    px, depth = jax.jit(camera.project)(cams, jnp.asarray(verts, jnp.float32))
    px, depth = np.asarray(px, np.float64), np.asarray(depth, np.float64)
    rot = np.asarray(cams.rotation, np.float64)
    trans = np.asarray(cams.translation, np.float64)
    cap = 18
    rows = -(-n // columns)
    canvas = Image.new("RGB", (columns * size, rows * (size + cap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (caption, _, _) in enumerate(spec):
        face, bary = rasterize(px[i], depth[i], faces, size * ss, size * ss)
        verts_cam = verts[i] @ rot[i].T + trans[i]
        img = shade(verts_cam, faces, colours, face, bary)
        img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
        tile = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
        x0, y0 = (i % columns) * size, (i // columns) * (size + cap)
        canvas.paste(tile, (x0, y0 + cap))
        draw.text((x0 + 4, y0 + 3), caption, fill=(0, 0, 0))
        if landmarks and lmks is not None:
            lp, _ = camera.project(
                camera.head_camera(yaws[i], 0.08, width=size, height=size, flame_scale=1.0),
                jnp.asarray(lmks[i], jnp.float32),
            )
            for u, v in np.asarray(lp):
                draw.ellipse(
                    [x0 + u - 1.5, y0 + cap + v - 1.5, x0 + u + 1.5, y0 + cap + v + 1.5],
                    fill=(0, 160, 0),
                )
    return np.asarray(canvas)


def main(argv):
    del argv
    t0 = time.perf_counter()
    if FLAGS.flame:
        model = flame.load(FLAGS.flame, landmarks=FLAGS.landmarks)
    else:
        model = flame.standin(FLAGS.seed)
    grid = render_grid(model, FLAGS.size, landmarks=FLAGS.show_landmarks)
    Image.fromarray(grid).save(FLAGS.out)
    print(
        f"wrote {FLAGS.out} ({grid.shape[1]}x{grid.shape[0]}) in {time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    app.run(main)
