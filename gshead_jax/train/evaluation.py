"""Reenactment metrics over an evaluation pipeline (self- and cross-identity).

* **Self-reenactment** (``pair_rule="same_clip"``, GAGAvatar's protocol): the
  clip's first frame is the source, every other frame a target with ground truth.
* **Cross-identity** (``"cross_identity"``): the source is another identity, so the
  target frame is *not* the ground truth. For synthetic data the ground truth
  exists -- the source identity rendered with the driver's motion and camera --
  and `synthetic_cross_targets` renders it; real data has none, so cross-identity
  numbers are reported for synthetic sources only.

Metrics are per image (``metrics.psnr`` / ``ssim`` / ``l1`` on the refined and the
coarse render, images clipped to [0, 1]) and averaged over valid pairs (eval
padding is excluded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from gshead_jax.data import device_batch
from gshead_jax.train.step import model_batch

__all__ = ["METRIC_KEYS", "evaluate", "synthetic_cross_targets"]

METRIC_KEYS = ("psnr", "ssim", "l1", "coarse_psnr", "coarse_ssim", "coarse_l1")


def _gather(x: jax.Array) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate(
    eval_step: Callable,
    owned: Mapping[str, Any],
    constants: Any,
    batches: Iterable[Mapping[str, Any]],
    mesh: jax.sharding.Mesh,
    *,
    max_batches: int | None = None,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    keep_images: int = 0,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Runs ``eval_step`` over host batches and averages the metrics over valid pairs.

    Args:
      eval_step: ``step.make_eval_step(model, mesh, with_images=...)``.
      owned: ``{"trainable", "frozen"}`` params (on the mesh).
      constants: The model's constants (on the mesh).
      batches: Host batches (an ``eval_pipeline`` iterator).
      mesh: The mesh.
      max_batches: Stop after this many batches (None: all).
      transform: Applied to each host batch first (e.g. ``synthetic_cross_targets``).
      keep_images: Examples of the first batch to return as images.

    Returns:
      ``(summary, images)``: summary has the mean of each ``METRIC_KEYS`` entry,
      ``count`` (valid pairs), ``overflow`` (overflowed renders); images has
      ``source``, ``target``, ``coarse``, ``refined`` [n, H, W, 3] in [0, 1]
      (empty without ``keep_images``).
    """
    sums = dict.fromkeys(METRIC_KEYS, 0.0)
    count = overflow = 0
    images: dict[str, np.ndarray] = {}
    for i, host in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        if transform is not None:
            host = transform(host)
        out = eval_step(owned, model_batch(device_batch(host, mesh)), constants)
        valid = _gather(out["valid"]).astype(bool)
        for k in METRIC_KEYS:
            sums[k] += float(np.sum(_gather(out[k])[valid]))
        count += int(valid.sum())
        overflow += int(np.sum(_gather(out["overflow"])[valid]))
        if keep_images and not images and "image" in out:
            n = min(keep_images, len(valid))
            images = {
                "source": host["source_image"][:n] / 255.0,
                "target": host["target_image"][:n] / 255.0,
                "coarse": _gather(out["coarse"])[:n],
                "refined": _gather(out["image"])[:n],
            }
    summary = {k: v / max(count, 1) for k, v in sums.items()}
    summary.update(count=count, overflow=overflow)
    return summary, images


def synthetic_cross_targets(source: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A batch transform giving cross-identity pairs of a synthetic source their ground truth.

    The target image becomes the *source* identity rendered with the target
    frame's motion and camera (`SyntheticSource.render` of the source identity's
    Gaussians and shape with the target's state), so cross-identity metrics
    compare against the truth. The target parameters get the source's shape.

    Args:
      source: The ``SyntheticSource`` of the pairs (or the ``ArrayRecordSource`` of
        a synthetic cache, whose manifest holds the generator's config).
    """
    from gshead_jax.data.synth_render import render_states
    from gshead_jax.data.synthetic import SyntheticConfig, SyntheticSource

    if not isinstance(source, SyntheticSource):
        extra = getattr(source, "manifest", {}).get("extra", {}).get("synthetic")
        if extra is None:
            raise ValueError(
                f"{getattr(source, 'name', source)} is not synthetic: cross-identity ground "
                "truth exists for synthetic sources only"
            )
        source = SyntheticSource(SyntheticConfig(**extra["config"]))
    position = {k: i for i, k in enumerate(source.index.keys)}

    def transform(batch: dict[str, Any]) -> dict[str, Any]:
        meta = batch["meta"]
        out = dict(batch)
        images, params = [], []
        for j, (sk, tk) in enumerate(zip(meta["source_key"], meta["target_key"])):
            if not bool(batch["valid"][j]):
                images.append(batch["target_image"][j])
                params.append(batch["target_params"]["shape"][j])
                continue
            ident, _, _, _ = source.frame_inputs(position[str(sk)])
            _, state, viewmat, light = source.frame_inputs(position[str(tk)])
            img, _ = render_states(
                source.model,
                [ident.gaussians],
                [(ident.shape, state)],
                viewmat[None],
                light[None],
                size=source.image_size,
                backend=source.backend,
                batch=False,
                owner=source,
            )
            images.append(np.round(np.asarray(img[0]) * 255.0).astype(np.uint8))
            params.append(np.asarray(ident.shape, np.float32))
        out["target_image"] = np.stack(images)
        out["target_params"] = {**batch["target_params"], "shape": np.stack(params)}
        return out

    return transform
