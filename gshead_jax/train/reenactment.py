"""Reenactment: drive an avatar built from one portrait with a sequence, write MP4 / GIF.

A *portrait* and each *driving frame* are records of the data schema
(`gshead_jax.data.records`): FLAME parameters, ``viewmat`` / ``K`` and, when there
is one, the ``image``. Driving sequences come from

* ``.npz``: FLAME fields ``expression`` [T, E] (required), ``jaw``, ``eyes``,
  ``neck``, ``global_pose``, ``translation``, optional cameras (``viewmat``
  [T, 4, 4] with ``K`` [T, 3, 3] + ``image_size``, or GAGAvatar's
  ``transform_matrix`` [T, 3, 4] with focal 12) and optional ``images`` [T, S, S, 3];
* GAGAvatar's tracker output ``optim.pkl`` / ``smoothed.pkl`` ({key: {expcode,
  posecode, eyecode, transform_matrix, ...}}, frames sorted by the number after
  the last ``_``; head pose is in ``transform_matrix``);
* the built-in synthetic driver (`synthetic_driver`): a clip of a synthetic
  identity, with its rendered frames for side-by-side videos.

``reenact`` reconstructs once and drives frame by frame (jitted, fixed chunks);
``orbit`` renders novel views. Expression/shape vectors shorter than the model's
FLAME are zero-padded (the missing components are 0); longer ones are an error.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from gshead_jax import camera as cam
from gshead_jax.flame import FlameParams
from gshead_jax.models.base import CONSTANTS, FLAME_FIELDS

__all__ = [
    "DrivingSequence",
    "compose",
    "driver_from_records",
    "load_driver",
    "orbit_cameras",
    "reenact",
    "synthetic_driver",
    "write_gif",
    "write_mp4",
]


@dataclasses.dataclass
class DrivingSequence:
    """T frames of driving signal.

    Attributes:
      params: FLAME fields -> [T, n] float32 (missing fields are zero).
      viewmat: Cameras, world -> OpenCV camera. [T, 4, 4] (None: the portrait's camera)
      K: Intrinsics in pixels of ``image_size``. [T, 3, 3]
      image_size: Side the intrinsics are for.
      images: The driver's frames for side-by-side videos, uint8. [T, S, S, 3] or None
      fps: Frames per second.
    """

    params: dict[str, np.ndarray]
    viewmat: np.ndarray | None = None
    K: np.ndarray | None = None
    image_size: int | None = None
    images: np.ndarray | None = None
    fps: float = 25.0

    def __len__(self) -> int:
        return int(self.params["expression"].shape[0])


def driver_from_records(records: Sequence[Mapping[str, Any]], fps: float = 25.0) -> DrivingSequence:
    """A sequence from data records (FLAME fields, viewmat, K, image)."""
    if not records:
        raise ValueError("records must not be empty")
    return DrivingSequence(
        params={k: np.stack([np.asarray(r[k], np.float32) for r in records]) for k in FLAME_FIELDS},
        viewmat=np.stack([np.asarray(r["viewmat"], np.float32) for r in records]),
        K=np.stack([np.asarray(r["K"], np.float32) for r in records]),
        image_size=int(np.shape(records[0]["image"])[0]),
        images=np.stack([np.asarray(r["image"]) for r in records]),
        fps=fps,
    )


def _from_gagavatar(entries: Sequence[Mapping[str, Any]], size: int = 512) -> DrivingSequence:
    t = len(entries)
    arr = lambda k, n: np.stack([np.asarray(e[k], np.float32).reshape(n) for e in entries])  # noqa: E731
    pose = arr("posecode", 6)
    params = {
        "expression": np.stack([np.asarray(e["expcode"], np.float32).ravel() for e in entries]),
        "global_pose": pose[:, :3],
        "jaw": pose[:, 3:],
        "eyes": arr("eyecode", 6),
    }
    if "shapecode" in entries[0]:
        params["shape"] = np.stack(
            [np.asarray(e["shapecode"], np.float32).ravel() for e in entries]
        )
    viewmat = K = None
    if "transform_matrix" in entries[0]:
        c = cam.from_gagavatar(arr("transform_matrix", (3, 4)), width=size, height=size)
        viewmat, K = np.asarray(c.viewmat), np.asarray(c.K)
    for k in FLAME_FIELDS:
        params.setdefault(k, np.zeros((t, 3), np.float32))
    return DrivingSequence(params=params, viewmat=viewmat, K=K, image_size=size)


def load_driver(path: str, *, fps: float = 25.0, max_frames: int | None = None) -> DrivingSequence:
    """Reads a driving sequence from ``.npz`` or GAGAvatar's ``optim.pkl`` / ``smoothed.pkl``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: an unknown extension or a file without the needed fields.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"driving sequence {path} not found")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            data = pickle.load(f)
        if not isinstance(data, Mapping) or not data:
            raise ValueError(f"{path}: expected GAGAvatar's {{frame key: params}} dict")
        keys = sorted(data, key=lambda k: int(str(k).split("_")[-1]))
        entries = [data[k] for k in keys[:max_frames]]
        missing = {"expcode", "posecode", "eyecode"} - set(entries[0])
        if missing:
            raise ValueError(f"{path}: GAGAvatar entries need {sorted(missing)}")
        seq = _from_gagavatar(entries)
    elif path.endswith(".npz"):
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        if "expression" not in d and "expcode" not in d:
            raise ValueError(f"{path}: needs 'expression' [T, E] (or GAGAvatar's 'expcode')")
        if "expcode" in d:
            t = len(d["expcode"])
            seq = _from_gagavatar([{k: d[k][i] for k in d if k != "images"} for i in range(t)])
        else:
            t = len(d["expression"])
            params = {k: np.asarray(d.get(k, np.zeros((t, 3))), np.float32) for k in FLAME_FIELDS}
            seq = DrivingSequence(params=params)
            if "viewmat" in d:
                if "K" not in d or "image_size" not in d:
                    raise ValueError(f"{path}: 'viewmat' needs 'K' and 'image_size' too")
                seq.viewmat, seq.K = d["viewmat"].astype(np.float32), d["K"].astype(np.float32)
                seq.image_size = int(d["image_size"])
            elif "transform_matrix" in d:
                size = int(d.get("image_size", 512))
                c = cam.from_gagavatar(d["transform_matrix"], width=size, height=size)
                seq.viewmat, seq.K, seq.image_size = np.asarray(c.viewmat), np.asarray(c.K), size
        if "images" in d:
            seq.images = np.asarray(d["images"], np.uint8)
        if max_frames:
            seq = _slice(seq, max_frames)
    else:
        raise ValueError(f"{path}: driving sequences are .npz or GAGAvatar .pkl files")
    seq.fps = fps
    return seq


def _slice(seq: DrivingSequence, n: int) -> DrivingSequence:
    cut = lambda x: None if x is None else x[:n]  # noqa: E731
    return dataclasses.replace(
        seq,
        params={k: v[:n] for k, v in seq.params.items()},
        viewmat=cut(seq.viewmat),
        K=cut(seq.K),
        images=cut(seq.images),
    )


def synthetic_driver(config: Any, identity: int, clip: int, frames: int) -> DrivingSequence:
    """A synthetic clip rendered now: identity ``identity``'s clip ``clip``, ``frames`` long.

    Args:
      config: A ``SyntheticConfig`` (its seed, size and look); ``frames`` overrides its own.
      identity: Identity number (< config.identities).
      clip: Clip number (< config.clips).
      frames: Frames to render (motion is a function of the frame number, so any length).
    """
    from gshead_jax.data.synthetic import SyntheticSource

    config = dataclasses.replace(config, frames=frames)
    src = SyntheticSource(config)
    start = (identity * config.clips + clip) * frames * config.views
    idx = [start + f * config.views for f in range(frames)]
    return driver_from_records(src.render(idx, batch=False), fps=config.fps)


# ----------------------------------------------------------------------------- driving


def _fit(x: np.ndarray, n: int, name: str) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.shape[-1] > n:
        raise ValueError(f"{name} has {x.shape[-1]} components, the model's FLAME has {n}")
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def _scaled_K(K: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    s = to_size / from_size
    return (np.diag([s, s, 1.0]).astype(np.float32) @ np.asarray(K, np.float32)).astype(np.float32)


def _model_sizes(params: Mapping[str, Any]) -> tuple[int, int]:
    fm = params[CONSTANTS]["flame"]
    return int(fm.num_shape), int(fm.num_expression)


def reenact(
    model: Any,
    params: Mapping[str, Any],
    portrait: Mapping[str, Any],
    driver: DrivingSequence,
    *,
    render_size: int,
    use_driver_camera: bool = True,
    chunk: int = 8,
    cameras: cam.Camera | None = None,
) -> np.ndarray:
    """Renders the portrait's avatar under each driving frame.

    Args:
      model: The ``AvatarModel``.
      params: All three param groups.
      portrait: A record: ``image`` uint8 [S, S, 3], FLAME fields, ``viewmat``, ``K``.
      driver: The driving sequence (expression, jaw, eyes, pose; the portrait's identity).
      render_size: The model's output side.
      use_driver_camera: Render from the driver's cameras (head pose included) when it
        has them; else from the portrait's camera.
      chunk: Frames per jitted call.
      cameras: Explicit render cameras [T] (e.g. ``orbit_cameras``), overriding both.

    Returns:
      Frames in [0, 1]. [T, R, R, 3] float32
    """
    n_shape, n_expr = _model_sizes(params)
    s = int(np.shape(portrait["image"])[0])
    src = {
        "image": jnp.asarray(np.asarray(portrait["image"], np.float32)[None] / 255.0),
        "params": FlameParams(
            **{
                k: jnp.asarray(
                    _fit(np.asarray(portrait[k])[None], n_shape, "portrait shape")
                    if k == "shape"
                    else np.asarray(portrait[k], np.float32)[None]
                )
                for k in FLAME_FIELDS
            }
        ),
        "camera": cam.make_camera(
            np.asarray(portrait["viewmat"], np.float32)[None],
            np.asarray(portrait["K"], np.float32)[None],
            width=s,
            height=s,
        ),
    }
    avatar = jax.jit(model.reconstruct)(params, src["image"], src["params"], src["camera"])
    t = len(driver)
    p = {k: np.asarray(driver.params[k], np.float32) for k in FLAME_FIELDS}
    p["expression"] = _fit(p["expression"], n_expr, "driver expression")
    p["shape"] = np.broadcast_to(np.asarray(src["params"].shape), (t, n_shape))
    if cameras is not None:
        viewmat, K = np.asarray(cameras.viewmat), np.asarray(cameras.K)
    elif use_driver_camera and driver.viewmat is not None:
        viewmat, K = driver.viewmat, _scaled_K(driver.K, driver.image_size, render_size)
    else:
        viewmat = np.broadcast_to(np.asarray(portrait["viewmat"], np.float32), (t, 4, 4))
        K = np.broadcast_to(_scaled_K(portrait["K"], s, render_size), (t, 3, 3))

    @jax.jit
    def drive(avatar, fp, viewmat, K):
        n = viewmat.shape[0]
        av = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), avatar)
        c = cam.make_camera(viewmat, K, width=render_size, height=render_size)
        image, _ = model.drive(params, av, FlameParams(**fp), c)
        return jnp.clip(image, 0.0, 1.0)

    frames = []
    for lo in range(0, t, chunk):
        idx = np.minimum(np.arange(lo, lo + chunk), t - 1)  # pad the last chunk: one shape
        out = drive(avatar, {k: v[idx] for k, v in p.items()}, viewmat[idx], K[idx])
        frames.append(np.asarray(out)[: min(chunk, t - lo)])
    return np.concatenate(frames)


def orbit_cameras(
    portrait: Mapping[str, Any], frames: int, *, render_size: int, yaw: float = 0.6, pitch=0.1
) -> cam.Camera:
    """Cameras sweeping ``yaw`` radians left and right around the head (novel views).

    The radius is the portrait camera's distance to the world origin (the head),
    the focal GAGAvatar's 12.
    """
    vm = np.asarray(portrait["viewmat"], np.float64)
    centre = -vm[:3, :3].T @ vm[:3, 3]
    radius = float(np.linalg.norm(centre))
    phase = np.sin(2 * math.pi * np.arange(frames) / max(frames, 1))
    return cam.orbit(
        yaw * phase,
        np.full(frames, pitch),
        np.full(frames, radius),
        focal=cam.GAGAVATAR_FOCAL,
        width=render_size,
        height=render_size,
    )


# ----------------------------------------------------------------------------- video files


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    if frames.shape[1] == size:
        return frames
    return np.stack(
        [
            np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC))
            for f in frames
        ]
    )


def compose(columns: Sequence[np.ndarray], *, height: int = 256) -> np.ndarray:
    """Side-by-side frames (uint8 or float in [0, 1]), each column resized to ``height``.

    Returns:
      uint8 [T, height, columns * height, 3].
    """
    cols = []
    for c in columns:
        c = np.asarray(c)
        if c.dtype != np.uint8:
            c = np.round(np.clip(c, 0.0, 1.0) * 255.0).astype(np.uint8)
        cols.append(_resize(c, height))
    t = min(len(c) for c in cols)
    return np.concatenate([c[:t] for c in cols], axis=2)


def write_gif(frames: np.ndarray, path: str, fps: float = 25.0) -> str:
    """Writes uint8 frames [T, H, W, 3] as a looping GIF (Pillow)."""
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0
    )
    return path


def write_mp4(frames: np.ndarray, path: str, fps: float = 25.0) -> str:
    """Writes uint8 frames [T, H, W, 3] as H.264 MP4 (needs the ``video`` extra).

    Raises:
      ImportError: imageio / imageio-ffmpeg missing (``pip install -e ".[video]"``).
    """
    try:
        import imageio.v2 as imageio
    except ImportError as e:
        raise ImportError(
            'writing MP4 needs imageio and imageio-ffmpeg: pip install -e ".[video]"'
        ) from e
    h, w = frames.shape[1:3]
    if h % 16 or w % 16:  # H.264 macro blocks; pad instead of letting imageio resize
        frames = np.pad(frames, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0)))
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=16) as w_:
        for f in frames:
            w_.append_data(f)
    return path
