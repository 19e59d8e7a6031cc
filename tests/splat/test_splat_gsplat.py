"""On the GPU machine: our backends against gsplat 1.5.3 itself (torch, CUDA).

Skipped without a GPU or without gsplat. gsplat evaluates exp with the fast
__expf intrinsic and its radii with __logf, so agreement is to ~1e-5, not bit
for bit, and an intersection count may differ where a radius sits within float
rounding of an integer.
"""

import numpy as np
import pytest
from splat_testing import ARGS, BACKENDS, random_scene, render


def _gsplat(scene, width, height):
    gsplat = pytest.importorskip("gsplat")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("gsplat needs CUDA")
    t = {k: torch.from_numpy(np.asarray(scene[k])).cuda() for k in (*ARGS, "background")}
    colors, alphas, meta = gsplat.rasterization(
        t["means"],
        t["quats"],
        t["scales"],
        t["opacities"],
        t["features"],
        t["viewmat"][None],
        t["K"][None],
        width,
        height,
        near_plane=0.01,
        far_plane=1e10,
        eps2d=0.3,
        packed=False,
        sh_degree=None,
        tile_size=16,
        backgrounds=t["background"][None],
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    c = scene["features"].shape[1]
    out = colors[0].cpu().numpy()
    return out[..., :c], alphas[0].cpu().numpy(), out[..., c:], int(meta["flatten_ids"].numel())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("channels", [3, 32])
def test_matches_gsplat(backend, channels):
    width, height = 64, 48
    scene = random_scene(11, 256, width, height, channels)
    image, alpha, depth, count = _gsplat(scene, width, height)
    ours = render(backend, scene, width, height)
    assert abs(int(ours.num_intersections) - count) <= max(2, count // 1000)
    assert np.max(np.abs(ours.image - image)) < 1e-4
    assert np.max(np.abs(ours.alpha - alpha)) < 1e-4
    # gsplat's expected depth divides by 1 - T (cancellation near alpha = 1/255).
    drawn = alpha[..., 0] > 0.05
    np.testing.assert_allclose(ours.depth[drawn], depth[drawn], rtol=1e-4)
