"""Perceptual feature trunks (VGG16, AlexNet) and the LPIPS / face-perceptual distances.

The trunks reproduce torchvision's ``vgg16().features`` and ``alexnet().features``
layer by layer; every convolution is named ``features_<i>`` after its index ``i`` in
that ``nn.Sequential``, so a torchvision state-dict key ``features.<i>.weight`` maps to
``params["features_<i>"]["kernel"]`` (see ``gshead_jax.convert.lpips``).

``LPIPS`` is LPIPS v0.1 (Zhang et al., "The Unreasonable Effectiveness of Deep Features
as a Perceptual Metric", CVPR 2018; reference: the ``lpips`` package): scaling layer,
unit-normalised features at five ReLU taps, squared difference, a learned non-negative
1x1 "linear" head per tap, spatial mean, sum over taps.

``FacePerceptual`` is GAGAvatar's ``FacePerceptualLoss`` (``core/libs/utils_perceptual.py``,
``loss_type='l1'``, ``weighted=True``): ImageNet AlexNet taps plus VGG-Face taps, L1 of
unit-normalised features summed over channels.

No weights live here: parameters come from ``gshead_jax.convert.lpips`` (user files).
Modules take images NHWC in [0, 1] and return one distance per image, ``[B]``.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision layer specs, in nn.Sequential index order:
# ("conv", out_channels, kernel, stride, padding) | ("relu",) | ("pool", kernel, stride).
_R = ("relu",)


def _vgg_block(*channels: int) -> tuple:
    layers: list = []
    for c in channels:
        layers += [("conv", c, 3, 1, 1), _R]
    return (*layers, ("pool", 2, 2))


# torchvision.models.vgg16 "D" configuration: 13 convs, 5 max-pools (31 layers).
VGG16_LAYERS: tuple = (
    _vgg_block(64, 64)
    + _vgg_block(128, 128)
    + _vgg_block(256, 256, 256)
    + _vgg_block(512, 512, 512)
    + _vgg_block(512, 512, 512)
)
# torchvision.models.alexnet features (13 layers).
ALEXNET_LAYERS: tuple = (
    ("conv", 64, 11, 4, 2),
    _R,
    ("pool", 3, 2),
    ("conv", 192, 5, 1, 2),
    _R,
    ("pool", 3, 2),
    ("conv", 384, 3, 1, 1),
    _R,
    ("conv", 256, 3, 1, 1),
    _R,
    ("conv", 256, 3, 1, 1),
    _R,
    ("pool", 3, 2),
)
TRUNK_LAYERS = {"vgg": VGG16_LAYERS, "alex": ALEXNET_LAYERS}

# Output indices of the tapped ReLUs (lpips' pretrained_networks slices).
# vgg: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; alex: relu1..relu5.
LPIPS_TAPS = {"vgg": (3, 8, 15, 22, 29), "alex": (1, 4, 7, 9, 11)}
LPIPS_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
# lpips.ScalingLayer (v0.1): inputs in [-1, 1] become (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# GAGAvatar FacePerceptualLoss: VGG-Face taps relu_1_1..relu_5_1, layer weights, and
# the input normalisations (ImageNet mean/std for AlexNet; x*255 - mean for VGG-Face).
FACE_VGG_TAPS = (1, 6, 11, 18, 25)
FACE_LAYER_WEIGHTS = (0.1, 0.1, 1.0, 1.0, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGGFACE_MEAN = (129.186279296875, 104.76238250732422, 93.59396362304688)


def conv_indices(net: str) -> tuple[int, ...]:
    """Indices of the convolutions in torchvision's ``features`` for ``net``."""
    return tuple(i for i, layer in enumerate(TRUNK_LAYERS[net]) if layer[0] == "conv")


def normalize_channels(x: jax.Array, eps: float = 1e-10) -> jax.Array:
    """Divides each feature vector by its L2 norm over channels (lpips.normalize_tensor).

    The norm is taken with a double ``where`` so that an all-zero feature vector (a
    pixel where every ReLU is off) gets a zero gradient instead of NaN; values are
    exactly those of ``x / (sqrt(sum(x**2)) + eps)``.

    Args:
      x: Features. [..., C]
      eps: Added to the norm, as in lpips.

    Returns:
      The normalised features. [..., C]
    """
    sumsq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    positive = sumsq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sumsq, 1.0)), 0.0)
    return x / (norm + eps)


class ConvTrunk(nn.Module):
    """A torchvision ``features`` stack evaluated up to its last tap.

    Attributes:
      layers: Layer spec in ``nn.Sequential`` order (``VGG16_LAYERS``, ``ALEXNET_LAYERS``).
      taps: Indices of the layers whose outputs are returned, increasing.
      precision: Convolution precision (``None``: backend default).
    """

    layers: tuple
    taps: tuple[int, ...]
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """Runs the trunk.

        Args:
          x: Normalised images. [B, H, W, 3]

        Returns:
          The tapped activations, one per entry of ``taps``. [B, h_k, w_k, C_k]
        """
        outs = []
        for i, layer in enumerate(self.layers[: max(self.taps) + 1]):
            if layer[0] == "conv":
                _, c, k, s, p = layer
                x = nn.Conv(
                    c,
                    (k, k),
                    strides=(s, s),
                    padding=((p, p), (p, p)),
                    precision=self.precision,
                    name=f"features_{i}",
                )(x)
            elif layer[0] == "relu":
                x = nn.relu(x)
            else:  # torch MaxPool2d(kernel, stride), ceil_mode=False == VALID
                _, k, s = layer
                x = nn.max_pool(x, (k, k), strides=(s, s), padding="VALID")
            if i in self.taps:
                outs.append(x)
        return tuple(outs)


def _check_pair(x0: jax.Array, x1: jax.Array) -> None:
    if x0.ndim != 4 or x0.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {x0.shape}")
    if x0.shape != x1.shape:
        raise ValueError(f"images must have the same shape, got {x0.shape} and {x1.shape}")


def _spatial_mean(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2, 3))  # [B, h, w, c] -> [B]


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between images in [0, 1].

    Parameters: ``trunk`` (the torchvision convolutions) and ``lin0``..``lin4`` (the
    learned 1x1 heads, kernels [C_k, 1]). Load them with
    ``gshead_jax.convert.lpips.load_lpips``.

    Example:
      params = load_lpips("alex", trunk_path=..., heads_path=...)
      d = LPIPS("alex").apply({"params": params}, pred, target)  # [B]

    Attributes:
      net: ``"vgg"`` (VGG16) or ``"alex"`` (AlexNet).
      precision: Convolution precision of the trunk.
    """

    net: str = "alex"
    precision: Any = None

    @nn.compact
    def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
        """Distance per image pair.

        Args:
          x0: Images in [0, 1]. [B, H, W, 3]
          x1: Images in [0, 1]. [B, H, W, 3]

        Returns:
          The LPIPS distance of each pair. [B]
        """
        if self.net not in LPIPS_TAPS:
            raise ValueError(f"net must be 'vgg' or 'alex', got {self.net!r}")
        _check_pair(x0, x1)
        shift = jnp.asarray(LPIPS_SHIFT, x0.dtype)
        scale = jnp.asarray(LPIPS_SCALE, x0.dtype)
        # lpips(normalize=True): [0, 1] -> [-1, 1], then the v0.1 scaling layer.
        both = (jnp.concatenate([x0, x1]) * 2.0 - 1.0 - shift) / scale
        trunk = ConvTrunk(
            TRUNK_LAYERS[self.net], LPIPS_TAPS[self.net], self.precision, name="trunk"
        )
        feats = trunk(both)
        b = x0.shape[0]
        total = jnp.zeros((b,), x0.dtype)
        for k, f in enumerate(feats):
            f = normalize_channels(f)
            diff = jnp.square(f[:b] - f[b:])  # [B, h, w, C_k]
            # NetLinLayer: Dropout (identity in eval) + 1x1 conv without bias.
            head = nn.Dense(1, use_bias=False, precision=self.precision, name=f"lin{k}")
            total = total + _spatial_mean(head(diff))
        return total


class FacePerceptual(nn.Module):
    """GAGAvatar's face perceptual distance (``FacePerceptualLoss``, L1, weighted).

    Parameters: ``alexnet`` (torchvision AlexNet convolutions, ImageNet weights) and
    ``vggface`` (VGG16 convolutions with VGG-Face weights). Load them with
    ``gshead_jax.convert.lpips.load_face_perceptual``.

    Attributes:
      precision: Convolution precision of both trunks.
    """

    precision: Any = None

    @nn.compact
    def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
        """Distance per image pair; its batch mean equals the official loss value.

        Args:
          x0: Images in [0, 1]. [B, H, W, 3]
          x1: Images in [0, 1]. [B, H, W, 3]

        Returns:
          The distance of each pair. [B]
        """
        _check_pair(x0, x1)
        both = jnp.concatenate([x0, x1])
        mean = jnp.asarray(IMAGENET_MEAN, x0.dtype)
        std = jnp.asarray(IMAGENET_STD, x0.dtype)
        alex = ConvTrunk(ALEXNET_LAYERS, LPIPS_TAPS["alex"], self.precision, name="alexnet")
        vgg = ConvTrunk(VGG16_LAYERS, FACE_VGG_TAPS, self.precision, name="vggface")
        feats_a = alex((both - mean) / std)
        feats_v = vgg(both * 255.0 - jnp.asarray(VGGFACE_MEAN, x0.dtype))
        b = x0.shape[0]
        total = jnp.zeros((b,), x0.dtype)
        for fa, fv, w in zip(feats_a, feats_v, FACE_LAYER_WEIGHTS, strict=True):
            fa, fv = normalize_channels(fa), normalize_channels(fv)
            # l1_loss(reduction='none').sum(dim=1).mean(): channel sum, spatial mean.
            da = _spatial_mean(jnp.sum(jnp.abs(fa[:b] - fa[b:]), -1, keepdims=True))
            dv = _spatial_mean(jnp.sum(jnp.abs(fv[:b] - fv[b:]), -1, keepdims=True))
            total = total + w * da + 0.5 * w * dv
        return total
