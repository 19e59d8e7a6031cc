"""Training stages: what each stage trains, on which data, with which losses and optimiser.

A run is a sequence of stages declared in the config (``config.stages``, ordered by
``config.stage_order``); each stage says

* ``steps``: how many updates it lasts;
* ``data``: the sources it draws from (names of ``config.data.sources``), their
  mixing ``weights`` and the ``pair_rule``;
* ``losses``: term weights for ``losses.gagavatar_loss`` (``l1``, ``box_l1``,
  ``lifting``, ``ssim``, ``perceptual``; missing terms weigh 0);
* ``model_stage``: passed to ``model.trainable_mask(params, stage)`` (RAR's stage 2
  freezes the geometry), and ``freeze``: extra regular expressions on parameter
  paths to hold fixed;
* ``optimizer``: Adam(W) hyper-parameters, a learning-rate schedule, and
  ``lr_groups`` -- parameter-path patterns whose learning rate is scaled (GAGAvatar:
  0.1x on the StyleUNet's ``style_mlp`` and ``final_linear``).

The trainer walks the stages by itself: stage ``i`` covers global steps
``[start_i, start_i + steps_i)``. Each stage starts a fresh optimiser state (its
schedule counts from the stage's first step) over exactly the leaves it trains;
the others are not differentiated at all.

Parameter paths are the ``/``-joined dict keys of ``params``, e.g.
``trainable/upsampler/params/final_linear/kernel``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax

from gshead_jax.models.base import TRAINABLE
from gshead_jax.train.losses import GAGAVATAR_WEIGHTS

__all__ = [
    "OptimizerSpec",
    "Stage",
    "flat_paths",
    "learned_paths",
    "lr_labels",
    "make_optimizer",
    "make_schedule",
    "stage_at",
    "stage_starts",
    "stages_from_config",
]

SCHEDULES = ("constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """Adam(W) with a schedule and per-group learning-rate scales (hashable).

    Attributes:
      lr: Peak learning rate.
      b1: Adam beta1 (GAGAvatar: 0).
      b2: Adam beta2 (GAGAvatar: 0.99).
      eps: Adam epsilon, outside the square root as in torch.
      weight_decay: Decoupled weight decay (AdamW); 0 is plain Adam.
      schedule: ``"constant"``, ``"linear"`` (to ``end_factor`` x lr over
        ``decay_steps``, then constant: torch's ``LinearLR``) or ``"cosine"``.
      end_factor: Final learning rate / peak.
      decay_steps: Length of the decay, counted from the stage's start.
      warmup_steps: Linear warm-up from 0 before the schedule.
      grad_clip: Global-norm clip of the gradients (None: off).
      lr_groups: ``((name, (pattern, ...), scale), ...)``: leaves whose path
        matches a pattern (``re.search``) get ``scale`` x the learning rate; the
        first matching group wins.
    """

    lr: float = 1e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    end_factor: float = 1.0
    decay_steps: int = 1
    warmup_steps: int = 0
    grad_clip: float | None = None
    lr_groups: tuple[tuple[str, tuple[str, ...], float], ...] = ()

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"optimizer.schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        if self.lr <= 0 or self.decay_steps < 1 or self.warmup_steps < 0:
            raise ValueError(
                f"optimizer needs lr > 0, decay_steps >= 1, warmup_steps >= 0; got lr={self.lr}, "
                f"decay_steps={self.decay_steps}, warmup_steps={self.warmup_steps}"
            )
        for name, patterns, scale in self.lr_groups:
            if name == "base" or not patterns or scale <= 0:
                raise ValueError(
                    f"lr group {name!r} needs a name other than 'base', patterns and a scale > 0"
                )
            for p in patterns:
                re.compile(p)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage (see the module docstring; hashable, static under jit).

    Attributes:
      name: The stage's name (a key of ``config.stages``).
      steps: Updates in this stage.
      sources: Names of ``config.data.sources`` to draw pairs from.
      weights: Mixing proportions, one per source.
      pair_rule: ``pairs.RULES`` entry, or one per source.
      losses: ``((term, weight), ...)`` for ``losses.gagavatar_loss``.
      model_stage: Argument of ``model.trainable_mask``.
      freeze: Path patterns (``re.search``) held fixed on top of the model's mask.
      optimizer: The stage's optimiser.
    """

    name: str
    steps: int
    sources: tuple[str, ...]
    weights: tuple[float, ...]
    pair_rule: str | tuple[str, ...]
    losses: tuple[tuple[str, float], ...]
    model_stage: int | None
    freeze: tuple[str, ...]
    optimizer: OptimizerSpec

    @property
    def loss_weights(self) -> dict[str, float]:
        return dict(self.losses)


def _tuple(x: Any) -> tuple:
    if isinstance(x, str):
        return (x,)
    return tuple(x)


def _optimizer_spec(d: Mapping[str, Any], where: str) -> OptimizerSpec:
    known = {f.name for f in dataclasses.fields(OptimizerSpec)}
    d = dict(d)
    unknown = set(d) - known
    if unknown:
        raise ValueError(
            f"{where}: unknown optimizer fields {sorted(unknown)}; known {sorted(known)}"
        )
    groups = d.pop("lr_groups", {}) or {}
    d["lr_groups"] = tuple(
        (name, _tuple(g["patterns"]), float(g["scale"])) for name, g in dict(groups).items()
    )
    return OptimizerSpec(**d)


def stages_from_config(config: Any) -> tuple[Stage, ...]:
    """The run's stages from ``config.stages`` / ``config.stage_order`` (module docstring).

    Raises:
      ValueError: naming the stage and field that is missing or wrong.
    """
    order = _tuple(config.stage_order)
    if not order:
        raise ValueError("config.stage_order must name at least one stage")
    sources = set(config.data.sources.keys())
    out = []
    for name in order:
        if name not in config.stages:
            raise ValueError(f"config.stage_order names {name!r}, not in config.stages")
        s = config.stages[name]
        where = f"config.stages.{name}"
        steps = int(s.steps)
        if steps < 1:
            raise ValueError(f"{where}.steps must be >= 1, got {steps}")
        names = _tuple(s.data.sources)
        missing = [n for n in names if n not in sources]
        if not names or missing:
            raise ValueError(
                f"{where}.data.sources must name config.data.sources entries {sorted(sources)}, "
                f"got {list(names)}"
            )
        weights = tuple(float(w) for w in s.data.get("weights", None) or [1.0] * len(names))
        if len(weights) != len(names) or min(weights) <= 0:
            raise ValueError(f"{where}.data.weights must be {len(names)} positive numbers")
        rule = s.data.get("pair_rule", "same_clip")
        rule = rule if isinstance(rule, str) else tuple(rule)
        losses = {k: float(v) for k, v in dict(s.losses).items()}
        unknown = set(losses) - set(GAGAVATAR_WEIGHTS)
        if unknown:
            raise ValueError(
                f"{where}.losses: unknown terms {sorted(unknown)}; "
                f"known {sorted(GAGAVATAR_WEIGHTS)}"
            )
        freeze = _tuple(s.get("freeze", ()) or ())
        for p in freeze:
            re.compile(p)
        model_stage = s.get("model_stage", None)
        out.append(
            Stage(
                name=name,
                steps=steps,
                sources=names,
                weights=weights,
                pair_rule=rule,
                losses=tuple(sorted(losses.items())),
                model_stage=None if model_stage is None else int(model_stage),
                freeze=freeze,
                optimizer=_optimizer_spec(s.optimizer, f"{where}.optimizer"),
            )
        )
    return tuple(out)


def stage_starts(stages: Sequence[Stage]) -> tuple[int, ...]:
    """Global step at which each stage starts, plus the total as the last entry."""
    starts = [0]
    for s in stages:
        starts.append(starts[-1] + s.steps)
    return tuple(starts)


def stage_at(stages: Sequence[Stage], step: int) -> int:
    """Index of the stage that performs global update ``step`` (0-based).

    ``step`` past the end returns the last stage (the run is finished).
    """
    starts = stage_starts(stages)
    for i in range(len(stages)):
        if step < starts[i + 1]:
            return i
    return len(stages) - 1


# ----------------------------------------------------------------------------- parameters


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def flat_paths(tree: Any) -> dict[str, Any]:
    """``{"a/b/c": leaf}`` for every leaf of ``tree`` (dict keys joined by ``/``)."""
    return {
        "/".join(_key_name(k) for k in path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def learned_paths(model: Any, params: Any, stage: Stage) -> tuple[str, ...]:
    """Paths of the leaves the stage updates: the model's mask minus ``stage.freeze``.

    Args:
      model: The ``AvatarModel``.
      params: Params (or their ``jax.eval_shape``) with all three groups.
      stage: The stage.

    Returns:
      Sorted paths (all inside the ``trainable`` group).

    Raises:
      ValueError: if the stage would train nothing, or the model marks a leaf
        outside ``trainable`` (frozen/constant groups never train).
    """
    mask = flat_paths(model.trainable_mask(params, stage.model_stage))
    pats = [re.compile(p) for p in stage.freeze]
    out = []
    for path, on in mask.items():
        if not on:
            continue
        if not path.startswith(TRAINABLE + "/"):
            raise ValueError(f"the model marks {path!r} trainable outside the {TRAINABLE!r} group")
        if any(p.search(path) for p in pats):
            continue
        out.append(path)
    if not out:
        raise ValueError(
            f"stage {stage.name!r} trains no parameter (mask and freeze={stage.freeze})"
        )
    return tuple(sorted(out))


def lr_labels(spec: OptimizerSpec, paths: Sequence[str]) -> dict[str, str]:
    """Each learned path's lr group (``"base"`` unless a group's pattern matches)."""
    groups = [(name, [re.compile(p) for p in pats]) for name, pats, _ in spec.lr_groups]
    out = {}
    for path in paths:
        out[path] = next(
            (name for name, pats in groups if any(p.search(path) for p in pats)), "base"
        )
    return out


def make_schedule(spec: OptimizerSpec) -> optax.Schedule:
    """The stage's learning rate as a function of the update count within the stage.

    ``"linear"`` reproduces torch's ``LinearLR(start_factor=1, end_factor, total_iters)``
    stepped after each update (GAGAvatar): update k uses ``lr * (1 + (end - 1) k / T)``
    for k < T, then ``lr * end``.
    """
    if spec.schedule == "constant":
        sched = optax.constant_schedule(spec.lr)
    elif spec.schedule == "linear":
        sched = optax.linear_schedule(spec.lr, spec.lr * spec.end_factor, spec.decay_steps)
    else:
        sched = optax.cosine_decay_schedule(spec.lr, spec.decay_steps, alpha=spec.end_factor)
    if spec.warmup_steps:
        warm = optax.linear_schedule(0.0, spec.lr, spec.warmup_steps)
        sched = optax.join_schedules([warm, sched], [spec.warmup_steps])
    return sched


def make_optimizer(spec: OptimizerSpec, paths: Sequence[str]) -> optax.GradientTransformation:
    """Adam(W) over a flat ``{path: leaf}`` dict of learned leaves, lr scaled per group.

    Built with ``optax.multi_transform``: one Adam per lr group, each with the
    stage's schedule times the group's scale; global-norm clipping (if any) comes
    first, over all groups together.

    Args:
      spec: The stage's optimiser.
      paths: The learned paths (``learned_paths``).

    Returns:
      The optimiser; its state mirrors ``{path: leaf}``.
    """
    sched = make_schedule(spec)
    scales = {"base": 1.0, **{name: scale for name, _, scale in spec.lr_groups}}
    labels = lr_labels(spec, paths)

    def adam(scale: float) -> optax.GradientTransformation:
        lr = sched if scale == 1.0 else (lambda count: scale * sched(count))
        if spec.weight_decay:
            return optax.adamw(lr, spec.b1, spec.b2, spec.eps, weight_decay=spec.weight_decay)
        return optax.adam(lr, spec.b1, spec.b2, spec.eps)

    used = sorted(set(labels.values()))
    tx = optax.multi_transform({g: adam(scales[g]) for g in used}, labels)
    if spec.grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(spec.grad_clip), tx)
    return tx
