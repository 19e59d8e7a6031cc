"""Image preprocessing for the DINOv2 backbones: ImageNet normalisation and resizes.

GAGAvatar (``core/data/loader_track.py``, ``core/models/modules/dino_base.py``) feeds its
frozen DINOv2 with the 512x512 source image resized to 518x518 by
``torchvision.transforms.functional.resize(img, (518, 518), antialias=True)`` -- on a
float tensor that is ``F.interpolate(mode="bilinear", align_corners=False,
antialias=True)`` -- then ``Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224,
0.225))``; its DPT head resizes the normalised image the same way to each feature size.
``resize`` reproduces PyTorch's kernel (see ``vit_resample``), so features computed
here match the reference pipeline; ``jax.image.resize`` weights the borders differently.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gshead_jax.nn.vit_resample import resize as _resize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GAGAVATAR_DINO_SIZE = 518  # 37 x 37 patches of 14 px


def imagenet_normalize(images: jax.Array) -> jax.Array:
    """(x - mean) / std per RGB channel, as ``torchvision.transforms.Normalize``.

    Args:
        images: RGB in [0, 1], NHWC (any leading dims). [..., H, W, 3]

    Returns:
        Normalised images, same shape and dtype (at least float32).
    """
    if images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"images must be [..., H, W, 3], got {images.shape}")
    dtype = jnp.promote_types(images.dtype, jnp.float32)
    mean = jnp.asarray(IMAGENET_MEAN, dtype)
    std = jnp.asarray(IMAGENET_STD, dtype)
    return (images.astype(dtype) - mean) / std


def resize(
    images: jax.Array, size: tuple[int, int], *, antialias: bool = True, mode: str = "bilinear"
) -> jax.Array:
    """``torchvision.transforms.functional.resize(x, size, antialias=...)`` on float images.

    Args:
        images: Images, NHWC (any leading dims). [..., H, W, C]
        size: Output (height, width).
        antialias: PyTorch's flag (torchvision's default and GAGAvatar's choice: True).
        mode: ``"bilinear"`` (torchvision's default) or ``"bicubic"``.

    Returns:
        Resized images. [..., size[0], size[1], C]
    """
    if images.ndim < 3:
        raise ValueError(f"images must be [..., H, W, C], got {images.shape}")
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    return _resize(images, size, mode=mode, antialias=antialias)


def gagavatar_dino_input(images: jax.Array, size: int = GAGAVATAR_DINO_SIZE) -> jax.Array:
    """GAGAvatar's source-image preprocessing for DINOv2: resize to 518^2, then normalise.

    Args:
        images: RGB in [0, 1], NHWC, typically 512x512. [B, H, W, 3]
        size: Square output side (518 = 37 patches of 14 px).

    Returns:
        The DinoViT input. [B, size, size, 3]

    Example:
        >>> pixels = gagavatar_dino_input(source_512)               # [B, 518, 518, 3]
        >>> maps = intermediate_feature_maps(vit, params, pixels, 4)  # 4 x [B, 37, 37, D]
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {images.shape}")
    # Same order as GAGAvatar: the loader resizes in [0, 1], DINOBase normalises.
    return imagenet_normalize(resize(images, (size, size), antialias=True))
