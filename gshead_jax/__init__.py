"""gshead_jax: one-shot animatable 3D Gaussian head avatars in JAX.

Subpackages, in layer order (an import never points up):
  camera, flame, splat  ->  nn, models  ->  data, train

  from gshead_jax import camera, flame, splat
"""

__version__ = "0.1.0"
