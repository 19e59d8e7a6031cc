"""Import perceptual-loss weights from user-supplied files into ``gshead_jax.nn.lpips`` params.

Nothing is downloaded and nothing is shipped: the user fetches the files below once
(their licences are the upstream ones) and points the loader at them, either file by
file or with ``weights_dir`` holding them under their upstream names.

| role | file | where to get it |
|---|---|---|
| VGG16 trunk (ImageNet) | ``vgg16-397923af.pth`` | torchvision |
| AlexNet trunk (ImageNet) | ``alexnet-owt-7be5be79.pth`` | torchvision |
| LPIPS v0.1 heads | ``vgg.pth`` / ``alex.pth`` | the ``lpips`` package |
| VGG-Face trunk | ``vgg_face_dag.pth`` | Oxford VGG (pytorch-mcn) |

Files may be torch pickles (``.pth``/``.pt``, read with ``torch.load(weights_only=True)``;
needs the ``[convert]`` extra), ``.safetensors`` or ``.npz`` holding the same state-dict
keys. Torch ``Conv2d`` weights ``[O, I, kh, kw]`` become Flax kernels ``[kh, kw, I, O]``.

Example:
  params = load_lpips("alex", weights_dir="third_party/assets/perceptual")
  d = LPIPS("alex").apply({"params": params}, pred, target)
"""

import os
from collections.abc import Callable, Mapping

import numpy as np

from gshead_jax.convert.mapping import TensorMap, conv_oihw_to_hwio, map_tensors
from gshead_jax.nn.lpips import (
    FACE_VGG_TAPS,
    LPIPS_CHANNELS,
    LPIPS_TAPS,
    TRUNK_LAYERS,
)

TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
HEAD_FILES = {"vgg": "vgg.pth", "alex": "alex.pth"}
VGGFACE_FILE = "vgg_face_dag.pth"

_HOW_TO_GET = {
    TORCHVISION_FILES["vgg"]: (
        "torchvision's ImageNet VGG16: https://download.pytorch.org/models/vgg16-397923af.pth"
        " (also in ~/.cache/torch/hub/checkpoints/ after torchvision.models.vgg16(weights="
        "'IMAGENET1K_V1'))"
    ),
    TORCHVISION_FILES["alex"]: (
        "torchvision's ImageNet AlexNet: "
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
        " (also in ~/.cache/torch/hub/checkpoints/ after torchvision.models.alexnet(weights="
        "'IMAGENET1K_V1'))"
    ),
    HEAD_FILES["vgg"]: (
        "the LPIPS v0.1 heads: lpips/weights/v0.1/vgg.pth of "
        "https://github.com/richzhang/PerceptualSimilarity (or of `pip install lpips`)"
    ),
    HEAD_FILES["alex"]: (
        "the LPIPS v0.1 heads: lpips/weights/v0.1/alex.pth of "
        "https://github.com/richzhang/PerceptualSimilarity (or of `pip install lpips`)"
    ),
    VGGFACE_FILE: (
        "the VGG-Face weights used by GAGAvatar: "
        "http://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth"
    ),
}

# vgg_face_dag.pth names its convolutions conv<block>_<n>; in torchvision vgg16 order.
_VGGFACE_NAMES = tuple(
    f"conv{b}_{n}" for b, k in enumerate((2, 2, 3, 3, 3), 1) for n in range(1, k + 1)
)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a flat state dict (name -> array) from ``.pth``/``.pt``, ``.safetensors`` or ``.npz``.

    Args:
      path: The file.

    Returns:
      The arrays as float32 NumPy arrays, keyed as in the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        with np.load(path) as z:
            items = {k: z[k] for k in z.files}
    elif ext == ".safetensors":
        from safetensors.numpy import load_file

        items = load_file(path)
    elif ext in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            import torch
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"reading {path} needs torch (pip install 'gshead-jax[convert]'), or convert "
                "the state dict to .safetensors / .npz with the same keys"
            ) from e
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, Mapping) and "state_dict" in obj and len(obj) <= 3:
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise TypeError(f"{path} must hold a state dict (name -> tensor), got {type(obj)}")
        items = {k: v.detach().float().numpy() for k, v in obj.items() if hasattr(v, "numpy")}
    else:
        raise ValueError(f"{path}: unsupported weight file type {ext!r} (.pth, .safetensors, .npz)")
    return {k: np.asarray(v, np.float32) for k, v in items.items()}


def _resolve(path, weights_dir, default_name: str) -> str:
    """The file to read: ``path``, else ``weights_dir/default_name``; a clear error if absent."""
    if path is None:
        if weights_dir is None:
            raise FileNotFoundError(
                f"no path given for {default_name}; pass it (or weights_dir holding it). "
                f"Get it from {_HOW_TO_GET[default_name]}."
            )
        path = os.path.join(os.fspath(weights_dir), default_name)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"perceptual-loss weight file not found: {path} (expected {default_name}). "
            f"Get it from {_HOW_TO_GET[default_name]}. gshead_jax never downloads or ships "
            "these weights, and never falls back to random ones."
        )
    return path


def _expected_conv_shapes(net: str, last_layer: int) -> dict[int, tuple[int, ...]]:
    """torch weight shape [O, I, k, k] of every conv at index <= ``last_layer``."""
    shapes, c_in = {}, 3
    for i, layer in enumerate(TRUNK_LAYERS[net][: last_layer + 1]):
        if layer[0] == "conv":
            shapes[i] = (layer[1], c_in, layer[2], layer[2])
            c_in = layer[1]
    return shapes


def convert_trunk(
    state_dict: Mapping[str, np.ndarray],
    net: str,
    *,
    taps: tuple[int, ...] | None = None,
    key_of: Callable[[int], str] | None = None,
    ignore: tuple[str, ...] = ("classifier.",),
    source: str = "state dict",
) -> dict:
    """Converts torchvision ``features`` convolutions to ``ConvTrunk`` params.

    Every tensor of the file is either used or listed in ``ignore``; anything else
    (a batch-norm variant, another architecture) is refused with the names listed
    (``convert.mapping.CheckpointMismatchError``).

    Args:
      state_dict: Torch state dict; by default keys ``features.<i>.weight`` / ``.bias``
        (a whole torchvision model's dict).
      net: ``"vgg"`` or ``"alex"``.
      taps: The trunk's taps (default: the LPIPS taps); the module has no convolutions
        past the last tap, so those must be in ``ignore``.
      key_of: Maps a torchvision conv index to the file's key prefix (default
        ``features.<i>``).
      ignore: Key prefixes of tensors the trunk does not use (default the classifier).
      source: Name of the file, for error messages.

    Returns:
      ``{"features_<i>": {"kernel": [k, k, I, O], "bias": [O]}}``.
    """
    if net not in TRUNK_LAYERS:
        raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
    taps = LPIPS_TAPS[net] if taps is None else taps
    key_of = key_of or (lambda i: f"features.{i}")
    plan = []
    for i, shape in _expected_conv_shapes(net, max(taps)).items():
        plan.append(
            TensorMap(f"features_{i}/kernel", (f"{key_of(i)}.weight",), conv_oihw_to_hwio, (shape,))
        )
        plan.append(TensorMap(f"features_{i}/bias", (f"{key_of(i)}.bias",), shapes=((shape[0],),)))
    tensors = {k: v for k, v in state_dict.items() if not k.startswith(ignore)}
    hint = (
        f"Expected the plain torchvision {net} (ImageNet) state dict; "
        "batch-norm variants (vgg16_bn) are not LPIPS trunks."
    )
    return map_tensors(tensors, plan, source=source, hint=hint)


def convert_lpips_heads(
    state_dict: Mapping[str, np.ndarray], net: str, *, source: str = "state dict"
) -> dict:
    """Converts the lpips package's ``lin<k>`` 1x1 convs to ``LPIPS`` head params.

    Accepts ``lin<k>.model.1.weight`` (lpips with dropout, the released files) or
    ``lin<k>.model.0.weight`` (without dropout), shape [1, C_k, 1, 1].

    Args:
      state_dict: The heads file's state dict.
      net: ``"vgg"`` or ``"alex"``.
      source: Name of the file, for error messages.

    Returns:
      ``{"lin<k>": {"kernel": [C_k, 1]}}``.
    """
    if net not in LPIPS_CHANNELS:
        raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
    plan = []
    for k, c in enumerate(LPIPS_CHANNELS[net]):
        key = f"lin{k}.model.1.weight"
        if key not in state_dict and f"lin{k}.model.0.weight" in state_dict:
            key = f"lin{k}.model.0.weight"
        plan.append(TensorMap(f"lin{k}/kernel", (key,), _head_kernel, ((1, c, 1, 1),)))
    hint = f"Expected the lpips v0.1 {HEAD_FILES[net]} heads (not the other network's)."
    return map_tensors(state_dict, plan, source=source, hint=hint)


def _head_kernel(w: np.ndarray) -> np.ndarray:
    """lpips 1x1 conv weight [1, C, 1, 1] -> Dense kernel [C, 1]."""
    return np.ascontiguousarray(w.reshape(1, -1).T)


def load_lpips(
    net: str,
    *,
    trunk_path: str | os.PathLike | None = None,
    heads_path: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> dict:
    """Loads ``LPIPS(net)`` params from the torchvision trunk and the lpips heads files.

    Args:
      net: ``"vgg"`` or ``"alex"``.
      trunk_path: torchvision state dict (default ``weights_dir/vgg16-397923af.pth`` or
        ``weights_dir/alexnet-owt-7be5be79.pth``).
      heads_path: lpips v0.1 heads (default ``weights_dir/vgg.pth`` / ``alex.pth``).
      weights_dir: Folder holding the files under their upstream names.

    Returns:
      The params tree for ``LPIPS(net).apply({"params": params}, ...)``.

    Raises:
      FileNotFoundError: a file is missing; the message says which and where to get it.
    """
    if net not in TORCHVISION_FILES:
        raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
    trunk_file = _resolve(trunk_path, weights_dir, TORCHVISION_FILES[net])
    heads_file = _resolve(heads_path, weights_dir, HEAD_FILES[net])
    params = {"trunk": convert_trunk(read_state_dict(trunk_file), net, source=trunk_file)}
    params.update(convert_lpips_heads(read_state_dict(heads_file), net, source=heads_file))
    return params


def load_face_perceptual(
    *,
    alexnet_path: str | os.PathLike | None = None,
    vggface_path: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> dict:
    """Loads ``FacePerceptual`` params (GAGAvatar's perceptual loss).

    Args:
      alexnet_path: torchvision AlexNet state dict (default
        ``weights_dir/alexnet-owt-7be5be79.pth``).
      vggface_path: ``vgg_face_dag.pth`` (keys ``conv1_1.weight`` ...; default
        ``weights_dir/vgg_face_dag.pth``).
      weights_dir: Folder holding the files under their upstream names.

    Returns:
      The params tree for ``FacePerceptual().apply({"params": params}, ...)``.
    """
    alex_file = _resolve(alexnet_path, weights_dir, TORCHVISION_FILES["alex"])
    face_file = _resolve(vggface_path, weights_dir, VGGFACE_FILE)
    conv_idx = sorted(_expected_conv_shapes("vgg", len(TRUNK_LAYERS["vgg"])))
    name_of = dict(zip(conv_idx, _VGGFACE_NAMES, strict=True))
    return {
        "alexnet": convert_trunk(read_state_dict(alex_file), "alex", source=alex_file),
        "vggface": convert_trunk(
            read_state_dict(face_file),
            "vgg",
            taps=FACE_VGG_TAPS,
            key_of=name_of.__getitem__,
            # Past relu_5_1 and the classifier: in the file, unused by the loss.
            ignore=("conv5_2.", "conv5_3.", "fc6.", "fc7.", "fc8."),
            source=face_file,
        ),
    }
