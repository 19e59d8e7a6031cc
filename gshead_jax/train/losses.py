"""Training losses: L1 (full image and head box), SSIM, GAGAvatar's lifting loss, perceptual.

All losses are pure functions of arrays (jit/vmap/grad compose) returning a scalar;
images are NHWC float32 in [0, 1]. ``gagavatar_loss`` combines them the way
GAGAvatar's ``calc_metrics`` does (``core/models/GAGAvatar/models.py``), each term
named, with the weights in a dict the trainer's config owns (``GAGAVATAR_WEIGHTS``).

The perceptual loss needs weights the user imports (see ``build_perceptual_loss`` and
docs/losses.md). With none configured it is off and says so; asking for it without
the files fails with the file name and where to get it -- never random weights.
"""

import logging
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from gshead_jax import metrics
from gshead_jax.nn.lpips import LPIPS, FacePerceptual

log = logging.getLogger(__name__)

# GAGAvatar's effective weights. Its total is img + box + point + percep with
# img = (L1_coarse + L1_refined) / 2, box likewise on the box crops,
# point = square_distance(...).mean() where square_distance already multiplies by 10,
# percep = 1e-2 * (FacePerceptual(box crops, coarse) + FacePerceptual(..., refined)).
GAGAVATAR_WEIGHTS = {"l1": 1.0, "box_l1": 1.0, "lifting": 10.0, "perceptual": 1e-2, "ssim": 0.0}

PERCEPTUAL_KINDS = ("none", "lpips_vgg", "lpips_alex", "face")


def _check_pair(pred: jax.Array, target: jax.Array) -> None:
    if pred.ndim != 4:
        raise ValueError(f"pred must be [B, H, W, C], got {pred.shape}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {pred.shape}, got {target.shape}")


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error over every pixel, channel and image (``F.l1_loss``).

    Args:
      pred: Rendered images. [B, H, W, C]
      target: Ground-truth images. [B, H, W, C]

    Returns:
      The loss. []
    """
    _check_pair(pred, target)
    return jnp.mean(jnp.abs(pred - target))


def box_l1_loss(
    pred: jax.Array,
    target: jax.Array,
    bbox: jax.Array,
    *,
    size: int = 512,
    expand: float | None = 1.1,
) -> jax.Array:
    """L1 on the head-box crops, each resized to ``size`` (GAGAvatar's ``calc_box_loss``).

    Args:
      pred: Rendered images. [B, H, W, C]
      target: Ground-truth images. [B, H, W, C]
      bbox: Normalised head boxes (x_min, y_min, x_max, y_max). [B, 4]
      size: Side of the resized crops (GAGAvatar: 512).
      expand: ``expand_bbox`` scale (GAGAvatar: 1.1).

    Returns:
      The loss. []
    """
    _check_pair(pred, target)
    cp = metrics.crop_to_box(pred, bbox, size=size, expand=expand)
    ct = metrics.crop_to_box(target, bbox, size=size, expand=expand)
    return jnp.mean(jnp.abs(cp - ct))


def ssim_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """``1 - SSIM`` (dm-pix, Gaussian 11 / 1.5), averaged over the batch.

    Args:
      pred: Rendered images, H and W at least 11. [B, H, W, C]
      target: Ground-truth images. [B, H, W, C]

    Returns:
      The loss. []
    """
    return 1.0 - jnp.mean(metrics.ssim(pred, target))


# ----------------------------------------------------------------------------- lifting


def nearest_indices(queries: jax.Array, points: jax.Array, *, chunk_size: int = 256) -> jax.Array:
    """Index of the nearest point (squared Euclidean) for each query; no gradient.

    Exact brute force, ``chunk_size`` queries at a time (``lax.map`` with
    ``batch_size``), so the distance block is [B, chunk_size, N] instead of
    [B, Q, N] (5023 x 175,232 floats = 3.5 GB per image). Distances are formed
    from coordinate differences, not ``|a|^2 - 2ab + |b|^2``, to avoid cancellation.
    Ties go to the lowest index.

    Args:
      queries: Query points. [B, Q, 3]
      points: Candidate points. [B, N, 3]
      chunk_size: Queries per step.

    Returns:
      Indices into ``points``. [B, Q] int32
    """
    if queries.ndim != 3 or queries.shape[-1] != 3:
        raise ValueError(f"queries must be [B, Q, 3], got {queries.shape}")
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != queries.shape[0]:
        raise ValueError(f"points must be [B, N, 3] with B={queries.shape[0]}, got {points.shape}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    queries = jax.lax.stop_gradient(queries)
    points = jax.lax.stop_gradient(points)

    def one_query(q):  # q [B, 3] -> [B]
        d = jnp.sum(jnp.square(q[:, None, :] - points), axis=-1)  # [B, N]
        return jnp.argmin(d, axis=-1).astype(jnp.int32)

    idx = jax.lax.map(one_query, jnp.swapaxes(queries, 0, 1), batch_size=chunk_size)  # [Q, B]
    return jnp.swapaxes(idx, 0, 1)


def lifting_loss(
    target_vertices: jax.Array, lifted_points: jax.Array, *, chunk_size: int = 256
) -> jax.Array:
    """GAGAvatar's lifting ("point") loss without its x10: mean squared nearest distance.

    For every target FLAME vertex, the squared distance to its nearest lifted point,
    averaged over vertices and batch. As in the official ``square_distance`` the
    nearest index is found without gradient (faiss there, exact chunked search here)
    and the distance is recomputed from the gathered point, so the gradient flows to
    both the vertices and the selected lifted points. The official value is 10x this;
    the 10 lives in ``GAGAVATAR_WEIGHTS["lifting"]``.

    Args:
      target_vertices: Target FLAME vertices. [B, V, 3]
      lifted_points: Lifted Gaussian centres (both planes). [B, N, 3]
      chunk_size: Vertices per nearest-neighbour step.

    Returns:
      The loss. []
    """
    idx = nearest_indices(target_vertices, lifted_points, chunk_size=chunk_size)  # [B, V]
    nearest = jnp.take_along_axis(lifted_points, idx[..., None], axis=1)  # [B, V, 3]
    return jnp.mean(jnp.sum(jnp.square(target_vertices - nearest), axis=-1))


# ----------------------------------------------------------------------------- perceptual


@flax.struct.dataclass
class PerceptualLoss:
    """A perceptual distance with its imported weights; a pytree, so pass it into jit.

    Attributes:
      params: The network's imported params (held fixed: no gradient reaches them).
      kind: ``"lpips_vgg"``, ``"lpips_alex"`` or ``"face"`` (GAGAvatar's FacePerceptual).
    """

    params: Any
    kind: str = flax.struct.field(pytree_node=False)

    def distances(self, pred: jax.Array, target: jax.Array) -> jax.Array:
        """Per-image distances. [B]"""
        _check_pair(pred, target)
        params = jax.lax.stop_gradient(self.params)
        if self.kind == "face":
            module = FacePerceptual()
        else:
            module = LPIPS(self.kind.removeprefix("lpips_"))
        return module.apply({"params": params}, pred, target)

    def __call__(self, pred: jax.Array, target: jax.Array) -> jax.Array:
        """Batch-mean distance (the loss). []"""
        return jnp.mean(self.distances(pred, target))


def build_perceptual_loss(
    kind: str = "none",
    *,
    weights_dir: str | os.PathLike | None = None,
    trunk_path: str | os.PathLike | None = None,
    heads_path: str | os.PathLike | None = None,
    vggface_path: str | os.PathLike | None = None,
) -> PerceptualLoss | None:
    """Builds the configured perceptual loss from user-imported weights, or ``None`` when off.

    Args:
      kind: ``"none"`` (off, the default: no weights ship with gshead_jax),
        ``"lpips_vgg"``, ``"lpips_alex"`` or ``"face"``.
      weights_dir: Folder with the files under their upstream names
        (``gshead_jax.convert.lpips``).
      trunk_path: torchvision VGG16 / AlexNet state dict (overrides ``weights_dir``).
      heads_path: lpips v0.1 ``vgg.pth`` / ``alex.pth`` (LPIPS kinds).
      vggface_path: ``vgg_face_dag.pth`` (``"face"``).

    Returns:
      The loss, or ``None`` when ``kind == "none"`` (logged as off).

    Raises:
      FileNotFoundError: a needed file is missing; the message names it and its source.
    """
    from gshead_jax.convert import lpips as convert_lpips

    if kind not in PERCEPTUAL_KINDS:
        raise ValueError(f"perceptual kind must be one of {PERCEPTUAL_KINDS}, got {kind!r}")
    if kind == "none":
        log.info("perceptual loss OFF (kind='none'): it needs imported weights, see docs/losses.md")
        return None
    if kind == "face":
        params = convert_lpips.load_face_perceptual(
            alexnet_path=trunk_path, vggface_path=vggface_path, weights_dir=weights_dir
        )
    else:
        params = convert_lpips.load_lpips(
            kind.removeprefix("lpips_"),
            trunk_path=trunk_path,
            heads_path=heads_path,
            weights_dir=weights_dir,
        )
    log.info("perceptual loss ON: %s", kind)
    return PerceptualLoss(params=jax.tree.map(jnp.asarray, params), kind=kind)


# ----------------------------------------------------------------------------- combined


def gagavatar_loss(
    coarse: jax.Array,
    refined: jax.Array,
    target: jax.Array,
    bbox: jax.Array,
    target_vertices: jax.Array,
    lifted_points: jax.Array,
    *,
    weights: dict[str, float] | None = None,
    perceptual: PerceptualLoss | None = None,
    box_size: int = 512,
    chunk_size: int = 256,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GAGAvatar's training loss (``calc_metrics``), term by term, with SSIM as an option.

    Terms (each unweighted in the returned dict): ``l1`` = mean of the coarse and
    refined full-image L1; ``box_l1`` = the same on the head-box crops; ``lifting`` =
    ``lifting_loss``; ``ssim`` = mean of coarse and refined ``1 - SSIM`` (RAR; weight 0
    in GAGAvatar); ``perceptual`` = coarse + refined perceptual distance on the box
    crops (only with ``perceptual``). A term whose weight is 0 is not computed.

    Args:
      coarse: The splatted image's RGB channels. [B, H, W, 3]
      refined: The refiner's output. [B, H, W, 3]
      target: The target frame. [B, H, W, 3]
      bbox: Normalised target head boxes. [B, 4]
      target_vertices: Target FLAME vertices. [B, V, 3]
      lifted_points: Lifted Gaussian centres. [B, N, 3]
      weights: Term weights, Python numbers (static under jit: close over them or mark
        them static; default ``GAGAVATAR_WEIGHTS``); missing keys weigh 0.
      perceptual: A ``build_perceptual_loss`` result, or ``None`` (term off).
      box_size: Side of the resized box crops.
      chunk_size: Nearest-neighbour chunk of the lifting loss.

    Returns:
      ``(total, terms)``: the weighted sum [] and the unweighted terms {name: []}.
    """
    weights = GAGAVATAR_WEIGHTS if weights is None else weights
    unknown = set(weights) - set(GAGAVATAR_WEIGHTS)
    if unknown:
        raise ValueError(
            f"unknown loss weights {sorted(unknown)}; known {sorted(GAGAVATAR_WEIGHTS)}"
        )
    _check_pair(coarse, target)
    _check_pair(refined, target)
    w = {k: float(weights.get(k, 0.0)) for k in GAGAVATAR_WEIGHTS}
    if w["perceptual"] and perceptual is None:
        # Logged at trace time: the config weighs a perceptual term it did not build.
        log.warning(
            "perceptual weight %g but no perceptual loss configured (no imported weights): "
            "the perceptual term is OFF",
            w["perceptual"],
        )
    terms: dict[str, jax.Array] = {}
    if w["l1"]:
        terms["l1"] = 0.5 * (l1_loss(coarse, target) + l1_loss(refined, target))
    if w["box_l1"] or (w["perceptual"] and perceptual is not None):
        crop = lambda x: metrics.crop_to_box(x, bbox, size=box_size)  # noqa: E731
        c_coarse, c_refined, c_target = crop(coarse), crop(refined), crop(target)
        if w["box_l1"]:
            terms["box_l1"] = 0.5 * (
                jnp.mean(jnp.abs(c_coarse - c_target)) + jnp.mean(jnp.abs(c_refined - c_target))
            )
        if w["perceptual"] and perceptual is not None:
            terms["perceptual"] = perceptual(c_coarse, c_target) + perceptual(c_refined, c_target)
    if w["lifting"]:
        terms["lifting"] = lifting_loss(target_vertices, lifted_points, chunk_size=chunk_size)
    if w["ssim"]:
        terms["ssim"] = 0.5 * (ssim_loss(coarse, target) + ssim_loss(refined, target))
    total = sum((w[k] * v for k, v in terms.items()), jnp.zeros((), jnp.float32))
    return total, terms
