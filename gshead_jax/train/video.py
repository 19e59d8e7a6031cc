"""The reenactment video of a run (``config.video``), shared by train.py and reenact.py.

``config.video``::

    enabled=True,
    portrait=dict(source="synth_heldout", identity=0),          # a configured source
    driver=dict(source="synth_heldout", identity=1, clip=0, frames=75),
      # or driver=dict(path="driver.npz" | ".../smoothed.pkl", frames=None)
    orbit=True, side_by_side=True, height=192

The video's columns: the portrait | the driver (when it has frames) | the avatar
driven from the driver's cameras | the avatar driven from orbiting cameras (novel
views). Written as ``reenact.mp4`` and ``reenact.gif`` (plus ``reenact.png``, a
contact sheet of a few frames) in ``out_dir``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from gshead_jax.train import inputs, reenactment

__all__ = ["driver_from_spec", "portrait_record", "run_video", "synthetic_config_of"]


def synthetic_config_of(source: Any):
    """The ``SyntheticConfig`` behind a synthetic source or its ArrayRecord cache, or None."""
    from gshead_jax.data.synthetic import SyntheticConfig, SyntheticSource

    if isinstance(source, SyntheticSource):
        return source.config
    extra = getattr(source, "manifest", {}).get("extra", {}).get("synthetic")
    return None if extra is None else SyntheticConfig(**extra["config"])


def portrait_record(source: Any, identity: int, clip: int = 0, frame: int = 0) -> dict:
    """A source record: for synthetic data identity number ``identity`` (generator
    order), else the ``identity``-th identity in sorted order; its clip's frame."""
    cfg = synthetic_config_of(source)
    if cfg is not None:
        if not (0 <= identity < cfg.identities and 0 <= clip < cfg.clips):
            raise ValueError(
                f"portrait identity {identity} / clip {clip} outside the synthetic source "
                f"({cfg.identities} identities, {cfg.clips} clips)"
            )
        return source[((identity * cfg.clips + clip) * cfg.frames + frame) * cfg.views]
    index = source.index
    by_clip = index.frames_by_clip()
    names = sorted(index.identities)
    if not 0 <= identity < len(names):
        raise ValueError(f"portrait identity {identity}: the source has {len(names)} identities")
    clips = sorted(c for (i, c) in by_clip if i == names[identity])
    return source[int(by_clip[(names[identity], clips[clip])][frame])]


def driver_from_spec(
    spec: Mapping[str, Any], config: Any, workdir: str
) -> reenactment.DrivingSequence:
    """The driving sequence a `config.video.driver` block describes."""
    frames = spec.get("frames")
    if spec.get("path"):
        return reenactment.load_driver(
            inputs.resolve_path(spec["path"], workdir), max_frames=frames
        )
    (src,) = inputs.build_sources(config, [spec["source"]], workdir, progress=False)
    cfg = synthetic_config_of(src)
    identity, clip = int(spec.get("identity", 0)), int(spec.get("clip", 0))
    if cfg is not None:
        cfg = dataclasses.replace(cfg, identities=max(cfg.identities, identity + 1))
        return reenactment.synthetic_driver(cfg, identity, clip, int(frames or cfg.frames))
    rec0 = portrait_record(src, identity, clip)
    by_clip = src.index.frames_by_clip()
    positions = by_clip[(rec0["identity"], rec0["clip"])][:frames]
    return reenactment.driver_from_records([src[int(i)] for i in positions])


def run_video(
    config: Any,
    workdir: str,
    model: Any,
    params: Mapping[str, Any],
    *,
    out_dir: str,
    spec: Mapping[str, Any] | None = None,
    portrait: Mapping[str, Any] | None = None,
    driver: reenactment.DrivingSequence | None = None,
    name: str = "reenact",
) -> dict[str, str]:
    """Renders and writes the configured reenactment video; returns the written paths.

    Args:
      config: The run's config (its ``video`` block, sources and model).
      workdir: The run's directory (resolves ``{workdir}`` in paths).
      model: The ``AvatarModel``.
      params: All three param groups.
      out_dir: Where to write ``{name}.mp4``, ``{name}.gif`` and ``{name}.png``.
      spec: Overrides ``config.video``.
      portrait: A record to use instead of ``spec.portrait``.
      driver: A driving sequence to use instead of ``spec.driver``.
      name: File stem.
    """
    spec = dict(config.video if spec is None else spec)
    render = int(model.config.render_size)
    if portrait is None:
        p = dict(spec["portrait"])
        (src,) = inputs.build_sources(config, [p["source"]], workdir, progress=False)
        portrait = portrait_record(src, int(p.get("identity", 0)), int(p.get("clip", 0)))
    if driver is None:
        driver = driver_from_spec(dict(spec["driver"]), config, workdir)
    t = len(driver)
    frames = reenactment.reenact(model, params, portrait, driver, render_size=render)
    columns = [np.broadcast_to(np.asarray(portrait["image"]), (t, *np.shape(portrait["image"])))]
    if spec.get("side_by_side", True) and driver.images is not None:
        columns.append(driver.images)
    columns.append(frames)
    if spec.get("orbit", False):
        cams = reenactment.orbit_cameras(portrait, t, render_size=render)
        columns.append(
            reenactment.reenact(model, params, portrait, driver, render_size=render, cameras=cams)
        )
    video = reenactment.compose(columns, height=int(spec.get("height", 256)))
    os.makedirs(out_dir, exist_ok=True)
    out = {"gif": reenactment.write_gif(video, os.path.join(out_dir, f"{name}.gif"), driver.fps)}
    try:
        out["mp4"] = reenactment.write_mp4(video, os.path.join(out_dir, f"{name}.mp4"), driver.fps)
    except ImportError as e:
        out["mp4_error"] = str(e)
    sheet = np.concatenate(list(video[np.linspace(0, t - 1, min(t, 6)).astype(int)]), axis=0)
    from PIL import Image

    Image.fromarray(sheet).save(os.path.join(out_dir, f"{name}.png"))
    out["png"] = os.path.join(out_dir, f"{name}.png")
    return out
