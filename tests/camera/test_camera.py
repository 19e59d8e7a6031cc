"""Camera conventions: OpenCV vs GAGAvatar / PyTorch3D, intrinsics, projection."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gshead_jax import camera


def _random_transforms(rng, n):
    """GAGAvatar-style [R | T] (PyTorch3D row-vector world-to-view), head in front."""
    rot = Rotation.random(n, random_state=rng.integers(1 << 31)).as_matrix()
    t = np.concatenate([rng.normal(scale=0.3, size=(n, 2)), rng.uniform(8, 10, (n, 1))], -1)
    return np.concatenate([rot, t[..., None]], axis=-1)


def _gagavatar_projection(transform, points, focal, size):
    """GAGAvatar's renderer in NumPy: build_camera_matrices (core/libs/utils_renderer.py)
    and the 3DGS rasteriser's projection (row vectors, ndc2Pix pixel centres at integers)."""
    view = np.eye(4)
    view[:3, :3] = transform[:3, :3]
    view[3, :3] = transform[:3, 3]
    view[:, :2] *= -1.0
    fov = 2 * math.atan(1.0 / focal)
    znear, zfar = 0.01, 100.0
    proj = np.zeros((4, 4))
    proj[0, 0] = proj[1, 1] = 1.0 / math.tan(fov / 2)
    proj[3, 2] = 1.0
    proj[2, 2] = zfar / (zfar - znear)
    proj[2, 3] = -(zfar * znear) / (zfar - znear)
    full = view @ proj.T
    homo = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    clip = homo @ full
    ndc = clip[:, :2] / clip[:, 3:]
    pix = ((ndc + 1.0) * size - 1.0) * 0.5  # ndc2Pix: pixel j's centre is at j
    depth = (homo @ view)[:, 2]
    return pix + 0.5, depth  # the package's convention: centre of pixel j at j + 0.5


def test_gagavatar_roundtrip_is_identity():
    m = _random_transforms(np.random.default_rng(0), 8).reshape(2, 4, 3, 4)
    cam = camera.from_gagavatar(m, width=512, height=512)
    assert cam.viewmat.shape == (2, 4, 4, 4) and cam.K.shape == (2, 4, 3, 3)
    np.testing.assert_allclose(np.asarray(camera.to_gagavatar(cam)), m, atol=1e-6)
    # ... and OpenCV -> GAGAvatar -> OpenCV too.
    back = camera.from_gagavatar(camera.to_gagavatar(cam), width=512, height=512)
    np.testing.assert_allclose(np.asarray(back.viewmat), np.asarray(cam.viewmat), atol=1e-6)


def test_known_point_projects_to_expected_pixel():
    # GAGAvatar's frontal camera: PyTorch3D R = diag(-1, 1, -1), T = (0, 0, 9.3), i.e.
    # a camera at world (0, 0, 9.3) looking down -z at the head.
    m = np.array([[-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, -1.0, 9.3]])
    cam = camera.from_gagavatar(m, width=512, height=512)
    point = np.array([[0.5, 0.25, 0.0]])
    pixels, depth = camera.project(cam, point)
    # By hand: fx = fy = 12 * 512 / 2 = 3072 px, principal point (256, 256); the
    # camera sees world +x to the right and world +y up (image v decreases).
    expected = [256.0 + 3072.0 * 0.5 / 9.3, 256.0 - 3072.0 * 0.25 / 9.3]
    np.testing.assert_allclose(np.asarray(pixels)[0], expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(depth), [9.3], rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(cam.K), [[3072.0, 0, 256.0], [0, 3072.0, 256.0], [0, 0, 1]], rtol=1e-7
    )
    np.testing.assert_allclose(np.asarray(cam.position), [0, 0, 9.3], atol=1e-6)


@pytest.mark.parametrize("size", [512, 256])
def test_projection_agrees_with_gagavatar_renderer(size):
    rng = np.random.default_rng(size)
    transforms = _random_transforms(rng, 3)
    points = rng.normal(scale=0.6, size=(3, 50, 3))
    cams = camera.from_gagavatar(transforms, width=size, height=size)
    pixels, depth = camera.project(cams, points)
    for i in range(3):
        ref_pix, ref_depth = _gagavatar_projection(transforms[i], points[i], 12.0, size)
        np.testing.assert_allclose(np.asarray(pixels[i]), ref_pix, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(np.asarray(depth[i]), ref_depth, rtol=1e-5)


def test_camera_centre_and_axis_match_gagavatar_point_planes():
    # GAGAvatar's build_points_planes (core/data/loader_track.py): the camera centre
    # is -R @ T and the viewing direction is R @ (0, 0, 1).
    m = _random_transforms(np.random.default_rng(3), 4)
    cam = camera.from_gagavatar(m, width=512, height=512)
    r, t = m[:, :3, :3], m[:, :3, 3]
    np.testing.assert_allclose(np.asarray(cam.position), -np.einsum("nij,nj->ni", r, t), atol=1e-5)
    np.testing.assert_allclose(np.asarray(cam.forward), r[:, :, 2], atol=1e-6)


def _p3d_look_at_view_transform(dist, elev, azim):
    """PyTorch3D's look_at_view_transform (degrees), at the origin, up +y, in NumPy."""
    e, a = np.radians(elev), np.radians(azim)
    c = dist * np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
    z = -c / np.linalg.norm(c)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z], axis=1)  # columns are the view axes
    return np.concatenate([r, (-r.T @ c)[:, None]], axis=1)


def test_orbit_matches_gagavatar_multiview_camera():
    # GAGAvatar's inference.py build_camera: look_at_view_transform(9.3, 5, angle).
    for azim in (-30.0, 0.0, 45.0):
        cam = camera.orbit(
            np.radians(azim), np.radians(5.0), 9.3, focal=12.0, width=512, height=512
        )
        ref = _p3d_look_at_view_transform(9.3, 5.0, azim)
        np.testing.assert_allclose(np.asarray(camera.to_gagavatar(cam)), ref, atol=1e-5)
        pixels, _ = camera.project(cam, np.zeros((1, 3)))
        np.testing.assert_allclose(np.asarray(pixels), [[256.0, 256.0]], atol=1e-3)


def test_look_at_frames_the_head_and_batches_with_vmap():
    cams = camera.head_camera(jnp.array([0.0, 0.4, -0.4]), 0.0, width=256, height=192)
    assert cams.batch_shape == (3,) and (cams.width, cams.height) == (256, 192)
    np.testing.assert_allclose(np.asarray(cams.K[0]), [[1536, 0, 128], [0, 1152, 96], [0, 0, 1]])
    # A 0.25 m tall head at FLAME scale 5 spans 12 * 0.25 / 1.86 of the half-height.
    top_bottom = np.array([[0.0, 0.125, 0.0], [0.0, -0.125, 0.0]]) * 5.0
    pixels, depth = camera.project(cams, np.broadcast_to(top_bottom, (3, 2, 3)))
    span = float(pixels[0, 1, 1] - pixels[0, 0, 1])
    np.testing.assert_allclose(span, 12.0 * 0.25 / 1.86 * 96, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(depth[0]), [9.3, 9.3], rtol=1e-5)
    # vmap over the camera batch gives the batched projection.
    points = np.random.default_rng(0).normal(size=(3, 7, 3))
    vm = jax.vmap(camera.project)(cams, points)
    ref = camera.project(cams, points)
    np.testing.assert_allclose(np.asarray(vm[0]), np.asarray(ref[0]), rtol=1e-6)
    # Same normalised focal, any size: the same field of view.
    k = camera.intrinsics(12.0, 1024, 1024)
    assert float(k[0, 0]) == 12.0 * 512 and float(k[0, 2]) == 512.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"transform_matrix must be \[\.\.\., 3, 4\]"):
        camera.from_gagavatar(np.zeros((3, 3)), width=512, height=512)
    with pytest.raises(TypeError, match="width must be a positive int"):
        camera.from_gagavatar(np.zeros((3, 4)), width=512.0, height=512)
    with pytest.raises(ValueError, match="exactly one of K"):
        camera.look_at((0.0, 0.0, 1.0), K=np.eye(3), focal=12.0, width=8, height=8)
    cam = camera.head_camera()
    with pytest.raises(ValueError, match=r"points must be \[\.\.\., P, 3\]"):
        camera.project(cam, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="incompatible batch"):
        camera.make_camera(np.zeros((2, 4, 4)), np.zeros((3, 3, 3)), width=8, height=8)
