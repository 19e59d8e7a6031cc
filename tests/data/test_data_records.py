"""Record schema checks and the one-blob serialisation (gshead_jax.data.records)."""

import io

import msgpack
import numpy as np
import pytest
from PIL import Image

from gshead_jax.data import records as rec
from gshead_jax.data.source import FrameIndex, InMemorySource, random_records


@pytest.fixture(scope="module")
def record():
    return random_records(identities=1, clips=1, frames=1, image_size=12, seed=3)[0]


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("codec", ["raw", "png"])
def test_blob_round_trip_is_exact(record, codec):
    back = rec.decode_record(rec.encode_record(record, image_codec=codec))
    _assert_same(rec.check_record(back, source="t"), rec.check_record(record, source="t"))


def test_kept_jpeg_decodes_like_pillow_and_missing_mask_is_255(record):
    buf = io.BytesIO()
    Image.fromarray(record["image"]).save(buf, format="JPEG", quality=95)
    jpeg = buf.getvalue()
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    r = dict(record, image=pixels)
    del r["mask"]
    blob = rec.encode_record(r, encoded_image=jpeg)
    payload = msgpack.unpackb(blob, raw=False)
    assert payload["image"]["codec"] == "jpeg" and payload["image"]["data"] == jpeg
    assert payload["mask"] is None  # nothing stored for an absent mask
    back = rec.check_record(rec.decode_record(blob), source="t")
    np.testing.assert_array_equal(back["image"], pixels)
    np.testing.assert_array_equal(back["mask"], np.full((12, 12, 1), 255, np.uint8))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"expression": np.array([0.0, np.nan, 0.0, 0.0])}, "expression has non-finite"),
        ({"jaw": np.zeros(4)}, "jaw must have shape [3]"),
        ({"viewmat": np.eye(3)}, "viewmat must have shape [4, 4]"),
        ({"image": np.zeros((12, 12, 3), np.float32)}, "image must be uint8"),
        ({"mask": np.zeros((12, 12), np.uint8)}, "mask must be uint8 [12, 12, 1]"),
        ({"source_kind": "fake"}, "source_kind must be one of"),
        ({"bbox": None}, "missing 'bbox'"),
    ],
)
def test_check_record_names_the_record_and_the_problem(record, change, message):
    with pytest.raises(rec.BadRecordError) as e:
        rec.check_record(dict(record, **change), source="src")
    assert e.value.key == record["key"] and e.value.source == "src"
    assert message in str(e.value)


def test_check_record_enforces_source_sizes(record):
    with pytest.raises(rec.BadRecordError, match="shape must have shape"):
        rec.check_record(record, source="s", param_sizes={"shape": 300})
    with pytest.raises(rec.BadRecordError, match=r"image must be uint8 \[16, 16, 3\]"):
        rec.check_record(record, source="s", image_size=16)


def test_corrupt_blobs_raise_bad_record(record):
    blob = rec.encode_record(record, image_codec="png")
    payload = msgpack.unpackb(blob, raw=False)
    payload["image"]["data"] = payload["image"]["data"][:40]  # truncated PNG
    truncated = msgpack.packb(payload, use_bin_type=True)
    src = InMemorySource(
        [blob, truncated, blob[:30]],
        index=FrameIndex.from_lists(["a"] * 3, ["c"] * 3, [0, 1, 2], ["k0", "k1", "k2"]),
        name="mem",
    )
    assert src[0]["key"] == record["key"]
    with pytest.raises(rec.BadRecordError, match=f"bad record '{record['key']}' in mem"):
        src[1]
    with pytest.raises(rec.BadRecordError, match="bad record 'k2' in mem: cannot decode"):
        src[2]
