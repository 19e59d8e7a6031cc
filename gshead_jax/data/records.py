"""The frame record: schema, validation, and the one-blob serialisation.

A *record* is one frame of a head dataset as a flat dict of NumPy values. Every
source (synthetic, GAGAvatar's tracked layout, the project's ArrayRecord layout,
an in-memory list) hands out records of this schema, and the pipeline turns pairs
of them into batches (docs/data.md).

==================  =============  ===============================================
key                 value          meaning
==================  =============  ===============================================
image               uint8 [S,S,3]  RGB, black background for matted/synthetic data
mask                uint8 [S,S,1]  head alpha; all 255 when the source has none
                                   (GAGAvatar's tracked layout stores none)
shape               f32 [n_shape]  FLAME identity coefficients (300 for FLAME)
expression          f32 [n_expr]   FLAME expression coefficients (100 for FLAME)
jaw                 f32 [3]        axis-angle
eyes                f32 [6]        left then right eye, axis-angle
neck                f32 [3]        axis-angle
global_pose         f32 [3]        axis-angle of FLAME's root joint
translation         f32 [3]        FLAME-space translation
viewmat             f32 [4,4]      world -> camera, OpenCV axes
K                   f32 [3,3]      intrinsics in pixels for this image size
transform_matrix    f32 [3,4]      optional: GAGAvatar's camera [R|T], kept as is
bbox                f32 [4]        normalised head box x0, y0, x1, y1
identity, clip      str            ids; pairs are drawn within (identity, clip)
frame               int            frame number within the clip
view                int            camera id for multi-view sets (0 otherwise)
key                 str            unique name, e.g. '{clip}_{frame}'
source_kind         str            'real' or 'synthetic'
==================  =============  ===============================================

Serialisation: one record is one msgpack map. Arrays are stored as
``[dtype, shape, raw bytes]``; the image (and mask) as ``{codec, shape, data}``
with codec ``raw`` (bytes of the uint8 array: 0.03 ms to decode at 512²),
``png`` (lossless, 4-5 ms) or ``jpeg`` (the source's own JPEG bytes kept
unchanged, 1.8 ms, decoded by Pillow exactly as when reading the source). Raw is
the default (measurements in docs/data.md).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
from PIL import Image

SCHEMA_VERSION = 1

#: FLAME parameter names in record order, with their fixed sizes (None: the
#: model's component count, the same for every record of a source).
PARAM_SIZES: dict[str, int | None] = {
    "shape": None,
    "expression": None,
    "jaw": 3,
    "eyes": 6,
    "neck": 3,
    "global_pose": 3,
    "translation": 3,
}
PARAM_KEYS = tuple(PARAM_SIZES)

#: Camera and box arrays with their shapes; transform_matrix is optional.
CAMERA_SHAPES: dict[str, tuple[int, ...]] = {"viewmat": (4, 4), "K": (3, 3), "bbox": (4,)}
OPTIONAL_SHAPES: dict[str, tuple[int, ...]] = {"transform_matrix": (3, 4)}

#: ``source_kind`` strings; the batch carries the position as an int (0 real, 1 synthetic).
SOURCE_KINDS = ("real", "synthetic")

IMAGE_CODECS = ("raw", "png", "jpeg")

_FLOAT_KEYS = PARAM_KEYS + tuple(CAMERA_SHAPES) + tuple(OPTIONAL_SHAPES)
_META_KEYS = ("identity", "clip", "frame", "view", "key", "source_kind")


class BadRecordError(ValueError):
    """A record that cannot be used: undecodable, missing or non-finite fields, bad shapes.

    Attributes:
      key: The record's key (or its position when the key itself is unreadable).
      source: Name of the source it came from.
      reason: What is wrong with it.
    """

    def __init__(self, key: str, source: str, reason: str):
        self.key, self.source, self.reason = key, source, reason
        super().__init__(f"bad record {key!r} in {source}: {reason}")

    def __reduce__(self):  # keeps the fields across worker processes
        return (BadRecordError, (self.key, self.source, self.reason))


# --------------------------------------------------------------------------- images


def encode_image(image: np.ndarray, codec: str = "raw") -> dict[str, Any]:
    """Encodes a uint8 image [H, W, C] as ``{codec, shape, data}``.

    Args:
      image: The pixels. [H, W, C] uint8
      codec: ``raw`` or ``png`` (``jpeg`` is only kept from a source, never produced:
        re-encoding would lose pixels).
    """
    if codec not in ("raw", "png"):
        raise ValueError(f"codec must be 'raw' or 'png' to encode, got {codec!r}")
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image must be uint8 [H, W, C], got {image.dtype} {image.shape}")
    if codec == "raw":
        data = np.ascontiguousarray(image).tobytes()
    else:
        buf = io.BytesIO()
        pil = image[..., 0] if image.shape[-1] == 1 else image
        # compress_level 1: PNG decode time barely depends on it, encode time does.
        Image.fromarray(pil).save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
    return {"codec": codec, "shape": list(image.shape), "data": data}


def sniff_codec(data: bytes) -> str:
    """The codec of encoded image bytes from their magic number ('jpeg', 'png' or '')."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return ""


def decode_image_bytes(data: bytes, channels: int) -> np.ndarray:
    """Decodes PNG/JPEG bytes to uint8 [H, W, channels] with Pillow.

    Three channels convert like torchvision's ``ImageReadMode.RGB`` (grey is
    replicated, alpha dropped), one like ``GRAY``. Raises on truncated data.
    """
    with Image.open(io.BytesIO(data)) as pil:
        pil.load()  # raises OSError on truncated or corrupt data
        pil = pil.convert("RGB" if channels == 3 else "L")
        out = np.asarray(pil, dtype=np.uint8)
    return out if channels == 3 else out[..., None]


def decode_image(enc: Mapping[str, Any]) -> np.ndarray:
    """Decodes ``{codec, shape, data}`` back to uint8 [H, W, C]."""
    shape = tuple(int(s) for s in enc["shape"])
    codec = enc["codec"]
    if codec == "raw":
        data = enc["data"]
        if len(data) != math.prod(shape):
            raise ValueError(f"raw image has {len(data)} bytes, expected {shape}")
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)
    if codec not in IMAGE_CODECS:
        raise ValueError(f"unknown image codec {codec!r}")
    out = decode_image_bytes(enc["data"], shape[-1])
    if out.shape != shape:
        raise ValueError(f"{codec} image decodes to {out.shape}, header says {shape}")
    return out


# --------------------------------------------------------------------------- validation


def check_record(
    record: Mapping[str, Any],
    *,
    source: str,
    image_size: int | None = None,
    param_sizes: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Checks a record against the schema and returns it normalised.

    Float fields are cast to float32 (a float64 array from a generator is fine);
    the image and mask must already be uint8. A missing mask becomes all 255.

    Args:
      record: The record to check.
      source: Name of its source, for the error.
      image_size: Expected S, or None to accept any square size.
      param_sizes: Expected sizes of ``shape`` and ``expression`` (and optionally
        of the others), or None to accept any length for those two.

    Returns:
      A new dict with the same keys (plus ``mask`` and ``view`` when absent).

    Raises:
      BadRecordError: naming the record's key and the first problem found.
    """
    key = str(record.get("key", "<no key>"))

    def bad(reason: str) -> BadRecordError:
        return BadRecordError(key, source, reason)

    out: dict[str, Any] = {}
    for name in _META_KEYS:
        if name not in record:
            if name == "view":
                out["view"] = 0
                continue
            raise bad(f"missing {name!r}")
        out[name] = record[name]
    for name in ("identity", "clip", "key"):
        if not isinstance(out[name], str) or not out[name]:
            raise bad(f"{name} must be a non-empty str, got {out[name]!r}")
    for name in ("frame", "view"):
        if isinstance(out[name], bool) or not isinstance(out[name], (int, np.integer)):
            raise bad(f"{name} must be an int, got {out[name]!r}")
        out[name] = int(out[name])
    if out["source_kind"] not in SOURCE_KINDS:
        raise bad(f"source_kind must be one of {SOURCE_KINDS}, got {out['source_kind']!r}")

    image = record.get("image")
    if not isinstance(image, np.ndarray):
        raise bad("missing image")
    size = image_size if image_size is not None else image.shape[0]
    if image.dtype != np.uint8 or image.shape != (size, size, 3):
        raise bad(f"image must be uint8 [{size}, {size}, 3], got {image.dtype} {image.shape}")
    out["image"] = image
    mask = record.get("mask")
    if mask is None:
        mask = np.full((size, size, 1), 255, np.uint8)
    elif (
        not isinstance(mask, np.ndarray)
        or mask.dtype != np.uint8
        or mask.shape
        != (
            size,
            size,
            1,
        )
    ):
        raise bad(f"mask must be uint8 [{size}, {size}, 1], got {_describe(mask)}")
    out["mask"] = mask

    expected: dict[str, tuple[int, ...] | None] = {}
    for name, n in PARAM_SIZES.items():
        n = (param_sizes or {}).get(name, n)
        expected[name] = None if n is None else (int(n),)
    expected.update(CAMERA_SHAPES)
    for name, shape in expected.items():
        out[name] = _check_float(record.get(name), shape, name, bad)
    for name, shape in OPTIONAL_SHAPES.items():
        if record.get(name) is not None:
            out[name] = _check_float(record[name], shape, name, bad)
    return out


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} {x.shape}"
    return type(x).__name__


def _check_float(value: Any, shape: tuple[int, ...] | None, name: str, bad) -> np.ndarray:
    if value is None:
        raise bad(f"missing {name!r}")
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise bad(f"{name} is not numeric: {e}") from None
    if shape is None:
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise bad(f"{name} must be a non-empty vector, got shape {arr.shape}")
    elif arr.shape != shape:
        raise bad(f"{name} must have shape {list(shape)}, got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise bad(f"{name} has non-finite values")
    return arr


# --------------------------------------------------------------------------- blobs


def encode_record(
    record: Mapping[str, Any],
    *,
    image_codec: str = "raw",
    encoded_image: bytes | None = None,
    source: str = "encode_record",
) -> bytes:
    """Serialises a checked record to one msgpack blob.

    Args:
      record: A record of the schema (it is checked first).
      image_codec: ``raw`` or ``png`` for the image and mask.
      encoded_image: The source's own PNG/JPEG bytes of this image, stored as they
        are instead of re-encoding (lossless by construction: the reader decodes
        them with the same decoder as the source). The mask still uses ``image_codec``.
      source: Name used in the error if the record is bad.

    Returns:
      The blob.
    """
    rec = check_record(record, source=source)
    if encoded_image is not None:
        codec = sniff_codec(encoded_image)
        if not codec:
            raise ValueError("encoded_image is neither PNG nor JPEG")
        image = {"codec": codec, "shape": list(rec["image"].shape), "data": encoded_image}
    else:
        image = encode_image(rec["image"], image_codec)
    has_mask = record.get("mask") is not None
    arrays = {}
    for name in _FLOAT_KEYS:
        if name in rec:
            a = np.ascontiguousarray(rec[name], dtype=np.float32)
            arrays[name] = ["<f4", list(a.shape), a.tobytes()]
    payload = {
        "schema": SCHEMA_VERSION,
        "image": image,
        "mask": encode_image(rec["mask"], image_codec) if has_mask else None,
        "arrays": arrays,
        "meta": {name: rec[name] for name in _META_KEYS},
    }
    return msgpack.packb(payload, use_bin_type=True)


def _unpack(blob: bytes) -> dict[str, Any]:
    payload = msgpack.unpackb(blob, raw=False)
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA_VERSION:
        version = payload.get("schema") if isinstance(payload, dict) else None
        raise ValueError(f"not a schema-{SCHEMA_VERSION} record (schema {version!r})")
    return payload


def decode_meta(blob: bytes) -> dict[str, Any]:
    """The ids of a blob (identity, clip, frame, view, key, source_kind) without decoding images."""
    return dict(_unpack(blob)["meta"])


def decode_record(blob: bytes, *, source: str = "blob", key: str = "<unknown>") -> dict[str, Any]:
    """Deserialises a blob written by `encode_record`.

    The result is not re-checked (the pipeline checks every record it loads).

    Args:
      blob: The bytes.
      source: Name of the source, for the error.
      key: The key to name in the error when the blob itself is unreadable.

    Raises:
      BadRecordError: when the blob or its image cannot be decoded.
    """
    try:
        payload = _unpack(blob)
        meta = payload["meta"]
        key = str(meta.get("key", key))
        record: dict[str, Any] = dict(meta)
        record["image"] = decode_image(payload["image"])
        if payload.get("mask") is not None:
            record["mask"] = decode_image(payload["mask"])
        for name, (dtype, shape, data) in payload["arrays"].items():
            record[name] = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    except BadRecordError:
        raise
    except Exception as e:  # msgpack, Pillow and NumPy raise many types on corrupt bytes
        raise BadRecordError(key, source, f"cannot decode: {type(e).__name__}: {e}") from e
    return record
