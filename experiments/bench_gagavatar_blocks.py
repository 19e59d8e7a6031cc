"""Time GAGAvatar's building blocks at paper size: where a reconstruct / drive / train step goes.

Usage (GPU machine)::

    python experiments/bench_gagavatar_blocks.py            # table
    python experiments/bench_gagavatar_blocks.py --json     # one JSON object per row
    python experiments/bench_gagavatar_blocks.py --smoke    # tiny sizes, CPU, seconds

Rows: the DPT head on 4 x [B, 37, 37, 768] ViT maps (518^2 input) -> [B, 296, 296, 256];
the two plane heads (ConvGSGenerator) on it; the vertex head (LinearGSGenerator, 5023
vertices); the StyleUNet refiner 512^2 x 32 -> RGB (runs once per *driven frame*:
the drive budget at 500 FPS is 2 ms per frame), forward and forward+backward (the
training step's share). Random weights (nothing to download), batch 1 and 8, float32
(``highest``: no TF32) and bfloat16 compute; median of ``--iters`` synchronised runs
after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from gshead_jax.nn.dpt import DPT_VARIANTS, DPTHead
from gshead_jax.nn.gaussian_heads import ConvGSGenerator, LinearGSGenerator
from gshead_jax.nn.styleunet import make_styleunet


def _time(fn, args, iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _cases(smoke: bool):
    """(name, module, example-input builder, apply kwargs) per block."""
    if smoke:
        dpt, vit, grid, img = DPTHead(**DPT_VARIANTS["tiny"]), 32, 4, 56
        plane = ConvGSGenerator(in_dim=16)
        vertex, n_vert = LinearGSGenerator(in_dim=64), 64
        unet = make_styleunet("tiny")
    else:
        dpt, vit, grid, img = DPTHead(), 768, 37, 518
        plane, vertex, n_vert = ConvGSGenerator(), LinearGSGenerator(), 5023
        unet = make_styleunet("gagavatar")
    side = 8 * grid

    def dpt_in(b, k):
        ks = jax.random.split(k, 5)
        feats = [jax.random.normal(kk, (b, grid, grid, vit)) for kk in ks[:4]]
        return (feats, jax.random.uniform(ks[4], (b, img, img, 3)))

    def plane_in(b, k):
        f = jax.random.normal(k, (b, side, side, plane.in_dim))
        return (f, jax.random.normal(k, (b, plane.dir_dim)))

    def vertex_in(b, k):
        f = jax.random.normal(k, (b, n_vert, vertex.in_dim))
        return (f, jax.random.normal(k, (b, vertex.dir_dim)))

    def unet_in(b, k):
        return (jax.random.uniform(k, (b, unet.out_size, unet.out_size, unet.in_dim)),)

    return [
        ("dpt_head", dpt, dpt_in, {}),
        ("plane_head", plane, plane_in, {}),
        ("vertex_head", vertex, vertex_in, {}),
        ("styleunet", unet, unet_in, {"noise_mode": "const"}),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    iters = 3 if args.smoke else args.iters
    rows = []
    key = jax.random.key(0)
    for name, module, make_in, kw in _cases(args.smoke):
        inputs = make_in(1, key)
        variables = jax.jit(lambda k, *a, m=module, kw=kw: m.init(k, *a, **kw))(key, *inputs)
        for b in batches:
            inputs = make_in(b, key)
            for dtype in ("float32", "bfloat16"):
                m = module.clone(dtype=None if dtype == "float32" else jnp.bfloat16)
                prec = "highest" if dtype == "float32" else "default"
                with jax.default_matmul_precision(prec):
                    fwd = jax.jit(lambda v, *a, m=m, kw=kw: m.apply(v, *a, **kw))
                    ms = _time(fwd, (variables, *inputs), iters)
                    row = dict(block=name, batch=b, dtype=dtype, fwd_ms=round(ms, 3))
                    if name in ("styleunet", "dpt_head"):

                        def loss(v, *a, m=m, kw=kw, name=name):
                            out = m.apply(v, *a, **kw)
                            out = out.features if name == "dpt_head" else out
                            return jnp.mean(out.astype(jnp.float32) ** 2)

                        step = jax.jit(jax.grad(loss))
                        row["fwd_bwd_ms"] = round(_time(step, (variables, *inputs), iters), 3)
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
    if not args.json:
        print(f"device: {jax.devices()[0].device_kind}  (median of {iters}, ms)")
        print(f"{'block':<12} {'batch':>5} {'dtype':<9} {'fwd':>9} {'fwd+bwd':>9}")
        for r in rows:
            fb = f"{r['fwd_bwd_ms']:9.3f}" if "fwd_bwd_ms" in r else f"{'':>9}"
            print(f"{r['block']:<12} {r['batch']:>5} {r['dtype']:<9} {r['fwd_ms']:9.3f} {fb}")


if __name__ == "__main__":
    main()
