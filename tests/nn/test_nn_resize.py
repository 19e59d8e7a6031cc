"""PyTorch-exact bilinear resampling of feature maps, against torch's interpolate itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax.nn.resize import downsample2x, resize_bilinear, upsample2x

torch = pytest.importorskip("torch")
F = torch.nn.functional


pytestmark = pytest.mark.usefixtures("float32_matmuls")


# (in_h, in_w, out_h, out_w): GAGAvatar's sizes (518 -> 148/74/37/19 image pyramid,
# 19 -> 37 -> 74 -> 148 -> 296 fusion) plus odd, non-square and shrinking cases.
SIZES = [(518, 518, 148, 19), (19, 37, 37, 74), (148, 20, 296, 40), (32, 40, 24, 24), (5, 7, 13, 3)]


def _torch(x, **kw):
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    return F.interpolate(t, mode="bilinear", **kw).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("in_h, in_w, out_h, out_w", SIZES)
def test_resize_matches_torch_interpolate(in_h, in_w, out_h, out_w):
    x = np.random.default_rng(in_h).standard_normal((2, in_h, in_w, 3)).astype(np.float32)
    xj = jnp.asarray(x)
    size = (out_h, out_w)
    for align in (True, False):
        np.testing.assert_allclose(
            resize_bilinear(xj, size, align_corners=align),
            _torch(x, size=size, align_corners=align),
            atol=1e-5,
            err_msg=f"align={align}",
        )


def test_scale_factor_two_paths_match_torch():
    x = np.random.default_rng(1).standard_normal((2, 6, 10, 4)).astype(np.float32)
    up = _torch(x, scale_factor=2, align_corners=False)
    down = _torch(x, scale_factor=0.5, align_corners=False)
    np.testing.assert_allclose(upsample2x(jnp.asarray(x)), up, atol=1e-6)
    np.testing.assert_allclose(downsample2x(jnp.asarray(x)), down, atol=1e-6)
    # align_corners=True ignores scale_factor (source = i (in-1)/(out-1)).
    np.testing.assert_allclose(
        resize_bilinear(jnp.asarray(x), (12, 20), align_corners=True),
        _torch(x, scale_factor=2, align_corners=True),
        atol=1e-6,
    )


def test_resize_gradients_match_torch():
    x = np.random.default_rng(2).standard_normal((1, 9, 7, 2)).astype(np.float32)
    g = np.random.default_rng(3).standard_normal((1, 4, 11, 2)).astype(np.float32)
    for align in (True, False):
        t = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_(True)
        y = F.interpolate(t, size=(4, 11), mode="bilinear", align_corners=align)
        y.backward(torch.from_numpy(g).permute(0, 3, 1, 2))
        ref = t.grad.permute(0, 2, 3, 1).numpy()
        fn = lambda a, align=align: resize_bilinear(a, (4, 11), align_corners=align)  # noqa: E731
        got = jax.vjp(fn, jnp.asarray(x))[1](jnp.asarray(g))[0]
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=f"align={align}")


def test_resize_rejects_bad_input():
    with pytest.raises(ValueError, match=r"x must be \[B, H, W, C\]"):
        resize_bilinear(jnp.zeros((4, 4, 3)), 2, align_corners=True)
    with pytest.raises(ValueError, match="size must be"):
        resize_bilinear(jnp.zeros((1, 4, 4, 3)), (0, 2), align_corners=False)
    with pytest.raises(ValueError, match="even height and width"):
        downsample2x(jnp.zeros((1, 5, 4, 3)))
