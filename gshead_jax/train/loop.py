"""The training loop: stages, data, steps, evaluation, checkpoints and logs, resumable.

``train_and_evaluate(config, workdir)`` reads as the run's table of contents:

1. ``check_inputs``: every configured file exists (else fail now, naming it);
2. the mesh (1-D ``"data"`` over all devices of all processes), the model, params;
3. restore the newest checkpoint of ``workdir`` if any (its stage, state and data
   iterator), else start stage 0 from the initial params;
4. for each update: next host batch -> global device batch -> ``train_step``;
   logs every ``log.every`` steps, evaluation every ``eval.every``, a checkpoint
   every ``checkpoint.every`` and at the end of each stage; at a stage boundary the
   next stage's optimiser and data pipeline take over by themselves;
5. the final evaluation, checkpoint and an inference-only export.

A run killed at any moment restarts from its newest checkpoint and continues
bit-for-bit (same hardware, same config): the state, the data iterator and the
step's randomness (folded from the step number) are all restored.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from gshead_jax.data import device_batch, eval_pipeline, train_pipeline
from gshead_jax.train import evaluation, inputs, summaries
from gshead_jax.train import stages as stages_lib
from gshead_jax.train.checkpoint import Checkpointer, export_params
from gshead_jax.train.losses import build_perceptual_loss
from gshead_jax.train.state import (
    TrainState,
    abstract_state,
    host_copy,
    init_state,
    replicate,
    reset_optimizer,
    split_params,
)
from gshead_jax.train.step import make_eval_step, make_train_step, model_batch

__all__ = ["Run", "StrictModeError", "check_strict", "make_mesh", "train_and_evaluate"]

log = logging.getLogger(__name__)


class StrictModeError(RuntimeError):
    """Raised in strict mode when a step had to be skipped (overflow or non-finite)."""


def check_strict(metrics: Mapping[str, Any], step: int) -> None:
    """Strict mode: raises if update ``step`` was refused (overflowed renders, non-finite).

    Raises:
      StrictModeError: naming the step and why.
    """
    m = host_copy(metrics)
    if int(m["skipped"]):
        raise StrictModeError(
            f"step {step}: update refused (overflowed renders: {int(m['overflow'])}, non-finite "
            f"loss or gradients: {bool(m['nonfinite'])}); strict=True stops here (for overflows "
            "raise the splat capacity: model.overrides.splat_capacity / capacity)"
        )


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """The 1-D ``("data",)`` mesh over all devices (of every process), or the first n."""
    n = num_devices or jax.device_count()
    if n > jax.device_count():
        raise ValueError(f"asked for {n} devices, {jax.device_count()} available")
    # Auto axes (jax.make_mesh defaults to Explicit): the steps are shard_maps either
    # way, and model code jitted on a device batch outside them then just works.
    auto = (jax.sharding.AxisType.Auto,)
    if n == jax.device_count():
        return jax.make_mesh((n,), ("data",), axis_types=auto)
    return jax.sharding.Mesh(np.asarray(jax.devices()[:n]), ("data",), axis_types=auto)


@dataclasses.dataclass
class StageRun:
    """What a stage needs at run time: its optimiser, learned paths, step and data."""

    index: int
    stage: stages_lib.Stage
    paths: tuple[str, ...]
    optimizer: Any
    step_fn: Any
    iterator: Any


@dataclasses.dataclass
class Run:
    """A configured run (everything but the mutable train state).

    Build with :meth:`create`; ``train_and_evaluate`` drives it. Tests and
    benchmarks use its pieces directly.
    """

    config: Any
    workdir: str
    mesh: jax.sharding.Mesh
    model: Any
    owned: dict[str, Any]
    constants: Any
    perceptual: Any
    stages: tuple[stages_lib.Stage, ...]
    starts: tuple[int, ...]
    rng: jax.Array

    @classmethod
    def create(cls, config: Any, workdir: str, *, mesh: jax.sharding.Mesh | None = None) -> Run:
        workdir = os.path.abspath(workdir)
        inputs.check_inputs(config, workdir)
        stages = stages_lib.stages_from_config(config)
        mesh = mesh or make_mesh(config.get("num_devices", None))
        n = mesh.devices.size
        for what, b in (
            ("data.batch_size", config.data.batch_size),
            ("eval.batch_size", config.eval.batch_size),
        ):
            if b % n or b % jax.process_count():
                raise ValueError(
                    f"config.{what} = {b} must be a multiple of the device count {n} "
                    f"and of the process count {jax.process_count()}"
                )
        model = inputs.build_model(config)
        params = inputs.init_params(model, config, workdir, jax.random.key(config.seed))
        owned, constants = split_params(params)
        perceptual = build_perceptual_loss(**dict(config.get("perceptual", {}) or {}))
        rng = jax.random.key_data(jax.random.key(config.seed + 1))
        return cls(
            config=config,
            workdir=workdir,
            mesh=mesh,
            model=model,
            owned=owned,
            constants=replicate(constants, mesh),
            perceptual=None if perceptual is None else replicate(perceptual, mesh),
            stages=stages,
            starts=stages_lib.stage_starts(stages),
            rng=replicate(rng, mesh),
        )

    @property
    def total_steps(self) -> int:
        return self.starts[-1]

    def sources(self, names, *, progress: bool = True) -> list[Any]:
        return inputs.build_sources(self.config, names, self.workdir, progress=progress)

    def check_sizes(self, sources) -> None:
        """The data's image size must be the model's render size, FLAME sizes its FLAME's."""
        fm = self.constants["flame"]
        render = getattr(getattr(self.model, "config", None), "render_size", None)
        for s in sources:
            if render is not None and s.image_size != render:
                raise ValueError(
                    f"source {s.name} has {s.image_size}^2 images but {self.model.name} renders "
                    f"{render}^2: render the data at that size or set model.overrides.render_size"
                )
            sizes = dict(s.param_sizes)
            if sizes.get("shape") != fm.num_shape or sizes.get("expression") != fm.num_expression:
                raise ValueError(
                    f"source {s.name} has FLAME sizes shape={sizes.get('shape')}, "
                    f"expression={sizes.get('expression')}; the model's FLAME has "
                    f"{fm.num_shape}, {fm.num_expression} (use the FLAME model the data was "
                    "tracked/rendered with)"
                )

    def stage_run(self, index: int) -> StageRun:
        """The optimiser, compiled step and a fresh data iterator of stage ``index``."""
        stage = self.stages[index]
        shapes = {**jax.eval_shape(lambda: self.owned), "constants": self.constants}
        paths = stages_lib.learned_paths(self.model, shapes, stage)
        optimizer, step_fn = _train_step(
            self.model, stage, tuple(paths), self.mesh, self.starts[index], _options(self.config)
        )
        d = self.config.data
        sources = self.sources(stage.sources, progress=jax.process_index() == 0)
        self.check_sizes(sources)
        ds = train_pipeline(
            sources,
            batch_size=d.batch_size,
            seed=self.config.seed + 1009 * index,
            pair_rule=stage.pair_rule,
            weights=stage.weights,
            strict=self.config.get("strict", False),
            num_workers=d.get("num_workers", 0),
            read_threads=d.get("read_threads", 4),
            prefetch=d.get("prefetch", 2),
        )
        return StageRun(index, stage, paths, optimizer, step_fn, iter(ds))

    def initial_state(self, run: StageRun) -> TrainState:
        return replicate(init_state(self.owned, run.optimizer, run.paths), self.mesh)

    def abstract_state(self, run: StageRun) -> TrainState:
        return abstract_state(self.owned, run.optimizer, run.paths, self.mesh)


# ----------------------------------------------------------------------------- helpers


def _options(config: Any) -> tuple | None:
    opts = config.get("compiler_options", None)
    return None if not opts else tuple(sorted(dict(opts).items()))


def _train_step(model, stage, paths, mesh, stage_start, options):
    """(optimizer, jitted step), cached on what the program depends on: a rebuilt Run
    (a restart in the same process, a test) reuses the compiled program."""
    program = dataclasses.replace(stage, name="", steps=1, sources=(), weights=(), pair_rule="")
    return _cached_train_step(model, program, paths, mesh, stage_start, options)


@functools.lru_cache(maxsize=8)
def _cached_train_step(model, stage, paths, mesh, stage_start, options):
    optimizer = stages_lib.make_optimizer(stage.optimizer, paths)
    step = make_train_step(
        model,
        stage,
        optimizer,
        paths,
        mesh,
        stage_start=stage_start,
        compiler_options=None if options is None else dict(options),
    )
    return optimizer, step


@functools.lru_cache(maxsize=4)
def _eval_step(model, mesh, options):
    opts = None if options is None else dict(options)
    return make_eval_step(model, mesh, with_images=True, compiler_options=opts)


def _fetch_mean(history: list[Mapping[str, jax.Array]]) -> dict[str, float]:
    """Means of the per-step metrics since the last log (one device_get for all)."""
    host = host_copy(history)
    out = {}
    for k in host[0]:
        vals = np.asarray([h[k] for h in host], np.float64)
        out[k] = (
            float(vals.sum()) if k in ("overflow", "nonfinite", "skipped") else float(vals.mean())
        )
    return out


def _global_sum(x: int) -> int:
    if jax.process_count() == 1:
        return int(x)
    return int(np.sum(multihost_utils.process_allgather(np.asarray(x, np.int64))))


def _all_agree(flag: bool) -> bool:
    """Process 0's ``flag``, on every process (so multi-host runs stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def _meta(run: StageRun, config: Any) -> dict[str, Any]:
    return {"stage": run.index, "stage_name": run.stage.name, "model": config.model.name}


class _Evaluator:
    """The configured evaluation (``config.eval``), compiled once."""

    def __init__(self, r: Run):
        c = r.config.eval
        self.run = r
        self.names = tuple(c.get("sources", ()) or ())
        self.every = int(c.get("every", 0) or 0)
        self.max_batches = c.get("max_batches", None)
        self.metric = c.get("best_metric", "psnr")
        self.mode = c.get("best_mode", "max")
        if not self.names:
            self.dataset = None
            return
        sources = r.sources(self.names, progress=jax.process_index() == 0)
        r.check_sizes(sources)
        self.dataset = eval_pipeline(
            sources,
            batch_size=c.batch_size,
            pair_rule=c.get("pair_rule", "same_clip"),
            read_threads=r.config.data.get("read_threads", 4),
        )
        self.step = _eval_step(r.model, r.mesh, _options(r.config))

    def __call__(self, owned) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        it = iter(self.dataset)
        try:
            return evaluation.evaluate(
                self.step,
                owned,
                self.run.constants,
                it,
                self.run.mesh,
                max_batches=self.max_batches,
                keep_images=4,
            )
        finally:
            it.close()


def _log_eval(writer, step: int, summary: Mapping[str, float], images) -> None:
    writer.scalars(step, summary, split="eval")
    if images:
        writer.image(step, "eval/grid", summaries.image_grid(images))


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(
    config: Any, workdir: str, *, run: Run | None = None, stop_at: int | None = None
) -> dict[str, Any]:
    """Trains (or resumes) the configured run in ``workdir``; returns the final summary.

    Args:
      config: The ``ml_collections`` config (experiments/configs/*.py).
      workdir: The run's directory: checkpoints, logs, export.
      run: A pre-built :class:`Run` (reused across calls, it skips the model init and
        recompilation; its config must be ``config``). Checkpoints, logs and the
        export go to ``workdir`` whatever the Run's own directory.
      stop_at: Stop as if preempted once the global step reaches this (no final
        evaluation or export; steps since the last checkpoint are lost, as in a
        kill). For tests of resumption and for time-sliced jobs.

    Returns:
      ``{"step", "eval_start", "eval", "skipped_updates", "skipped_records",
      "wall_time_s", "steps_per_s"}``.
    """
    t_start = time.perf_counter()
    r = run or Run.create(config, workdir)
    c = config
    workdir = os.path.abspath(workdir)  # outputs; a given Run may have been built elsewhere
    main = jax.process_index() == 0
    ckpt = Checkpointer(
        workdir, keep=c.checkpoint.get("keep", 3), use_async=c.checkpoint.get("use_async", True)
    )
    latest = ckpt.latest_step()
    if latest is not None:
        meta = ckpt.restore_meta(latest)
        current = r.stage_run(int(meta["stage"]))
        state = ckpt.restore(latest, r.abstract_state(current), current.iterator)
        log.info("resumed from step %d (stage %s)", latest, meta["stage_name"])
    else:
        current = r.stage_run(0)
        state = r.initial_state(current)
    step = int(host_copy(state.step))
    writer = summaries.MetricsWriter(
        workdir,
        enabled=main,
        tensorboard=c.log.get("tensorboard", True),
        resume_step=latest,
    )
    evaluator = _Evaluator(r)
    result: dict[str, Any] = {}
    if evaluator.dataset is not None and latest is None and c.eval.get("at_start", True):
        summary, images = evaluator(state.params)
        _log_eval(writer, 0, summary, images)
        result["eval_start"] = summary

    bar = None
    if main and c.log.get("progress", True):
        from tqdm import tqdm

        bar = tqdm(total=r.total_steps, initial=step, unit="step", dynamic_ncols=True)
    log_every = int(c.log.get("every", 50))
    ckpt_every = int(c.checkpoint.get("every", 1000))
    strict = bool(c.get("strict", False))
    history: list[dict[str, jax.Array]] = []
    skipped_records = 0
    t_log, step_log = time.perf_counter(), step
    budget = c.get("max_train_seconds", None)
    preempted = False
    t_train = time.perf_counter()
    try:
        while step < r.total_steps:
            if step >= r.starts[current.index + 1]:  # stage boundary: the next stage takes over
                current.iterator.close()
                current = r.stage_run(current.index + 1)
                state = reset_optimizer(state, current.optimizer, current.paths, r.mesh)
                log.info("stage %s starts at step %d", current.stage.name, step)
            host = next(current.iterator)
            skipped_records += int(host["meta"]["num_skipped"])
            batch = model_batch(device_batch(host, r.mesh))
            state, metrics = current.step_fn(state, batch, r.rng, r.constants, r.perceptual)
            step += 1
            history.append(metrics)
            if strict:
                check_strict(metrics, step - 1)
            if bar is not None:
                bar.update(1)
            end_of_stage = step == r.starts[current.index + 1]
            # The time budget is checked at log steps, on process 0's clock (all stop together).
            out_of_time = (
                bool(budget)
                and step % log_every == 0
                and _all_agree(time.perf_counter() - t_train > budget)
            )
            last = step == r.total_steps or out_of_time
            if step % log_every == 0 or end_of_stage or last:
                means = _fetch_mean(history)
                now = time.perf_counter()
                means["steps_per_s"] = (step - step_log) / max(now - t_log, 1e-9)
                means["data/skipped_records"] = _global_sum(skipped_records)
                means["skipped_updates_total"] = int(host_copy(state.skipped))
                means["stage"] = current.index
                writer.scalars(step, means)
                if bar is not None:
                    bar.set_postfix(loss=f"{means['loss']:.4f}", stage=current.stage.name)
                history, t_log, step_log = [], now, step
            if evaluator.dataset is not None and (
                (evaluator.every and step % evaluator.every == 0) or last
            ):
                summary, images = evaluator(state.params)
                _log_eval(writer, step, summary, images)
                result["eval"] = summary
                if summary["count"]:
                    ckpt.save_best(
                        step,
                        state.params,
                        evaluator.metric,
                        summary[evaluator.metric],
                        mode=evaluator.mode,
                    )
            if step % ckpt_every == 0 or end_of_stage or last:
                ckpt.save(state, current.iterator, _meta(current, c))
            writer.flush()
            if stop_at is not None and step >= stop_at and not last:
                preempted = True
                break
            if out_of_time:
                log.info("max_train_seconds=%s reached at step %d: stopping", budget, step)
                break
    finally:
        if bar is not None:
            bar.close()
        ckpt.wait()
        writer.close()
    if preempted:
        current.iterator.close()
        ckpt.close()
        return {"step": step, "preempted": True, "state": state}
    if c.get("export", True):
        export_params(
            os.path.join(workdir, "export"),
            state.params,
            model_name=c.model.name,
            overrides=inputs.model_overrides(c),
        )
    current.iterator.close()
    ckpt.close()
    wall = time.perf_counter() - t_start
    result.update(
        step=step,
        skipped_updates=int(host_copy(state.skipped)),
        skipped_records=_global_sum(skipped_records),
        wall_time_s=wall,
        state=state,
    )
    return result
