r"""Training-step throughput: steps/s at a fixed per-device batch, on 1..n local devices.

Times the jitted data-parallel update (``gshead_jax.train.step.make_train_step``:
forward, losses, backward, pmean, optimiser, donated state) of a config's model and
first stage on one fixed batch of synthetic heads rendered at the model's size --
the input pipeline is not part of the measurement. For each device count n it
runs ``--warmup`` steps, then ``--steps`` steps back to back with one final sync,
and reports steps/s, examples/s, peak device memory, and the scaling efficiency
``steps/s(n) / steps/s(1)`` (at a fixed per-device batch, perfect scaling keeps
steps/s constant).

Weights are random (speed does not depend on them) and a configured FLAME file is
replaced by the stand-in of the same size, so no asset is needed.

    python experiments/bench_train.py --config=experiments/configs/gagavatar_vfhq.py \
        --per_device_batch=8 --devices=1 --steps=50            # GAGAvatar size, batch 8
    python experiments/bench_train.py --config=experiments/configs/gpu_synthetic.py \
        --per_device_batch=8 --devices=1,2,4 --json scaling.json   # scaling
    python experiments/bench_train.py --smoke                     # CPU, seconds
"""

import json
import platform
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gshead_jax.data import device_batch
from gshead_jax.data.batching import collate
from gshead_jax.data.synthetic import SyntheticConfig, SyntheticSource
from gshead_jax.models.base import get_model
from gshead_jax.train import inputs, stages
from gshead_jax.train.loop import make_mesh
from gshead_jax.train.state import init_state, replicate, split_params
from gshead_jax.train.step import make_train_step, model_batch

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/tiny_synthetic.py:smoke", "Training config.", lock_config=False
)
_BATCH = flags.DEFINE_integer("per_device_batch", 8, "Examples per device.")
_DEVICES = flags.DEFINE_string("devices", "1", "Comma-separated device counts, e.g. 1,2,4.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per device count.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation included).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny CPU run: smoke config, batch 1, 2 steps.")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")


def _batch(model, size: int, n: int, num_shape: int, num_expression: int) -> dict:
    """A host batch of n synthetic (source, target) pairs at the model's render size."""
    clips = max(1, -(-n // 4))
    src = SyntheticSource(SyntheticConfig(identities=clips, clips=1, frames=8, image_size=size))
    gpu = jax.default_backend() == "gpu"
    recs = src.render(list(range(clips * 8)), batch=gpu, backend="auto" if gpu else "xla")

    def fit(x, k):  # benchmark only: FLAME sizes of the model (pad / cut)
        return np.pad(x, (0, max(0, k - len(x))))[:k]

    pairs = []
    for i in range(n):
        s, t = recs[(i // 4) * 8], recs[(i // 4) * 8 + 1 + i % 4]
        p = lambda r: {  # noqa: E731
            **{k: r[k] for k in ("jaw", "eyes", "neck", "global_pose", "translation")},
            "shape": fit(r["shape"], num_shape),
            "expression": fit(r["expression"], num_expression),
        }
        pairs.append(
            {
                "source_image": s["image"],
                "target_image": t["image"],
                "target_mask": t["mask"],
                "source_params": p(s),
                "target_params": p(t),
                "source_viewmat": s["viewmat"],
                "source_K": s["K"],
                "target_viewmat": t["viewmat"],
                "target_K": t["K"],
                "target_bbox": t["bbox"],
                "source_kind": np.int32(1),
                "valid": np.bool_(True),
                "meta": {"dataset": 0},
            }
        )
    return collate(pairs, 0)


def main(argv):
    del argv
    config = _CONFIG.value
    per_device, steps, warmup = _BATCH.value, _STEPS.value, _WARMUP.value
    if _SMOKE.value:
        per_device, steps, warmup = 1, 2, 1
    counts = [int(x) for x in _DEVICES.value.split(",")]
    overrides = inputs.model_overrides(config)
    overrides.pop("flame_path", None)  # the stand-in has FLAME's sizes; no asset needed
    model = get_model(config.model.name, **inputs.model_kwargs(overrides))
    params = model.init(jax.random.key(0))
    owned, constants = split_params(params)
    fm = constants["flame"]
    stage = stages.stages_from_config(config)[0]
    paths = stages.learned_paths(model, params, stage)
    optimizer = stages.make_optimizer(stage.optimizer, paths)
    size = int(model.config.render_size)
    host = _batch(model, size, per_device * max(counts), fm.num_shape, fm.num_expression)
    dev = jax.devices()[0]
    results = []
    print(
        f"{config.model.name} {size}^2, per-device batch {per_device}, {stage.name} stage, "
        f"{dev.device_kind} x {jax.device_count()}, jax {jax.__version__}",
        flush=True,
    )
    for n in counts:
        mesh = make_mesh(n)
        state = replicate(init_state(owned, optimizer, paths), mesh)
        consts = replicate(constants, mesh)
        rng = replicate(jax.random.key_data(jax.random.key(0)), mesh)
        step = make_train_step(model, stage, optimizer, paths, mesh, stage_start=0)
        b = per_device * n
        local = {k: jax.tree.map(lambda x, b=b: x[:b], v) for k, v in host.items() if k != "meta"}
        batch = model_batch(device_batch(local, mesh))
        t0 = time.perf_counter()
        for _ in range(warmup):
            state, metrics = step(state, batch, rng, consts, None)
        jax.block_until_ready(metrics)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, batch, rng, consts, None)
        jax.block_until_ready((state, metrics))
        dt = time.perf_counter() - t0
        stats = dev.memory_stats() or {}
        row = {
            "devices": n,
            "global_batch": b,
            "steps_per_s": steps / dt,
            "examples_per_s": steps * b / dt,
            "warmup_s": t_warm,
            "peak_memory_gb": stats.get("peak_bytes_in_use", 0) / 2**30,
            "loss": float(metrics["loss"]),
            "skipped": int(metrics["skipped"]),
        }
        row["efficiency"] = row["steps_per_s"] / results[0]["steps_per_s"] if results else 1.0
        results.append(row)
        print(
            f"devices {n}: {row['steps_per_s']:.3f} steps/s, {row['examples_per_s']:.2f} "
            f"examples/s, efficiency {row['efficiency']:.1%}, peak {row['peak_memory_gb']:.1f} "
            f"GB, warm-up {t_warm:.0f} s, loss {row['loss']:.4f}, skipped {row['skipped']}",
            flush=True,
        )
    if _JSON.value:
        meta = {
            "model": config.model.name,
            "overrides": overrides,
            "per_device_batch": per_device,
            "steps": steps,
            "device": dev.device_kind,
            "jax": jax.__version__,
            "python": platform.python_version(),
        }
        with open(_JSON.value, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
