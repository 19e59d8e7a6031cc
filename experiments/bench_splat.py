"""Splatting benchmark: gshead_jax's backends (and gsplat 1.5.3) on the shared scenes.

Scenes are those of ``shared/bench/scenes.py``, regenerated here with the same
generator (tests/splat/test_splat_bench_scenes.py checks the arrays are
identical). Per scene and backend it prints forward and forward+backward median
milliseconds (jit'd, synchronised per call after warm-up, rotating three input
copies), the same as a pipelined mean (calls queued back to back, one sync:
hides per-call dispatch), intersections, capacity and peak device memory.
Forward+backward is the VJP of sum(image * cotangent) to means, quats, scales,
opacities and features, for gsplat too.

Usage:
  python experiments/bench_splat.py --smoke                     # tiny scene, any device
  python experiments/bench_splat.py --compare-gsplat --json bench.json
  python experiments/bench_splat.py --scenes head-180k-512-c32 --backends xla,pallas --reps 100
"""

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax import splat
from gshead_jax.splat import binning, xla

# name: (num_gaussians, width, height, channels) -- as shared/bench/scenes.py.
SCENES = {
    "head-180k-512-c32": (180_000, 512, 512, 32),
    "head-180k-512-c3": (180_000, 512, 512, 3),
    "head-20k-512-c32": (20_000, 512, 512, 32),
    "head-1m-1024-c3": (1_000_000, 1024, 1024, 3),
}
# Only here: the same head, small enough for a CPU smoke run.
SMOKE_SCENES = {"smoke-2k-64-c3": (2_000, 64, 64, 3)}
_ALL_SCENES = {**SCENES, **SMOKE_SCENES}
_NUM_COPIES = 3  # input copies rotated through, so no call runs on a warm cache only


def make_scene(name: str, seed: int = 0) -> dict:
    """The named scene: numpy arrays (means, quats, scales, opacities, features,
    viewmat, K) and ints (width, height), identical to shared/bench/scenes.py."""
    n, width, height, channels = _ALL_SCENES[name]
    rng = np.random.default_rng(seed)
    # An ellipsoidal head shell of ~0.09 x 0.12 x 0.10 m; the draw order of the
    # random streams is part of the scene definition.
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = np.array([0.09, 0.12, 0.10]) * rng.uniform(0.85, 1.05, size=(n, 1))
    means = (direction * radius).astype(np.float32)
    base = 0.0025 * np.sqrt(180_000 / n)  # denser scenes, smaller splats
    scales = (base * np.exp(rng.normal(scale=0.5, size=(n, 3)))).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    quats = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    opacities = rng.uniform(0.05, 0.99, size=n).astype(np.float32)
    features = rng.uniform(0.0, 1.0, size=(n, channels)).astype(np.float32)
    # OpenCV camera 0.6 m in front, 15 degrees of yaw, y flipped from a y-up head.
    yaw = np.deg2rad(15.0)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    viewmat = np.eye(4, dtype=np.float32)
    viewmat[:3, :3] = np.diag([1.0, -1.0, -1.0]) @ rot
    viewmat[:3, 3] = np.array([0.0, 0.0, 0.6])
    focal = 0.75 * height * 0.6 / 0.26  # the 0.26 m head fills 75% of the height
    K = np.array(
        [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float32
    )
    return {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "features": features,
        "viewmat": viewmat,
        "K": K,
        "width": width,
        "height": height,
    }


_ARRAY_KEYS = ("means", "quats", "scales", "opacities", "features", "viewmat", "K")
_GRAD_ARGNUMS = (0, 1, 2, 3, 4)  # means, quats, scales, opacities, features


def _median_and_pipelined(call, sync, reps, warmup):
    """(median ms of synchronised calls, mean ms of `reps` calls queued back to back)."""
    for i in range(warmup):
        sync(call(i))
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        sync(call(i))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    out = None
    for i in range(reps):
        out = call(i)
    sync(out)
    pipelined = (time.perf_counter() - t0) / reps
    return 1e3 * statistics.median(times), 1e3 * pipelined


def _memory_stats():
    stats = jax.devices()[0].memory_stats()
    return None if stats is None else stats.get("peak_bytes_in_use")


def _temp_mib(jitted, *args):
    try:
        analysis = jitted.lower(*args).compile().memory_analysis()
        return analysis.temp_size_in_bytes / 2**20
    except Exception:  # not every backend reports it
        return None


def _count_intersections(arrays, width, height):
    """The true intersection count of a scene (projection + tile rectangles only)."""

    @jax.jit
    def count(means, quats, scales, opacities, features, viewmat, K):
        proj = splat.project(
            means, quats, scales, opacities, viewmat, K,
            width=width, height=height, near=0.01, far=1e10, eps2d=0.3,
        )  # fmt: skip
        x0, x1, y0, y1 = binning.tile_rects(
            proj.means2d, proj.radii, width=width, height=height, tile_size=16
        )
        return jnp.sum((x1 - x0) * (y1 - y0))

    return int(count(*arrays))


def bench_ours(scene, backend, *, reps, warmup, capacity, cotangent, config=None, gsplat_out=None):
    """One row for a gshead_jax backend."""
    width, height = scene["width"], scene["height"]
    n = scene["means"].shape[0]
    copies = [
        tuple(jax.device_put(np.array(scene[k])) for k in _ARRAY_KEYS) for _ in range(_NUM_COPIES)
    ]
    ct = jax.device_put(cotangent)
    if capacity == "default":
        cap = splat.default_capacity(n, width, height)
    elif capacity == "tight":
        count = _count_intersections(copies[0], width, height)
        cap = max(1024, math.ceil(count * 1.05 / 1024) * 1024)
    else:
        cap = int(capacity)

    def render(*arrays):
        return splat.rasterize(
            *arrays, width=width, height=height, capacity=cap, backend=backend, config=config
        )

    fwd = jax.jit(render)

    def loss(*arrays):
        return jnp.sum(render(*arrays).image * ct)

    fwd_bwd = jax.jit(jax.grad(loss, argnums=_GRAD_ARGNUMS))
    out = jax.block_until_ready(fwd(*copies[0]))
    fwd_ms, fwd_pipe = _median_and_pipelined(
        lambda i: fwd(*copies[i % _NUM_COPIES]), jax.block_until_ready, reps, warmup
    )
    bwd_ms, bwd_pipe = _median_and_pipelined(
        lambda i: fwd_bwd(*copies[i % _NUM_COPIES]), jax.block_until_ready, reps, warmup
    )
    row = {
        "backend": backend,
        "config": None if config is None else repr(config),
        "fwd_ms": fwd_ms,
        "fwd_pipelined_ms": fwd_pipe,
        "fwdbwd_ms": bwd_ms,
        "fwdbwd_pipelined_ms": bwd_pipe,
        "intersections": int(out.num_intersections),
        "capacity": None if backend == "reference" else cap,  # the dense one has no list
        "overflow": bool(out.overflow),
        "peak_mib": None if _memory_stats() is None else _memory_stats() / 2**20,
        "temp_mib_fwd": _temp_mib(fwd, *copies[0]),
        "temp_mib_fwdbwd": _temp_mib(fwd_bwd, *copies[0]),
    }
    if gsplat_out is not None:
        row["max_abs_diff_image_vs_gsplat"] = float(
            np.max(np.abs(np.asarray(out.image) - gsplat_out["image"]))
        )
        row["max_abs_diff_alpha_vs_gsplat"] = float(
            np.max(np.abs(np.asarray(out.alpha) - gsplat_out["alpha"]))
        )
    return row


def bench_gsplat(scene, *, reps, warmup, cotangent, render_mode):
    """One row for gsplat 1.5.3 (torch, CUDA), plus its outputs for the cross-check."""
    import gsplat  # optional: the GPU machine only
    import torch

    dev = torch.device("cuda")
    width, height = scene["width"], scene["height"]
    channels = scene["features"].shape[1]
    copies = []
    for _ in range(_NUM_COPIES):
        t = {k: torch.from_numpy(np.array(scene[k])).to(dev) for k in _ARRAY_KEYS}
        for k in ("means", "quats", "scales", "opacities", "features"):
            t[k].requires_grad_(True)
        copies.append(t)
    ct = torch.from_numpy(cotangent).to(dev)

    def render(t):
        colors, alphas, meta = gsplat.rasterization(
            t["means"],
            t["quats"],
            t["scales"],
            t["opacities"],
            t["features"],
            t["viewmat"][None],
            t["K"][None],
            width,
            height,
            near_plane=0.01,
            far_plane=1e10,
            eps2d=0.3,
            sh_degree=None,
            packed=False,
            tile_size=16,
            render_mode=render_mode,
            rasterize_mode="classic",
        )
        return colors[0], alphas[0], meta

    def fwd(i):
        with torch.no_grad():
            return render(copies[i % _NUM_COPIES])[0]

    def fwd_bwd(i):
        t = copies[i % _NUM_COPIES]
        image = render(t)[0][..., :channels]
        keys = ("means", "quats", "scales", "opacities", "features")
        return torch.autograd.grad((image * ct).sum(), [t[k] for k in keys])

    def sync(_):
        torch.cuda.synchronize()

    torch.cuda.reset_peak_memory_stats()
    colors, alphas, meta = render(copies[0])
    fwd_ms, fwd_pipe = _median_and_pipelined(fwd, sync, reps, warmup)
    bwd_ms, bwd_pipe = _median_and_pipelined(fwd_bwd, sync, reps, warmup)
    row = {
        "backend": "gsplat",
        "fwd_ms": fwd_ms,
        "fwd_pipelined_ms": fwd_pipe,
        "fwdbwd_ms": bwd_ms,
        "fwdbwd_pipelined_ms": bwd_pipe,
        "intersections": int(meta["flatten_ids"].numel()),
        "capacity": None,
        "overflow": False,
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
        "version": gsplat.__version__,
        "render_mode": render_mode,
    }
    outputs = {
        "image": colors[..., :channels].detach().cpu().numpy(),
        "alpha": alphas.detach().cpu().numpy(),
    }
    return row, outputs


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _table(rows):
    head = (
        "| scene | backend | fwd ms | fwd pipe ms | fwd+bwd ms | fwd+bwd pipe ms "
        "| intersections | capacity | peak MiB | max abs diff vs gsplat |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['scene']} | {r['backend']} | {_fmt(r['fwd_ms'], '.3f')} "
            f"| {_fmt(r['fwd_pipelined_ms'], '.3f')} | {_fmt(r['fwdbwd_ms'], '.3f')} "
            f"| {_fmt(r['fwdbwd_pipelined_ms'], '.3f')} | {r['intersections']} "
            f"| {_fmt(r['capacity'], 'd')} | {_fmt(r['peak_mib'], '.0f')} "
            f"| {_fmt(r.get('max_abs_diff_image_vs_gsplat'), '.2e')} |"
        )
    return "\n".join(lines)


def _environment():
    env = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:
        pass
    return env


def _backend_available(name):
    if name == "pallas":
        try:
            from gshead_jax.splat import pallas_gpu

            return bool(pallas_gpu.is_supported())
        except ImportError:
            return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default=",".join(SCENES), help="comma-separated scene names")
    parser.add_argument("--backends", default="xla,pallas", help="comma-separated backends")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--capacity", default="default", help="'default' (the rule), 'tight' (count*1.05) or an int"
    )
    parser.add_argument(
        "--xla-config",
        default=None,
        help="BLOCK,MAX_BLOCK,MIN_PHASE_TILES of xla.XlaConfig (default: its defaults)",
    )
    parser.add_argument("--compare-gsplat", action="store_true")
    parser.add_argument(
        "--gsplat-render-mode",
        default="RGB",
        choices=["RGB", "RGB+ED"],
        help="gsplat's render_mode (ours always renders the expected depth too)",
    )
    parser.add_argument("--json", default=None, help="write the rows and environment here")
    parser.add_argument("--smoke", action="store_true", help="tiny scene, 5 reps (CPU is fine)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scenes, args.reps, args.warmup = ",".join(SMOKE_SCENES), 5, 1
        if args.backends == "xla,pallas":
            args.backends = "xla,reference"

    configs = {}
    if args.xla_config:
        block, max_block, min_tiles = (int(v) for v in args.xla_config.split(","))
        configs["xla"] = xla.XlaConfig(block, max_block, min_tiles)

    env = _environment()
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    rows = []
    for name in args.scenes.split(","):
        if name not in _ALL_SCENES:
            sys.exit(f"unknown scene {name!r}; known: {sorted(_ALL_SCENES)}")
        scene = make_scene(name)
        n, width, height, channels = _ALL_SCENES[name]
        cotangent = np.random.default_rng(1).normal(size=(height, width, channels))
        cotangent = cotangent.astype(np.float32)
        gsplat_out = None
        if args.compare_gsplat:
            row, gsplat_out = bench_gsplat(
                scene,
                reps=args.reps,
                warmup=args.warmup,
                cotangent=cotangent,
                render_mode=args.gsplat_render_mode,
            )
            rows.append({"scene": name, **row})
            print(json.dumps(rows[-1]), flush=True)
        for backend in args.backends.split(","):
            if not _backend_available(backend):
                print(f"# {name}: backend {backend} not available here, skipped", flush=True)
                continue
            if backend == "reference" and n * width * height > 2**30:
                print(f"# {name}: the dense reference is too large for this scene", flush=True)
                continue
            row = bench_ours(
                scene,
                backend,
                reps=args.reps,
                warmup=args.warmup,
                capacity=args.capacity,
                cotangent=cotangent,
                config=configs.get(backend),
                gsplat_out=gsplat_out,
            )
            rows.append({"scene": name, **row})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
