"""FLAME in JAX: load the licensed model (or build a stand-in), pose it.

model = flame.load(path)   # official .pkl (no chumpy needed), .npz, GAGAvatar's .pt
model = flame.standin()    # procedural head with FLAME's structure, no licence
out = flame.forward(model, shape, expression, jaw=..., eyes=..., neck=...,
                    global_pose=..., translation=...)
out.vertices [..., V, 3]; out.joints [..., 5, 3]; out.landmarks [..., 68, 3] | None
"""

from gshead_jax.flame.io import load, load_landmark_embedding, load_uv, save
from gshead_jax.flame.landmarks import vertices_to_landmarks
from gshead_jax.flame.lbs import forward
from gshead_jax.flame.model import JOINT_NAMES, FlameModel, FlameOutput, FlameParams
from gshead_jax.flame.procedural import Expression, Region, standin
from gshead_jax.flame.rotation import rodrigues

__all__ = [
    "JOINT_NAMES",
    "Expression",
    "FlameModel",
    "FlameOutput",
    "FlameParams",
    "Region",
    "forward",
    "load",
    "load_landmark_embedding",
    "load_uv",
    "rodrigues",
    "save",
    "standin",
    "vertices_to_landmarks",
]
