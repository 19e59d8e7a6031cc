"""Shared by the trainer tests: a tiny on-disk dataset and the tiny test config.

The dataset is ``random_records`` (noise images, valid schema) with GAGAvatar
head cameras and the FLAME sizes of ``gagavatar-tiny``'s stand-in (20 shape, 10
expression), written as ArrayRecord. The config is ``tiny_synthetic:smoke`` with
that dataset, at 32^2 (``plane_size`` 16): every test step compiles in seconds.
"""

import importlib.util
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 32


def load_config(name: str, arg: str | None = None):
    """``experiments/configs/{name}.py``'s ``get_config(arg)``."""
    path = os.path.join(ROOT, "experiments", "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def write_dataset(
    path: str, *, identities: int = 2, clips: int = 2, frames: int = 4, seed: int = 0
):
    """Noise records with head cameras at SIZE^2, written as ArrayRecord at ``path``."""
    from gshead_jax import camera
    from gshead_jax.data import write_dataset
    from gshead_jax.data.source import random_records

    cam = camera.head_camera(width=SIZE, height=SIZE)
    recs = random_records(
        identities=identities, clips=clips, frames=frames, image_size=SIZE, n_shape=20,
        n_expression=10, seed=seed, prefix=f"s{seed}", source_kind="synthetic",
    )  # fmt: skip
    for r in recs:
        r["viewmat"] = np.asarray(cam.viewmat, np.float32)
        r["K"] = np.asarray(cam.K, np.float32)
    write_dataset(path, recs, source_kind="synthetic", records_per_shard=8)
    return path


def config(data_dir: str, *, steps: int = 3, batch: int = 2, **overrides):
    """The tiny test config: tiny_synthetic:smoke on the dataset of ``write_dataset``."""
    c = load_config("tiny_synthetic", "smoke")
    c.model.overrides = dict(render_size=SIZE, plane_size=16, tile_size=8)
    ar = dict(kind="arrayrecord", path=data_dir)
    c.data.sources = dict(synth_train=ar, synth_heldout=ar)
    c.data.batch_size = batch
    c.data.read_threads = 1
    c.data.prefetch = 0
    c.stages.main.steps = steps
    c.stages.main.optimizer.decay_steps = 100
    c.eval.sources = ()
    c.eval.batch_size = batch
    c.checkpoint.every = 1000
    c.checkpoint.use_async = True
    c.log.every = 1
    c.log.progress = False
    c.log.tensorboard = False
    c.video.enabled = False
    c.export = False
    # The tests compile more than they run: cheaper XLA:CPU compilation.
    c.compiler_options = {
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    }
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c
