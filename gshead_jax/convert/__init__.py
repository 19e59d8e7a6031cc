"""gshead_jax.convert: weight importers (HF / torch checkpoints -> Flax params).

torch is imported only inside the branches that read torch pickles (the ``convert``
extra); safetensors checkpoints are read without it.

  from gshead_jax.convert import load_dinov2
  config, params = load_dinov2("/ckpt/dinov2-base")
"""

from gshead_jax.convert.dinov2 import convert_state_dict, load_dinov2, load_params, save_params
from gshead_jax.convert.mapping import CheckpointMismatchError, TensorMap, map_tensors

__all__ = [
    "CheckpointMismatchError",
    "TensorMap",
    "convert_state_dict",
    "load_dinov2",
    "load_params",
    "map_tensors",
    "save_params",
]
