"""Pair assembly and batching with bad-record skipping (grain stages of `pipeline`).

A pipeline element is ``(dataset, target, source)`` record positions. `LoadPair`
reads both records, checks them against the schema and returns a *pair* (the
per-example slice of the batch layout) or a skip marker; `BatchPairs`
then fills each batch with good pairs, counting the markers it passes over in
``meta["num_skipped"]``. Batching happens in the worker processes (grain's
recommended place), so the count travels with the batch to the trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from gshead_jax.data import records as rec

_log = logging.getLogger(__name__)

PADDING = (-1, -1, -1)  # an element that only pads the last eval batch


SKIPPED = "__skipped__"  # key marking an element dropped because a record was bad


def is_skipped(x: Mapping[str, Any]) -> bool:
    """True for the marker `LoadPair` returns in place of a pair with a bad record."""
    return SKIPPED in x


def blank_pair(image_size: int, param_sizes: Mapping[str, int]) -> dict[str, Any]:
    """A zero pair with ``valid = False``: the shape template for padding."""
    s = image_size
    params = {k: np.zeros(int(n), np.float32) for k, n in param_sizes.items()}
    zero4 = np.zeros((4, 4), np.float32)
    zero3 = np.zeros((3, 3), np.float32)
    return {
        "source_image": np.zeros((s, s, 3), np.uint8),
        "target_image": np.zeros((s, s, 3), np.uint8),
        "target_mask": np.zeros((s, s, 1), np.uint8),
        "source_params": params,
        "target_params": dict(params),
        "source_viewmat": zero4,
        "source_K": zero3,
        "target_viewmat": zero4,
        "target_K": zero3,
        "target_bbox": np.zeros(4, np.float32),
        "source_kind": np.int32(0),
        "valid": np.bool_(False),
        "meta": {
            "dataset": -1,
            "source_key": "",
            "target_key": "",
            "source_identity": "",
            "target_identity": "",
            "source_frame": -1,
            "target_frame": -1,
        },
    }


class LoadPair:
    """Reads, checks and assembles one pair (a grain map function).

    Args:
      sources: The sources, indexed by an element's dataset number.
      image_size: S every image must have.
      param_sizes: Parameter sizes every record must have.
      strict: Raise `BadRecordError` instead of returning a skip marker.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        *,
        image_size: int,
        param_sizes: Mapping[str, int],
        strict: bool,
    ):
        self.sources = list(sources)
        self.image_size = image_size
        self.param_sizes = dict(param_sizes)
        self.strict = strict
        self._warned: set[tuple[int, str]] = set()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_warned"] = set()
        return state

    def _record(self, d: int, i: int) -> dict[str, Any]:
        src = self.sources[d]
        return rec.check_record(
            src[i], source=src.name, image_size=self.image_size, param_sizes=self.param_sizes
        )

    def __call__(self, element: tuple[int, int, int]) -> dict[str, Any]:
        d, t, s = (int(x) for x in element)
        if d < 0:
            return blank_pair(self.image_size, self.param_sizes)
        try:
            target = self._record(d, t)
            source = self._record(d, s)
        except rec.BadRecordError as e:
            if self.strict:
                raise
            if (d, e.key) not in self._warned:  # once per record and process
                self._warned.add((d, e.key))
                _log.warning("skipping a pair: %s", e)
            return {SKIPPED: True, "key": e.key, "source": e.source, "reason": e.reason}
        return {
            "source_image": source["image"],
            "target_image": target["image"],
            "target_mask": target["mask"],
            "source_params": {k: source[k] for k in rec.PARAM_KEYS},
            "target_params": {k: target[k] for k in rec.PARAM_KEYS},
            "source_viewmat": source["viewmat"],
            "source_K": source["K"],
            "target_viewmat": target["viewmat"],
            "target_K": target["K"],
            "target_bbox": target["bbox"],
            "source_kind": np.int32(rec.SOURCE_KINDS.index(target["source_kind"])),
            "valid": np.bool_(True),
            "meta": {
                "dataset": d,
                "source_key": source["key"],
                "target_key": target["key"],
                "source_identity": source["identity"],
                "target_identity": target["identity"],
                "source_frame": source["frame"],
                "target_frame": target["frame"],
            },
        }


def collate(pairs: Sequence[Mapping[str, Any]], num_skipped: int) -> dict[str, Any]:
    """Stacks pairs into a host batch; ids go to ``meta`` as NumPy arrays."""
    out: dict[str, Any] = {}
    for k, v in pairs[0].items():
        if k == "meta":
            continue
        if isinstance(v, Mapping):
            out[k] = {kk: np.stack([p[k][kk] for p in pairs]) for kk in v}
        else:
            out[k] = np.stack([p[k] for p in pairs])
    meta = {k: np.asarray([p["meta"][k] for p in pairs]) for k in pairs[0]["meta"]}
    meta["num_skipped"] = np.int64(num_skipped)
    out["meta"] = meta
    return out


class BatchPairs(grain.IterDataset):
    """Batches pairs, passing over skip markers.

    Args:
      parent: Elements from `LoadPair`.
      batch_size: Pairs per batch (per process).
      blank: With a template from `blank_pair`: keep every position (a bad pair
        becomes an invalid blank, and the final partial batch is padded), so every
        process yields the same number of batches (evaluation). Without: fill
        each batch from the next good pairs and drop a final partial batch (training).
    """

    def __init__(self, parent: grain.IterDataset, batch_size: int, blank: dict | None = None):
        super().__init__(parent)
        self._batch_size = batch_size
        self._blank = blank

    def __iter__(self) -> _BatchPairsIterator:
        return _BatchPairsIterator(self._parent.__iter__(), self._batch_size, self._blank)

    def __str__(self) -> str:
        return f"BatchPairs(batch_size={self._batch_size}, pad={self._blank is not None})"


class _BatchPairsIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, batch_size: int, blank: dict | None):
        super().__init__(parent)
        self._batch_size = batch_size
        self._blank = blank

    def __next__(self) -> dict[str, Any]:
        pairs: list[dict] = []
        skipped = 0
        while len(pairs) < self._batch_size:
            try:
                x = next(self._parent)
            except StopIteration:
                if self._blank is None or not pairs:
                    raise
                pairs += [self._blank] * (self._batch_size - len(pairs))
                break
            if is_skipped(x):
                skipped += 1
                if self._blank is not None:
                    pairs.append(self._blank)
                continue
            pairs.append(x)
        return collate(pairs, skipped)

    # The parent's state after a whole batch is exactly where the next batch starts.
    def get_state(self) -> dict[str, Any]:
        return self._parent.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state)


class TrackStats(grain.IterDataset):
    """Last stage, in the trainer's process: running totals of batches and skipped pairs.

    The totals are part of the iterator state, so they survive a checkpoint restore.
    """

    def __iter__(self) -> StatsIterator:
        return StatsIterator(self._parent.__iter__())

    def __str__(self) -> str:
        return "TrackStats"


class StatsIterator(grain.DatasetIterator):
    """The pipeline's iterator; ``stats()`` returns the running totals."""

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)
        self._batches = 0
        self._pairs = 0
        self._skipped = 0

    def __next__(self) -> dict[str, Any]:
        batch = next(self._parent)
        self._batches += 1
        self._pairs += int(np.sum(batch["valid"]))
        self._skipped += int(batch["meta"]["num_skipped"])
        return batch

    def stats(self) -> dict[str, int]:
        """``batches``, valid ``pairs`` and ``skipped`` pairs seen so far (this process)."""
        return {"batches": self._batches, "pairs": self._pairs, "skipped": self._skipped}

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "stats": self.stats()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        s = state["stats"]
        self._batches, self._pairs, self._skipped = s["batches"], s["pairs"], s["skipped"]
