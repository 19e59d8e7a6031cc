"""Lifting plane against GAGAvatar's build_points_planes (fixture and NumPy re-derivation)."""

import jax.numpy as jnp
import numpy as np
import pytest
from gagavatar_testing import load_fixture

from gshead_jax import camera
from gshead_jax.nn.lifting import LiftingPlane, lift, lifting_plane

pytestmark = pytest.mark.usefixtures("float32_matmuls")


def _numpy_build_points_planes(size, m, focal=12.0):
    """core/data/loader_track.py build_points_planes, line by line in NumPy."""
    x, y = np.meshgrid(np.linspace(1, -1, size), np.linspace(1, -1, size), indexing="xy")
    r, t = m[:3, :3], m[:3, 3:]
    cam_dirs = (r @ np.array([[0.0], [0.0], [1.0]]))[:, 0]
    rays = np.stack([x / focal, y / focal, np.ones_like(x)], -1).reshape(-1, 3)
    rays = rays @ r.T
    origins = -(r @ t)[:, 0]
    distance = abs(origins @ cam_dirs)
    return origins + distance * rays, cam_dirs


def _viewmat(m):
    # GAGAvatar [R | T] (X_view = R^T X + T, x/y flipped) -> OpenCV world-to-camera.
    flip = np.diag([-1.0, -1.0, 1.0])
    out = np.eye(4)
    out[:3, :3] = flip @ m[:3, :3].T
    out[:3, 3] = flip @ m[:3, 3]
    return out


def test_lifting_plane_matches_official_build_points_planes():
    meta, arrays, _ = load_fixture("lifting.npz")
    size, focal = meta["args"]["plane_size"], meta["args"]["focal"]
    mats = arrays["in/transform_matrix"]
    via_camera = camera.from_gagavatar(mats, width=512, height=512).viewmat
    plane = lifting_plane(via_camera, size=size, focal=focal)  # batched [3, ...]
    assert plane.points.shape == (3, size * size, 3)
    # Scene coordinates are O(1-10): absolute 1e-5 (float32 rounding of R @ T).
    np.testing.assert_allclose(plane.points, arrays["out/plane_points"], atol=1e-5)
    np.testing.assert_allclose(plane.dirs, arrays["out/plane_dirs"], atol=1e-6)
    for i, m in enumerate(mats.astype(np.float64)):
        ref_points, ref_dirs = _numpy_build_points_planes(size, m, focal)
        np.testing.assert_allclose(arrays["out/plane_points"][i], ref_points, atol=1e-5)
        single = lifting_plane(jnp.asarray(_viewmat(m), jnp.float32), size=size, focal=focal)
        np.testing.assert_allclose(single.points, ref_points, atol=1e-5)
        np.testing.assert_allclose(single.dirs, ref_dirs, atol=1e-6)


def _look_at(eye):
    """OpenCV world-to-camera matrix of a camera at ``eye`` looking at the origin."""
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # right-handed: x cross y = z
    view = np.eye(4)
    view[:3, :3] = np.stack([x, y, z])
    view[:3, 3] = -view[:3, :3] @ eye
    return view


def test_lifting_plane_geometry_and_lift():
    size, focal, width = 5, 12.0, 64
    view = _look_at(np.array([3.0, -2.0, -8.5]))
    plane = lifting_plane(jnp.asarray(view, jnp.float32), size=size, focal=focal)
    pts, z = np.asarray(plane.points, np.float64), np.asarray(plane.dirs, np.float64)
    np.testing.assert_allclose(z, view[2, :3], atol=1e-6)
    # The plane passes through the origin and faces the camera.
    np.testing.assert_allclose(pts @ z, 0.0, atol=1e-5)
    # In the camera frame, grid (i, j) projects to pixel (j, i) * W / (P - 1): the
    # corner samples sit exactly on the image border (align-corners grid).
    cam = pts @ view[:3, :3].T + view[:3, 3]
    fx = focal * width / 2
    pix = fx * cam[:, :2] / cam[:, 2:] + width / 2
    jj, ii = np.meshgrid(np.arange(size), np.arange(size), indexing="xy")
    want = np.stack([jj, ii], -1).reshape(-1, 2) * width / (size - 1)
    np.testing.assert_allclose(pix, want, atol=1e-3)
    d = np.linspace(0.0, 1.0, size * size, dtype=np.float32)[:, None]
    fwd = np.asarray(lift(plane, jnp.asarray(d), +1.0))
    back = np.asarray(lift(plane, jnp.asarray(d), -1.0))
    np.testing.assert_allclose(fwd - pts, d * z, atol=1e-5)
    np.testing.assert_allclose(back - pts, -d * z, atol=1e-5)
    # +1 pushes away from the camera: depth grows by exactly d.
    depth = (fwd @ view[:3, :3].T + view[:3, 3])[:, 2]
    np.testing.assert_allclose(depth - cam[:, 2], d[:, 0], atol=1e-5)


def test_lifting_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"viewmat must be \[..., 4, 4\]"):
        lifting_plane(jnp.eye(3))
    plane = LiftingPlane(jnp.zeros((4, 3)), jnp.array([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="distances must be"):
        lift(plane, jnp.zeros((5, 1)), 1.0)
