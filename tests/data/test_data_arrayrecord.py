"""The ArrayRecord layout: writer, manifest, resume, random-access reader."""

import json
import os
import pickle

import numpy as np
import pytest

from gshead_jax.data import arrayrecord as arr
from gshead_jax.data import records as rec
from gshead_jax.data.source import random_records


@pytest.fixture(scope="module")
def records():
    return random_records(identities=2, clips=2, frames=3, views=2, image_size=8, seed=1)


def test_write_read_round_trip(tmp_path, records):
    m = arr.write_dataset(tmp_path, records, source_kind="real", records_per_shard=5)
    assert [s["num_records"] for s in m["shards"]] == [5, 5, 5, 5, 4]
    src = arr.ArrayRecordSource(tmp_path)
    assert len(src) == len(records) == m["num_records"]
    assert src.image_size == 8 and src.param_sizes["shape"] == 8
    assert src.param_sizes["expression"] == 4 and src.param_sizes["eyes"] == 6
    # Read in a scrambled order: random access, from a pickled copy (what workers get).
    src = pickle.loads(pickle.dumps(src))
    for i in np.random.default_rng(0).permutation(len(records)):
        got, want = src[int(i)], records[int(i)]
        for k, v in want.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(got[k], v, err_msg=k)
            else:
                assert got[k] == v, k
        assert src.index.ids(int(i)) == (
            want["identity"],
            want["clip"],
            want["frame"],
            want["view"],
        )
        assert src.index.keys[int(i)] == want["key"]


def test_refuses_wrong_records_and_existing_dataset(tmp_path, records):
    bad = [records[0], dict(records[1], expression=np.zeros(5, np.float32))]
    with pytest.raises(rec.BadRecordError, match="expression must have shape"):
        arr.write_dataset(tmp_path / "a", bad, source_kind="real")
    with pytest.raises(rec.BadRecordError, match="source_kind 'real' in a 'synthetic'"):
        arr.write_dataset(tmp_path / "b", records[:2], source_kind="synthetic")
    assert arr.completed_shards(tmp_path / "b") == []  # the aborted shard left nothing
    arr.write_dataset(tmp_path / "c", records[:2], source_kind="real")
    with pytest.raises(ValueError, match="already holds a dataset"):
        arr.write_dataset(tmp_path / "c", records[:2], source_kind="real")


def test_resume_keeps_finished_shards(tmp_path, records):
    # Shard 1 finished, shard 0 not yet: finalize refuses, then a resumed run
    # writes only the missing shard.
    with arr.ShardWriter(tmp_path, 1, source_kind="real") as w:
        for r in records[4:]:
            w.add(r)
    with pytest.raises(ValueError, match=r"shards \[0\] are missing"):
        arr.finalize(tmp_path)
    mtime = os.path.getmtime(tmp_path / arr.shard_name(1))
    for shard in set(range(2)) - set(arr.completed_shards(tmp_path)):
        with arr.ShardWriter(tmp_path, shard, source_kind="real") as w:
            for r in records[:4]:
                w.add(r)
    assert os.path.getmtime(tmp_path / arr.shard_name(1)) == mtime
    m = arr.finalize(tmp_path, extra={"note": "resumed"})
    assert m["extra"] == {"note": "resumed"} and m["num_records"] == len(records)
    src = arr.ArrayRecordSource(tmp_path)
    assert [src[i]["key"] for i in range(len(src))] == [r["key"] for r in records]


def test_reader_checks_manifest_against_files(tmp_path, records):
    arr.write_dataset(tmp_path, records[:6], source_kind="real", records_per_shard=3)
    mpath = tmp_path / arr.MANIFEST
    m = json.loads(mpath.read_text())
    m["shards"][1]["num_records"] = 2
    m["shards"][0]["num_records"] = 4
    mpath.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="has 3 records, manifest says 4"):
        arr.ArrayRecordSource(tmp_path)
    os.remove(tmp_path / arr.shard_name(1))
    with pytest.raises(FileNotFoundError, match="shard-00001.array_record"):
        arr.ArrayRecordSource(tmp_path)
