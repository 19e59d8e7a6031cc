"""The synthetic head dataset: the embedded default that needs no licensed asset.

Identities (`identity.py`: shape coefficients + a procedural look realised as
Gaussians attached to the FLAME stand-in), talking-head clips and multi-view
cameras (`trajectories.py`), rendered by `splat.rasterize` (`synth_render.py`).
Every record is a deterministic function of ``(seed, identity, clip, frame,
view)``: `SyntheticSource` renders any one on demand (random access), and the
CLI caches a dataset to ArrayRecord shards, rendering batches on the device::

    python -m gshead_jax.data.synthetic --out data/synth --identities 64 --clips 4 \\
        --frames 32 --size 256 [--views 4] [--seed 0] [--preview synth.png]

Records follow `gshead_jax.data.records` with ``source_kind='synthetic'``:
``mask`` is the rendered alpha, ``bbox`` its box (alpha >= 0.5), cameras in
GAGAvatar's convention (focal 12, world = FLAME metres x 5, head pose in the
camera, ``transform_matrix`` = `camera.to_gagavatar` of ``viewmat``), FLAME
``global_pose``, ``neck`` and ``translation`` zero. docs/data.md, "Synthetic data".
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import sys
import threading
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from gshead_jax import camera, flame
from gshead_jax.data import identity as idm
from gshead_jax.data import synth_render as sr
from gshead_jax.data import trajectories as tr
from gshead_jax.data.source import FrameIndex

__all__ = ["SyntheticConfig", "SyntheticSource", "main", "mask_bbox"]


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What defines a synthetic dataset (JSON-able; the CLI stores it beside the shards).

    Attributes:
      identities: Number of identities.
      clips: Clips per identity.
      frames: Frames per clip.
      views: Cameras per frame (view 0 frontal, the others drawn per clip).
      image_size: S.
      seed: Dataset seed (identities, motion, cameras).
      num_gaussians: Gaussians per identity.
      fps: Frame rate of the motion.
      yaw_range: Views' yaw drawn in [-yaw_range, yaw_range], degrees.
      pitch_range: Views' pitch drawn in [-pitch_range, pitch_range], degrees.
      model: None for ``flame.standin(model_seed)``, or a FLAME file with region labels.
      model_seed: Seed of the stand-in.
    """

    identities: int = 16
    clips: int = 2
    frames: int = 16
    views: int = 1
    image_size: int = 256
    seed: int = 0
    num_gaussians: int = 32768
    fps: float = tr.FPS
    yaw_range: float = 60.0
    pitch_range: float = 30.0
    model: str | None = None
    model_seed: int = 0

    def __post_init__(self):
        for name in ("identities", "clips", "frames", "views", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.num_gaussians < idm.MIN_GAUSSIANS:
            raise ValueError(
                f"num_gaussians must be >= {idm.MIN_GAUSSIANS}, got {self.num_gaussians}"
            )
        if not (0 <= self.yaw_range <= 180 and 0 <= self.pitch_range < 90):
            raise ValueError(
                f"yaw_range must be in [0, 180] and pitch_range in [0, 90), got "
                f"{self.yaw_range}, {self.pitch_range}"
            )
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")

    def __len__(self) -> int:
        return self.identities * self.clips * self.frames * self.views

    def ids(self, i: int) -> tuple[int, int, int, int]:
        """(identity, clip, frame, view) numbers of record ``i`` (view fastest)."""
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} out of range [0, {len(self)})")
        i, view = divmod(int(i), self.views)
        i, frame = divmod(i, self.frames)
        identity, clip = divmod(i, self.clips)
        return identity, clip, frame, view

    def names(self, identity: int, clip: int, frame: int, view: int) -> tuple[str, str, str]:
        """(identity name, clip name, key) of a record."""
        ident = idm.identity_name(self.seed, identity)
        clip_name = f"{ident}_c{clip:03d}"
        key = f"{clip_name}_{frame:05d}" + (f"_v{view:02d}" if self.views > 1 else "")
        return ident, clip_name, key


def _load_model(config: SyntheticConfig) -> flame.FlameModel:
    if config.model is None:
        return flame.standin(config.model_seed)
    return flame.load(config.model)


class SyntheticSource:
    """Renders synthetic records on demand: a random-access, deterministic `FrameSource`.

    Pickles to its config (a worker rebuilds the model, ~1 s for the stand-in,
    and compiles its renderer once). Thread-safe (the pipeline's read threads
    share it). Rendering runs on JAX's default device with ``backend``.

    Args:
      config: The dataset (or pass its fields as keywords).
      backend: `splat.rasterize` backend for single frames ("xla": any device).
      cache: Identities kept in memory (their Gaussians, ~1.5 MB each at 32k).
      name: Name in messages (default ``synthetic(seed=...)``).

    Example:
      >>> src = SyntheticSource(identities=4, clips=1, frames=8, image_size=64)
      >>> rec = src[7]   # identity 0, clip 0, frame 7, rendered now
    """

    source_kind = "synthetic"

    def __init__(
        self,
        config: SyntheticConfig | None = None,
        *,
        backend: str = "xla",
        cache: int = 16,
        name: str | None = None,
        **fields,
    ):
        if config is None:
            config = SyntheticConfig(**fields)
        elif fields:
            raise TypeError("pass either a SyntheticConfig or its fields, not both")
        if not isinstance(config, SyntheticConfig):
            raise TypeError(f"config must be a SyntheticConfig, got {type(config).__name__}")
        self.config = config
        self.backend = backend
        self.cache_size = int(cache)
        self.name = name or f"synthetic(seed={config.seed})"
        self.image_size = config.image_size
        self.index = _build_index(config)
        self._setup()

    def _setup(self):
        self._lock = threading.Lock()
        self._model: flame.FlameModel | None = None
        self._identities: collections.OrderedDict[int, idm.Identity] = collections.OrderedDict()
        self._capacity: int | None = None

    def __getstate__(self):
        keep = ("config", "backend", "cache_size", "name", "image_size", "index")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup()

    @property
    def model(self) -> flame.FlameModel:
        """The head model (built on first use)."""
        with self._lock:
            if self._model is None:
                self._model = _load_model(self.config)
            return self._model

    @property
    def param_sizes(self) -> dict[str, int]:
        m = self.model
        return {"shape": m.num_shape, "expression": m.num_expression, "jaw": 3, "eyes": 6,
                "neck": 3, "global_pose": 3, "translation": 3}  # fmt: skip

    def identity(self, index: int) -> idm.Identity:
        """Identity ``index`` (built on first use, then cached)."""
        model = self.model
        with self._lock:
            if index in self._identities:
                self._identities.move_to_end(index)
                return self._identities[index]
        ident = idm.make_identity(
            model, self.config.seed, index, num_gaussians=self.config.num_gaussians
        )
        with self._lock:
            self._identities[index] = ident
            while len(self._identities) > self.cache_size:
                self._identities.popitem(last=False)
        return ident

    def __len__(self) -> int:
        return len(self.config)

    def frame_inputs(self, i: int) -> tuple[idm.Identity, tr.FrameState, np.ndarray, np.ndarray]:
        """Identity, motion, viewmat [4, 4] and head-frame light [9] of record ``i``."""
        c = self.config
        identity, clip, frame, view = c.ids(i)
        ident = self.identity(identity)
        state = tr.frame_state(
            c.seed, identity, clip, frame, num_expression=self.model.num_expression, fps=c.fps
        )
        yaw, pitch = tr.view_angles(
            c.seed,
            identity,
            clip,
            view,
            yaw_range=math.radians(c.yaw_range),
            pitch_range=math.radians(c.pitch_range),
        )
        dist = tr.clip_distance(c.seed, identity, clip)
        viewmat, light = tr.frame_camera(state, yaw, pitch, distance_scale=dist)
        return ident, state, viewmat, light

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.render([int(i)], batch=False)[0]

    def render(self, indices: Sequence[int], *, batch: bool = True, backend: str | None = None):
        """Records ``indices``, rendered together (`synth_render.render_batch`) or one by one.

        Args:
          indices: Record numbers.
          batch: One vmapped call for all (pad to a fixed count to avoid recompiling),
            or `synth_render.render_jit` per record (what ``source[i]`` does).
          backend: Rasterizer backend (default: the source's).

        Returns:
          The records, in order.
        """
        inputs = [self.frame_inputs(i) for i in indices]
        images, alphas = sr.render_states(
            self.model,
            [x[0].gaussians for x in inputs],
            [(x[0].shape, x[1]) for x in inputs],
            np.stack([x[2] for x in inputs]),
            np.stack([x[3] for x in inputs]),
            size=self.image_size,
            backend=backend or self.backend,
            batch=batch,
            owner=self,
        )
        tm = np.asarray(
            camera.to_gagavatar(
                camera.make_camera(
                    np.stack([x[2] for x in inputs]),
                    sr.intrinsics(self.image_size),
                    width=self.image_size,
                    height=self.image_size,
                )
            )
        )
        return [
            self._record(i, x, img, a, t)
            for i, x, img, a, t in zip(indices, inputs, images, alphas, tm, strict=True)
        ]

    def _record(self, i, inputs, image, alpha, transform):
        ident, state, viewmat, _ = inputs
        c = self.config
        identity, clip, frame, view = c.ids(i)
        name, clip_name, key = c.names(identity, clip, frame, view)
        mask = np.round(np.asarray(alpha) * 255.0).astype(np.uint8)
        zeros = np.zeros(3, np.float32)
        return {
            "image": np.round(np.asarray(image) * 255.0).astype(np.uint8),
            "mask": mask,
            "shape": ident.shape,
            "expression": state.expression,
            "jaw": state.jaw,
            "eyes": state.eyes,
            "neck": zeros,
            "global_pose": zeros,
            "translation": zeros,
            "viewmat": viewmat,
            "K": sr.intrinsics(self.image_size),
            "transform_matrix": transform.astype(np.float32),
            "bbox": mask_bbox(mask),
            "identity": name,
            "clip": clip_name,
            "frame": frame,
            "view": view,
            "key": key,
            "source_kind": "synthetic",
        }


def _build_index(c: SyntheticConfig) -> FrameIndex:
    ident, clip, frame, keys, view = [], [], [], [], []
    for i in range(len(c)):
        ids = c.ids(i)
        name, clip_name, key = c.names(*ids)
        ident.append(name)
        clip.append(clip_name)
        frame.append(ids[2])
        view.append(ids[3])
        keys.append(key)
    return FrameIndex.from_lists(ident, clip, frame, keys, view)


def mask_bbox(mask: np.ndarray) -> np.ndarray:
    """Normalised (x0, y0, x1, y1) box of mask >= 128; the whole image when empty. [4]"""
    on = mask[..., 0] >= 128
    size_y, size_x = on.shape
    if not on.any():
        return np.array([0.0, 0.0, 1.0, 1.0], np.float32)
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    return np.array(
        [cols[0] / size_x, rows[0] / size_y, (cols[-1] + 1) / size_x, (rows[-1] + 1) / size_y],
        np.float32,
    )


# --------------------------------------------------------------------------- CLI


def _preview_rows(text: str, identities: int, parser) -> list[int]:
    try:
        rows = [int(t) for t in text.split(",")] if "," in text else list(range(int(text)))
    except ValueError:
        parser.error(f"--preview-identities must be a count or a list of ints, got {text!r}")
    rows = rows[:identities] if "," not in text else rows
    if not rows or min(rows) < 0 or max(rows) >= identities:
        parser.error(f"--preview-identities {text!r}: identities are 0..{identities - 1}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m gshead_jax.data.synthetic",
        description="Render the synthetic head dataset to ArrayRecord shards (resumable).",
    )
    p.add_argument("--out", help="dataset directory (omit to only write --preview)")
    p.add_argument("--identities", type=int, default=16)
    p.add_argument("--clips", type=int, default=2, help="clips per identity")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=256, help="image side S")
    p.add_argument("--views", type=int, default=1, help="cameras per frame (0 frontal)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-gaussians", type=int, default=32768, help="Gaussians per identity")
    p.add_argument("--fps", type=float, default=tr.FPS)
    p.add_argument("--yaw-range", type=float, default=60.0, help="view yaw range, degrees")
    p.add_argument("--pitch-range", type=float, default=30.0, help="view pitch range, degrees")
    p.add_argument("--model", default=None, help="FLAME file with vertex labels (default stand-in)")
    p.add_argument("--records-per-shard", type=int, default=256)
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="frames per render call (default: 32 on a GPU, 1 on CPU = the source's exact path)",
    )
    p.add_argument("--backend", default=None, help="rasterizer: auto|xla|pallas (default: "
                   "auto on a GPU, xla on CPU)")  # fmt: skip
    p.add_argument("--image-codec", default="raw", choices=("raw", "png"))
    p.add_argument("--preview", default=None, help="also write a contact sheet PNG here")
    p.add_argument(
        "--preview-identities",
        default="6",
        help="rows of the preview: a count n (identities 0..n-1) or a comma-separated list",
    )
    p.add_argument("--preview-size", type=int, default=None, help="cell size (default --size)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.out is None and a.preview is None:
        p.error("give --out, --preview or both")
    try:
        config = SyntheticConfig(
            identities=a.identities,
            clips=a.clips,
            frames=a.frames,
            views=a.views,
            image_size=a.size,
            seed=a.seed,
            num_gaussians=a.num_gaussians,
            fps=a.fps,
            yaw_range=a.yaw_range,
            pitch_range=a.pitch_range,
            model=a.model,
        )
    except ValueError as e:
        p.error(str(e))
    gpu = jax.default_backend() == "gpu"
    batch = a.batch or (32 if gpu else 1)
    backend = a.backend or ("auto" if gpu else "xla")
    if a.out is not None:
        from gshead_jax.data.synth_dataset import write_dataset

        manifest = write_dataset(
            a.out,
            config,
            records_per_shard=a.records_per_shard,
            batch=batch,
            backend=backend,
            image_codec=a.image_codec,
            progress=not a.no_progress,
        )
        print(f"{a.out}: {manifest['num_records']} records in {len(manifest['shards'])} shards")
    if a.preview is not None:
        from gshead_jax.data import synth_preview

        synth_preview.contact_sheet(
            SyntheticSource(config, backend=backend),
            a.preview,
            identities=_preview_rows(a.preview_identities, config.identities, p),
            size=a.preview_size or config.image_size,
        )
        print(f"preview: {a.preview}")
    return 0


if __name__ == "__main__":
    # Run the package's module, not this __main__ copy: its classes are the ones
    # every other module sees (isinstance checks, pickling into workers).
    from gshead_jax.data import synthetic as _synthetic

    sys.exit(_synthetic.main())
