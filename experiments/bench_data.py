"""Data benchmark: training pairs per second from the ArrayRecord layout.

Writes a temporary ArrayRecord dataset of head-like 512² frames (a smooth colour
field with sensor noise on a black background, the look of GAGAvatar's matted
crops) in two image codecs -- ``raw`` (uint8 bytes, zstd-1 in the shard) and
``jpeg`` (quality-95 JPEG kept as the converter's ``keep`` does with GAGAvatar's
LMDB) -- then runs ``train_pipeline`` (same-clip pairs, batch 8) with N grain
worker processes and reports pairs per second after warm-up: reading, decoding
both images, checking both records, pair assembly, batching and the transfer
from the workers, i.e. everything but ``device_batch``.

Runs on CPU. Usage:
  python experiments/bench_data.py                              # workers 0,2,8,16
  python experiments/bench_data.py --workers 0,2 --batches 40 --json data.json
  python experiments/bench_data.py --smoke                      # 64², a few seconds

``--synthetic`` instead measures synthetic generation: records per second that
`SyntheticSource` renders (FLAME posing, shading, splatting, record assembly;
identities built beforehand) at each ``--synth-sizes`` size, one frame per call
(the source's path) and in vmapped batches of ``--synth-batch`` (the CLI's GPU
path)::

  python experiments/bench_data.py --synthetic                  # 256,512; batch 1 (+32 on GPU)
  python experiments/bench_data.py --synthetic --smoke          # 64², a few seconds
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from gshead_jax.data import arrayrecord, pipeline
from gshead_jax.data.source import random_records


def head_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A head-like frame: smooth colours + noise inside an ellipse, black outside."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    phase = rng.uniform(0, 2 * np.pi, 3)
    img = 0.55 + 0.3 * np.stack(
        [np.sin(4 * x + phase[0]), np.cos(3 * y + phase[1]), np.sin(2 * (x + y) + phase[2])], -1
    )
    img += rng.normal(0, 0.02, img.shape)
    inside = ((x - 0.5) / 0.33) ** 2 + ((y - 0.55) / 0.42) ** 2 < 1
    return (np.clip(img, 0, 1) * 255 * inside[..., None]).astype(np.uint8)


def make_dataset(out: str, codec: str, *, size: int, clips: int, frames: int) -> float:
    """Writes the benchmark dataset; returns MB per record on disk."""
    rng = np.random.default_rng(0)
    recs = random_records(identities=clips, clips=1, frames=frames, image_size=8, seed=0)
    items = []
    for r in recs:
        img = head_image(rng, size)
        r = dict(r, image=img, mask=None)
        r["K"] = np.diag([6.0 * size, 6.0 * size, 1.0]).astype(np.float32)
        r["K"][:2, 2] = size / 2
        r.pop("mask")
        encoded = None
        if codec == "jpeg":
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95)
            encoded = buf.getvalue()
            r["image"] = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
        items.append((r, encoded))
    arrayrecord.write_dataset(out, items, source_kind="real", records_per_shard=64)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    return total / len(recs) / 1e6


def run(source, *, workers: int, threads: int, batch: int, batches: int, warmup: int) -> dict:
    ds = pipeline.train_pipeline(
        [source],
        batch_size=batch,
        seed=0,
        num_workers=workers,
        read_threads=threads,
        prefetch=2,
        shard=(0, 1),
    )
    t0 = time.perf_counter()
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
    t2 = time.perf_counter()
    assert b["source_image"].shape[0] == batch
    it.close()
    return {
        "startup_s": t1 - t0,
        "pairs_per_s": batches * batch / (t2 - t1),
        "ms_per_batch": (t2 - t1) / batches * 1e3,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="0,2,8,16", help="comma-separated worker counts")
    p.add_argument("--threads", type=int, default=4, help="read threads per process")
    p.add_argument("--codecs", default="raw,jpeg")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=60, help="timed batches per configuration")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--data-dir", default=None, help="where to write the datasets (kept)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--smoke", action="store_true", help="64², workers 0 and 1, few batches")
    p.add_argument("--synthetic", action="store_true", help="synthetic generation instead")
    p.add_argument("--synth-sizes", default="256,512", help="image sizes for --synthetic")
    p.add_argument("--synth-batch", default=None, help="batch sizes (default 1, +32 on GPU)")
    p.add_argument("--synth-gaussians", type=int, default=32768, help="Gaussians per identity")
    p.add_argument("--synth-frames", type=int, default=16, help="timed frames per setting")
    a = p.parse_args(argv)
    if a.synthetic:
        return bench_synthetic(a)
    if a.smoke:
        a.size, a.workers, a.batches, a.warmup, a.clips, a.frames = 64, "0,1", 5, 1, 4, 4
    workers = [int(w) for w in a.workers.split(",")]
    codecs = a.codecs.split(",")
    root = a.data_dir or tempfile.mkdtemp(prefix="bench_data_")
    results = []
    try:
        for codec in codecs:
            path = os.path.join(root, f"{codec}_{a.size}")
            if not os.path.exists(os.path.join(path, arrayrecord.MANIFEST)):
                t = time.perf_counter()
                mb = make_dataset(path, codec, size=a.size, clips=a.clips, frames=a.frames)
                print(
                    f"wrote {codec} {a.size}² dataset ({mb:.3f} MB/record) in "
                    f"{time.perf_counter() - t:.1f} s",
                    file=sys.stderr,
                )
            src = arrayrecord.ArrayRecordSource(path)
            mb = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
            mb = mb / len(src) / 1e6
            for w in workers:
                r = run(
                    src,
                    workers=w,
                    threads=a.threads,
                    batch=a.batch,
                    batches=a.batches,
                    warmup=a.warmup,
                )
                r.update(
                    codec=codec,
                    size=a.size,
                    workers=w,
                    threads=a.threads,
                    batch=a.batch,
                    mb_per_record=mb,
                )
                results.append(r)
                print(
                    f"{codec:5s} workers={w:2d}: {r['pairs_per_s']:8.1f} pairs/s", file=sys.stderr
                )
    finally:
        if a.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)

    print(
        f"\nArrayRecord -> train pairs, {a.size}², batch {a.batch}, {a.threads} read threads"
        f" per process, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})\n"
    )
    print("| codec | MB/record | workers | pairs/s | ms/batch | start-up s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['codec']} | {r['mb_per_record']:.3f} | {r['workers']} | "
            f"{r['pairs_per_s']:.0f} | {r['ms_per_batch']:.1f} | {r['startup_s']:.1f} |"
        )
    if a.json:
        meta = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        }
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    return 0


def _synthetic_records(src, idx, batch):
    """Records ``idx``: one ``src[i]`` each (batch 1) or vmapped batches."""
    if batch == 1:
        return [src[i] for i in idx]
    return [r for lo in range(0, len(idx), batch) for r in src.render(idx[lo : lo + batch])]


def bench_synthetic(a) -> int:
    """Synthetic generation rate (records/s) per size and batch; prints a table."""
    import jax

    from gshead_jax.data.synthetic import SyntheticSource

    gpu = jax.default_backend() == "gpu"
    sizes = [64] if a.smoke else [int(x) for x in a.synth_sizes.split(",")]
    batches = [int(x) for x in a.synth_batch.split(",")] if a.synth_batch else [1]
    if a.synth_batch is None and gpu:
        batches.append(32)
    frames = 4 if a.smoke else a.synth_frames
    n_gauss = 4096 if a.smoke else a.synth_gaussians
    results = []
    for size in sizes:
        src = SyntheticSource(identities=4, clips=1, frames=64, views=1, image_size=size,
                              num_gaussians=n_gauss, backend="auto" if gpu else "xla")  # fmt: skip
        t = time.perf_counter()
        for k in range(4):
            src.identity(k)
        build = (time.perf_counter() - t) / 4
        order = [k * 64 + f for f in range(64) for k in range(4)]  # identities interleaved
        for b in batches:
            t = time.perf_counter()
            _synthetic_records(src, order[:b], b)  # compile
            compile_s = time.perf_counter() - t
            n = max(frames // b, 1) * b
            t = time.perf_counter()
            recs = _synthetic_records(src, order[b : b + n], b)
            dt = time.perf_counter() - t
            assert recs[-1]["image"].shape == (size, size, 3)
            r = {"size": size, "batch": b, "gaussians": n_gauss, "records_per_s": n / dt,
                 "ms_per_record": dt / n * 1e3, "compile_s": compile_s,
                 "identity_build_s": build, "device": jax.devices()[0].device_kind}  # fmt: skip
            results.append(r)
            print(f"{size}² batch {b}: {r['records_per_s']:.2f} records/s", file=sys.stderr)
    print(f"\nSynthetic generation, {n_gauss} Gaussians per identity, "
          f"{jax.devices()[0].device_kind}, {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| size | batch | records/s | ms/record | compile s | identity build s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['size']}² | {r['batch']} | {r['records_per_s']:.2f} | "
              f"{r['ms_per_record']:.1f} | {r['compile_s']:.1f} | "
              f"{r['identity_build_s']:.2f} |")  # fmt: skip
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"synthetic": results}, f, indent=1)
    return 0


if __name__ == "__main__":  # grain spawns worker processes: keep the guard
    sys.exit(main())
