"""Harmonic embedding against a NumPy transcription of PyTorch3D's HarmonicEmbedding."""

import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax.nn.embedding import harmonic_embedding, harmonic_embedding_dim


def _pytorch3d_harmonic(x, n, omega0=1.0, logspace=True, append_input=True):
    """pytorch3d/renderer/implicit/harmonic_embedding.py (v0.7.x) forward, in NumPy."""
    if logspace:
        freqs = 2.0 ** np.arange(n, dtype=np.float32)
    else:
        freqs = np.linspace(1.0, 2.0 ** (n - 1), n, dtype=np.float32)
    freqs = freqs * omega0
    embed = x[..., None] * freqs  # [..., dim, n]
    embed = embed[..., None, :, :] + np.array([0.0, 0.5 * np.pi])[:, None, None]  # [..., 2, dim, n]
    embed = np.sin(embed).reshape(*x.shape[:-1], -1)
    return np.concatenate([embed, x], -1) if append_input else embed


@pytest.mark.parametrize(
    "n, omega0, logspace, append",
    [(4, 1.0, True, True), (3, 0.5, False, True), (2, 2.0, True, False)],
)
def test_harmonic_embedding_matches_pytorch3d_layout(n, omega0, logspace, append):
    x = np.random.default_rng(n).normal(size=(2, 5, 3))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)  # view directions
    got = harmonic_embedding(
        jnp.asarray(x, jnp.float32), n, omega0=omega0, logspace=logspace, append_input=append
    )
    ref = _pytorch3d_harmonic(x, n, omega0, logspace, append)
    assert got.shape == ref.shape == (2, 5, harmonic_embedding_dim(3, n, append_input=append))
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_gagavatar_direction_embedding_is_27d_sin_block_cos_block_input():
    d = jnp.array([0.1, -0.2, 0.97])
    e = np.asarray(harmonic_embedding(d))
    assert e.shape == (27,)
    # [sin(x f0..f3), sin(y ..), sin(z ..), cos(x ..), cos(y ..), cos(z ..), x, y, z]
    np.testing.assert_allclose(e[1], np.sin(0.1 * 2), rtol=1e-6)
    np.testing.assert_allclose(e[4], np.sin(-0.2 * 1), rtol=1e-6)
    np.testing.assert_allclose(e[12 + 11], np.cos(0.97 * 8), rtol=1e-5)
    np.testing.assert_allclose(e[24:], d, rtol=1e-7)


def test_harmonic_embedding_rejects_bad_args():
    with pytest.raises(ValueError, match="x must have a last axis"):
        harmonic_embedding(jnp.float32(1.0))
    with pytest.raises(ValueError, match="n_harmonics must be >= 1"):
        harmonic_embedding(jnp.zeros(3), 0)
