"""Pinhole cameras and every camera-convention conversion of the package.

The package's one convention is OpenCV's, as gsplat uses it:

* ``viewmat`` [4, 4] maps world to camera coordinates; the camera looks down
  +z, x points right and y points down in the image.
* ``K`` [3, 3] is in pixels; pixel (i, j) (row i, column j) has its centre at
  (j + 0.5, i + 0.5), so a centred principal point is (W / 2, H / 2).

GAGAvatar's convention, used by its tracker, data (``optim.pkl``) and
renderer, converts through :func:`from_gagavatar` and :func:`to_gagavatar`:

* ``transform_matrix`` [3, 4] = [R | T] is a PyTorch3D world-to-view transform
  in row-vector form, ``X_view = X_world @ R + T``, in PyTorch3D's view frame
  (x left, y up, z forward). Its renderer (``core/libs/utils_renderer.py``,
  ``build_camera_matrices``) copies R and T into a row-vector 4x4 matrix and
  negates its first two columns, i.e. flips x and y: that is exactly the
  OpenCV frame, ``X_cv = diag(-1, -1, 1) (R^T X_world + T)``.
* The focal length is normalised: ``FOCAL_LENGTH = 12`` and the rasteriser's
  ``tanfovx = 1 / focal``, so ``fx = focal * W / 2`` pixels with the principal
  point at the image centre (the 3DGS rasteriser's ``ndc2Pix`` maps NDC -1..1
  onto the image edges; PyTorch3D's ``PerspectiveCameras`` with
  ``principal_point=0`` agrees for the square images GAGAvatar uses).
* World units are FLAME's metres times ``FLAME_SCALE = 5`` (GAGAvatar's data
  config); its demo camera (``inference.py``, ``build_camera``) sits 9.3 units
  from the origin, i.e. 1.86 m in FLAME metres.

Batching: every array of a :class:`Camera` may carry the same leading batch
dimensions; ``jax.vmap`` over a camera maps over them (``width`` and
``height`` are static metadata).
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Camera",
    "GAGAVATAR_DISTANCE",
    "GAGAVATAR_FLAME_SCALE",
    "GAGAVATAR_FOCAL",
    "from_gagavatar",
    "from_normalized_focal",
    "head_camera",
    "intrinsics",
    "look_at",
    "make_camera",
    "orbit",
    "project",
    "to_gagavatar",
]

# GAGAvatar's constants (core/data/loader_track.py, configs/data/vfhq.yaml, inference.py).
GAGAVATAR_FOCAL = 12.0
GAGAVATAR_FLAME_SCALE = 5.0
GAGAVATAR_DISTANCE = 9.3  # in GAGAvatar world units (FLAME metres x 5)

# diag(-1, -1, 1): PyTorch3D view frame (x left, y up) <-> OpenCV (x right, y down).
_FLIP_XY = np.array([-1.0, -1.0, 1.0])


@flax.struct.dataclass
class Camera:
    """A batch of pinhole cameras in the OpenCV convention.

    Attributes:
        viewmat: World-to-camera transforms (OpenCV: x right, y down, z forward).
            [..., 4, 4]
        K: Intrinsics in pixels, pixel centres at +0.5. [..., 3, 3]
        width: Image width in pixels (static).
        height: Image height in pixels (static).
    """

    viewmat: jax.Array
    K: jax.Array
    width: int = flax.struct.field(pytree_node=False)
    height: int = flax.struct.field(pytree_node=False)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading batch dimensions of the camera arrays."""
        return tuple(self.viewmat.shape[:-2])

    @property
    def rotation(self) -> jax.Array:
        """World-to-camera rotation. [..., 3, 3]"""
        return self.viewmat[..., :3, :3]

    @property
    def translation(self) -> jax.Array:
        """World-to-camera translation. [..., 3]"""
        return self.viewmat[..., :3, 3]

    @property
    def position(self) -> jax.Array:
        """Camera centre in world coordinates, ``-R^T t``. [..., 3]"""
        r, t = self.rotation, self.translation
        return -jnp.einsum("...ji,...j->...i", r, t, precision=jax.lax.Precision.HIGHEST)

    @property
    def forward(self) -> jax.Array:
        """Unit viewing direction (camera +z) in world coordinates. [..., 3]"""
        return self.rotation[..., 2, :]


def _check_size(width, height):
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise TypeError(f"{name} must be a positive int (static), got {value!r}")
    return int(width), int(height)


def _check_last(name, x, trailing):
    x = jnp.asarray(x)
    if x.ndim < len(trailing) or tuple(x.shape[x.ndim - len(trailing) :]) != trailing:
        spec = ", ".join(str(t) for t in trailing)
        raise ValueError(f"{name} must be [..., {spec}], got {x.shape}")
    return x


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def make_camera(viewmat, K, *, width: int, height: int) -> Camera:
    """Builds a :class:`Camera` after checking shapes.

    Args:
        viewmat: World-to-camera transforms, OpenCV. [..., 4, 4]
        K: Intrinsics in pixels. [..., 3, 3]
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        The camera, with ``viewmat`` and ``K`` broadcast to common batch dims.
    """
    width, height = _check_size(width, height)
    viewmat = _float(_check_last("viewmat", viewmat, (4, 4)))
    K = _float(_check_last("K", K, (3, 3)))
    try:
        batch = jnp.broadcast_shapes(viewmat.shape[:-2], K.shape[:-2])
    except ValueError:
        raise ValueError(
            f"viewmat {viewmat.shape} and K {K.shape} have incompatible batch dimensions"
        ) from None
    viewmat = jnp.broadcast_to(viewmat, batch + (4, 4))
    K = jnp.broadcast_to(K, batch + (3, 3))
    return Camera(viewmat=viewmat, K=K, width=width, height=height)


def intrinsics(focal_norm, width: int, height: int, *, dtype=jnp.float32) -> jax.Array:
    """Intrinsics in pixels from a normalised focal length (GAGAvatar's focal 12).

    GAGAvatar sets ``tanfovx = tanfovy = 1 / focal`` (``utils_renderer.py``), so
    the image spans ``[-1/focal, 1/focal]`` of ``x/z`` edge to edge:
    ``fx = focal * W / 2``, ``fy = focal * H / 2``, principal point ``(W/2, H/2)``
    (the image centre with pixel centres at +0.5). The same normalised focal
    gives the same field of view at any image size.

    Args:
        focal_norm: Normalised focal length(s). [...]
        width: Image width in pixels.
        height: Image height in pixels.
        dtype: Float dtype of the result.

    Returns:
        Intrinsics. [..., 3, 3]

    Example:
        >>> K = intrinsics(12.0, 512, 512)  # fx = fy = 3072, cx = cy = 256
    """
    width, height = _check_size(width, height)
    return _intrinsics(jnp.asarray(focal_norm, dtype), width, height)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _intrinsics(f, width, height):
    zero, one = jnp.zeros_like(f), jnp.ones_like(f)
    rows = [
        [f * (width / 2.0), zero, zero + width / 2.0],
        [zero, f * (height / 2.0), zero + height / 2.0],
        [zero, zero, one],
    ]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def from_normalized_focal(viewmat, focal_norm=GAGAVATAR_FOCAL, *, width: int, height: int):
    """A :class:`Camera` from a view matrix and a normalised focal length.

    Args:
        viewmat: World-to-camera transforms, OpenCV. [..., 4, 4]
        focal_norm: Normalised focal length (see :func:`intrinsics`). [...] or scalar
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        The camera.
    """
    viewmat = _check_last("viewmat", viewmat, (4, 4))
    dtype = viewmat.dtype if jnp.issubdtype(viewmat.dtype, jnp.floating) else jnp.float32
    return make_camera(
        viewmat, intrinsics(focal_norm, width, height, dtype=dtype), width=width, height=height
    )


def _intrinsics_arg(K, focal, width, height, dtype):
    if (K is None) == (focal is None):
        raise ValueError("give exactly one of K (pixels) or focal (normalised, e.g. 12.0)")
    if K is not None:
        return _check_last("K", K, (3, 3))
    return intrinsics(focal, width, height, dtype=dtype)


def _viewmat_from_axes(rows, eye):
    """[R | -R eye] from camera axes given as world-space rows. rows: [..., 3, 3]."""
    t = -jnp.einsum("...ij,...j->...i", rows, eye, precision=jax.lax.Precision.HIGHEST)
    top = jnp.concatenate([rows, t[..., None]], axis=-1)  # [..., 3, 4]
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], rows.dtype), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


@jax.jit
def _look_at(eye, target, up):
    z = target - eye
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    x = jnp.cross(z, up)  # forward x up = right, for a y-down image
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    y = jnp.cross(z, x)  # completes the right-handed frame: image down
    rows = jnp.stack(jnp.broadcast_arrays(x, y, z), axis=-2)
    return _viewmat_from_axes(rows, jnp.broadcast_to(eye, rows.shape[:-1]))


def look_at(
    eye,
    target=(0.0, 0.0, 0.0),
    up=(0.0, 1.0, 0.0),
    *,
    K=None,
    focal=None,
    width: int,
    height: int,
) -> Camera:
    """A camera at ``eye`` looking at ``target``, with world ``up`` up in the image.

    Args:
        eye: Camera centres in world coordinates. [..., 3]
        target: Points the cameras look at. [..., 3]
        up: World up direction (appears upward in the image, i.e. -y in OpenCV). [..., 3]
        K: Intrinsics in pixels. [..., 3, 3] (exclusive with ``focal``)
        focal: Normalised focal length, e.g. GAGAvatar's 12. (exclusive with ``K``)
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        The camera(s), batch dims broadcast from the arguments.

    Example:
        >>> cam = look_at((0.0, 0.0, 1.86), focal=12.0, width=512, height=512)
        >>> pixels, depth = project(cam, jnp.zeros((1, 3)))  # (256, 256), 1.86
    """
    width, height = _check_size(width, height)
    eye = _float(_check_last("eye", eye, (3,)))
    target = _check_last("target", target, (3,)).astype(eye.dtype)
    up = _check_last("up", up, (3,)).astype(eye.dtype)
    viewmat = _look_at(eye, target, up)
    return make_camera(
        viewmat, _intrinsics_arg(K, focal, width, height, eye.dtype), width=width, height=height
    )


@jax.jit
def _orbit_eye(yaw, pitch, radius, target):
    direction = jnp.stack(
        jnp.broadcast_arrays(
            jnp.cos(pitch) * jnp.sin(yaw), jnp.sin(pitch), jnp.cos(pitch) * jnp.cos(yaw)
        ),
        axis=-1,
    )
    return target + radius[..., None] * direction


def orbit(
    yaw,
    pitch,
    radius,
    *,
    target=(0.0, 0.0, 0.0),
    K=None,
    focal=None,
    width: int,
    height: int,
) -> Camera:
    """A camera on a sphere around ``target``, looking at it, world +y up.

    The camera centre is ``target + radius * (cos(pitch) sin(yaw), sin(pitch),
    cos(pitch) cos(yaw))``: yaw = pitch = 0 looks down -z at a FLAME face
    (which looks +z); yaw > 0 moves the camera towards +x (the subject's left),
    pitch > 0 raises it so it looks down. This is PyTorch3D's
    ``look_at_view_transform(dist=radius, elev=pitch, azim=yaw)`` (degrees there,
    radians here), which GAGAvatar's multi-view demo (``inference.py``,
    ``build_camera``) uses.

    Args:
        yaw: Azimuth about world +y, radians. [...]
        pitch: Elevation, radians, |pitch| < pi/2. [...]
        radius: Distance from ``target``. [...]
        target: Orbit centre. [..., 3]
        K: Intrinsics in pixels. [..., 3, 3] (exclusive with ``focal``)
        focal: Normalised focal length. (exclusive with ``K``)
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        The camera(s).
    """
    yaw, pitch, radius = (_float(v) for v in (yaw, pitch, radius))
    dtype = jnp.result_type(yaw, pitch, radius)
    target = _check_last("target", target, (3,)).astype(dtype)
    eye = _orbit_eye(yaw, pitch, jnp.asarray(radius, dtype), target)
    return look_at(eye, target, K=K, focal=focal, width=width, height=height)


def head_camera(
    yaw=0.0,
    pitch=0.0,
    *,
    width: int = 512,
    height: int = 512,
    focal: float = GAGAVATAR_FOCAL,
    distance: float = GAGAVATAR_DISTANCE / GAGAVATAR_FLAME_SCALE,
    flame_scale: float = GAGAVATAR_FLAME_SCALE,
    target=(0.0, 0.0, 0.0),
) -> Camera:
    """GAGAvatar's typical source camera: a FLAME head framed in front of the lens.

    The camera orbits FLAME's origin (the head centre) at ``distance`` FLAME
    metres (1.86 m: GAGAvatar's demo camera, 9.3 units at FLAME x 5) with the
    normalised focal 12, so a 0.25 m head fills about 80 % of the image, as in
    GAGAvatar's tracked crops. The returned camera works in world units of
    FLAME metres x ``flame_scale`` (default 5, GAGAvatar's world); pass
    ``flame_scale=1`` to render FLAME vertices as they are.

    Args:
        yaw: Azimuth, radians (see :func:`orbit`). [...]
        pitch: Elevation, radians (see :func:`orbit`). [...]
        width: Image width in pixels.
        height: Image height in pixels.
        focal: Normalised focal length.
        distance: Camera distance from ``target`` in FLAME metres.
        flame_scale: World units per FLAME metre.
        target: Orbit centre in FLAME metres. [3]

    Returns:
        The camera(s).
    """
    target = jnp.asarray(target, jnp.float32) * flame_scale
    return orbit(
        yaw,
        pitch,
        distance * flame_scale,
        target=target,
        focal=focal,
        width=width,
        height=height,
    )


@jax.jit
def _from_p3d(m):
    flip = jnp.asarray(_FLIP_XY, m.dtype)
    r_cv = flip[:, None] * jnp.swapaxes(m[..., :3, :3], -1, -2)
    t_cv = flip * m[..., :3, 3]
    top = jnp.concatenate([r_cv, t_cv[..., None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], m.dtype), m.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def from_gagavatar(transform_matrix, *, width: int, height: int, focal=GAGAVATAR_FOCAL) -> Camera:
    """Converts GAGAvatar's / PyTorch3D's ``transform_matrix`` [R | T] to a camera.

    GAGAvatar stores ``X_view = X_world @ R + T`` (row vectors, PyTorch3D view
    frame x left, y up, z forward); its renderer flips x and y to get the
    camera frame of the 3DGS rasteriser (``build_camera_matrices``), which is
    OpenCV's. Hence ``viewmat = [[F R^T, F T], [0, 1]]`` with
    ``F = diag(-1, -1, 1)``. The world frame is unchanged (GAGAvatar's world is
    FLAME x 5).

    Args:
        transform_matrix: GAGAvatar / PyTorch3D world-to-view [R | T]. [..., 3, 4]
        width: Image width in pixels.
        height: Image height in pixels.
        focal: Normalised focal length (GAGAvatar: 12). [...] or scalar

    Returns:
        The camera, OpenCV convention.

    Example:
        >>> cam = from_gagavatar(record["transform_matrix"], width=512, height=512)
    """
    m = _float(_check_last("transform_matrix", transform_matrix, (3, 4)))
    viewmat = _from_p3d(m)
    return from_normalized_focal(viewmat, focal, width=width, height=height)


def to_gagavatar(camera: Camera) -> jax.Array:
    """The inverse of :func:`from_gagavatar`'s extrinsics: ``[R | T]``, [..., 3, 4].

    ``R = R_cv^T F`` and ``T = F t_cv`` with ``F = diag(-1, -1, 1)``. The
    intrinsics are not represented (GAGAvatar's focal is a constant, 12).

    Args:
        camera: OpenCV camera(s).

    Returns:
        GAGAvatar / PyTorch3D world-to-view [R | T]. [..., 3, 4]
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a Camera, got {type(camera).__name__}")
    return _to_p3d(camera.viewmat)


@jax.jit
def _to_p3d(viewmat):
    flip = jnp.asarray(_FLIP_XY, viewmat.dtype)
    r = jnp.swapaxes(viewmat[..., :3, :3], -1, -2) * flip  # scales columns: R_cv^T F
    t = flip * viewmat[..., :3, 3]
    return jnp.concatenate([r, t[..., None]], axis=-1)


def project(camera: Camera, points) -> tuple[jax.Array, jax.Array]:
    """Projects world points to pixel coordinates and camera depth.

    Pixel coordinates follow gsplat: the centre of pixel (row i, column j) is
    (j + 0.5, i + 0.5). No clipping: points at depth <= 0 give meaningless
    pixels, so callers mask with ``depth > near``.

    Args:
        camera: Camera(s) with batch dims [...] (or none).
        points: World points; leading dims broadcast with the camera's. [..., P, 3]

    Returns:
        pixels: (u, v) in pixels. [..., P, 2]
        depth: Camera-space z. [..., P]

    Example:
        >>> pixels, depth = project(head_camera(flame_scale=1.0), vertices)
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a Camera, got {type(camera).__name__}")
    points = jnp.asarray(points)
    if points.ndim < 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be [..., P, 3], got {points.shape}")
    return _project(camera.viewmat, camera.K, points)


@jax.jit
def _project(viewmat, K, points):
    rot = viewmat[..., None, :3, :3]  # [..., 1, 3, 3]
    cam = jnp.einsum("...ij,...j->...i", rot, points, precision=jax.lax.Precision.HIGHEST)
    cam = cam + viewmat[..., None, :3, 3]
    depth = cam[..., 2]
    k = K[..., None, :, :]
    xy = cam[..., :2] / depth[..., None]
    u = k[..., 0, 0] * xy[..., 0] + k[..., 0, 1] * xy[..., 1] + k[..., 0, 2]
    v = k[..., 1, 1] * xy[..., 1] + k[..., 1, 2]
    return jnp.stack([u, v], axis=-1), depth
