"""GAGAvatar's tracked layout: read as is, convert losslessly to ArrayRecord.

The fixture is written the way GAGAvatar's code writes it: ``LMDBEngine.dump``
(JPEG quality 95 through libjpeg, or PNG; ``type='torch'`` for a ``torch.save``
of the float tensor), ``optim.pkl`` as the tracker's ``track_optim`` pickles it
(a dict of float32 NumPy arrays per frame), and a ``dataset.json`` of splits.
"""

import io
import json
import pickle

import lmdb
import numpy as np
import pytest
from PIL import Image

from gshead_jax.data import arrayrecord, pipeline, tracked

try:  # [test] extra: the official reader's torch.save fallback is checked when present
    import torch
except ImportError:
    torch = None
from gshead_jax.data import records as rec

S = 32
FOCAL = 12.0  # GAGAvatar's FOCAL_LENGTH
CLIPS = {"000001": [0, 1, 2, 3], "000002": [0, 2, 5], "000003": [1, 2]}


def _image(rng):
    y, x = np.mgrid[0:S, 0:S] / S
    phase = rng.uniform(0, 6, 3)
    img = 0.5 + 0.4 * np.stack(
        [np.sin(5 * x + phase[0]), np.cos(4 * y + phase[1]), np.sin(3 * (x + y) + phase[2])], -1
    )
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _params(rng):
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rot *= np.linalg.det(rot)  # proper rotation
    t = np.array([rng.normal(0, 0.05), rng.normal(0, 0.05), 9.3])
    return {
        "bbox": np.sort(rng.uniform(0, 1, 4)).astype(np.float32)[[0, 1, 2, 3]],
        "shapecode": rng.normal(size=300).astype(np.float32),
        "expcode": rng.normal(size=100).astype(np.float32),
        "posecode": np.concatenate([np.zeros(3), rng.normal(0, 0.1, 3)]).astype(np.float32),
        "eyecode": rng.normal(0, 0.1, 6).astype(np.float32),
        "transform_matrix": np.concatenate([rot, t[:, None]], 1).astype(np.float32),
    }


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A tiny GAGAvatar dataset; returns (path, originals, special keys)."""
    path = tmp_path_factory.mktemp("gagavatar")
    rng = np.random.default_rng(0)
    keys = [f"{c}_{f}" for c, fs in CLIPS.items() for f in fs]
    keys[keys.index("000003_1")] = "img_000003_1"  # GAGAvatar's 'img_' key prefix
    images = {k: _image(rng) for k in keys}
    optim = {k: _params(rng) for k in keys}
    png_key, torch_key, corrupt_key, nan_key = "000001_1", "000002_2", "000001_2", "000002_5"
    missing_key = "000002_0"
    optim[nan_key]["expcode"][7] = np.nan
    del optim[missing_key]
    env = lmdb.open(str(path / "img_lmdb"), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for k, img in images.items():
            buf = io.BytesIO()
            if k == png_key:
                Image.fromarray(img).save(buf, format="PNG")
            elif k == torch_key and torch is not None:
                torch.save(torch.from_numpy(img.transpose(2, 0, 1).copy()).float(), buf)
            elif k == torch_key:  # without torch (not a dependency) this frame is a PNG
                Image.fromarray(img).save(buf, format="PNG")
            else:
                Image.fromarray(img).save(buf, format="JPEG", quality=95)
            payload = buf.getvalue()
            if k == corrupt_key:
                payload = payload[: len(payload) // 3]  # truncated JPEG
            txn.put(k.encode(), payload)
    env.close()
    with open(path / "optim.pkl", "wb") as f:
        pickle.dump(optim, f)
    split = {"train": keys, "val": keys[:4], "test": []}
    (path / "dataset.json").write_text(json.dumps(split))
    special = dict(
        png=png_key, torch=torch_key, corrupt=corrupt_key, nan=nan_key, missing=missing_key
    )
    return path, images, optim, special


def _project_gagavatar(tm, points):
    """Pixels of world points by GAGAvatar's renderer (build_camera_matrices + 3DGS ndc2Pix)."""
    view = points @ tm[:, :3] + tm[:, 3]  # row-vector PyTorch3D view frame
    x, y, z = -view[:, 0], -view[:, 1], view[:, 2]  # the renderer negates columns 0 and 1
    ndc = np.stack([FOCAL * x / z, FOCAL * y / z], -1)  # 1 / tan(fov / 2) = focal
    return (ndc + 1.0) * S / 2.0  # ndc2Pix, shifted to pixel centres at +0.5


def test_reads_gagavatar_layout(layout):
    path, images, optim, special = layout
    src = tracked.TrackedSource(path, "train")
    assert len(src) == 9 and src.image_size == S and src.source_kind == "real"
    assert src.param_sizes["shape"] == 300 and src.param_sizes["expression"] == 100
    assert src.index.ids(src.index.keys.index("img_000003_1")) == ("000003", "000003", 1, 0)
    points = np.random.default_rng(1).normal(0, 0.5, (20, 3))
    for i, key in enumerate(src.index.keys):
        if key in (special["corrupt"], special["missing"]):
            with pytest.raises(rec.BadRecordError, match=key):
                src[i]
            continue
        r = src[i]
        o = optim[key]
        if key == special["nan"]:
            with pytest.raises(rec.BadRecordError, match="expression has non-finite"):
                rec.check_record(r, source=src.name)
            continue
        checked = rec.check_record(r, source=src.name, image_size=S, param_sizes=src.param_sizes)
        if key in (special["png"], special["torch"]):
            np.testing.assert_array_equal(r["image"], images[key])
        else:  # JPEG q95: close to the original pixels
            assert np.abs(r["image"].astype(int) - images[key]).mean() < 3.0
        assert "mask" not in r  # the layout has none: the checked record's mask is all 255
        np.testing.assert_array_equal(checked["mask"], np.full((S, S, 1), 255))
        np.testing.assert_array_equal(r["shape"], o["shapecode"])
        np.testing.assert_array_equal(r["expression"], o["expcode"])
        np.testing.assert_array_equal(r["global_pose"], o["posecode"][:3])
        np.testing.assert_array_equal(r["jaw"], o["posecode"][3:])
        np.testing.assert_array_equal(r["eyes"], o["eyecode"])
        np.testing.assert_array_equal(r["neck"], np.zeros(3))
        np.testing.assert_array_equal(r["translation"], np.zeros(3))
        np.testing.assert_array_equal(r["transform_matrix"], o["transform_matrix"])
        np.testing.assert_array_equal(r["bbox"], o["bbox"])
        # viewmat/K project like GAGAvatar's renderer does with transform_matrix.
        cam = points @ r["viewmat"][:3, :3].T + r["viewmat"][:3, 3]
        uv = cam @ r["K"].T
        np.testing.assert_allclose(
            uv[:, :2] / uv[:, 2:], _project_gagavatar(o["transform_matrix"], points), atol=1e-3
        )


@pytest.mark.parametrize("codec", ["keep", "raw"])
def test_convert_is_lossless(layout, tmp_path, codec):
    path, _, _, special = layout
    out = tmp_path / "ar"
    assert (
        tracked.main(
            [
                "convert",
                "--src",
                str(path),
                "--out",
                str(out),
                "--image-codec",
                codec,
                "--records-per-shard",
                "4",
            ]
        )
        == 0
    )
    src = tracked.TrackedSource(path, "train")
    dst = arrayrecord.ArrayRecordSource(out)
    bad = {special["corrupt"], special["missing"], special["nan"]}
    skipped = dst.manifest["extra"]["skipped"]
    assert {s["key"] for s in skipped} == bad
    assert list(dst.index.keys) == [k for k in src.index.keys if k not in bad]
    assert dst.image_size == S and dst.param_sizes == src.param_sizes
    for j, key in enumerate(dst.index.keys):
        a, b = src[src.index.keys.index(key)], dst[j]
        assert set(b) == set(a)  # no mask stored, as in the source
        for k, v in a.items():
            if isinstance(v, np.ndarray):
                assert b[k].dtype == v.dtype, k
                np.testing.assert_array_equal(b[k], v, err_msg=f"{key} {k}")
            else:
                assert b[k] == v, k
    with pytest.raises(rec.BadRecordError, match=special["corrupt"]):
        tracked.convert(path, tmp_path / "strict", strict=True, progress=False)


def test_pipeline_skips_and_counts_bad_tracked_frames(layout):
    path, _, _, special = layout
    src = tracked.TrackedSource(path, "val")  # 000001_{0..3}: 000001_2 is corrupt
    assert list(src.index.keys) == ["000001_0", "000001_1", "000001_2", "000001_3"]
    it = iter(pipeline.eval_pipeline([src], batch_size=4, shard=(0, 1), prefetch=0))
    batch = next(it)
    # Eval pairs: first frame -> frames 1, 2, 3; the pair with the corrupt frame is dropped.
    assert list(batch["meta"]["target_key"]) == ["000001_1", "", "000001_3", ""]
    assert list(batch["valid"]) == [True, False, True, False]
    assert batch["meta"]["num_skipped"] == 1 and it.stats()["skipped"] == 1
    with pytest.raises(rec.BadRecordError, match=special["corrupt"]):
        next(iter(pipeline.eval_pipeline([src], batch_size=4, shard=(0, 1), strict=True)))
