"""ViT benchmark: DinoViT (JAX) against transformers' Dinov2Model (PyTorch), same run.

For each model (B/14 and L/14 by default) at 518^2, batch 8, bfloat16 forward: a random
``Dinov2Model`` (HF init, nothing downloaded) is built in PyTorch and its weights are
given to JAX through ``gshead_jax.convert.convert_state_dict``, so both sides compute
the same function; the table reports the largest difference of their outputs.

Rows per model:
  torch       Dinov2Model, bf16 weights, attn_implementation="sdpa", inference_mode.
  jax         DinoViT(dtype=bfloat16), float32 params (cast per call), attention "auto"
              (cuDNN flash attention on GPU).
  jax-bf16p   The same with params stored in bfloat16 (a frozen backbone).
  jax-xla     (with --attention auto,xla) XLA's attention instead of cuDNN.

Timing: median of per-call wall times, each call synchronised (block_until_ready /
torch.cuda.synchronize), after warm-up (compilation excluded), three input copies
rotated. Memory: PyTorch's max_memory_allocated over the timed calls (weights, input,
activations, output); for JAX, the compiled executable's arguments + temporaries +
outputs (memory_analysis), i.e. the same quantities.

Usage:
  python experiments/bench_vit.py                         # GPU: B/14 and L/14, 518^2, b8
  python experiments/bench_vit.py --json bench_vit.json --attention auto,xla
  python experiments/bench_vit.py --smoke                 # tiny model on CPU (any machine)
"""

import os

# JAX and PyTorch share the GPU in this process: no JAX pre-allocation of 75% of it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gshead_jax.convert import convert_state_dict  # noqa: E402
from gshead_jax.nn.vit import DinoViT, attention_implementation  # noqa: E402
from gshead_jax.nn.vit_config import ViTConfig, vit_config  # noqa: E402

_NUM_COPIES = 3


def _hf_config(cfg: ViTConfig):
    import transformers

    return transformers.Dinov2Config(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        mlp_ratio=int(cfg.mlp_ratio),
        use_swiglu_ffn=cfg.mlp_kind == "swiglu",
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        layer_norm_eps=cfg.layer_norm_eps,
        attn_implementation="sdpa",
    )


def _median_ms(call, inputs, warmup: int, reps: int, sync) -> float:
    for i in range(warmup):
        sync(call(inputs[i % len(inputs)]))
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        sync(call(inputs[i % len(inputs)]))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_torch(hf_model, x_nhwc: np.ndarray, device: str, warmup: int, reps: int):
    import torch

    model = hf_model.to(device=device, dtype=torch.bfloat16).eval()
    xs = [
        torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()).to(device, torch.bfloat16) + i * 1e-3
        for i in range(_NUM_COPIES)
    ]
    cuda = device == "cuda"

    def sync(out):
        if cuda:
            torch.cuda.synchronize()
        return out

    with torch.inference_mode():
        call = lambda x: model(pixel_values=x).last_hidden_state  # noqa: E731
        out = sync(call(xs[0])).float().cpu().numpy()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        ms = _median_ms(call, xs, warmup, reps, sync)
        peak = torch.cuda.max_memory_allocated() if cuda else None
    return {"ms": ms, "peak_bytes": peak}, out


def bench_jax(cfg, params, x_nhwc, *, param_dtype, attention, warmup, reps):
    model = DinoViT(cfg, dtype=jnp.bfloat16, attention=attention)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, param_dtype), params)
    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x).last_hidden_state)
    xs = [jnp.asarray(x_nhwc) + i * 1e-3 for i in range(_NUM_COPIES)]
    compiled = fwd.lower(params, xs[0]).compile()
    mem = compiled.memory_analysis()
    peak = None
    if mem is not None:
        peak = (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
    out = np.asarray(compiled(params, xs[0]), np.float32)
    ms = _median_ms(lambda x: compiled(params, x), xs, warmup, reps, jax.block_until_ready)
    impl = attention_implementation(attention, jnp.bfloat16, cfg.head_dim)
    return {"ms": ms, "peak_bytes": peak, "attention": impl}, out


def run(args) -> dict:
    import torch
    import transformers

    on_gpu = jax.default_backend() == "gpu"
    if not on_gpu and not args.smoke:
        sys.exit("no GPU seen by JAX: run on the GPU machine, or pass --smoke")
    device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
    models = ["tiny"] if args.smoke else args.models.split(",")
    size, batch = (56, 2) if args.smoke else (args.size, args.batch)
    warmup, reps = (1, 3) if args.smoke else (args.warmup, args.reps)
    rows = []
    for name in models:
        # Pre-training grid = the benchmark size: no position-embedding resize.
        cfg = vit_config(name, image_size=size)
        torch.manual_seed(0)
        hf = transformers.Dinov2Model(_hf_config(cfg)).eval()
        assert hf.config._attn_implementation == "sdpa"
        sd = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
        _, params = convert_state_dict(sd, cfg, source=f"random {name}")
        x = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)
        t_res, t_out = bench_torch(hf, x, device, warmup, reps)
        rows.append({"model": name, "impl": "torch", **t_res, "max_abs_diff": 0.0})
        variants = [("jax", jnp.float32), ("jax-bf16p", jnp.bfloat16)]
        for attention in args.attention.split(","):
            for label, pdt in variants:
                if attention != "auto":
                    if pdt is jnp.float32:
                        continue
                    label = f"jax-{attention}"
                try:
                    res, out = bench_jax(
                        cfg, params, x, param_dtype=pdt, attention=attention, warmup=warmup,
                        reps=reps,
                    )  # fmt: skip
                except Exception as err:  # keep the other rows (e.g. no cuDNN attention)
                    print(f"{name} {label} ({attention}) failed: {err!r}", file=sys.stderr)
                    rows.append({"model": name, "impl": label, "ms": None, "error": repr(err)})
                    continue
                diff = float(np.abs(out - t_out).max())
                rows.append({"model": name, "impl": label, **res, "max_abs_diff": diff})
        for r in rows:
            if r["model"] == name and r["ms"] is not None:
                r["ratio_vs_torch"] = r["ms"] / t_res["ms"]
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": str(jax.devices()[0]),
        "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "jax": jax.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "size": size,
        "batch": batch,
        "reps": reps,
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print(
        f"# {result['device']} | jax {result['jax']} | torch {result['torch']} | "
        f"transformers {result['transformers']} | {result['size']}^2, batch {result['batch']}, "
        f"bf16, median of {result['reps']}"
    )
    head = (
        f"{'model':<8} {'impl':<10} {'attn':<6} {'ms':>9} {'x torch':>8} {'peak MiB':>9} "
        f"{'|diff|':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        if r["ms"] is None:
            print(f"{r['model']:<8} {r['impl']:<10} failed: {r['error'][:80]}")
            continue
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        print(
            f"{r['model']:<8} {r['impl']:<10} {r.get('attention', 'sdpa'):<6} {r['ms']:>9.2f} "
            f"{r['ratio_vs_torch']:>8.2f} {peak:>9} {r['max_abs_diff']:>8.3f}"
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="B/14,L/14", help="comma-separated vit_config variants")
    p.add_argument("--size", type=int, default=518)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--attention", default="auto", help="comma-separated: auto, xla, cudnn")
    p.add_argument("--smoke", action="store_true", help="tiny model, CPU allowed")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    result = run(args)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
