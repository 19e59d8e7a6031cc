"""gshead_jax.models: avatar families behind one interface (see ``models.base``).

from gshead_jax.models import get_model
model = get_model("gagavatar-tiny")          # or "gagavatar", "rar-L", ...
params = model.init(jax.random.key(0))
avatar = model.reconstruct(params, source_image, source_params, source_camera)
image, aux = model.drive(params, avatar, driving_params, camera)
"""

from gshead_jax.models.base import (
    CONSTANTS,
    FROZEN,
    PARAM_GROUPS,
    TRAINABLE,
    Avatar,
    AvatarModel,
    combine,
    get_model,
    list_models,
    param_count,
    partition,
    register_model,
)

__all__ = [
    "CONSTANTS",
    "FROZEN",
    "PARAM_GROUPS",
    "TRAINABLE",
    "Avatar",
    "AvatarModel",
    "combine",
    "get_model",
    "list_models",
    "param_count",
    "partition",
    "register_model",
]
