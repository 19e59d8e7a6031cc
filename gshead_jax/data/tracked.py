"""GAGAvatar's tracked-video layout, read as it is, and its conversion to ArrayRecord.

The layout GAGAvatar's tracker (GAGAvatar_track) writes and its loader
(``core/data/loader_track.py``) reads::

    DIR/
      img_lmdb/      LMDB, key '{video}_{frame}' -> JPEG (quality 95) or PNG bytes
                     of a 3x512x512 uint8 image (``core/libs/utils_lmdb.py`` dump);
                     values that are not an image are ``torch.save`` tensors
      optim.pkl      {key: {'shapecode' [300], 'expcode' [100], 'posecode' [6],
                     'eyecode' [6], 'transform_matrix' [3, 4], 'bbox' [4]}}, float32
      dataset.json   {"train": [key, ...], "val": [...], "test": [...]}

Mapping to the record schema (`gshead_jax.data.records`):

* ``posecode`` = global rotation (3) + jaw (3), FLAME.py's
  ``full_pose = [pose[:3], neck 0, pose[3:], eyes]``; the tracker leaves the
  global part at zero and puts head pose in the camera. Neck and translation are
  zero (GAGAvatar has neither). ``eyecode`` = both eyes.
* ``transform_matrix`` is kept as is; ``viewmat``/``K`` come from
  `camera.from_gagavatar` (world = FLAME metres x 5, GAGAvatar's world).
* No mask is stored (the tracker mattes onto black): ``mask`` is all 255.
* clip = GAGAvatar's video id (``get_video_id``: the text before the first '_',
  or after it when the key starts with 'img_'), frame = the number after the
  last '_', identity = the clip unless ``identity_of`` says otherwise.

Images decode with Pillow (RGB conversion as torchvision's ``ImageReadMode.RGB``),
so no torchvision is needed.

CLI::

    python -m gshead_jax.data.tracked convert --src DIR --out OUT [--split train]
        [--image-codec keep|raw|png] [--records-per-shard 1024]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import lmdb
import numpy as np

from gshead_jax import camera
from gshead_jax.data import arrayrecord
from gshead_jax.data import records as rec
from gshead_jax.data.source import FrameIndex

SPLITS = ("train", "val", "test")
_FIELDS = {"shapecode": None, "expcode": None, "posecode": (6,), "eyecode": (6,)}
_FIELDS.update({"transform_matrix": (3, 4), "bbox": (4,)})


def video_id(key: str) -> str:
    """GAGAvatar's ``get_video_id``: the clip a frame key belongs to."""
    parts = key.split("_")
    return parts[1] if parts[0] == "img" else parts[0]


def frame_number(key: str) -> int:
    """The frame number of a key (the integer after the last '_'), as GAGAvatar sorts by."""
    return int(key.split("_")[-1])


def decode_lmdb_image(payload: bytes) -> np.ndarray:
    """Decodes one ``img_lmdb`` value to uint8 [H, W, 3].

    JPEG/PNG bytes (what ``LMDBEngine.dump`` writes) decode with Pillow; anything
    else is tried as a ``torch.save`` tensor [3, H, W] with values in [0, 255]
    (the official reader's fallback), which needs torch installed.
    """
    if rec.sniff_codec(payload):
        return rec.decode_image_bytes(payload, 3)
    try:
        import torch  # only for this rare fallback; torch is not a dependency
    except ImportError:
        raise ValueError("value is neither JPEG nor PNG (a torch tensor needs torch)") from None
    t = torch.load(io.BytesIO(payload), weights_only=True)
    a = np.asarray(t.detach().cpu().numpy())
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"torch payload must be [3, H, W], got {a.shape}")
    if a.dtype != np.uint8:
        if not (np.all(a == np.round(a)) and a.min() >= 0 and a.max() <= 255):
            raise ValueError("torch payload is not integral in [0, 255]")
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a.transpose(1, 2, 0))


# LMDB allows one open environment per file and process, so sources over the same
# directory share it. Keyed by pid too: a forked child must open its own.
_ENVS: dict[tuple[int, str], lmdb.Environment] = {}
_ENVS_LOCK = threading.Lock()


def _open_lmdb(path: str) -> lmdb.Environment:
    key = (os.getpid(), os.path.realpath(path))
    with _ENVS_LOCK:
        if key not in _ENVS:
            # The official reader's options: read-only, no lock file, no readahead.
            _ENVS[key] = lmdb.open(path, readonly=True, lock=False, readahead=False)
        return _ENVS[key]


class TrackedSource:
    """Frames of one split of a GAGAvatar tracked dataset, as records (a `FrameSource`).

    Parameters are parsed and cameras converted once, here; a frame whose
    ``optim.pkl`` entry is missing or malformed stays in the index and raises
    `BadRecordError` when read, so the pipeline skips and counts it.

    Args:
      path: The directory holding ``img_lmdb/``, ``optim.pkl`` and ``dataset.json``.
      split: 'train', 'val' or 'test'.
      image_size: S of the images; by default read from the split's first frame.
      identity_of: Maps a clip (video id) to its identity; default: the clip itself.

    Example:
      >>> src = TrackedSource("/data/VFHQ_CENTERED", "train")
      >>> r = src[0]; r["image"].shape, r["expression"].shape
      ((512, 512, 3), (100,))
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        *,
        image_size: int | None = None,
        identity_of: Callable[[str], str] | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.path = os.fspath(path)
        self.split = split
        self.name = f"{self.path} [{split}]"
        self.source_kind = "real"
        for f in ("img_lmdb", "optim.pkl", "dataset.json"):
            if not os.path.exists(os.path.join(self.path, f)):
                raise FileNotFoundError(f"{os.path.join(self.path, f)} not found")
        with open(os.path.join(self.path, "dataset.json")) as f:
            splits = json.load(f)
        if not isinstance(splits, dict) or split not in splits:
            raise ValueError(f"{self.path}/dataset.json has no {split!r} list")
        keys = [str(k) for k in splits[split]]
        if not keys:
            raise ValueError(f"{self.path}/dataset.json: split {split!r} is empty")
        clips = [video_id(k) for k in keys]
        try:
            frames = [frame_number(k) for k in keys]
        except ValueError:
            bad = next(k for k in keys if not k.split("_")[-1].lstrip("-").isdigit())
            raise ValueError(
                f"{self.path}/dataset.json: key {bad!r} does not end in _<frame number>"
            ) from None
        identity_of = identity_of or (lambda c: c)
        self.index = FrameIndex.from_lists([identity_of(c) for c in clips], clips, frames, keys)

        with open(os.path.join(self.path, "optim.pkl"), "rb") as f:
            optim = pickle.load(f)
        if not isinstance(optim, Mapping):
            raise ValueError(f"{self.path}/optim.pkl must hold a dict, got {type(optim).__name__}")
        self._bad: dict[int, str] = {}
        fields = self._parse(optim, keys)
        self.param_sizes = {
            "shape": fields["shapecode"].shape[1],
            "expression": fields["expcode"].shape[1],
        }
        self.param_sizes.update({k: rec.PARAM_SIZES[k] for k in rec.PARAM_KEYS[2:]})
        self._params = fields
        self._lmdb_path = os.path.join(self.path, "img_lmdb")
        self._env = None
        if image_size is None:
            image_size = self._probe_size()
        self.image_size = int(image_size)
        # Cameras for the whole split at once, on the host CPU: worker processes
        # then only copy arrays and never run JAX.
        with jax.default_device(jax.devices("cpu")[0]):
            cam = camera.from_gagavatar(
                fields["transform_matrix"], width=self.image_size, height=self.image_size
            )
            self._viewmat = np.asarray(cam.viewmat, np.float32)
            self._K = np.asarray(cam.K, np.float32)

    def _parse(self, optim: Mapping[str, Any], keys: list[str]) -> dict[str, np.ndarray]:
        """Stacks the split's parameters; frames with bad entries go to ``self._bad``."""
        n = len(keys)
        sizes: dict[str, tuple[int, ...]] = {}
        for name, shape in _FIELDS.items():
            if shape is not None:
                sizes[name] = shape
                continue
            lengths = {}
            for k in keys:  # shape/expression counts: the most common length
                v = optim.get(k, {}).get(name) if isinstance(optim.get(k), Mapping) else None
                if v is not None and np.ndim(v) == 1:
                    lengths[len(v)] = lengths.get(len(v), 0) + 1
            if not lengths:
                raise ValueError(f"{self.path}/optim.pkl: no frame of {self.split!r} has {name}")
            sizes[name] = (max(lengths, key=lengths.get),)
        out = {name: np.zeros((n,) + s, np.float32) for name, s in sizes.items()}
        out["transform_matrix"][:, :, :3] = np.eye(3, dtype=np.float32)  # placeholder
        for i, k in enumerate(keys):
            entry = optim.get(k)
            if not isinstance(entry, Mapping):
                self._bad[i] = "no entry in optim.pkl"
                continue
            for name, shape in sizes.items():
                if name not in entry:
                    self._bad[i] = f"optim.pkl entry has no {name!r}"
                    break
                try:
                    v = np.asarray(entry[name], dtype=np.float32)
                except (TypeError, ValueError):
                    self._bad[i] = f"optim.pkl {name} is not numeric"
                    break
                if v.shape != shape:
                    self._bad[i] = (
                        f"optim.pkl {name} has shape {list(v.shape)}, expected {list(shape)}"
                    )
                    break
                if name == "transform_matrix" and not np.all(np.isfinite(v)):
                    self._bad[i] = "optim.pkl transform_matrix has non-finite values"
                    break
                out[name][i] = v
            else:
                continue
            out["transform_matrix"][i] = np.eye(3, 4, dtype=np.float32)  # keep the camera finite
        return out

    def _probe_size(self) -> int:
        for i in range(len(self)):
            if i in self._bad:
                continue
            try:
                return int(self.image(i).shape[0])
            except rec.BadRecordError:
                continue
        raise ValueError(f"{self.name}: no decodable image to read the size from")

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_env"] = None  # LMDB handles do not cross processes; reopened lazily
        return state

    def _txn_get(self, key: str) -> bytes | None:
        if self._env is None:
            self._env = _open_lmdb(self._lmdb_path)
        with self._env.begin(buffers=False) as txn:  # one short read txn per call: thread-safe
            return txn.get(key.encode())

    def __len__(self) -> int:
        return len(self.index)

    def raw_image(self, i: int) -> bytes:
        """The ``img_lmdb`` value of frame ``i``, undecoded."""
        key = self.index.keys[i]
        payload = self._txn_get(key)
        if payload is None:
            raise rec.BadRecordError(key, self.name, "key not in img_lmdb")
        return payload

    def image(self, i: int) -> np.ndarray:
        """The decoded image of frame ``i``. [S, S, 3] uint8"""
        key = self.index.keys[i]
        payload = self.raw_image(i)
        try:
            image = decode_lmdb_image(payload)
        except Exception as e:  # Pillow/torch raise many types on corrupt bytes
            raise rec.BadRecordError(key, self.name, f"undecodable image: {e}") from e
        if getattr(self, "image_size", None) and image.shape != (self.image_size,) * 2 + (3,):
            raise rec.BadRecordError(
                key, self.name, f"image is {image.shape}, expected {self.image_size}² RGB"
            )
        return image

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        key = self.index.keys[i]
        if i in self._bad:
            raise rec.BadRecordError(key, self.name, self._bad[i])
        p = self._params
        identity, clip, frame, _ = self.index.ids(i)
        posecode = p["posecode"][i]
        zeros3 = np.zeros(3, np.float32)
        return {
            "image": self.image(i),
            "shape": p["shapecode"][i],
            "expression": p["expcode"][i],
            "global_pose": posecode[:3],
            "jaw": posecode[3:],
            "eyes": p["eyecode"][i],
            "neck": zeros3,
            "translation": zeros3,
            "viewmat": self._viewmat[i],
            "K": self._K[i],
            "transform_matrix": p["transform_matrix"][i],
            "bbox": p["bbox"][i],
            "identity": identity,
            "clip": clip,
            "frame": frame,
            "view": 0,
            "key": key,
            "source_kind": self.source_kind,
        }


def convert(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    image_codec: str = "keep",
    records_per_shard: int = 1024,
    strict: bool = False,
    progress: bool = True,
) -> dict:
    """Converts one split of a tracked dataset to the ArrayRecord layout.

    Args:
      src: The tracked dataset directory.
      out: The output directory (must not hold a dataset yet).
      split: Which split.
      image_codec: ``keep`` stores each LMDB image's own JPEG/PNG bytes (smallest;
        decodes to the same pixels with the same decoder), ``raw`` the decoded
        pixels (fastest to read, ~6x larger than JPEG), ``png`` lossless PNG.
      records_per_shard: Records per shard.
      strict: Raise on a bad frame instead of leaving it out with a warning.
      progress: Show a progress bar.

    Returns:
      The manifest; ``extra.skipped`` lists the frames left out, with reasons.
    """
    if image_codec not in ("keep", "raw", "png"):
        raise ValueError(f"image_codec must be 'keep', 'raw' or 'png', got {image_codec!r}")
    source = TrackedSource(src, split)
    skipped: list[dict[str, str]] = []

    def items():
        it = range(len(source))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"convert {split}", unit="frame")
        for i in it:
            try:
                record = source[i]
                rec.check_record(  # raises on non-finite or malformed parameters
                    record,
                    source=source.name,
                    image_size=source.image_size,
                    param_sizes=source.param_sizes,
                )
                raw = source.raw_image(i) if image_codec == "keep" else None
                if raw is not None and not rec.sniff_codec(raw):
                    raw = None  # a torch-tensor payload: store decoded pixels instead
                yield record, raw
            except rec.BadRecordError as e:
                if strict:
                    raise
                print(f"warning: skipping {e}", file=sys.stderr)
                skipped.append({"key": e.key, "reason": e.reason})

    extra = {"converted_from": os.path.abspath(src), "split": split, "skipped": skipped}
    codec = "raw" if image_codec == "keep" else image_codec
    manifest = arrayrecord.write_dataset(
        out,
        items(),
        source_kind="real",
        records_per_shard=records_per_shard,
        image_codec=codec,
        extra=extra,
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    """The ``python -m gshead_jax.data.tracked`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m gshead_jax.data.tracked", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="write a split as ArrayRecord shards + manifest.json")
    c.add_argument("--src", required=True, help="directory with img_lmdb/, optim.pkl, dataset.json")
    c.add_argument("--out", required=True, help="output directory (new)")
    c.add_argument("--split", default="train", choices=SPLITS)
    c.add_argument("--image-codec", default="keep", choices=("keep", "raw", "png"))
    c.add_argument("--records-per-shard", type=int, default=1024)
    c.add_argument("--strict", action="store_true", help="stop at the first bad frame")
    args = parser.parse_args(argv)
    m = convert(
        args.src,
        args.out,
        split=args.split,
        image_codec=args.image_codec,
        records_per_shard=args.records_per_shard,
        strict=args.strict,
    )
    n_skip = len(m["extra"]["skipped"])
    print(
        f"wrote {m['num_records']} records in {len(m['shards'])} shards to {args.out}"
        f" ({n_skip} skipped)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
