"""Avatar benchmark: drive frames/s, reconstruct latency and a training step, per family.

For each model (``gagavatar`` and, when registered, ``rar-L`` / ``rar-1B``) with random
weights, at its render size (512^2) and each batch size (1 and 8):

  reconstruct   jit(model.reconstruct) latency (encoder, heads), ms per call.
  drive         jit(model.drive) per frame: FLAME LBS, per-frame module, splat, refiner.
                ms per call (median of synchronised calls) and frames/s = B / time;
                "pipelined" frames/s: ``reps`` calls queued, one sync at the end (a
                render loop that does not wait for each frame).
  train step    forward_batch (train=True) + GAGAvatar's losses (L1, head-box L1,
                lifting when the family has lifted points; perceptual off: no weights
                ship) + backward + Adam update (official betas 0.0, 0.99), one jitted
                step with donated state; the frozen encoder, FLAME and the other
                non-trainable params are step *arguments*.

Splat capacity: ``--capacity tight`` (default) first renders with a large capacity to
count intersections, then uses 1.1 x the count (rounded up to 64 Ki): random-weight
Gaussians are larger than trained ones (GAGAvatar at init: scale ~0.025, ~17
intersections per Gaussian), and the intersection sort costs time in proportion to the
capacity; ``--capacity model`` keeps each config's own; an int sets it.

Profile (``--profile``, GAGAvatar at batch 1): the stages of one drive frame as separate
jitted programs -- FLAME LBS (``posed_vertices``), splat project / bin (sort) /
composite, StyleUNet (``refine``) -- plus the whole drive for comparison (the sum
exceeds it by launch overheads and lost fusion).

Timing: median of per-call wall times, each call synchronised (``block_until_ready``),
after ``--warmup`` calls (compilation excluded); inputs are device-resident.

Usage:
  python experiments/bench_drive.py                       # GPU: gagavatar (+ rar-L, rar-1B)
  python experiments/bench_drive.py --models gagavatar --batch 1,8 --profile --json d.json
  python experiments/bench_drive.py --smoke               # tiny models on CPU (any machine)

Target (issue 6): drive >= 500 frames/s at 512^2, batch 1 (GAGAvatar's paper: 67 FPS
on an A100; RAR: 90 FPS); RAR's drive time flat across encoder sizes.
"""

import argparse
import dataclasses
import datetime
import functools
import importlib
import json
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gshead_jax import camera, flame, splat
from gshead_jax.models import get_model, list_models, param_count
from gshead_jax.models.base import FLAME_FIELDS, combine, partition
from gshead_jax.splat import binning, xla
from gshead_jax.train.losses import gagavatar_loss

_CAPACITY_ROUND = 64 * 1024
_COUNT_CAPACITY = 16 * 1024 * 1024  # large enough for random-weight 512^2 heads
_GAGAVATAR_LOSS = {"l1": 1.0, "box_l1": 1.0, "lifting": 10.0}


def _sync(x):
    return jax.block_until_ready(x)


def _median_ms(call, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        _sync(call())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        _sync(call())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _pipelined_ms(call, reps: int) -> float:
    _sync(call())
    t0 = time.perf_counter()
    out = [call() for _ in range(reps)]
    _sync(out)
    return (time.perf_counter() - t0) * 1e3 / reps


# ----------------------------------------------------------------------------- model access


def _render_size(model) -> int:
    c = model.config
    return int(getattr(c, "render_size", None) or c.image_size)


def _capacity_field(model) -> str:
    names = {f.name for f in dataclasses.fields(model.config)}
    for name in ("splat_capacity", "capacity"):
        if name in names:
            return name
    raise ValueError(f"{model.name}: config has no splat capacity field")


def _flame_sizes(params) -> tuple[int, int]:
    fm = params["constants"]["flame"]
    return fm.num_shape, fm.num_expression


def _inputs(params, batch: int, size: int, seed: int = 0):
    """Random sources, mildly expressive FLAME parameters, head cameras (device arrays)."""
    rng = np.random.default_rng(seed)
    ns, ne = _flame_sizes(params)
    fp = flame.FlameParams.zeros((batch,), ns, ne)
    fp = fp.replace(
        shape=jnp.asarray(rng.normal(size=(batch, ns)) * 0.5, jnp.float32),
        expression=jnp.asarray(rng.normal(size=(batch, ne)) * 0.5, jnp.float32),
        jaw=jnp.asarray(np.abs(rng.normal(size=(batch, 3))) * [0.1, 0.0, 0.0], jnp.float32),
    )
    yaw = jnp.asarray(rng.uniform(-0.4, 0.4, size=batch), jnp.float32)
    cam = camera.head_camera(yaw, width=size, height=size)
    image = jnp.asarray(rng.uniform(size=(batch, size, size, 3)), jnp.float32)
    return image, fp, cam


def _batch(params, batch: int, size: int):
    src, sp, scam = _inputs(params, batch, size, seed=1)
    tgt, tp, tcam = _inputs(params, batch, size, seed=2)
    return {
        "source_image": src,
        "target_image": tgt,
        "source_params": {k: getattr(sp, k) for k in FLAME_FIELDS},
        "target_params": {k: getattr(tp, k) for k in FLAME_FIELDS},
        "source_viewmat": scam.viewmat,
        "source_K": scam.K,
        "target_viewmat": tcam.viewmat,
        "target_K": tcam.K,
        "target_bbox": jnp.tile(jnp.array([[0.2, 0.1, 0.8, 0.95]]), (batch, 1)),
    }


# ----------------------------------------------------------------------------- benchmarks


def _train_step(model, params, batch_size: int, size: int, *, warmup: int, reps: int):
    mask = model.trainable_mask(params)
    learn, rest = partition(params, mask)
    learn = jax.tree.map(jnp.copy, learn)  # donated below: keep the caller's params alive
    opt = optax.adam(1e-4, b1=0.0, b2=0.99)  # GAGAvatar: Adam(lr 1e-4, betas (0.0, 0.99))
    opt_state = opt.init(learn)
    batch = _batch(params, batch_size, size)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(learn, opt_state, rest, batch, key):
        def loss_fn(learn):
            image, aux = model.forward_batch(combine(learn, rest), batch, rng=key, train=True)
            lifted = "lifted_points" in aux and "flame_vertices" in aux
            weights = _GAGAVATAR_LOSS if lifted else {"l1": 1.0, "box_l1": 1.0}
            zeros = jnp.zeros((image.shape[0], 1, 3))
            total, _ = gagavatar_loss(
                aux["coarse"],
                image,
                batch["target_image"],
                batch["target_bbox"],
                aux["flame_vertices"] if lifted else zeros,
                aux["lifted_points"] if lifted else zeros,
                weights=weights,
                box_size=size,
            )
            return total, aux["overflow"]

        (loss, overflow), grads = jax.value_and_grad(loss_fn, has_aux=True)(learn)
        updates, opt_state = opt.update(grads, opt_state, learn)
        return optax.apply_updates(learn, updates), opt_state, loss, jnp.any(overflow)

    state = [learn, opt_state]
    key = jax.random.key(0)

    def call():
        state[0], state[1], loss, overflow = step(state[0], state[1], rest, batch, key)
        return loss, overflow

    ms = _median_ms(call, warmup, reps)
    loss, overflow = call()
    return ms, bool(overflow), float(loss)


def _tight_capacity(name, overrides, params, batch: int, size: int) -> tuple[int, int]:
    """(capacity, count): the most intersections of a drive frame, x 1.1, rounded up."""
    model = get_model(name, **overrides)
    model = get_model(name, **{**overrides, _capacity_field(model): _COUNT_CAPACITY})
    image, fp, cam = _inputs(params, batch, size)
    avatar = jax.jit(model.reconstruct)(params, image, fp, cam)
    _, aux = jax.jit(model.drive)(params, avatar, fp, cam)
    count = int(jnp.max(aux["num_intersections"]))
    cap = -(-int(count * 1.1) // _CAPACITY_ROUND) * _CAPACITY_ROUND
    return max(cap, _CAPACITY_ROUND), count


def _profile(model, params, avatar, fp, cam, *, warmup: int, reps: int) -> list[dict]:
    """Per-stage times of one GAGAvatar drive frame (batch 1)."""
    if not all(hasattr(model, m) for m in ("posed_vertices", "splat", "refine")):
        return []
    c = model.config
    w = h = _render_size(model)
    rows = []

    def add(stage, call):
        rows.append({"stage": stage, "ms": _median_ms(call, warmup, reps)})

    posed = jax.jit(model.posed_vertices)
    add("FLAME LBS (posed_vertices)", lambda: posed(params, avatar, fp))
    verts = posed(params, avatar, fp)
    means = jax.lax.dynamic_update_slice_in_dim(avatar.means, verts, 0, axis=1)[0]
    args = (means, avatar.quats[0], avatar.scales[0], avatar.opacities[0])
    project = jax.jit(
        functools.partial(splat.project, width=w, height=h, near=0.01, far=1e10, eps2d=0.3)
    )
    add("splat: project", lambda: project(*args, cam.viewmat[0], cam.K[0]))
    proj = project(*args, cam.viewmat[0], cam.K[0])
    capacity = getattr(c, "splat_capacity", None) or splat.default_capacity(means.shape[0], w, h)
    bin_fn = jax.jit(
        functools.partial(
            binning.bin_gaussians, width=w, height=h, tile_size=c.tile_size, capacity=capacity
        )
    )
    add("splat: bin (sort)", lambda: bin_fn(proj))
    bins = bin_fn(proj)
    composite = xla.composite
    backend = c.splat_backend
    if backend in ("auto", "pallas"):
        try:
            pallas = importlib.import_module("gshead_jax.splat.pallas_gpu")
            if pallas.is_supported():
                composite, backend = pallas.composite, "pallas"
        except ImportError:
            pass
    backend = "xla" if composite is xla.composite else backend
    comp = jax.jit(functools.partial(composite, width=w, height=h, tile_size=c.tile_size))
    colors = avatar.colors[0]
    bg = jnp.zeros((colors.shape[-1],), colors.dtype)
    comp_args = (proj.means2d, proj.conics, proj.opacities, colors, proj.depths, bg)
    add(
        f"splat: composite ({backend}, {colors.shape[-1]} ch)",
        lambda: comp(*comp_args, bins.tile_ranges, bins.gaussian_ids),
    )
    splat_all = jax.jit(model.splat)
    add("splat: whole rasterize", lambda: splat_all(avatar, verts, cam))
    features = splat_all(avatar, verts, cam).image
    refine = jax.jit(model.refine)
    add("StyleUNet (refine)", lambda: refine(params, features))
    drive = jax.jit(model.drive)
    add("drive (all of the above, one program)", lambda: drive(params, avatar, fp, cam))
    return rows


def bench_model(name: str, args) -> tuple[list[dict], list[dict]]:
    overrides = {}
    if args.dtype != "model":
        overrides["dtype"] = jnp.dtype(args.dtype)
    model = get_model(name, **overrides)
    size = _render_size(model)
    t0 = time.perf_counter()
    params = model.init(jax.random.key(0))
    _sync(params)
    print(f"# {name}: init {time.perf_counter() - t0:.1f} s, {param_count(params['trainable']):,} "
          f"trainable, render {size}^2", file=sys.stderr)  # fmt: skip
    rows, profile = [], []
    for b in args.batch:
        row, m, avatar, fp, cam = _bench_batch(name, overrides, model, params, b, size, args)
        rows.append(row)
        print(f"# {row}", file=sys.stderr)
        if args.profile and b == 1:
            profile = [
                {"model": name, **r}
                for r in _profile(m, params, avatar, fp, cam, warmup=args.warmup, reps=args.reps)
            ]
    return rows, profile


def _bench_batch(name, overrides, model, params, b, size, args):
    over = dict(overrides)
    count = None
    if args.capacity == "tight":
        over[_capacity_field(model)], count = _tight_capacity(name, overrides, params, b, size)
    elif args.capacity != "model":
        over[_capacity_field(model)] = int(args.capacity)
    m = get_model(name, **over)
    image, fp, cam = _inputs(params, b, size)
    rec = jax.jit(m.reconstruct)
    drv = jax.jit(m.drive)
    rec_ms = _median_ms(lambda: rec(params, image, fp, cam), args.warmup, args.reps)
    avatar = rec(params, image, fp, cam)
    drive_ms = _median_ms(lambda: drv(params, avatar, fp, cam), args.warmup, args.reps)
    pipe_ms = _pipelined_ms(lambda: drv(params, avatar, fp, cam), args.reps)
    _, aux = drv(params, avatar, fp, cam)
    row = {
        "model": name,
        "dtype": str(getattr(m.config, "dtype", None)),
        "batch": b,
        "size": size,
        "reconstruct_ms": rec_ms,
        "drive_ms": drive_ms,
        "drive_fps": b * 1e3 / drive_ms,
        "drive_fps_pipelined": b * 1e3 / pipe_ms,
        "intersections": int(jnp.max(aux["num_intersections"])) if count is None else count,
        "capacity": getattr(m.config, _capacity_field(m)),
        "overflow": bool(jnp.any(aux["overflow"])),
    }
    if args.train:
        ms, overflow, loss = _train_step(m, params, b, size, warmup=2, reps=args.train_reps)
        row.update(train_step_ms=ms, train_overflow=overflow, train_loss=loss)
    return row, m, avatar, fp, cam


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def _tables(rows, profile) -> str:
    head = "| model | dtype | B | size | reconstruct ms | drive ms | drive FPS | FPS pipelined "
    head += "| train step ms | intersections | capacity | overflow |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['size']} "
            f"| {_fmt(r['reconstruct_ms'], '.2f')} | {_fmt(r['drive_ms'], '.3f')} "
            f"| {_fmt(r['drive_fps'], '.0f')} | {_fmt(r['drive_fps_pipelined'], '.0f')} "
            f"| {_fmt(r.get('train_step_ms'), '.1f')} | {r['intersections']:,} "
            f"| {r['capacity'] if r['capacity'] is None else format(r['capacity'], ',')} "
            f"| {r['overflow'] or r.get('train_overflow', False)} |"
        )
    if profile:
        lines += ["", "| model | drive stage (batch 1) | ms |", "|---|---|---|"]
        lines += [f"| {p['model']} | {p['stage']} | {p['ms']:.3f} |" for p in profile]
    return "\n".join(lines)


def _environment():
    dev = jax.devices()[0]
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=None, help="comma list (default: gagavatar, rar-L, rar-1B)"
    )
    parser.add_argument("--batch", default="1,8", help="comma list of batch sizes")
    parser.add_argument(
        "--dtype", default="bfloat16", help="compute dtype, or 'model' for each config's"
    )
    parser.add_argument("--capacity", default="tight", help="'tight', 'model' or an int")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--train-reps", type=int, default=10)
    parser.add_argument("--no-train", dest="train", action="store_false")
    parser.add_argument("--profile", action="store_true", help="per-stage drive profile (B=1)")
    parser.add_argument("--json", default=None, help="write rows + environment here")
    parser.add_argument("--smoke", action="store_true", help="tiny models, CPU-sized run")
    args = parser.parse_args(argv)  # fmt: skip
    known = list_models()
    if args.smoke:
        default = [m for m in ("gagavatar-tiny", "rar-tiny") if m in known]
        args.batch = args.batch if args.batch != "1,8" else "1,2"
        args.reps, args.warmup, args.train_reps, args.profile = 3, 1, 2, True
    else:
        default = [m for m in ("gagavatar", "rar-L", "rar-1B") if m in known]
    models = args.models.split(",") if args.models else default
    args.batch = [int(b) for b in str(args.batch).split(",")]
    env = _environment()
    print(f"# {env}", file=sys.stderr)
    rows, profile = [], []
    for name in models:
        r, p = bench_model(name, args)
        rows += r
        profile += p
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows, "profile": profile}, f, indent=1)
    print(_tables(rows, profile))


if __name__ == "__main__":
    main()
