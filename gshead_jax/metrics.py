"""Image metrics (PSNR, SSIM, L1, LPIPS) and GAGAvatar's head-box crop, batched and jit-able.

Every metric takes images NHWC float in [0, 1], ``[B, H, W, C]``, and returns one value
per image, ``[B]``; average over the batch (or the data set) yourself. Masked variants
take a weight mask ``[B, H, W, 1]``; boxed variants crop both images to a head box
first with ``crop_to_box`` (the crop GAGAvatar's box loss uses).

Conventions against the references:
  * ``psnr`` is dm-pix's (max value 1) per image. torchmetrics' ``peak_signal_noise_ratio``
    as GAGAvatar calls it pools the squared error over the whole batch first; the two
    agree at batch 1, which is how GAGAvatar evaluates.
  * ``ssim`` is dm-pix's (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, valid
    filtering), averaged over channels. ``grayscale=True`` first converts to luma with
    torchvision's ``rgb_to_grayscale`` weights, as GAGAvatar's ``calc_ssim`` does.
  * ``lpips`` is LPIPS v0.1 with user-imported weights (``gshead_jax.convert.lpips``).
"""

import functools
from typing import Any

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax.nn.lpips import LPIPS

# torchvision.transforms.functional.rgb_to_grayscale (ITU-R 601-2 luma).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _check_images(pred: jax.Array, target: jax.Array, name: str = "pred") -> None:
    if pred.ndim != 4:
        raise ValueError(f"{name} must be [B, H, W, C], got {pred.shape}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have {name}'s shape {pred.shape}, got {target.shape}")
    if not jnp.issubdtype(pred.dtype, jnp.floating):
        raise TypeError(f"{name} must be a float image in [0, 1], got dtype {pred.dtype}")


def _check_mask(mask: jax.Array, pred: jax.Array) -> None:
    if mask.shape != (*pred.shape[:3], 1):
        raise ValueError(f"mask must be [B, H, W, 1] = {(*pred.shape[:3], 1)}, got {mask.shape}")


# ----------------------------------------------------------------------------- boxes


def expand_bbox(bbox: jax.Array, scale: float = 1.1) -> jax.Array:
    """GAGAvatar's ``expand_bbox``: a square box around the head box, kept inside the image.

    The side is ``sqrt(w * h) * scale``, shrunk so the square stays in [0, 1] around
    the box centre; the arithmetic follows the official order (float32).

    Args:
      bbox: Normalised boxes (x_min, y_min, x_max, y_max) in [0, 1]. [..., 4]
      scale: Side multiplier.

    Returns:
      The expanded boxes. [..., 4]
    """
    if bbox.shape[-1:] != (4,):
        raise ValueError(f"bbox must be [..., 4] (x_min, y_min, x_max, y_max), got {bbox.shape}")
    xmin, ymin, xmax, ymax = jnp.moveaxis(bbox, -1, 0)
    cenx, ceny = (xmin + xmax) / 2, (ymin + ymax) / 2
    side = jnp.sqrt((ymax - ymin) * (xmax - xmin)) * scale
    side = jnp.minimum(side, cenx * 2)
    side = jnp.minimum(side, ceny * 2)
    side = jnp.minimum(side, (1 - cenx) * 2)
    side = jnp.minimum(side, (1 - ceny) * 2)
    return jnp.stack([cenx - side / 2, ceny - side / 2, cenx + side / 2, ceny + side / 2], -1)


def box_to_pixels(bbox: jax.Array, height: int, width: int) -> jax.Array:
    """Clamps normalised boxes to [0, 1] and truncates them to pixel bounds.

    Reproduces GAGAvatar's ``(bbox.clamp(0, 1) * size).long()``; the crop is
    ``[y0:y1, x0:x1]`` (end exclusive). x is scaled by ``width`` and y by ``height``
    (the official code scales both by the width; its images are square). A box that
    would be empty is widened to one pixel (the official code would fail on it).

    Args:
      bbox: Normalised boxes (x_min, y_min, x_max, y_max). [B, 4]
      height: Image height in pixels.
      width: Image width in pixels.

    Returns:
      Integer pixel boxes (x0, y0, x1, y1). [B, 4] int32
    """
    b = jnp.clip(bbox.astype(jnp.float32), 0.0, 1.0)
    size = jnp.asarray([width, height, width, height], jnp.float32)
    px = jnp.floor(b * size).astype(jnp.int32)  # values >= 0: floor == trunc (.long())
    x0 = jnp.minimum(px[:, 0], width - 1)
    y0 = jnp.minimum(px[:, 1], height - 1)
    x1 = jnp.maximum(px[:, 2], x0 + 1)
    y1 = jnp.maximum(px[:, 3], y0 + 1)
    return jnp.stack([x0, y0, x1, y1], -1)


def _resize_weights(start: jax.Array, stop: jax.Array, in_len: int, out_len: int) -> jax.Array:
    """Weights of torch's antialiased bilinear resize of ``[start, stop)`` to ``out_len``.

    Row ``i`` holds, over the full input axis, the weights torch's
    ``interpolate(mode='bilinear', align_corners=False, antialias=True)`` gives output
    sample ``i`` (ATen's ``_compute_indices_min_size_weights_aa``): scale = in/out,
    support = max(scale, 1), centre = scale * (i + 0.5), a triangle filter stretched by
    the scale over the taps [trunc(centre - support + 0.5), trunc(centre + support + 0.5)),
    normalised to sum 1. Input samples outside the crop get weight 0.

    Returns:
      The resampling matrix. [out_len, in_len]
    """
    size = stop - start
    # scale = size / out_len and 1 / scale as float32 tables computed by NumPy: XLA would
    # rewrite "/ out_len" as "* (1 / out_len)", an ulp off, which moves the filter
    # centres by up to ~4e-6 px against torch (float32 weights, correctly rounded).
    sizes = np.arange(in_len + 1, dtype=np.float32)
    scales = sizes / np.float32(out_len)
    with np.errstate(divide="ignore"):
        inv = np.where(scales >= 1, np.float32(1) / scales, np.float32(1)).astype(np.float32)
    scale, invscale = jnp.asarray(scales)[size], jnp.asarray(inv)[size]
    support = jnp.maximum(scale, 1.0)
    center = scale * (jnp.arange(out_len, dtype=jnp.float32) + 0.5)  # [S]
    lo = jnp.maximum(jnp.trunc(center - support + 0.5).astype(jnp.int32), 0)
    hi = jnp.minimum(jnp.trunc(center + support + 0.5).astype(jnp.int32), size)
    j = jnp.arange(in_len, dtype=jnp.int32) - start  # crop-local input index [L]
    x = (j[None, :].astype(jnp.float32) - center[:, None] + 0.5) * invscale
    w = jnp.maximum(0.0, 1.0 - jnp.abs(x))
    w = jnp.where((j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None]), w, 0.0)
    total = jnp.sum(w, axis=1, keepdims=True)
    return w / jnp.where(total == 0, 1.0, total)


@functools.partial(jax.jit, static_argnames=("size", "expand"))
def crop_to_box(
    images: jax.Array,
    bbox: jax.Array,
    *,
    size: int | tuple[int, int] = 512,
    expand: float | None = 1.1,
) -> jax.Array:
    """Crops each image to its head box and resizes the crop to a static size.

    Reproduces GAGAvatar's ``calc_box_loss`` crop: ``expand_bbox(bbox, 1.1)``, clamp to
    [0, 1], truncate to pixels, slice, then ``F.interpolate(size, mode='bilinear',
    align_corners=False, antialias=True)``. The crop has a data-dependent size, so
    instead of slicing, each output sample is a weighted sum over the full image with
    exactly torch's antialiased-bilinear weights (zero outside the crop): two dense
    resampling matrices per image ([S, H] and [S', W]) applied as matmuls at HIGHEST
    precision. Static output shape, jit/vmap/grad friendly; matches torch to float32
    rounding (tests: 1e-5). Cost: 2*S*H*W*C + 2*S*S'*W*C FLOPs per image.

    Args:
      images: Images. [B, H, W, C]
      bbox: Normalised head boxes (x_min, y_min, x_max, y_max). [B, 4]
      size: Output size S (square) or (S, S').
      expand: ``expand_bbox`` scale; ``None`` uses the boxes as given.

    Returns:
      The resized crops. [B, S, S', C]
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got {images.shape}")
    if bbox.shape != (images.shape[0], 4):
        raise ValueError(f"bbox must be [B, 4] = {(images.shape[0], 4)}, got {bbox.shape}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, h, w, _ = images.shape
    if expand is not None:
        bbox = expand_bbox(bbox, expand)
    px = box_to_pixels(bbox, h, w)

    def one(img, box):
        wy = _resize_weights(box[1], box[3], h, out_h)  # [S, H]
        wx = _resize_weights(box[0], box[2], w, out_w)  # [S', W]
        hi = jax.lax.Precision.HIGHEST
        rows = jnp.einsum("sh,hwc->swc", wy, img.astype(jnp.float32), precision=hi)
        return jnp.einsum("tw,swc->stc", wx, rows, precision=hi)

    return jax.vmap(one)(images, px).astype(images.dtype)


# ----------------------------------------------------------------------------- metrics


def l1(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean absolute error per image (weighted by ``mask`` when given).

    Args:
      pred: Images. [B, H, W, C]
      target: Images. [B, H, W, C]
      mask: Optional pixel weights. [B, H, W, 1]

    Returns:
      The error of each image. [B]
    """
    _check_images(pred, target)
    err = jnp.abs(pred - target)
    if mask is None:
        return jnp.mean(err, axis=(1, 2, 3))
    _check_mask(mask, pred)
    return jnp.sum(err * mask, axis=(1, 2, 3)) / (jnp.sum(mask, axis=(1, 2, 3)) * pred.shape[-1])


def mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error per image (weighted by ``mask`` when given). [B]"""
    _check_images(pred, target)
    err = jnp.square(pred - target)
    if mask is None:
        return jnp.mean(err, axis=(1, 2, 3))
    _check_mask(mask, pred)
    return jnp.sum(err * mask, axis=(1, 2, 3)) / (jnp.sum(mask, axis=(1, 2, 3)) * pred.shape[-1])


def psnr(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Peak signal-to-noise ratio per image in dB, for images in [0, 1].

    Args:
      pred: Images. [B, H, W, C]
      target: Images. [B, H, W, C]
      mask: Optional pixel weights; the MSE is taken over the masked pixels. [B, H, W, 1]

    Returns:
      ``-10 log10(MSE)`` of each image. [B]
    """
    if mask is None:
        _check_images(pred, target)
        return dm_pix.psnr(pred, target)
    return -10.0 * jnp.log10(mse(pred, target, mask))


def ssim(
    pred: jax.Array,
    target: jax.Array,
    *,
    grayscale: bool = False,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Structural similarity per image (dm-pix: Gaussian 11 / sigma 1.5, K1 .01, K2 .03).

    Args:
      pred: Images, H and W at least 11. [B, H, W, C]
      target: Images. [B, H, W, C]
      grayscale: Convert RGB to luma first (GAGAvatar's evaluation SSIM).
      mask: Optional pixel weights; the SSIM map (valid region, 5 pixels in from each
        border) is averaged with the mask cropped the same way. [B, H, W, 1]

    Returns:
      The SSIM of each image. [B]
    """
    _check_images(pred, target)
    if min(pred.shape[1:3]) < 11:
        raise ValueError(f"ssim needs H, W >= 11 (the window), got {pred.shape}")
    if grayscale:
        if pred.shape[-1] != 3:
            raise ValueError(f"grayscale ssim needs RGB images [B, H, W, 3], got {pred.shape}")
        g = jnp.asarray(GRAY_WEIGHTS, pred.dtype)
        pred, target = pred @ g[:, None], target @ g[:, None]
    if mask is None:
        return dm_pix.ssim(pred, target)
    _check_mask(mask, pred)
    smap = jnp.mean(dm_pix.ssim(pred, target, return_map=True), axis=-1, keepdims=True)
    m = mask[:, 5:-5, 5:-5]  # the valid 11x11 windows' centres
    return jnp.sum(smap * m, axis=(1, 2, 3)) / jnp.sum(m, axis=(1, 2, 3))


def lpips(
    pred: jax.Array, target: jax.Array, params: Any, *, net: str = "alex", precision=None
) -> jax.Array:
    """LPIPS v0.1 distance per image, with params from ``convert.lpips.load_lpips``.

    Args:
      pred: Images in [0, 1]. [B, H, W, 3]
      target: Images in [0, 1]. [B, H, W, 3]
      params: ``LPIPS(net)`` params (imported weights; there is no default).
      net: ``"alex"`` (the usual metric) or ``"vgg"``.
      precision: Convolution precision.

    Returns:
      The distance of each image. [B]
    """
    _check_images(pred, target)
    if params is None:
        raise ValueError(
            "lpips needs imported weights: params = gshead_jax.convert.lpips.load_lpips(net, "
            "weights_dir=...) (see docs/losses.md)"
        )
    return LPIPS(net, precision=precision).apply({"params": params}, pred, target)


def image_metrics(
    pred: jax.Array,
    target: jax.Array,
    *,
    lpips_params: Any = None,
    lpips_net: str = "alex",
    bbox: jax.Array | None = None,
    box_size: int = 512,
) -> dict[str, jax.Array]:
    """PSNR, SSIM, L1 (and LPIPS when its params are given), full image and head box.

    Args:
      pred: Images in [0, 1]. [B, H, W, 3]
      target: Images in [0, 1]. [B, H, W, 3]
      lpips_params: Imported ``LPIPS(lpips_net)`` params; without them no ``lpips`` key.
      lpips_net: ``"alex"`` or ``"vgg"``.
      bbox: Optional normalised head boxes; adds ``box_*`` metrics on ``crop_to_box``
        crops resized to ``box_size``. [B, 4]
      box_size: Side of the resized box crops.

    Returns:
      ``{"psnr", "ssim", "l1"[, "lpips"][, "box_psnr", "box_ssim", "box_l1"]}``, each [B].
    """
    out = {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "l1": l1(pred, target)}
    if lpips_params is not None:
        out["lpips"] = lpips(pred, target, lpips_params, net=lpips_net)
    if bbox is not None:
        cp = crop_to_box(pred, bbox, size=box_size)
        ct = crop_to_box(target, bbox, size=box_size)
        out.update(box_psnr=psnr(cp, ct), box_ssim=ssim(cp, ct), box_l1=l1(cp, ct))
    return out
