"""What every frame source provides: random access to records plus an id index.

The pipeline pairs frames by their ids alone (same clip, next identity, other
view), so a source exposes a `FrameIndex` built without decoding any image.
`TrackedSource`, `ArrayRecordSource`, the synthetic source and `InMemorySource`
all satisfy `FrameSource`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gshead_jax.data import records as rec


@dataclasses.dataclass(frozen=True, eq=False)
class FrameIndex:
    """Ids of every record of a source, columnar and compact.

    Identity and clip names are stored once (``identities``, ``clips``) and
    referenced by position, so a million-frame index stays small when it is
    copied to worker processes.

    Attributes:
      identities: Identity names. [I]
      clips: Clip names. [C]
      identity: Position in ``identities`` per record. [N] int32
      clip: Position in ``clips`` per record. [N] int32
      frame: Frame number per record. [N] int64
      view: Camera id per record (0 for single-view data). [N] int32
      keys: Record keys. [N]
    """

    identities: tuple[str, ...]
    clips: tuple[str, ...]
    identity: np.ndarray
    clip: np.ndarray
    frame: np.ndarray
    view: np.ndarray
    keys: tuple[str, ...]

    def __post_init__(self):
        n = len(self.keys)
        for name in ("identity", "clip", "frame", "view"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.shape != (n,):
                raise ValueError(f"FrameIndex.{name} must be [{n}], got {np.shape(a)}")
        if n and (self.identity.min() < 0 or self.identity.max() >= len(self.identities)):
            raise ValueError("FrameIndex.identity points outside identities")
        if n and (self.clip.min() < 0 or self.clip.max() >= len(self.clips)):
            raise ValueError("FrameIndex.clip points outside clips")
        if len(set(self.keys)) != n:
            dup = next(k for k, c in _counts(self.keys).items() if c > 1)
            raise ValueError(f"FrameIndex keys must be unique; {dup!r} appears more than once")
        # Pair rules need (identity, clip, frame, view) to name one record.
        ids = np.stack([self.identity, self.clip, self.frame, self.view], axis=1)
        order = np.lexsort(ids.T[::-1])
        same = np.all(ids[order[1:]] == ids[order[:-1]], axis=1)
        if same.any():
            i = int(np.flatnonzero(same)[0])
            a, b = self.keys[order[i]], self.keys[order[i + 1]]
            raise ValueError(f"records {a!r} and {b!r} have the same (identity, clip, frame, view)")

    @classmethod
    def from_lists(
        cls,
        identity: Sequence[str],
        clip: Sequence[str],
        frame: Sequence[int],
        keys: Sequence[str],
        view: Sequence[int] | None = None,
    ) -> FrameIndex:
        """Builds an index from one id per record (names are interned)."""
        n = len(keys)
        if not len(identity) == len(clip) == len(frame) == n:
            raise ValueError(
                f"identity, clip, frame and keys must have one entry per record, got "
                f"{len(identity)}, {len(clip)}, {len(frame)}, {n}"
            )
        identities, identity_pos = _intern(identity)
        clips, clip_pos = _intern(clip)
        return cls(
            identities=identities,
            clips=clips,
            identity=identity_pos,
            clip=clip_pos,
            frame=np.asarray(frame, dtype=np.int64).reshape(n),
            view=np.zeros(n, np.int32) if view is None else np.asarray(view, np.int32).reshape(n),
            keys=tuple(str(k) for k in keys),
        )

    def __len__(self) -> int:
        return len(self.keys)

    def ids(self, i: int) -> tuple[str, str, int, int]:
        """(identity, clip, frame, view) of record ``i``."""
        return (
            self.identities[self.identity[i]],
            self.clips[self.clip[i]],
            int(self.frame[i]),
            int(self.view[i]),
        )

    def frames_by_clip(self) -> dict[tuple[str, str], np.ndarray]:
        """Record positions per (identity, clip), sorted by (frame, view)."""
        order = np.lexsort((self.view, self.frame, self.clip, self.identity))
        out: dict[tuple[str, str], list[int]] = {}
        for i in order:
            name = (self.identities[self.identity[i]], self.clips[self.clip[i]])
            out.setdefault(name, []).append(int(i))
        return {k: np.asarray(v, np.int64) for k, v in out.items()}

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the manifest's ``index``)."""
        return {
            "identities": list(self.identities),
            "clips": list(self.clips),
            "identity": self.identity.tolist(),
            "clip": self.clip.tolist(),
            "frame": self.frame.tolist(),
            "view": self.view.tolist(),
            "keys": list(self.keys),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FrameIndex:
        """Inverse of `to_json`."""
        return cls(
            identities=tuple(d["identities"]),
            clips=tuple(d["clips"]),
            identity=np.asarray(d["identity"], np.int32),
            clip=np.asarray(d["clip"], np.int32),
            frame=np.asarray(d["frame"], np.int64),
            view=np.asarray(d["view"], np.int32),
            keys=tuple(d["keys"]),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[FrameIndex]) -> FrameIndex:
        """One index over several (e.g. the shards of a dataset), in order."""
        identity, clip, frame, view, keys = [], [], [], [], []
        for p in parts:
            identity += [p.identities[i] for i in p.identity]
            clip += [p.clips[c] for c in p.clip]
            frame += p.frame.tolist()
            view += p.view.tolist()
            keys += list(p.keys)
        return cls.from_lists(identity, clip, frame, keys, view)


def _intern(names: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    uniq = sorted(set(names))
    for u in uniq:
        if not isinstance(u, str) or not u:
            raise ValueError(f"ids must be non-empty strings, got {u!r}")
    pos = {u: i for i, u in enumerate(uniq)}
    return tuple(uniq), np.asarray([pos[n] for n in names], np.int32).reshape(len(names))


def _counts(items: Sequence[str]) -> dict[str, int]:
    c: dict[str, int] = {}
    for x in items:
        c[x] = c.get(x, 0) + 1
    return c


@runtime_checkable
class FrameSource(Protocol):
    """Random access to records of one dataset.

    Attributes:
      name: Human-readable name used in warnings and errors (e.g. its path).
      source_kind: 'real' or 'synthetic'.
      image_size: S of every image.
      param_sizes: Sizes of the FLAME parameters (``shape``, ``expression``, ...).
      index: Ids of every record, in record order.

    ``source[i]`` returns record ``i`` as a dict of the record schema
    (`gshead_jax.data.records`) and raises `BadRecordError` when it cannot be
    read. Sources must pickle cheaply (worker processes receive a copy): open
    files lazily and drop handles in ``__getstate__``.
    """

    name: str
    source_kind: str
    image_size: int
    param_sizes: Mapping[str, int]
    index: FrameIndex

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...


def check_source(source: Any, what: str = "source") -> None:
    """Raises TypeError/ValueError if ``source`` does not satisfy `FrameSource`."""
    if not isinstance(source, FrameSource):
        missing = [
            a
            for a in ("name", "source_kind", "image_size", "param_sizes", "index", "__getitem__")
            if not hasattr(source, a)
        ]
        raise TypeError(f"{what} is not a FrameSource (missing {missing})")
    if source.source_kind not in rec.SOURCE_KINDS:
        raise ValueError(f"{what}.source_kind must be one of {rec.SOURCE_KINDS}")
    if len(source.index) != len(source):
        raise ValueError(f"{what}: index has {len(source.index)} entries for {len(source)} records")


class InMemorySource:
    """A source over records (dicts) or encoded blobs held in memory.

    Handy for tests and small sets; blobs are decoded on access, so a corrupt
    blob surfaces as a `BadRecordError` exactly as from a file-backed source.

    Args:
      items: Records, or blobs from `records.encode_record`.
      name: Name used in messages.
      index: The ids; by default read from the items (for blobs, from their
        undecoded metadata).
      source_kind: Overrides the kind read from the first item.
      image_size: Overrides the size read from the first item.
      param_sizes: Overrides the sizes read from the first item.
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any] | bytes],
        *,
        name: str = "memory",
        index: FrameIndex | None = None,
        source_kind: str | None = None,
        image_size: int | None = None,
        param_sizes: Mapping[str, int] | None = None,
    ):
        if not items:
            raise ValueError("items must not be empty")
        self._items = list(items)
        self.name = name
        if index is None:
            metas = [rec.decode_meta(x) if isinstance(x, bytes) else x for x in self._items]
            index = FrameIndex.from_lists(
                [m["identity"] for m in metas],
                [m["clip"] for m in metas],
                [m["frame"] for m in metas],
                [m["key"] for m in metas],
                [m.get("view", 0) for m in metas],
            )
        self.index = index
        if len(index) != len(self._items):
            raise ValueError(f"index has {len(index)} entries for {len(self._items)} items")
        first = None
        if source_kind is None or image_size is None or param_sizes is None:
            first = self._first_good()
        self.source_kind = source_kind or first["source_kind"]
        self.image_size = image_size or int(first["image"].shape[0])
        self.param_sizes = dict(
            param_sizes or {k: int(np.shape(first[k])[0]) for k in rec.PARAM_KEYS}
        )

    def _first_good(self) -> dict[str, Any]:
        for i in range(len(self._items)):
            try:
                return self[i]
            except rec.BadRecordError:
                continue
        raise ValueError(f"{self.name}: no decodable record to read sizes from")

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self._items[i]
        if isinstance(item, bytes):
            return rec.decode_record(item, source=self.name, key=self.index.keys[i])
        return dict(item)


def random_records(
    *,
    identities: int = 2,
    clips: int = 2,
    frames: int = 4,
    views: int = 1,
    image_size: int = 16,
    n_shape: int = 8,
    n_expression: int = 4,
    source_kind: str = "real",
    seed: int = 0,
    prefix: str = "",
) -> list[dict[str, Any]]:
    """Records of random noise with a valid schema, for pipeline tests and smoke runs.

    Not a dataset: images are noise. Ids are ``{prefix}id{i}``, ``{prefix}id{i}c{c}``;
    keys ``{clip}_{frame}`` (``_v{view}`` appended when ``views > 1``).
    """
    rng = np.random.default_rng(seed)
    s = image_size
    out = []
    for i in range(identities):
        for c in range(clips):
            for f in range(frames):
                for v in range(views):
                    ident, clip = f"{prefix}id{i}", f"{prefix}id{i}c{c}"
                    key = f"{clip}_{f}" + (f"_v{v}" if views > 1 else "")
                    angles = rng.normal(0.0, 0.1, 18).astype(np.float32)
                    out.append(
                        {
                            "image": rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
                            "mask": rng.integers(0, 256, (s, s, 1), dtype=np.uint8),
                            "shape": rng.normal(size=n_shape).astype(np.float32),
                            "expression": rng.normal(size=n_expression).astype(np.float32),
                            "jaw": angles[0:3],
                            "eyes": angles[3:9],
                            "neck": angles[9:12],
                            "global_pose": angles[12:15],
                            "translation": angles[15:18],
                            "viewmat": np.eye(4, dtype=np.float32),
                            "K": np.diag([2.0 * s, 2.0 * s, 1.0]).astype(np.float32),
                            "bbox": np.array([0.2, 0.2, 0.8, 0.8], np.float32),
                            "identity": ident,
                            "clip": clip,
                            "frame": f,
                            "view": v,
                            "key": key,
                            "source_kind": source_kind,
                        }
                    )
    return out
