"""The interface every avatar family implements: reconstruct once, drive per frame.

A *family* (GAGAvatar, RAR, ...) is an immutable object holding its static
configuration. It exposes two pure programs, each jittable on its own::

    model = get_model("gagavatar-tiny")
    params = model.init(jax.random.key(0))
    avatar = jax.jit(model.reconstruct)(params, source_image, source_params, source_camera)
    image, aux = jax.jit(model.drive)(params, avatar, driving_params, camera)

* ``reconstruct(params, source_image [B, S, S, 3] in [0, 1], source_params:
  FlameParams [B], source_camera: Camera [B]) -> Avatar`` runs the encoder once
  per identity and returns an :class:`Avatar`, a pytree holding everything
  ``drive`` needs (per-Gaussian tensors and the source FLAME identity).
* ``drive(params, avatar, driving_params: FlameParams [B], camera: Camera [B])
  -> (image [B, H, W, 3], aux)`` takes no image and runs no encoder: FLAME
  skinning, the family's per-frame module, splatting, an optional refiner.
  ``aux`` is a dict of named intermediates (big_vision's ``(y, aux)``): at least
  ``"coarse"`` (the splatted RGB, [B, H, W, 3]), ``"alpha"`` ([B, H, W, 1]) and
  ``"overflow"`` ([B] bool: the splat's intersection list overflowed and the
  image is incomplete -- training must refuse such a step), plus what the
  family's losses need. ``jit`` prunes what nobody reads.

Parameters are one dict with three groups (``PARAM_GROUPS``), so that large
constants are jit *arguments*, never constants baked into a compiled program:

=============  ===============================================================
``trainable``  what the optimiser updates (per training stage, see
               ``trainable_mask``).
``frozen``     pretrained or fixed weights: a frozen ViT encoder, StyleGAN
               noise buffers. Checkpointed with the model; no gradient.
``constants``  data rebuilt from files at start-up, e.g. the FLAME model
               (``constants["flame"]``, ~25 MB of blendshapes; licensed, so it
               must never be written into a checkpoint).
=============  ===============================================================

Training uses :meth:`AvatarModel.forward_batch` on a device batch
(docs/data.md layout) and :func:`partition` / :func:`combine` to differentiate
only the trainable leaves::

    mask = model.trainable_mask(params)
    learn, rest = partition(params, mask)
    def loss_fn(learn):
        image, aux = model.forward_batch(combine(learn, rest), batch, rng=rng, train=True)
        ...
    grads = jax.grad(loss_fn)(learn)

Families register named configurations with :func:`register_model`;
:func:`get_model` finds them (family modules are imported on first use).
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax.camera import Camera, make_camera
from gshead_jax.flame import FlameParams

__all__ = [
    "CONSTANTS",
    "FLAME_FIELDS",
    "FROZEN",
    "PARAM_GROUPS",
    "TRAINABLE",
    "Avatar",
    "AvatarModel",
    "camera_from_batch",
    "check_camera",
    "check_flame_params",
    "check_image",
    "combine",
    "flame_params_from_dict",
    "get_model",
    "group_mask",
    "list_models",
    "param_count",
    "partition",
    "register_model",
]

TRAINABLE = "trainable"
FROZEN = "frozen"
CONSTANTS = "constants"
PARAM_GROUPS = (TRAINABLE, FROZEN, CONSTANTS)

# FlameParams fields in the data batch's "source_params" / "target_params" dicts.
FLAME_FIELDS = ("shape", "expression", "jaw", "eyes", "neck", "global_pose", "translation")

Params = dict[str, Any]


@flax.struct.dataclass
class Avatar:
    """What ``reconstruct`` returns and ``drive`` consumes; families subclass it.

    The base holds what every FLAME-driven family needs; subclasses
    (``flax.struct.dataclass`` too) add their per-Gaussian tensors. An avatar
    holds no image and nothing whose size depends on the encoder.

    Attributes:
      flame_shape: The source's FLAME identity coefficients. [B, S]
    """

    flame_shape: jax.Array

    @property
    def batch_size(self) -> int:
        """B, the number of avatars in the batch."""
        return int(self.flame_shape.shape[0])


class AvatarModel(abc.ABC):
    """Base class of the families: the two programs plus training helpers.

    Subclasses are frozen dataclasses (hashable by identity or value) holding
    static configuration only; arrays live in ``params``. Every method is a
    pure function of its array arguments, so ``jax.jit(model.drive)`` and
    ``jax.jit(model.reconstruct)`` close over the configuration only.
    """

    name: str

    @abc.abstractmethod
    def init(self, rng: jax.Array) -> Params:
        """Random parameters ``{"trainable", "frozen", "constants"}`` (module docstring)."""

    @abc.abstractmethod
    def reconstruct(
        self,
        params: Params,
        source_image: jax.Array,
        source_params: FlameParams,
        source_camera: Camera,
    ) -> Avatar:
        """Build the avatar of each source image (once per identity).

        Args:
          params: The model parameters.
          source_image: Source portraits, RGB in [0, 1]. [B, S, S, 3]
          source_params: The sources' tracked FLAME parameters, batch [B].
          source_camera: The sources' cameras (OpenCV), batch [B].

        Returns:
          The avatar (a pytree with leading dimension B).
        """

    @abc.abstractmethod
    def drive(
        self,
        params: Params,
        avatar: Avatar,
        driving_params: FlameParams,
        camera: Camera,
        *,
        rng: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Render the avatar under new FLAME parameters and camera (per frame).

        Args:
          params: The model parameters.
          avatar: From :meth:`reconstruct`, batch B.
          driving_params: Expression, jaw, eyes (and pose) to render, batch [B].
          camera: The cameras to render from, batch [B]; ``width``/``height``
            give the output size (a family may accept only its render size).
          rng: Randomness for ``train=True`` (e.g. StyleGAN noise); unused otherwise.
          train: Training behaviour (stochastic parts draw from ``rng``);
            False is deterministic.

        Returns:
          ``(image [B, H, W, 3] in [0, 1], aux)``; ``aux`` has at least
          ``"coarse"`` [B, H, W, 3], ``"alpha"`` [B, H, W, 1] and
          ``"overflow"`` [B] (module docstring).
        """

    # ------------------------------------------------------------------ training helpers

    def forward_batch(
        self,
        params: Params,
        batch: Mapping[str, Any],
        *,
        rng: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """One training/eval forward on a device batch (docs/data.md layout).

        Reconstructs from ``source_image`` / ``source_params`` / the source camera
        and drives with ``target_params`` and the target camera.

        Args:
          params: The model parameters.
          batch: ``source_image`` [B, S, S, 3] float in [0, 1], ``source_params`` and
            ``target_params`` (dicts of ``FLAME_FIELDS`` arrays [B, n]),
            ``source_viewmat`` / ``target_viewmat`` [B, 4, 4], ``source_K`` /
            ``target_K`` [B, 3, 3], ``target_image`` [B, H, W, 3] (its size sets
            the render size); other keys are ignored.
          rng: Randomness for ``train=True``.
          train: Training behaviour (see :meth:`drive`).

        Returns:
          ``drive``'s ``(image, aux)``; ``aux["avatar"]`` holds the avatar.
        """
        for key in ("source_image", "target_image", "source_params", "target_params"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r} (docs/data.md batch layout)")
        source_params = flame_params_from_dict(batch["source_params"], "batch['source_params']")
        target_params = flame_params_from_dict(batch["target_params"], "batch['target_params']")
        source_camera = camera_from_batch(batch, "source")
        target_camera = camera_from_batch(batch, "target")
        avatar = self.reconstruct(params, batch["source_image"], source_params, source_camera)
        image, aux = self.drive(params, avatar, target_params, target_camera, rng=rng, train=train)
        return image, {**aux, "avatar": avatar}

    def trainable_mask(self, params: Params, stage: int | str | None = None) -> Any:
        """Which leaves the optimiser updates: a bool pytree shaped like ``params``.

        The default trains exactly the ``"trainable"`` group, in one stage;
        families with several training stages override this.

        Args:
          params: The model parameters (or their ``jax.eval_shape``).
          stage: Training stage; the default knows only ``None`` / 1.

        Returns:
          A pytree of Python bools with ``params``' structure.
        """
        if stage not in (None, 1):
            raise ValueError(f"{self.name} has one training stage (None or 1), got {stage!r}")
        return group_mask(params, TRAINABLE)


# ----------------------------------------------------------------------------- param groups


def _check_groups(params: Params) -> None:
    if not isinstance(params, Mapping) or set(params) - set(PARAM_GROUPS):
        keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"params must be a dict with keys among {PARAM_GROUPS}, got {keys}")


def group_mask(params: Params, *groups: str) -> Any:
    """Bool pytree like ``params``: True for every leaf inside one of ``groups``."""
    _check_groups(params)
    unknown = set(groups) - set(PARAM_GROUPS)
    if unknown:
        raise ValueError(f"groups must be among {PARAM_GROUPS}, got {sorted(unknown)}")
    return {g: jax.tree.map(lambda _, g=g: g in groups, sub) for g, sub in params.items()}


def partition(params: Any, mask: Any) -> tuple[Any, Any]:
    """Split a pytree by a bool mask into (selected, rest); the other side holds None.

    Args:
      params: Any pytree.
      mask: Bool pytree of the same structure (e.g. ``trainable_mask``).

    Returns:
      ``(selected, rest)``: two pytrees of ``params``' structure where unselected
      (resp. selected) leaves are None. ``jax.grad`` differentiates ``selected``.
    """
    selected = jax.tree.map(lambda m, x: x if m else None, mask, params)
    rest = jax.tree.map(lambda m, x: None if m else x, mask, params)
    return selected, rest


def combine(selected: Any, rest: Any) -> Any:
    """Inverse of :func:`partition`: take each leaf from whichever side is not None."""
    return jax.tree.map(
        lambda a, b: b if a is None else a, selected, rest, is_leaf=lambda x: x is None
    )


def param_count(tree: Any) -> int:
    """Total number of array elements of a pytree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- input checks


def check_image(name: str, image: Any, *, size: int | None = None) -> tuple[int, int]:
    """Check a square NHWC RGB batch; returns (B, S).

    Raises:
      ValueError: naming ``name`` unless it is [B, S, S, 3] (S = ``size`` if given).
      TypeError: for a non-floating image.
    """
    shape = tuple(np.shape(image))
    if len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2]:
        raise ValueError(f"{name} must be [B, S, S, 3] (square RGB, NHWC), got {shape}")
    if size is not None and shape[1] != size:
        raise ValueError(f"{name} must be [B, {size}, {size}, 3], got {shape}")
    if not jnp.issubdtype(jnp.result_type(image), jnp.floating):
        raise TypeError(f"{name} must be floating point in [0, 1], got {jnp.result_type(image)}")
    return shape[0], shape[1]


def check_flame_params(name: str, params: Any, batch: int) -> None:
    """Check a FlameParams of batch shape (batch,).

    Raises:
      TypeError: if ``params`` is not a FlameParams.
      ValueError: naming the field whose shape is not [batch, n].
    """
    if not isinstance(params, FlameParams):
        raise TypeError(f"{name} must be a FlameParams, got {type(params).__name__}")
    for field in FLAME_FIELDS:
        shape = tuple(np.shape(getattr(params, field)))
        if len(shape) != 2 or shape[0] != batch:
            raise ValueError(f"{name}.{field} must be [B={batch}, n], got {shape}")


def check_camera(
    name: str, camera: Any, batch: int, *, width: int | None = None, height: int | None = None
) -> None:
    """Check a Camera of batch shape (batch,) and, if given, its image size.

    Raises:
      TypeError: if ``camera`` is not a Camera.
      ValueError: naming ``name`` for a wrong batch shape or image size.
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"{name} must be a Camera, got {type(camera).__name__}")
    if tuple(camera.viewmat.shape) != (batch, 4, 4) or tuple(camera.K.shape) != (batch, 3, 3):
        raise ValueError(
            f"{name} must have viewmat [B={batch}, 4, 4] and K [B, 3, 3], got "
            f"{tuple(camera.viewmat.shape)} and {tuple(camera.K.shape)}"
        )
    if (width is not None and camera.width != width) or (
        height is not None and camera.height != height
    ):
        raise ValueError(
            f"{name} must be {width}x{height} pixels (the model's render size), "
            f"got {camera.width}x{camera.height}"
        )


def flame_params_from_dict(d: Mapping[str, Any], name: str = "params") -> FlameParams:
    """A FlameParams from the batch layout's dict of ``FLAME_FIELDS`` arrays."""
    if isinstance(d, FlameParams):
        return d
    missing = [k for k in FLAME_FIELDS if k not in d]
    if missing:
        raise KeyError(f"{name} lacks FLAME fields {missing} (needs {list(FLAME_FIELDS)})")
    return FlameParams(**{k: d[k] for k in FLAME_FIELDS})


def camera_from_batch(batch: Mapping[str, Any], which: str) -> Camera:
    """The ``"source"`` or ``"target"`` cameras of a device batch.

    The image size is the side of ``batch[f"{which}_image"]`` (``K`` is in its pixels).
    """
    if which not in ("source", "target"):
        raise ValueError(f"which must be 'source' or 'target', got {which!r}")
    for key in (f"{which}_viewmat", f"{which}_K", f"{which}_image"):
        if key not in batch:
            raise KeyError(f"batch has no {key!r} (docs/data.md batch layout)")
    _, s = check_image(f"batch['{which}_image']", batch[f"{which}_image"])
    return make_camera(batch[f"{which}_viewmat"], batch[f"{which}_K"], width=s, height=s)


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., AvatarModel]] = {}
# Family modules imported on the first registry lookup (each registers its names).
_FAMILY_MODULES = (
    "gshead_jax.models.gagavatar",
    "gshead_jax.models.rar",
    "gshead_jax.models.learn2control",
)


def register_model(name: str) -> Callable:
    """Decorator registering ``factory(**overrides) -> AvatarModel`` under ``name``."""

    def wrap(factory: Callable[..., AvatarModel]) -> Callable[..., AvatarModel]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        # A family module that does not exist yet is skipped; one that exists but
        # fails to import raises (never hidden).
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def list_models() -> tuple[str, ...]:
    """The registered model names, sorted."""
    _load_families()
    return tuple(sorted(_REGISTRY))


def get_model(name: str, **overrides: Any) -> AvatarModel:
    """A family object of a named configuration, with config fields overridden.

    Args:
      name: ``"gagavatar"``, ``"gagavatar-tiny"``, ``"rar-L"``, ... (``list_models()``).
      **overrides: Configuration fields to replace (e.g. ``dtype=jnp.bfloat16``).

    Returns:
      The family object.

    Example:
      >>> model = get_model("gagavatar-tiny")
      >>> params = model.init(jax.random.key(0))
    """
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**overrides)
