"""Architecture description of the DINOv2 / WebSSL ViT and its named variants.

``ViTConfig`` mirrors the fields of Hugging Face's ``Dinov2Config`` /
``Dinov2WithRegistersConfig`` (transformers 5.x) plus the two interpolation switches of
the original torch-hub code (``interpolate_antialias``, ``interpolate_offset``), so that
one description covers the HF model classes, the torch-hub checkpoints and WebSSL.

Variant table (``VARIANTS``), with sources:

============  =====  =====  =====  ======  =========  ====  =====================
name          width  depth  heads  MLP     MLP dim    regs  image (pos-emb grid)
============  =====  =====  =====  ======  =========  ====  =====================
S/14          384    12     6      GELU    1536       0     518 (37x37)
B/14          768    12     12     GELU    3072       0     518 (37x37)
L/14          1024   24     16     GELU    4096       0     518 (37x37)
g/14          1536   40     24     SwiGLU  4096       0     518 (37x37)
<x>/14-reg    same as above                           4     518, antialiased interp.
webssl-300m   1024   24     16     SwiGLU  2736       0     224 (16x16)
webssl-1b     1536   40     24     SwiGLU  4096       0     224
webssl-2b     2688   24     21     SwiGLU  7168       0     224
webssl-3b     3072   26     24     SwiGLU  8192       0     224
webssl-5b     3584   32     28     SwiGLU  9560       0     224
webssl-7b     4096   32     32     SwiGLU  10928      0     224 (also 378, 518)
tiny          32     2      2      GELU    128        0     56 (4x4), tests only
============  =====  =====  =====  ======  =========  ====  =====================

Sources: DINOv2 -- ``facebookresearch/dinov2`` ``dinov2/models/vision_transformer.py``
(``vit_small``/``vit_base``/``vit_large``/``vit_giant2``) and ``dinov2/hub/backbones.py``
(img_size 518, patch 14, LayerScale init 1.0, ``swiglufused`` for g/14, the ``_reg``
models with 4 registers, ``interpolate_antialias=True, interpolate_offset=0.0``), and the
Hugging Face configs ``facebook/dinov2-{small,base,large,giant}`` (layer_norm_eps 1e-6,
``use_swiglu_ffn`` true for giant only). WebSSL -- ``facebookresearch/webssl``
``dinov2/vision_transformer.py`` (commit c85b60b, ``webssl_dino{300m,1b,2b,3b,5b,7b}_*``:
embed_dim/depth/num_heads above, mlp_ratio 4, ``ffn_layer='swiglu'``, init_values 1e-5,
no registers, img_size 224; 7B also at 378 and 518), whose README loads the same weights
with ``transformers.Dinov2Model``. The SwiGLU hidden size is HF's / ``SwiGLUFFNFused``'s
``(int(int(width * mlp_ratio) * 2 / 3) + 7) // 8 * 8``.

The variants use Hugging Face's interpolation semantics (``interpolate_offset=0``:
resize to the target grid size); the torch-hub models without registers resize with the
historical ``+0.1`` scale-factor offset instead -- ``load_dinov2`` sets
``interpolate_offset=0.1`` when it reads a torch-hub ``.pth``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

MlpKind = Literal["mlp", "swiglu"]

# HF ACT2FN names accepted for the plain MLP (``hidden_act``).
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish", "relu")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Static architecture of a DINOv2-family ViT (hashable, usable as a module field).

    Attributes:
        hidden_size: Token width D.
        num_layers: Number of transformer blocks.
        num_heads: Attention heads; ``hidden_size`` must be divisible by it.
        mlp_ratio: MLP hidden size over ``hidden_size`` (before SwiGLU's 2/3 rounding).
        mlp_kind: ``"mlp"`` (fc1 -> activation -> fc2) or ``"swiglu"`` (fused
            ``weights_in`` = [gate; up], ``silu(gate) * up``, ``weights_out``).
        hidden_act: Activation of the plain MLP: ``"gelu"`` is the exact (erf) GELU.
        patch_size: Square patch side in pixels.
        image_size: Pre-training image side; the position embeddings cover a
            (image_size // patch_size)^2 grid.
        num_channels: Input channels.
        num_register_tokens: Register tokens R, placed after CLS, no position embedding.
        layer_norm_eps: Epsilon of every LayerNorm.
        qkv_bias: Whether the q/k/v projections have a bias.
        layerscale: Whether blocks scale their branches by learned per-channel factors
            (DINOv2 always; torch-hub ``init_values=None`` models do not).
        layerscale_value: Initial LayerScale value (initialisation only).
        use_mask_token: Whether the model owns a mask token (``bool_masked_pos``).
        interpolate_antialias: Resize position embeddings with PyTorch's antialiased
            bicubic (A = -0.5, renormalised taps) instead of the plain one (A = -0.75).
        interpolate_offset: 0 resizes position embeddings to the target grid size; a
            positive value reproduces the torch-hub ``scale_factor=(h + offset) / M``
            call (0.1 in DINOv2 without registers).
    """

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    mlp_kind: MlpKind = "mlp"
    hidden_act: str = "gelu"
    patch_size: int = 14
    image_size: int = 518
    num_channels: int = 3
    num_register_tokens: int = 0
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    layerscale: bool = True
    layerscale_value: float = 1.0
    use_mask_token: bool = True
    interpolate_antialias: bool = False
    interpolate_offset: float = 0.0

    def __post_init__(self):
        for name in ("hidden_size", "num_layers", "num_heads", "patch_size", "image_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ViTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ViTConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.mlp_kind not in ("mlp", "swiglu"):
            raise ValueError(f"ViTConfig.mlp_kind must be 'mlp' or 'swiglu', got {self.mlp_kind!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"ViTConfig.hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}"
            )
        if self.image_size < self.patch_size:
            raise ValueError(
                f"ViTConfig.image_size ({self.image_size}) must be >= "
                f"patch_size ({self.patch_size})"
            )
        if self.num_register_tokens < 0:
            raise ValueError(
                f"ViTConfig.num_register_tokens must be >= 0, got {self.num_register_tokens}"
            )
        if self.interpolate_offset < 0:
            raise ValueError(
                f"ViTConfig.interpolate_offset must be >= 0, got {self.interpolate_offset}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid_size(self) -> int:
        """Side M of the pre-training patch grid covered by the position embeddings."""
        return self.image_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus registers: the tokens before the patch tokens."""
        return 1 + self.num_register_tokens

    @property
    def mlp_dim(self) -> int:
        """Hidden width of the MLP, rounded as HF's Dinov2SwiGLUFFN / SwiGLUFFNFused."""
        hidden = int(self.hidden_size * self.mlp_ratio)
        if self.mlp_kind == "swiglu":
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        """Inverse of ``to_dict``; unknown keys are refused by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ViTConfig fields: {unknown}")
        return cls(**d)


def _dinov2(width: int, depth: int, heads: int, mlp: MlpKind = "mlp", **kw) -> ViTConfig:
    return ViTConfig(
        hidden_size=width, num_layers=depth, num_heads=heads, mlp_kind=mlp, image_size=518, **kw
    )


def _webssl(width: int, depth: int, heads: int) -> ViTConfig:
    return ViTConfig(
        hidden_size=width,
        num_layers=depth,
        num_heads=heads,
        mlp_kind="swiglu",
        image_size=224,
        layerscale_value=1e-5,
    )


_REG = dict(num_register_tokens=4, interpolate_antialias=True)

VARIANTS: dict[str, ViTConfig] = {
    "S/14": _dinov2(384, 12, 6),
    "B/14": _dinov2(768, 12, 12),
    "L/14": _dinov2(1024, 24, 16),
    "g/14": _dinov2(1536, 40, 24, "swiglu"),
    "S/14-reg": _dinov2(384, 12, 6, **_REG),
    "B/14-reg": _dinov2(768, 12, 12, **_REG),
    "L/14-reg": _dinov2(1024, 24, 16, **_REG),
    "g/14-reg": _dinov2(1536, 40, 24, "swiglu", **_REG),
    "webssl-300m": _webssl(1024, 24, 16),
    "webssl-1b": _webssl(1536, 40, 24),
    "webssl-2b": _webssl(2688, 24, 21),
    "webssl-3b": _webssl(3072, 26, 24),
    "webssl-5b": _webssl(3584, 32, 28),
    "webssl-7b": _webssl(4096, 32, 32),
    "tiny": ViTConfig(hidden_size=32, num_layers=2, num_heads=2, image_size=56),
}


def vit_config(variant: str, **overrides: Any) -> ViTConfig:
    """The config of a named variant, with optional field overrides.

    Args:
        variant: A key of ``VARIANTS`` (``"B/14"``, ``"webssl-7b"``, ``"tiny"``, ...).
        **overrides: ``ViTConfig`` fields to replace (e.g. ``image_size=518``).

    Returns:
        The ViTConfig.

    Example:
        >>> cfg = vit_config("webssl-7b", image_size=518)
        >>> cfg.mlp_dim
        10928
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ViT variant {variant!r}; known: {sorted(VARIANTS)}")
    return dataclasses.replace(VARIANTS[variant], **overrides)
