"""gshead_jax.splat: differentiable tile-based Gaussian splatting (gsplat 1.5.3 semantics).

``rasterize`` is the entry point; ``project`` and ``default_capacity`` are the
pieces callers may want on their own. See docs/splat.md.
"""

from gshead_jax.splat.api import RasterOutput, rasterize
from gshead_jax.splat.binning import default_capacity
from gshead_jax.splat.project import Projection, project

__all__ = ["Projection", "RasterOutput", "default_capacity", "project", "rasterize"]
