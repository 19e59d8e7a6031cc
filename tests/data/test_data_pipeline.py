"""grain pipelines: resume, bad records, mixing, sharding, eval padding, device placement."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gshead_jax.data import pipeline
from gshead_jax.data import records as rec
from gshead_jax.data.source import InMemorySource, random_records

S = 8


def _source(prefix="", kind="real", seed=0, **kw):
    recs = random_records(image_size=S, prefix=prefix, source_kind=kind, seed=seed, **kw)
    return InMemorySource(recs, name=f"{prefix or 'mem'}")


def _take(it, n):
    return [next(it) for _ in range(n)]


def _pairs(batches):
    """(target_key, source_key) of every valid pair, in order."""
    out = []
    for b in batches:
        m = b["meta"]
        out += [(t, s) for t, s, v in zip(m["target_key"], m["source_key"], b["valid"]) if v]
    return out


def _assert_batches_equal(a, b):
    for x, y in zip(a, b, strict=True):
        jax.tree.map(np.testing.assert_array_equal, x, y)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_from_orbax_sees_the_same_batches(tmp_path, num_workers):
    sources = [_source("r", frames=3), _source("s", "synthetic", seed=1, frames=3)]
    kw = dict(batch_size=4, seed=7, weights=[2, 1], shard=(0, 1), num_workers=num_workers)
    it = iter(pipeline.train_pipeline(sources, **kw))
    first = _take(it, 3)
    mngr = ocp.CheckpointManager(tmp_path)
    mngr.save(3, args=ocp.args.Composite(data=pipeline.save_args(it)))
    mngr.wait_until_finished()
    expected = _take(it, 4)  # the uninterrupted run goes on
    it.close()

    resumed = iter(pipeline.train_pipeline(sources, **kw))
    mngr.restore(3, args=ocp.args.Composite(data=pipeline.restore_args(resumed)))
    _assert_batches_equal(_take(resumed, 4), expected)
    assert resumed.stats() == {"batches": 7, "pairs": 28, "skipped": 0}
    resumed.close()
    if num_workers == 0:  # (worker start-up costs ~2 s on CI: checked once)
        fresh = iter(pipeline.train_pipeline(sources, **kw))
        _assert_batches_equal(_take(fresh, 3), first)  # and a new run starts over
        fresh.close()


def test_bad_records_are_skipped_counted_and_batches_refilled(caplog):
    recs = random_records(image_size=S, frames=3)
    blobs = [rec.encode_record(r) for r in recs]
    bad = {3: "id0c1_0", 8: "id1c0_2"}
    clean = InMemorySource(blobs, name="mem")
    blobs[3] = blobs[3][:20]  # undecodable
    r8 = dict(recs[8], expression=np.full(4, np.inf, np.float32))
    blobs[8] = rec.encode_record(dict(r8, expression=np.zeros(4)))
    items = list(blobs)
    items[8] = r8  # a record with non-finite parameters
    corrupt = InMemorySource(items, name="mem", index=clean.index)
    kw = dict(seed=3, shard=(0, 1), prefetch=0)
    reference = _pairs(_take(iter(pipeline.train_pipeline([clean], batch_size=1, **kw)), 60))
    it = iter(pipeline.train_pipeline([corrupt], batch_size=4, **kw))
    batches = _take(it, 10)
    good = [p for p in reference if not set(p) & set(bad.values())]
    assert _pairs(batches) == good[:40]  # nothing else lost, order kept
    positions = [i for i, p in enumerate(reference) if not set(p) & set(bad.values())]
    consumed = positions[39] + 1
    assert sum(int(b["meta"]["num_skipped"]) for b in batches) == consumed - 40
    assert it.stats()["skipped"] == consumed - 40 > 0
    assert "bad record 'id0c1_0' in mem" in caplog.text
    with pytest.raises(rec.BadRecordError, match="bad record 'id(0c1_0|1c0_2)' in mem"):
        _take(iter(pipeline.train_pipeline([corrupt], batch_size=4, strict=True, **kw)), 10)


def test_mixing_keeps_source_kind_and_weights():
    sources = [_source("r", frames=5), _source("s", "synthetic", seed=1, frames=5)]
    it = iter(
        pipeline.train_pipeline(
            sources, batch_size=8, weights=[0.75, 0.25], seed=1, shard=(0, 1), prefetch=0
        )
    )
    batches = _take(it, 25)
    kind = np.concatenate([b["source_kind"] for b in batches])
    dataset = np.concatenate([b["meta"]["dataset"] for b in batches])
    tkeys = np.concatenate([b["meta"]["target_key"] for b in batches])
    skeys = np.concatenate([b["meta"]["source_key"] for b in batches])
    np.testing.assert_array_equal(kind, dataset)  # 0 real, 1 synthetic
    assert all(k.startswith("s" if d else "r") for k, d in zip(tkeys, dataset))
    assert abs(kind.mean() - 0.25) < 0.03
    # Train pairs: same clip, different frame.
    for t, s in zip(tkeys, skeys):
        assert t != s and t.rsplit("_", 1)[0] == s.rsplit("_", 1)[0]
    with pytest.raises(ValueError, match="weights must be 2 positive numbers"):
        pipeline.train_pipeline(sources, batch_size=8, weights=[1, 0], shard=(0, 1))


def test_shards_split_the_global_stream():
    src = _source(frames=4)
    kw = dict(seed=5, prefetch=0)
    whole = _pairs(_take(iter(pipeline.train_pipeline([src], batch_size=4, shard=(0, 1), **kw)), 3))
    parts = [
        _take(iter(pipeline.train_pipeline([src], batch_size=4, shard=(k, 2), **kw)), 3)
        for k in range(2)
    ]
    assert all(b["target_image"].shape[0] == 2 for p in parts for b in p)  # local batch
    for k in range(2):
        assert _pairs(parts[k]) == whole[k::2]
    with pytest.raises(ValueError, match="multiple of the process count 2"):
        pipeline.train_pipeline([src], batch_size=3, shard=(0, 2))


def test_eval_covers_every_pair_once_with_padding():
    src = _source(identities=2, clips=1, frames=4, views=1)  # 2 clips x 3 eval pairs
    want = [(f"id{i}c0_{f}", f"id{i}c0_0") for i in range(2) for f in range(1, 4)]
    for count in (1, 2):
        got, n_batches = [], set()
        for k in range(count):
            batches = list(iter(pipeline.eval_pipeline([src], batch_size=4, shard=(k, count))))
            n_batches.add(len(batches))
            got += _pairs(batches)
            assert all(b["meta"]["num_skipped"] == 0 for b in batches)
        assert sorted(got) == sorted(want) and len(n_batches) == 1  # 6 pairs + 2 padding


def test_device_batch_places_global_float_arrays():
    src = _source()
    batch = next(iter(pipeline.train_pipeline([src], batch_size=2, shard=(0, 1), prefetch=0)))
    mesh = jax.make_mesh((1,), ("data",))
    out = pipeline.device_batch(batch, mesh)
    for k in pipeline.IMAGE_KEYS:
        assert out[k].dtype == np.float32 and out[k].shape == batch[k].shape
        np.testing.assert_allclose(np.asarray(out[k]), batch[k] / 255.0, rtol=1e-6)
    assert out["source_params"]["expression"].shape == (2, 4)
    assert out["target_viewmat"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(out["source_kind"]), batch["source_kind"])
    assert out["meta"] is batch["meta"]
    assert set(out) == {
        "source_image",
        "target_image",
        "target_mask",
        "source_params",
        "target_params",
        "source_viewmat",
        "source_K",
        "target_viewmat",
        "target_K",
        "target_bbox",
        "source_kind",
        "valid",
        "meta",
    }
