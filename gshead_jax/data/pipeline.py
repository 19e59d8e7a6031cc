"""grain pipelines that turn frame sources into batches of (source, target) pairs.

Stages (``grain`` 0.2.18 dataset API)::

    per source: range(T).repeat.map_with_index(shuffle, pick source)  [train]
                range(T).map(fixed source)                              [eval]
    mix (weights, train) | concatenate (+ padding, eval)
    [process_index::process_count]                                      JAX process shard
    map(LoadPair)          read + check both records, or a skip marker  (read threads)
    BatchPairs             fill the batch from good pairs, count skips
    mp_prefetch(workers)   | thread prefetch when workers = 0
    TrackStats             running totals, part of the iterator state

The element order is a pure function of the seed, so the batches depend only on
(seed, sources, batch size, process count, worker count) -- and an iterator
restored from a checkpoint continues exactly where it was (`save_args`). The
source frame of a train pair is drawn with a generator seeded by
(seed, dataset, epoch, target), independent of workers and sharding.

Host batches hold uint8 images; `device_batch` places them on a mesh as global
arrays and converts images and masks to float32 in [0, 1] (4x less to copy and
transfer than converting on the host). The layout is in docs/data.md.

Example:
  >>> ds = train_pipeline([ArrayRecordSource("data/vfhq")], batch_size=8, seed=0)
  >>> it = iter(ds)
  >>> batch = device_batch(next(it), mesh)
  >>> batch["target_image"].shape, batch["meta"]["num_skipped"]
  ((8, 512, 512, 3), 0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from gshead_jax.data import batching, pairs
from gshead_jax.data.source import check_source

#: Keys of a device batch that are images/masks (uint8 on the host, float32 in [0, 1] on device).
IMAGE_KEYS = ("source_image", "target_image", "target_mask")


def _check_sources(sources: Sequence[Any]) -> tuple[int, dict[str, int]]:
    if not isinstance(sources, Sequence) or not sources:
        raise TypeError("sources must be a non-empty sequence of FrameSource")
    for i, s in enumerate(sources):
        check_source(s, f"sources[{i}]")
    size, sizes = sources[0].image_size, dict(sources[0].param_sizes)
    for i, s in enumerate(sources[1:], 1):
        if s.image_size != size or dict(s.param_sizes) != sizes:
            raise ValueError(
                f"sources[{i}] ({s.name}) has image_size={s.image_size}, param_sizes="
                f"{dict(s.param_sizes)}; sources[0] ({sources[0].name}) has {size}, {sizes}: "
                "sources batched together must agree"
            )
    return size, sizes


def _rules(rule: str | Sequence[str], n: int) -> list[str]:
    rules = [rule] * n if isinstance(rule, str) else list(rule)
    if len(rules) != n:
        raise ValueError(f"pair_rule must be a str or one per source ({n}), got {len(rules)}")
    return rules


def _shard(shard: tuple[int, int] | None) -> tuple[int, int]:
    index, count = shard if shard is not None else (jax.process_index(), jax.process_count())
    if not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    return index, count


def _local_batch(batch_size: int, count: int) -> int:
    if batch_size < 1 or batch_size % count:
        raise ValueError(
            f"batch_size (global) must be a positive multiple of the process count {count}, "
            f"got {batch_size}"
        )
    return batch_size // count


class _PickSource:
    """map_with_index: position in the repeated stream -> (dataset, target, random source).

    Epoch ``e`` visits the targets in ``permutation(seed, dataset, e)`` order (a
    NumPy permutation, cached per process: grain's ``index_shuffle`` costs
    milliseconds per element on sets of under ~1000 targets); the source is drawn
    with a generator seeded by (seed, dataset, epoch, target).
    """

    def __init__(self, plan: pairs.PairPlan, dataset: int, seed: int):
        self.plan, self.dataset, self.seed = plan, dataset, seed
        self._perms: dict[int, np.ndarray] = {}

    def __getstate__(self):
        return {**self.__dict__, "_perms": {}}

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.seed, self.dataset, epoch])
            n = len(self.plan)
            perm = rng.permutation(n).astype(np.int32 if n < 2**31 else np.int64)
            # Keep this epoch and the previous one (read threads straddle the boundary).
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
            self._perms[epoch] = perm
        return perm

    def __call__(self, index: int, _: int) -> tuple[int, int, int]:
        epoch, pos = divmod(int(index), len(self.plan))
        t = int(self._permutation(epoch)[pos])
        rng = np.random.default_rng([self.seed, self.dataset, epoch, t])
        return self.dataset, int(self.plan.targets[t]), self.plan.source_of(t, rng)


class _FixedSource:
    """map: target position -> (dataset, target, eval source)."""

    def __init__(self, plan: pairs.PairPlan, dataset: int):
        self.plan, self.dataset = plan, dataset

    def __call__(self, t: int) -> tuple[int, int, int]:
        return self.dataset, int(self.plan.targets[t]), self.plan.source_of(int(t))


def _padding(_: int) -> tuple[int, int, int]:
    return batching.PADDING


def _worker_init(worker_index: int, worker_count: int) -> None:
    """Keeps JAX in data workers off the accelerators.

    Workers only run NumPy, but should anything call JAX there, a GPU backend
    would preallocate most of the device memory once per worker.
    """
    del worker_index, worker_count
    jax.config.update("jax_platforms", "cpu")


def _finish(
    ds: grain.MapDataset,
    sources: Sequence[Any],
    *,
    local_batch: int,
    pad: bool,
    image_size: int,
    param_sizes: dict[str, int],
    strict: bool,
    num_workers: int,
    read_threads: int,
    prefetch: int,
) -> grain.IterDataset:
    if num_workers < 0 or read_threads < 0 or prefetch < 0:
        raise ValueError("num_workers, read_threads and prefetch must be >= 0")
    load = batching.LoadPair(sources, image_size=image_size, param_sizes=param_sizes, strict=strict)
    ds = ds.map(load)
    read = grain.ReadOptions(
        num_threads=read_threads, prefetch_buffer_size=max(2 * local_batch, read_threads)
    )
    it_ds = ds.to_iter_dataset(read)
    blank = batching.blank_pair(image_size, param_sizes) if pad else None
    it_ds = batching.BatchPairs(it_ds, local_batch, blank)
    if num_workers > 0:
        # grain's worker processes are spawned and read absl flags; a program that
        # never parsed them (a notebook, pytest) would fail there.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=num_workers, per_worker_buffer_size=max(prefetch, 1)
            ),
            worker_init_fn=_worker_init,
        )
    elif prefetch > 0:
        it_ds = grain.experimental.ThreadPrefetchIterDataset(it_ds, prefetch_buffer_size=prefetch)
    return batching.TrackStats(it_ds)


def train_pipeline(
    sources: Sequence[Any],
    *,
    batch_size: int,
    seed: int = 0,
    pair_rule: str | Sequence[str] = "same_clip",
    weights: Sequence[float] | None = None,
    num_epochs: int | None = None,
    strict: bool = False,
    num_workers: int = 0,
    read_threads: int = 4,
    prefetch: int = 2,
    shard: tuple[int, int] | None = None,
) -> grain.IterDataset:
    """Training batches: shuffled targets, random sources, sources mixed by weight.

    Args:
      sources: `FrameSource` objects (same image size and parameter sizes).
      batch_size: Global batch size (a multiple of the process count).
      seed: Seeds the shuffles and the source draws.
      pair_rule: A rule of `pairs.RULES`, or one per source.
      weights: Mixing proportions, one per source (default: equal). grain mixes
        deterministically in these proportions; each source repeats on its own.
      num_epochs: Epochs per source (None: endless). A final partial batch is dropped.
      strict: Raise on the first bad record instead of skipping it.
      num_workers: grain worker processes (0: load in this process).
      read_threads: Threads reading and decoding records within each process.
      prefetch: Batches buffered per worker (or by a thread when num_workers = 0).
      shard: (index, count) of this process; default JAX's process index and count.

    Returns:
      An ``IterDataset``; ``iter()`` gives a checkpointable iterator with ``stats()``.
    """
    image_size, param_sizes = _check_sources(sources)
    rules = _rules(pair_rule, len(sources))
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != len(sources) or min(weights) <= 0:
            raise ValueError(f"weights must be {len(sources)} positive numbers, got {weights}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be None or >= 1, got {num_epochs}")
    index, count = _shard(shard)
    local = _local_batch(batch_size, count)
    parts = []
    for d, (src, rule) in enumerate(zip(sources, rules)):
        plan = pairs.make_plan(src.index, rule, train=True, name=src.name)
        ds = grain.MapDataset.range(len(plan)).repeat(num_epochs)
        ds = ds.map_with_index(_PickSource(plan, d, seed))
        parts.append(ds)
    ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)
    ds = ds[index::count]
    return _finish(
        ds,
        sources,
        local_batch=local,
        pad=False,
        image_size=image_size,
        param_sizes=param_sizes,
        strict=strict,
        num_workers=num_workers,
        read_threads=read_threads,
        prefetch=prefetch,
    )


def eval_pipeline(
    sources: Sequence[Any],
    *,
    batch_size: int,
    pair_rule: str | Sequence[str] = "same_clip",
    strict: bool = False,
    num_workers: int = 0,
    read_threads: int = 4,
    prefetch: int = 2,
    shard: tuple[int, int] | None = None,
) -> grain.IterDataset:
    """Evaluation batches: every eval pair of every source once, in order.

    Pairs are padded to a multiple of the global batch so every process yields
    the same number of full batches; padding and bad pairs have ``valid = False``
    (bad ones are counted in ``meta["num_skipped"]``). Arguments as `train_pipeline`.
    """
    image_size, param_sizes = _check_sources(sources)
    rules = _rules(pair_rule, len(sources))
    index, count = _shard(shard)
    local = _local_batch(batch_size, count)
    parts = []
    for d, (src, rule) in enumerate(zip(sources, rules)):
        plan = pairs.make_plan(src.index, rule, train=False, name=src.name)
        parts.append(grain.MapDataset.range(len(plan)).map(_FixedSource(plan, d)))
    total = sum(len(p) for p in parts)
    n_pad = -total % batch_size
    if n_pad:
        parts.append(grain.MapDataset.range(n_pad).map(_padding))
    ds = parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
    ds = ds[index::count]
    return _finish(
        ds,
        sources,
        local_batch=local,
        pad=True,
        image_size=image_size,
        param_sizes=param_sizes,
        strict=strict,
        num_workers=num_workers,
        read_threads=read_threads,
        prefetch=prefetch,
    )


@jax.jit
def _to_unit_float(x: jax.Array) -> jax.Array:
    return x.astype(jnp.float32) * (1.0 / 255.0)


def device_batch(batch: Mapping[str, Any], sharding: jax.sharding.Sharding | jax.sharding.Mesh):
    """Places a host batch on devices as global arrays split over the batch axis.

    Every process passes its own local batch; the result's leading dimension is
    the global batch. Images and masks become float32 in [0, 1]; ``meta`` (ids,
    ``num_skipped``) stays on the host as NumPy.

    Args:
      batch: A host batch from a pipeline iterator.
      sharding: A ``NamedSharding`` for the batch axis, or a mesh with a ``"data"``
        axis (then ``NamedSharding(mesh, P("data"))``).

    Returns:
      The batch layout of docs/data.md, with ``jax.Array`` leaves.
    """
    if isinstance(sharding, jax.sharding.Mesh):
        if "data" not in sharding.axis_names:
            raise ValueError(f"mesh must have a 'data' axis, got {sharding.axis_names}")
        sharding = jax.sharding.NamedSharding(sharding, jax.sharding.PartitionSpec("data"))
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if k == "meta":
            out[k] = v
            continue
        arrays = jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), v
        )
        out[k] = _to_unit_float(arrays) if k in IMAGE_KEYS else arrays
    return out


def save_args(iterator: grain.DatasetIterator):
    """Orbax args that save a pipeline iterator's state (grain's checkpoint handler).

    Example:
      >>> mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
      ...                                         data=save_args(it)))
    """
    return grain.checkpoint.CheckpointSave(iterator)


def restore_args(iterator: grain.DatasetIterator):
    """Orbax args that restore a pipeline iterator in place (build it as before, then restore).

    Example:
      >>> it = iter(train_pipeline(sources, batch_size=8, seed=0))
      >>> mngr.restore(step, args=ocp.args.Composite(data=restore_args(it)))
    """
    return grain.checkpoint.CheckpointRestore(iterator)
