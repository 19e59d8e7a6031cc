"""The train state and the parameter plumbing around it.

``TrainState`` holds what a checkpoint must restore to continue bit-for-bit:
the global ``step``, the ``params`` the run owns (the ``trainable`` and ``frozen``
groups -- never ``constants``, which hold licensed data such as FLAME and are
rebuilt from files at start-up), the current stage's optimiser state and the
count of ``skipped`` updates (renders that overflowed, non-finite gradients).

The optimiser works on a *flat* dict ``{path: leaf}`` of only the leaves the
stage trains (``stages.learned_paths``), so frozen leaves are never
differentiated and the optimiser state holds nothing for them.

State lives replicated on the device mesh (``NamedSharding(mesh, P())``); it is
placed with ``make_array_from_callback``, which works unchanged when the mesh
spans several processes (every process computes the same initial values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gshead_jax.models.base import CONSTANTS, FROZEN, TRAINABLE
from gshead_jax.train.stages import flat_paths

__all__ = [
    "TrainState",
    "abstract_state",
    "host_copy",
    "init_state",
    "learned_of",
    "replicate",
    "split_params",
    "with_learned",
]


@flax.struct.dataclass
class TrainState:
    """What one update reads and writes (a pytree; donated to the step).

    Attributes:
      step: Global update count (the next update's number). [] int32
      params: ``{"trainable": ..., "frozen": ...}`` (no ``constants``).
      opt_state: The stage's optimiser state over ``{path: leaf}`` of learned leaves.
      skipped: Updates skipped so far (overflowed renders or non-finite gradients). [] int32
    """

    step: jax.Array
    params: dict[str, Any]
    opt_state: Any
    skipped: jax.Array

    def to_dict(self) -> dict[str, Any]:
        """The checkpointed form (a plain dict of pytrees)."""
        return {
            "step": self.step,
            "params": self.params,
            "opt_state": self.opt_state,
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainState:
        return cls(
            step=d["step"], params=d["params"], opt_state=d["opt_state"], skipped=d["skipped"]
        )


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """``model.init`` params -> (owned ``{"trainable", "frozen"}``, ``constants``)."""
    missing = {TRAINABLE, FROZEN, CONSTANTS} - set(params)
    if missing:
        raise ValueError(
            f"params must have the groups trainable/frozen/constants, missing {missing}"
        )
    return {TRAINABLE: params[TRAINABLE], FROZEN: params[FROZEN]}, params[CONSTANTS]


def learned_of(params: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """The flat ``{path: leaf}`` dict of the learned leaves of ``params``."""
    flat = flat_paths(params)
    missing = [p for p in paths if p not in flat]
    if missing:
        raise KeyError(f"params have no leaves {missing[:3]}{'...' if len(missing) > 3 else ''}")
    return {p: flat[p] for p in paths}


def with_learned(params: Any, learned: Mapping[str, Any]) -> Any:
    """``params`` with the leaves named in ``learned`` replaced (same structure)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    names = list(flat_paths(params))
    return jax.tree_util.tree_unflatten(
        treedef, [learned.get(n, leaf) for n, leaf in zip(names, leaves)]
    )


def host_copy(tree: Any) -> Any:
    """NumPy copies of replicated arrays (also across processes, where ``device_get``
    refuses arrays with devices in other processes): this process's first shard."""

    def get(x):
        if isinstance(x, jax.Array):
            if not x.is_fully_replicated:
                raise ValueError(f"host_copy needs replicated arrays, got {x.sharding}")
            return np.asarray(x.addressable_data(0))
        return x

    return jax.tree.map(get, tree)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places host/device values replicated on ``mesh`` (works across processes).

    Every process must pass the same values (the arrays are built from this
    process's copy for its own devices).
    """
    sharding = NamedSharding(mesh, P())

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)


def init_state(
    owned: Mapping[str, Any], optimizer: optax.GradientTransformation, paths: Sequence[str]
) -> TrainState:
    """A step-0 state (host values) for ``owned`` params and a stage's optimiser.

    Args:
      owned: ``{"trainable", "frozen"}`` params.
      optimizer: ``stages.make_optimizer`` for the stage.
      paths: The stage's learned paths.

    Returns:
      The state (place it with :func:`replicate`).
    """
    learned = learned_of(owned, paths)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=dict(owned),
        opt_state=optimizer.init(learned),
        skipped=jnp.zeros((), jnp.int32),
    )


def abstract_state(
    owned: Mapping[str, Any],
    optimizer: optax.GradientTransformation,
    paths: Sequence[str],
    mesh: jax.sharding.Mesh,
) -> TrainState:
    """``ShapeDtypeStruct``s of a state for a stage, replicated on ``mesh`` (restore target)."""
    shapes = jax.eval_shape(lambda o: init_state(o, optimizer, paths), owned)
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def reset_optimizer(
    state: TrainState, optimizer: optax.GradientTransformation, paths: Sequence[str], mesh
) -> TrainState:
    """The state with a fresh optimiser for a new stage (params, step, skipped kept)."""
    learned = learned_of(state.params, paths)
    opt_state = jax.jit(optimizer.init, out_shardings=NamedSharding(mesh, P()))(learned)
    return state.replace(opt_state=opt_state)
