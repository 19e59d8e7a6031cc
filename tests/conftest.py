"""Shared pytest configuration.

Tests marked ``gpu`` need a CUDA device: they are skipped where JAX sees none
(CI runs on a CPU machine) and run on the GPU machine.
"""

import jax
import pytest


def _has_gpu() -> bool:
    try:
        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def float32_matmuls():
    """Full-precision matmuls/convs for float32 comparisons on GPUs (no TF32); no-op on CPU.

    Modules that compare in float32 say ``pytestmark = pytest.mark.usefixtures("float32_matmuls")``.
    """
    with jax.default_matmul_precision("highest"):
        yield
