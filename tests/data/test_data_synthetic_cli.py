"""The synthetic CLI: ArrayRecord round trip, resume, refusal, preview, batched rendering.

Runs ``main()`` in-process at the size the other synthetic tests use (64²,
4096 Gaussians), so the compiled renderer is shared with them.
"""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from gshead_jax.data import arrayrecord
from gshead_jax.data.synthetic import SyntheticSource, main

ARGS = ["--identities", "2", "--clips", "1", "--frames", "3", "--size", "64"]
ARGS += ["--num-gaussians", "4096", "--records-per-shard", "2", "--no-progress"]


def _source():
    return SyntheticSource(identities=2, clips=1, frames=3, image_size=64, num_gaussians=4096)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _assert_same(a, b):
    for k, v in b.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(a[k], v, err_msg=k)
        else:
            assert a[k] == v, k


def test_cli_round_trip_and_resume(tmp_path):
    out = str(tmp_path / "synth")
    assert main(["--out", out, *ARGS]) == 0
    data = arrayrecord.ArrayRecordSource(out)
    src = _source()
    assert len(data) == len(src) == 6 and data.source_kind == "synthetic"
    assert data.param_sizes == src.param_sizes and data.image_size == 64
    assert list(data.index.keys) == list(src.index.keys)
    for i in range(len(src)):
        _assert_same(data[i], src[i])  # bit-identical: the CLI's CPU path is the source's

    # Resume: drop the manifest and the last shard; the finished shards are kept as they are.
    names = ["shard-00000.array_record", "shard-00001.array_record"]
    stamps = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in names}
    blobs = {n: _read(os.path.join(out, n)) for n in names}
    os.remove(os.path.join(out, "manifest.json"))
    os.remove(os.path.join(out, "shard-00002.json"))  # an unfinished shard has no sidecar
    assert arrayrecord.completed_shards(out) == [0, 1]
    assert main(["--out", out, *ARGS]) == 0
    for n in names:
        assert os.stat(os.path.join(out, n)).st_mtime_ns == stamps[n]
        assert _read(os.path.join(out, n)) == blobs[n]
    again = arrayrecord.ArrayRecordSource(out)
    for i in range(len(src)):
        _assert_same(again[i], src[i])
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["extra"]["synthetic"]["config"]["frames"] == 3

    # Resuming with other settings would mix two datasets: refused.
    with pytest.raises(ValueError, match="refusing to resume"):
        main(["--out", out, *[a if a != "2" else "3" for a in ARGS]])  # 3 identities, 3 per shard


def test_cli_preview(tmp_path):
    path = str(tmp_path / "sheet.png")
    assert (
        main(["--preview", path, *ARGS, "--preview-identities", "2", "--preview-size", "64"]) == 0
    )
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (2 * 64 + 14, 11 * 64, 3)
    cells = sheet[14:].reshape(2, 64, 11, 64, 3).transpose(0, 2, 1, 3, 4).astype(np.float64)
    # Every cell shows a head; expressions and views change the picture.
    assert all(c.mean() > 5 for row in cells for c in row)
    assert np.abs(cells[:, 0] - cells[:, 1]).mean() > 0.5  # mouth open
    assert np.abs(cells[:, 0] - cells[:, 7]).mean() > 5  # yaw -60


def test_cli_needs_an_output():
    with pytest.raises(SystemExit):
        main(["--identities", "1"])
    with pytest.raises(SystemExit):
        main(["--out", "x", "--identities", "0"])


def test_batched_rendering_matches_single_frames():
    src = _source()
    idx = [0, 4]  # two identities in one vmapped call
    batched = src.render(idx, batch=True)
    for i, r in zip(idx, batched, strict=True):
        single = src[i]
        diff = np.abs(r["image"].astype(int) - single["image"])
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01
        assert np.abs(r["mask"].astype(int) - single["mask"]).max() <= 2
        for k in ("shape", "expression", "viewmat", "K", "transform_matrix"):
            np.testing.assert_array_equal(r[k], single[k], err_msg=k)


@pytest.mark.gpu
def test_gpu_batched_rendering_matches_cpu_reference():
    """The GPU path (vmapped, backend 'auto': Pallas on Hopper) against the CPU XLA render."""
    src = SyntheticSource(identities=2, clips=1, frames=3, image_size=256, num_gaussians=32768)
    idx = [0, 1, 2, 3]
    gpu = src.render(idx, batch=True, backend="auto")
    with jax.default_device(jax.devices("cpu")[0]):
        cpu = SyntheticSource(src.config).render(idx, batch=False, backend="xla")
    for a, b in zip(gpu, cpu, strict=True):
        diff = np.abs(a["image"].astype(int) - b["image"])
        assert diff.mean() < 0.2 and (diff > 2).mean() < 0.002
