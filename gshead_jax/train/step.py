"""The update step and the evaluation step, data parallel over a 1-D ``"data"`` mesh.

Each step is written for *one device* in pmap style -- it sees its slice of the
global batch, averages gradients and metrics over the named axis ``"data"`` with
``lax.pmean`` -- and is launched over the mesh with ``shard_map`` (what ``jax.pmap``
itself is built on), then jitted with the train state donated::

    step = make_train_step(model, stage, optimizer, paths, mesh, stage_start=0)
    state, metrics = step(state, batch, rng, constants, perceptual)

It is one pure function ``(state, batch, rng) -> (state, metrics)`` (big_vision),
with the model's ``constants`` (FLAME) and the perceptual network's weights as
extra, non-donated arguments rather than constants baked into the program.

Randomness (StyleGAN noise) is drawn per *example*: example ``i`` of the global
batch at step ``s`` uses ``fold_in(fold_in(rng, s), i)``, and the model runs
``vmap``-ed over examples. So a step's result does not depend on how the batch
is split over devices or processes (the data-parallel test checks 4 devices
against 1 to 1e-5) nor on where a run was restarted.

A render whose splat intersection list overflowed is incomplete, and an update
with non-finite gradients would corrupt the parameters: in both cases the step
keeps the old parameters and optimiser state, counts the update in
``state.skipped`` and reports it in ``metrics`` (``overflow``, ``nonfinite``,
``skipped``); the loop raises instead in strict mode.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from gshead_jax import metrics as image_metrics
from gshead_jax._compat import shard_map
from gshead_jax.models.base import CONSTANTS
from gshead_jax.train import losses
from gshead_jax.train.stages import Stage, make_schedule
from gshead_jax.train.state import TrainState, learned_of, with_learned

__all__ = [
    "MODEL_KEYS",
    "forward",
    "loss_and_terms",
    "make_eval_step",
    "make_train_step",
    "model_batch",
]

AXIS = "data"

#: Batch entries the model and the losses read (docs/data.md layout).
MODEL_KEYS = (
    "source_image",
    "target_image",
    "source_params",
    "target_params",
    "source_viewmat",
    "target_viewmat",
    "source_K",
    "target_K",
    "target_bbox",
    "valid",
)

# aux entries the losses and metrics read (jit prunes the rest).
_AUX_KEYS = ("coarse", "overflow", "num_intersections", "flame_vertices", "lifted_points")


def model_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The device-array part of a device batch that the steps take (no ``meta``)."""
    missing = [k for k in MODEL_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing} (docs/data.md batch layout)")
    return {k: batch[k] for k in MODEL_KEYS}


def forward(
    model: Any,
    params: Mapping[str, Any],
    batch: Mapping[str, Any],
    *,
    train: bool,
    keys: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``model.forward_batch`` on a (local) batch, one example at a time under ``vmap``.

    Args:
      model: The ``AvatarModel``.
      params: All three param groups.
      batch: The model entries of a batch, leading dimension B.
      train: Training behaviour (random noise from ``keys``).
      keys: One PRNG key per example. [B] (needed with ``train``)

    Returns:
      ``(image [B, H, W, 3], aux)`` with the aux entries the losses read.
    """

    def one(example, key):
        ex = jax.tree.map(lambda x: x[None], example)
        image, aux = model.forward_batch(params, ex, rng=key, train=train)
        aux = {k: aux[k] for k in _AUX_KEYS if k in aux}
        return jax.tree.map(lambda x: x[0], (image, aux))

    if keys is None:
        if train:
            raise ValueError("keys (one per example) are needed with train=True")
        return jax.vmap(lambda ex: one(ex, None))(batch)
    return jax.vmap(one)(batch, keys)


def loss_and_terms(
    image: jax.Array,
    aux: Mapping[str, jax.Array],
    batch: Mapping[str, Any],
    weights: Mapping[str, float],
    perceptual: losses.PerceptualLoss | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The stage's weighted loss on a batch (``losses.gagavatar_loss`` term by term).

    Raises:
      ValueError: a lifting weight for a model whose aux has no ``lifted_points``.
    """
    target = batch["target_image"]
    lifted, verts = aux.get("lifted_points"), aux.get("flame_vertices")
    if weights.get("lifting", 0.0):
        if lifted is None or verts is None:
            raise ValueError(
                "losses.lifting > 0 needs aux['lifted_points'] and aux['flame_vertices'] "
                "(GAGAvatar's dual lifting); this model has neither: set the weight to 0"
            )
    else:  # unused by gagavatar_loss when the weight is 0
        lifted = verts = jnp.zeros((target.shape[0], 1, 3), jnp.float32)
    return losses.gagavatar_loss(
        aux["coarse"],
        image,
        target,
        batch["target_bbox"],
        verts,
        lifted,
        weights=dict(weights),
        perceptual=perceptual,
        box_size=target.shape[1],
    )


def _global_norm(tree: Any) -> jax.Array:
    return optax.tree_utils.tree_norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))


def _example_keys(rng: jax.Array, step: jax.Array, local_batch: int) -> jax.Array:
    """Per-example keys ``fold_in(fold_in(rng, step), global index)`` for this device's slice."""
    first = jax.lax.axis_index(AXIS) * local_batch
    step_key = jax.random.fold_in(rng, step)
    return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(first + jnp.arange(local_batch))


def make_train_step(
    model: Any,
    stage: Stage,
    optimizer: optax.GradientTransformation,
    paths: Sequence[str],
    mesh: jax.sharding.Mesh,
    *,
    stage_start: int,
    compiler_options: dict[str, Any] | None = None,
):
    """The jitted data-parallel update of one stage (module docstring).

    Args:
      model: The ``AvatarModel``.
      stage: The stage (its loss weights are compile-time constants).
      optimizer: ``stages.make_optimizer(stage.optimizer, paths)``.
      paths: The stage's learned paths.
      mesh: 1-D mesh with axis ``"data"``; the global batch divides by its size.
      stage_start: Global step at which the stage starts (for the reported lr).
      compiler_options: XLA options for ``jax.jit`` (e.g. faster CPU compilation in tests).

    Returns:
      ``step(state, batch, rng, constants, perceptual) -> (state, metrics)``;
      ``batch`` is ``model_batch(device_batch)``, ``rng`` a key (or its
      ``jax.random.key_data``), ``perceptual``
      a ``PerceptualLoss`` or None. ``state`` is donated. ``metrics`` are
      replicated scalars: ``loss``, ``loss/<term>``, ``grad_norm``,
      ``param_norm``, ``update_norm``, ``lr``, ``overflow`` (overflowed renders
      in the batch), ``max_intersections``, ``nonfinite``, ``skipped``.
    """
    weights = stage.loss_weights
    schedule = make_schedule(stage.optimizer)
    paths = tuple(paths)

    def per_device(state: TrainState, batch, rng, constants, perceptual):
        if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
            rng = jax.random.wrap_key_data(rng)  # raw uint32 key data (replicated array)
        local_b = batch["target_image"].shape[0]
        keys = _example_keys(rng, state.step, local_b)
        learned = learned_of(state.params, paths)

        def loss_fn(learned):
            params = {**with_learned(state.params, learned), CONSTANTS: constants}
            image, aux = forward(model, params, batch, train=True, keys=keys)
            total, terms = loss_and_terms(image, aux, batch, weights, perceptual)
            return total, (terms, aux["overflow"], aux["num_intersections"])

        (loss, (terms, overflow, n_isect)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            learned
        )
        grads = jax.lax.pmean(grads, AXIS)
        loss, terms = jax.lax.pmean((loss, terms), AXIS)
        n_overflow = jax.lax.psum(jnp.sum(overflow.astype(jnp.int32)), AXIS)
        grad_norm = _global_norm(grads)
        finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
        ok = finite & (n_overflow == 0)

        updates, new_opt = optimizer.update(grads, state.opt_state, learned)
        new_learned = optax.apply_updates(learned, updates)
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(ok, new, old))
        new_learned = keep(new_learned, learned)
        new_opt = keep(new_opt, state.opt_state)
        new_state = TrainState(
            step=state.step + 1,
            params=with_learned(state.params, new_learned),
            opt_state=new_opt,
            skipped=state.skipped + (~ok).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            **{f"loss/{k}": v for k, v in terms.items()},
            "grad_norm": grad_norm,
            "param_norm": _global_norm(learned),
            "update_norm": jnp.where(ok, _global_norm(updates), 0.0),
            "lr": schedule(state.step - stage_start),
            "overflow": n_overflow,
            "max_intersections": jax.lax.pmax(jnp.max(n_isect), AXIS),
            "nonfinite": (~finite).astype(jnp.int32),
            "skipped": (~ok).astype(jnp.int32),
        }
        return new_state, metrics

    sharded = shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(AXIS), P(), P(), P()),
        out_specs=(P(), P()),
        check_vma=False,  # the splat's while_loops carry fresh (unvarying) buffers
    )
    return jax.jit(sharded, donate_argnums=(0,), compiler_options=compiler_options)


def make_eval_step(
    model: Any,
    mesh: jax.sharding.Mesh,
    *,
    with_images: bool = False,
    compiler_options: dict[str, Any] | None = None,
):
    """The jitted data-parallel evaluation forward (deterministic, ``train=False``).

    Args:
      model: The ``AvatarModel``.
      mesh: 1-D mesh with axis ``"data"``.
      with_images: Also return the refined and coarse renders.
      compiler_options: XLA options for ``jax.jit``.

    Returns:
      ``eval_step(owned_params, batch, constants) -> out`` with per-example
      arrays [B] split over ``"data"``: ``psnr``, ``ssim``, ``l1`` of the refined
      image and ``coarse_psnr``, ``coarse_ssim``, ``coarse_l1``, ``overflow``,
      ``valid``; with ``with_images`` also ``image`` and ``coarse`` [B, H, W, 3].
    """

    def per_device(owned, batch, constants):
        params = {**owned, CONSTANTS: constants}
        image, aux = forward(model, params, batch, train=False)
        image = jnp.clip(image, 0.0, 1.0)
        coarse = jnp.clip(aux["coarse"], 0.0, 1.0)
        target = batch["target_image"]
        out = {
            "psnr": image_metrics.psnr(image, target),
            "ssim": image_metrics.ssim(image, target),
            "l1": image_metrics.l1(image, target),
            "coarse_psnr": image_metrics.psnr(coarse, target),
            "coarse_ssim": image_metrics.ssim(coarse, target),
            "coarse_l1": image_metrics.l1(coarse, target),
            "overflow": aux["overflow"],
            "valid": batch["valid"],
        }
        if with_images:
            out["image"], out["coarse"] = image, coarse
        return out

    sharded = shard_map(
        per_device, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=P(AXIS), check_vma=False
    )
    return jax.jit(sharded, compiler_options=compiler_options)
