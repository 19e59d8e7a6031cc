"""The one place that knows about differences between supported JAX versions.

Supported: jax 0.10.2 (CPU, Python 3.11) and jax 0.11.x (GPU, Python 3.12).
Everything version-specific lives here; the rest of the package imports from
this module instead of probing ``jax`` itself.
"""

import jax

JAX_VERSION = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())

# jax.shard_map is the public entry point since 0.7; jax.pmap is built on it.
shard_map = jax.shard_map


def has_gpu() -> bool:
    """True when JAX's default backend is a CUDA GPU."""
    try:
        return jax.default_backend() == "gpu"
    except RuntimeError:
        return False


def gpu_compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the first GPU, or None without one."""
    if not has_gpu():
        return None
    dev = jax.devices("gpu")[0]
    cc = getattr(dev, "compute_capability", None)
    if cc is None:
        return None
    major, minor = str(cc).split(".")[:2]
    return int(major), int(minor)


def is_tracer(x) -> bool:
    """True when ``x`` is a tracer (inside jit, vmap, grad, eval_shape), not a value."""
    return isinstance(x, jax.core.Tracer)


def mosaic_gpu_load(ref, layout):
    """``plgpu.load`` of a whole ref into ``layout``.

    jax 0.10 requires the index argument; jax 0.11 deprecates passing it
    (``ref.at[...]`` instead) and makes it optional.
    """
    import inspect

    from jax.experimental.pallas import mosaic_gpu as plgpu

    idx_param = inspect.signature(plgpu.load).parameters["idx"]
    if idx_param.default is inspect.Parameter.empty:
        return plgpu.load(ref, (), layout=layout)
    return plgpu.load(ref, layout=layout)
