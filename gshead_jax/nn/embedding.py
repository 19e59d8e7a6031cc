"""Harmonic (NeRF-style) embedding of view directions, as GAGAvatar uses it.

GAGAvatar embeds the source camera's forward axis with PyTorch3D's
``HarmonicEmbedding(n_harmonic_functions=4)`` (defaults ``omega_0=1``,
``logspace=True``, ``append_input=True``) and feeds the 27-D result to all three
Gaussian heads (core/models/GAGAvatar/models.py: ``direnc_dim = 4 * 2 * 3 + 3``).

PyTorch3D's layout (pytorch3d/renderer/implicit/harmonic_embedding.py, v0.7.x) is
*not* the per-coordinate interleaving its docstring suggests; the code computes
``x[..., None] * freqs`` -> [..., dim, n], stacks (sin, cos) in front ->
[..., 2, dim, n] and flattens, so the output reads::

    [sin(f_k x_d) for d in dims for k in freqs,
     cos(f_k x_d) for d in dims for k in freqs,
     x_d for d in dims]

with ``f_k = omega_0 * 2**k`` (logspace) or ``omega_0 * linspace(1, 2**(n-1), n)``.
PyTorch3D evaluates cos as ``sin(t + pi/2)``; we call ``cos`` (equal to float
rounding, ~1e-7 at these frequencies).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["harmonic_embedding", "harmonic_embedding_dim"]


def harmonic_embedding_dim(
    input_dim: int = 3, n_harmonics: int = 4, *, append_input: bool = True
) -> int:
    """Width of :func:`harmonic_embedding`'s output: ``dim * (2 n + append_input)``."""
    return input_dim * (2 * n_harmonics + int(append_input))


def harmonic_embedding(
    x: jnp.ndarray,
    n_harmonics: int = 4,
    *,
    omega0: float = 1.0,
    logspace: bool = True,
    append_input: bool = True,
) -> jnp.ndarray:
    """PyTorch3D's ``HarmonicEmbedding`` of the last axis of ``x``.

    Args:
      x: Vectors to embed, e.g. view directions. [..., D]
      n_harmonics: Number of frequencies (GAGAvatar: 4, giving 27 = 3 * 9 for D = 3).
      omega0: Base frequency multiplying every harmonic.
      logspace: Frequencies ``2**k`` (True) or evenly spaced in [1, 2**(n-1)].
      append_input: Append ``x`` itself after the sines and cosines.

    Returns:
      The embedding, sines block, cosines block, then ``x``. [..., D * (2 n + 1)]

    Example:
      >>> dirs = jnp.array([[0.0, 0.0, 1.0]])
      >>> harmonic_embedding(dirs).shape
      (1, 27)
    """
    if x.ndim < 1:
        raise ValueError(f"x must have a last axis to embed, got shape {tuple(x.shape)}")
    if n_harmonics < 1:
        raise ValueError(f"n_harmonics must be >= 1, got {n_harmonics}")
    if logspace:
        freqs = 2.0 ** np.arange(n_harmonics, dtype=np.float32)
    else:
        freqs = np.linspace(1.0, 2.0 ** (n_harmonics - 1), n_harmonics, dtype=np.float32)
    freqs = jnp.asarray(freqs * np.float32(omega0), dtype=x.dtype)
    t = (x[..., None] * freqs).reshape(*x.shape[:-1], -1)  # [..., D * n], d-major
    parts = [jnp.sin(t), jnp.cos(t)]
    if append_input:
        parts.append(x)
    return jnp.concatenate(parts, axis=-1)
