"""Run logs: TensorBoard event files, a JSONL metrics file, image grids, a progress bar.

Only process 0 writes (``enabled``). Files under the run's directory::

    metrics.jsonl   one JSON object per line: {"step", "split", metric: value, ...}
    tb/             TensorBoard events (tensorboardX): scalars as "<split>/<name>",
                    image grids as "<split>/grid" (source | target | coarse | refined)

On a resumed run, lines and events after the restored step (written by the
killed run after its last checkpoint) are dropped, so the logs read as one run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["MetricsWriter", "image_grid", "read_metrics"]

JSONL = "metrics.jsonl"


def image_grid(columns: Mapping[str, np.ndarray], *, max_rows: int = 4) -> np.ndarray:
    """Tiles image batches side by side: one row per example, one column per entry.

    Args:
      columns: Name -> images in [0, 1], all [B, H, W, 3] of one size (e.g.
        source | target | coarse | refined). Resize the source first if it differs.
      max_rows: Examples shown.

    Returns:
      uint8 [rows * H, len(columns) * W, 3].
    """
    arrays = [np.asarray(v, np.float32) for v in columns.values()]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 4:
        raise ValueError(
            f"columns must all be [B, H, W, 3] of one size, got "
            f"{ {k: np.shape(v) for k, v in columns.items()} }"
        )
    rows = min(max_rows, min(a.shape[0] for a in arrays))
    grid = np.concatenate([np.concatenate([a[i] for a in arrays], axis=1) for i in range(rows)], 0)
    return np.round(np.clip(grid, 0.0, 1.0) * 255.0).astype(np.uint8)


def _jsonable(v: Any) -> Any:
    v = np.asarray(v)
    if v.ndim:
        return v.tolist()
    x = v.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def read_metrics(workdir: str, split: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (of one split if given); a torn last line is ignored."""
    path = os.path.join(workdir, JSONL)
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if split is None or row.get("split") == split:
                rows.append(row)
    return rows


class MetricsWriter:
    """Writes scalars and images to TensorBoard and ``metrics.jsonl`` (process 0 only).

    Args:
      workdir: The run's directory.
      enabled: Write anything at all (False on processes other than 0).
      tensorboard: Also write TensorBoard events.
      resume_step: The restored step of a resumed run; later rows are dropped.
    """

    def __init__(
        self,
        workdir: str,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self.path = os.path.join(workdir, JSONL)
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if resume_step is not None:
            self._truncate(resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step)

    def _truncate(self, step: int) -> None:
        rows = [r for r in read_metrics(os.path.dirname(self.path)) if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)

    def scalars(self, step: int, values: Mapping[str, Any], *, split: str = "train") -> None:
        """Logs a dict of scalars (arrays are fetched) under ``split``."""
        if not self.enabled:
            return
        row = {"step": int(step), "split": split}
        row.update({k: _jsonable(v) for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "split") and isinstance(v, int | float):
                    self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """Logs one uint8 [H, W, 3] image (e.g. an ``image_grid``)."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(name, np.asarray(image), int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
