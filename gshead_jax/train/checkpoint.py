"""Orbax checkpoints of a run: the last N states, the best by a validation metric, exports.

Layout under the run's directory::

    checkpoints/<step>/   state (params trainable+frozen, optimiser state, step,
                          skipped), data (the grain iterator state, one file per
                          process), meta (JSON: stage index and name, config digest)
    best/<step>/          params + meta (the metric and its value): the best eval so far
    export/               inference-only params + model.json (``export_params``)

``constants`` (FLAME and other licensed data) are never written: they are rebuilt
from their files at start-up. Saves are asynchronous (Orbax copies the arrays to
the host before ``save`` returns, so the next, donating step cannot corrupt
them); a write interrupted by a kill leaves a temporary directory that Orbax
ignores, so a restart always finds a complete checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from gshead_jax.data import pipeline
from gshead_jax.train.state import TrainState, host_copy

__all__ = ["Checkpointer", "export_params", "load_exported", "load_model"]


class Checkpointer:
    """Saves and restores a run (see the module docstring).

    Args:
      workdir: The run's directory.
      keep: How many recent checkpoints to keep.
      use_async: Asynchronous saves.
    """

    def __init__(self, workdir: str, *, keep: int = 3, use_async: bool = True):
        workdir = os.path.abspath(workdir)
        self.directory = os.path.join(workdir, "checkpoints")
        self.best_directory = os.path.join(workdir, "best")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=use_async
            ),
        )
        self.best = ocp.CheckpointManager(
            self.best_directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, enable_async_checkpointing=use_async
            ),
        )

    # ------------------------------------------------------------------ the run's state

    def latest_step(self) -> int | None:
        """Step of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(
        self, state: TrainState, data_iterator: Any, meta: Mapping[str, Any], *, force: bool = False
    ) -> None:
        """Saves the state, the data iterator and ``meta`` at ``state.step``."""
        step = int(host_copy(state.step))
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state.to_dict()),
                data=pipeline.save_args(data_iterator),
                meta=ocp.args.JsonSave(dict(meta)),
            ),
            force=force,
        )

    def restore_meta(self, step: int) -> dict[str, Any]:
        """The ``meta`` JSON of checkpoint ``step``."""
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(self, step: int, target: TrainState, data_iterator: Any) -> TrainState:
        """Restores checkpoint ``step`` onto ``target``'s shardings; the iterator in place.

        Args:
          step: The checkpoint.
          target: ``state.abstract_state(...)`` of the checkpoint's stage
            (``ShapeDtypeStruct``s with shardings on the mesh).
          data_iterator: A fresh iterator of the same pipeline; restored in place.

        Returns:
          The restored state.
        """
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target.to_dict()),
                data=pipeline.restore_args(data_iterator),
            ),
        )
        return TrainState.from_dict(out["state"])

    # ------------------------------------------------------------------ best by metric

    def best_value(self) -> tuple[int, float] | None:
        """(step, value) of the best checkpoint so far, or None."""
        step = self.best.latest_step()
        if step is None:
            return None
        meta = self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return step, float(meta["meta"]["value"])

    def save_best(
        self, step: int, params: Any, metric: str, value: float, *, mode: str = "max"
    ) -> bool:
        """Saves ``params`` as the best if ``value`` beats the best so far; True if it did."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        best = self.best_value()
        if best is not None:
            better = value > best[1] if mode == "max" else value < best[1]
            if not better or step == best[0]:
                return False
        self.best.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                meta=ocp.args.JsonSave({"metric": metric, "value": float(value), "mode": mode}),
            ),
        )
        return True

    def restore_best(self, target_params: Any) -> tuple[int, Any]:
        """(step, params) of the best checkpoint, restored onto ``target_params``' shardings."""
        step = self.best.latest_step()
        if step is None:
            raise FileNotFoundError(f"no best checkpoint under {self.best_directory}")
        out = self.best.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target_params))
        )
        return step, out["params"]

    # ------------------------------------------------------------------ lifecycle

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are written."""
        self.manager.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()
        self.best.close()


# ----------------------------------------------------------------------------- export

_MODEL_JSON = "model.json"


def export_params(
    directory: str, params: Mapping[str, Any], *, model_name: str, overrides: Mapping[str, Any]
) -> str:
    """Writes inference-only params (``trainable`` + ``frozen``, no optimiser, no constants).

    Args:
      directory: Output folder (created; must not hold an export already).
      params: ``{"trainable", "frozen"}``.
      model_name: ``models.get_model`` name.
      overrides: The model's config overrides (JSON-able).

    Returns:
      The folder. Read it back with :func:`load_exported`.
    """
    directory = os.path.abspath(directory)
    if set(params) - {"trainable", "frozen"}:
        raise ValueError(f"export takes trainable/frozen params only, got {sorted(params)}")
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(directory, "params"), dict(params), force=True)
    ckptr.wait_until_finished()
    if jax.process_index() == 0:
        with open(os.path.join(directory, _MODEL_JSON), "w") as f:
            json.dump({"model": model_name, "overrides": dict(overrides)}, f, indent=1)
    return directory


def load_exported(directory: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Reads an export: ``(model_name, overrides, {"trainable", "frozen"} params)``.

    Raises:
      FileNotFoundError: naming the missing file.
    """
    directory = os.path.abspath(directory)
    meta_path = os.path.join(directory, _MODEL_JSON)
    if not os.path.exists(meta_path):
        raise FileNotFoundError(
            f"{meta_path} not found: not an export folder (experiments/train.py writes "
            "WORKDIR/export at the end of a run; export_params writes one)"
        )
    with open(meta_path) as f:
        meta = json.load(f)
    params = ocp.StandardCheckpointer().restore(os.path.join(directory, "params"))
    return meta["model"], dict(meta["overrides"]), params


def load_model(directory: str, *, rng_seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """An export as a ready model: ``(AvatarModel, params with constants)``.

    The constants (FLAME) are rebuilt by ``model.init`` from the model's config
    (its ``flame_path``, or the stand-in), never read from the export.
    """
    from gshead_jax.models.base import get_model
    from gshead_jax.train.inputs import model_kwargs

    name, overrides, owned = load_exported(directory)
    model = get_model(name, **model_kwargs(overrides))
    params = model.init(jax.random.key(rng_seed))
    fresh = jax.tree.map(jnp.shape, {k: params[k] for k in owned})
    if jax.tree.map(jnp.shape, owned) != fresh:
        raise ValueError(f"{directory}: exported params do not match {name} with {overrides}")
    return model, {**owned, "constants": params["constants"]}
