"""A contact sheet of synthetic identities for a person to judge: rows x (expressions, views).

Rows are identities; columns are the neutral face, each named expression at
a clearly visible strength (mouth open with the jaw, smile, brows up, frown,
blink, gaze), wide views (yaw -60 deg, yaw +45 / pitch +20 deg, pitch -30 deg)
and one frame of the identity's first clip as the dataset renders it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from gshead_jax.data import synth_render as sr
from gshead_jax.data import trajectories as tr
from gshead_jax.flame import Expression

_HEADER = 14  # pixels of column titles


def _columns(num_expression: int):
    """(title, FrameState edit, yaw, pitch) per column; None = a clip frame."""

    def expr(**named):
        e = np.zeros(num_expression, np.float32)
        for name, value in named.items():
            idx = int(Expression[name])
            if idx < num_expression:
                e[idx] = value
        return e

    n = tr.neutral(num_expression)
    deg = math.radians
    return [
        ("neutral", n, 0.0, 0.0),
        (
            "mouth open",
            n.replace(expression=expr(MOUTH_OPEN=1.0), jaw=np.float32([0.3, 0, 0])),
            0,
            0,
        ),
        ("smile", n.replace(expression=expr(SMILE=1.6)), 0.0, 0.0),
        ("brows up", n.replace(expression=expr(BROWS_UP=1.6)), 0.0, 0.0),
        ("frown", n.replace(expression=expr(FROWN=1.3)), 0.0, 0.0),
        ("blink", n.replace(expression=expr(BLINK_LEFT=1.0, BLINK_RIGHT=1.0)), 0.0, 0.0),
        ("gaze left", n.replace(eyes=tr.eye_rotation(0.4, 0.0).astype(np.float32)), 0.0, 0.0),
        ("yaw -60", n, deg(-60), 0.0),
        ("yaw 45 pitch 20", n, deg(45), deg(20)),
        ("pitch -30", n, 0.0, deg(-30)),
        ("clip frame", None, 0.0, 0.0),
    ]


def contact_sheet(
    source, path: str, *, identities: int | Sequence[int] = 6, size: int | None = None
) -> np.ndarray:
    """Renders the sheet and writes it as PNG.

    Args:
      source: A `synthetic.SyntheticSource`.
      path: Output PNG.
      identities: Rows: a count n (identities 0..n-1) or the identity numbers.
      size: Cell side in pixels (default: the source's image size).

    Returns:
      The sheet, uint8 [H, W, 3].
    """
    from gshead_jax.data.synthetic import SyntheticSource

    if not isinstance(source, SyntheticSource):
        raise TypeError(f"source must be a SyntheticSource, got {type(source).__name__}")
    size = size or source.image_size
    model = source.model
    cols = _columns(model.num_expression)
    c = source.config
    clip_frame = min(12, c.frames - 1)
    ids = list(range(identities)) if isinstance(identities, int) else list(identities)
    rows = []
    for i in ids:
        ident = source.identity(i)
        heads, states, views, lights = [], [], [], []
        for _, state, yaw, pitch in cols:
            if state is None:
                state = tr.frame_state(
                    c.seed, i, 0, clip_frame, num_expression=model.num_expression
                )
            viewmat, light = tr.frame_camera(state, yaw, pitch)
            heads.append(ident.gaussians)
            states.append((ident.shape, state))
            views.append(viewmat)
            lights.append(light)
        images, _ = sr.render_states(
            model,
            heads,
            states,
            np.stack(views),
            np.stack(lights),
            size=size,
            backend=source.backend,
            batch=False,
            owner=source,
        )
        row = np.concatenate(list(np.round(images * 255).astype(np.uint8)), axis=1)
        rows.append(row)
    sheet = np.concatenate(rows, axis=0)
    canvas = Image.new("RGB", (sheet.shape[1], sheet.shape[0] + _HEADER))
    canvas.paste(Image.fromarray(sheet), (0, _HEADER))
    draw = ImageDraw.Draw(canvas)
    for j, (title, *_) in enumerate(cols):
        draw.text((j * size + 2, 1), title, fill=(230, 230, 230))
    for row, i in enumerate(ids):
        t = source.identity(i).traits
        label = f"{i}: {t.hair_style} {t.hair}"
        draw.text((2, _HEADER + row * size + 2), label, fill=(200, 200, 200))
    canvas.save(path, optimize=True)
    return np.asarray(canvas)
