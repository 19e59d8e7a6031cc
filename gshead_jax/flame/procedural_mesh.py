"""The stand-in head's mesh topology: a closed head with a mouth, and two eyeballs.

* Head: a latitude-longitude grid of directions from ``procedural_shape.CENTER``
  (poles at the crown and under the neck), denser on the face; rows and
  columns are spaced by arc length. One row runs along the lip line; between
  the mouth corners its vertices are duplicated (upper lip / lower lip), which
  opens a slit.
* Mouth: the slit's rim continues into a closed pocket of rings (lips' inner
  side, teeth ring, cavity) so the head stays a closed, consistently oriented
  surface.
* Eyes: two UV spheres with their pole on the gaze axis (+z), rings denser
  around the iris; they are separate closed components, like FLAME's.
* Exact vertex count: leftover vertices are inserted at face centres on the
  back of the skull (1-to-3 splits), where they change nothing visible.

Vertex order: head grid, the two poles, the upper-lip duplicates, the mouth
pocket, the inserted vertices, left eyeball, right eyeball (FLAME also keeps
its eyeballs last).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gshead_jax.flame import procedural_shape as shp

# Rings of the mouth pocket behind the lip line (upper half; the lower mirrors it):
# 1 the lips' inner side, 2-3 the front face of the teeth down to their edges
# (just short of the lip line, so an open mouth shows them), 4 behind the teeth,
# 5 the cavity; then a cap.
POCKET_DEPTH = (0.002, 0.0035, 0.0045, 0.010, 0.022)
POCKET_HALF_HEIGHT = (0.003, 0.003, -0.0025, 0.010, 0.014)  # teeth edges pass the line
POCKET_LOWER_DEPTH = (0.0, 0.001, 0.001, 0.001, 0.0)  # lower teeth sit behind the upper
POCKET_SHRINK = (0.97, 0.93, 0.9, 0.8, 0.6)
POCKET_CAP_DEPTH = 0.032
POCKET_LIP_RING, POCKET_TEETH_RINGS = 1, (2, 3)
IRIS_ANGLE = 0.56  # radians from the gaze axis (an iris ~6.3 mm in radius)
PUPIL_ANGLE = 0.22


@dataclasses.dataclass
class HeadMesh:
    """Geometry and bookkeeping of the stand-in mesh (NumPy, float64)."""

    verts: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    vt: np.ndarray  # [VT, 2]
    ft: np.ndarray  # [F, 3]
    part: np.ndarray  # [V] 0 head skin, 1 mouth pocket, 2 left eye, 3 right eye
    slit_upper: np.ndarray  # upper-lip duplicates along the lip line
    slit_lower: np.ndarray  # the matching lower-lip vertices
    slit_corners: np.ndarray  # [2] mouth corners (right = -x first)
    pocket_ring: np.ndarray  # [V] ring number in the pocket (1..K, K+1 = cap), else 0
    pocket_side: np.ndarray  # [V] +1 upper half, -1 lower half, 0 corners / cap / else
    eye_angle: np.ndarray  # [V] angle from the gaze axis on eyeballs, else nan
    eye_centres: np.ndarray  # [2, 3] left (+x), right
    lip_lat: float  # latitude of the lip-line row
    opening: np.ndarray  # [V] eye-opening mask of the skin (0 elsewhere)
    lid_shift: np.ndarray  # [V] radial move (along verts - CENTER) that closes the eye


def _arc_spacing(points):
    """Segment lengths along the second-to-last axis. points [..., N, 3] -> [..., N-1]."""
    return np.linalg.norm(np.diff(points, axis=-2), axis=-1)


def _warp(fine, ds, boost, count):
    """`count` samples of `fine` spaced evenly in boosted arc length (endpoints excluded)."""
    w = ds * 0.5 * (boost[1:] + boost[:-1])
    cum = np.concatenate([[0.0], np.cumsum(w)])
    k = np.arange(1, count + 1) / (count + 1)
    return np.interp(k * cum[-1], cum, fine)


def _snap(values, target):
    i = int(np.argmin(np.abs(values - target)))
    values[i] = target
    return i


def _rows(count, lip_lat, boost_face):
    lat = np.linspace(-np.pi / 2, np.pi / 2, 721)
    lons = np.array([0.0, np.pi / 2, np.pi, -np.pi / 2])
    pts = np.stack([shp.surface_points(shp.direction(lo, lat)).points for lo in lons])
    ds = _arc_spacing(pts).mean(axis=0)
    front = pts[0]
    face = shp.smoothstep(shp.CHIN_Y - 0.03, shp.CHIN_Y, front[:, 1]) * shp.smoothstep(
        0.085, 0.06, front[:, 1]
    )
    rows = _warp(lat, ds, 1.0 + boost_face * face, count)
    r_m = _snap(rows, lip_lat)
    return rows, r_m


def _lip_latitude():
    lat = np.linspace(-0.8, 0.2, 2001)
    front = shp.surface_points(shp.direction(0.0, lat)).points
    y = front[:, 1]
    i = int(np.argmin(np.abs(y - shp.MOUTH_Y)))
    return float(lat[i])


def _columns(count, lip_lat, boost_face):
    half = (count - 2) // 2
    lon = np.linspace(0.0, np.pi, 721)
    pts = np.stack([shp.surface_points(shp.direction(lon, la)).points for la in (0.25, lip_lat)])
    ds = _arc_spacing(pts).mean(axis=0)
    boost = 1.0 + boost_face * np.exp(-((lon / 0.75) ** 4))
    pos = _warp(lon, ds, boost, half)
    row = shp.surface_points(shp.direction(lon, lip_lat)).points
    lon_c = float(np.interp(shp.MOUTH_HALF_WIDTH, row[:, 0], lon))
    _snap(pos, lon_c)
    cols = np.concatenate([[-np.pi], -pos[::-1], [0.0], pos])
    return cols, lon_c


def _sphere_rings(n_rings):
    k = np.linspace(0.0, 1.0, n_rings + 2)[1:-1]
    return np.interp(k, [0.0, 0.35, 0.6, 1.0], [0.0, IRIS_ANGLE, 1.2, np.pi])


def _eyeball(centre, n_rings, n_seg, offset, uv_centre):
    """Vertices, faces, vt, ft and gaze angles of one eyeball (front pole first)."""
    theta = _sphere_rings(n_rings)
    phi = np.arange(n_seg) * 2 * np.pi / n_seg
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
    unit = np.concatenate([[[0.0, 0.0, 1.0]], ring.reshape(-1, 3), [[0.0, 0.0, -1.0]]])
    angle = np.concatenate([[0.0], th.reshape(-1), [np.pi]])
    front, back = 0, 1 + n_rings * n_seg

    def rid(r, s):
        return 1 + r * n_seg + (s % n_seg)

    faces = [[front, rid(0, s), rid(0, s + 1)] for s in range(n_seg)]
    for r in range(n_rings - 1):
        for s in range(n_seg):
            faces.append([rid(r, s), rid(r + 1, s), rid(r + 1, s + 1)])
            faces.append([rid(r, s), rid(r + 1, s + 1), rid(r, s + 1)])
    faces += [[back, rid(n_rings - 1, s + 1), rid(n_rings - 1, s)] for s in range(n_seg)]
    faces = np.asarray(faces)
    # Azimuthal equidistant UV around the gaze axis; the back pole gets one vt per face.
    rad = 0.095 * angle / np.pi
    vt = (
        uv_centre
        + rad[:, None]
        * np.stack([np.cos(ph.reshape(-1)), np.sin(ph.reshape(-1))], -1)[
            np.clip(np.arange(len(unit)) - 1, 0, n_rings * n_seg - 1)
        ]
    )
    vt[front] = uv_centre
    mid = phi + np.pi / n_seg
    back_vt = uv_centre + 0.095 * np.stack([np.cos(mid), np.sin(mid)], -1)
    ft = faces.copy()
    ft[-n_seg:, 0] = len(unit) + np.arange(n_seg)
    vt = np.concatenate([vt, back_vt])
    return centre + shp.EYE_RADIUS * unit, faces + offset, vt, ft, angle


def _grid_dims(num_vertices):
    q = np.sqrt(num_vertices / 5023.0)
    n_rings = max(5, int(round(10 * q)))
    n_seg = max(8, 2 * int(round(8 * q)))
    eye_count = 2 * (n_rings * n_seg + 2)
    cols = max(24, 2 * int(round(np.sqrt(max(num_vertices - eye_count, 100) * 1.3) / 2)))
    return n_rings, n_seg, eye_count, cols


def build(num_vertices: int) -> HeadMesh:
    """Builds the mesh with exactly ``num_vertices`` vertices."""
    eye_c = shp.eye_centres()
    n_rings, n_seg, eye_count, n_cols = _grid_dims(num_vertices)
    lip_lat = _lip_latitude()
    cols, _ = _columns(n_cols, lip_lat, boost_face=1.6)
    lip_row = shp.surface_points(shp.direction(cols, lip_lat)).points
    interior = np.nonzero(np.abs(lip_row[:, 0]) < shp.MOUTH_HALF_WIDTH - 1e-9)[0]
    interior = interior[np.abs(cols[interior]) < np.pi / 2]
    j0, j1 = int(interior.min()) - 1, int(interior.max()) + 1
    m = len(interior)
    k_rings = len(POCKET_DEPTH)
    pocket_count = k_rings * (2 * m + 2) + 1
    n_rows = (num_vertices - eye_count - pocket_count - 2 - m) // n_cols
    if n_rows < 12:
        raise ValueError(f"num_vertices={num_vertices} is too small for the stand-in (>= 600)")
    rows, r_m = _rows(n_rows, lip_lat, boost_face=2.2)

    lat, lon = np.meshgrid(rows, cols, indexing="ij")
    grid_dirs = shp.direction(lon, lat).reshape(-1, 3)
    surf = shp.surface_points(grid_dirs, eye_c)
    grid = surf.points
    poles = shp.surface_points(np.array([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]])).points
    n_grid = n_rows * n_cols
    bottom, top = n_grid, n_grid + 1
    up0 = n_grid + 2  # first upper-lip duplicate

    def vid(i, j, upper_band=False):
        j = j % n_cols
        if upper_band and i == r_m and j0 < j < j1:
            return up0 + (j - j0 - 1)
        return i * n_cols + j

    faces = []
    for i in range(n_rows - 1):
        for j in range(n_cols):
            a, b = vid(i, j, True), vid(i, j + 1, True)
            c, d = vid(i + 1, j + 1), vid(i + 1, j)
            faces += [[a, b, c], [a, c, d]]
    faces += [[bottom, vid(0, j + 1), vid(0, j)] for j in range(n_cols)]
    faces += [[top, vid(n_rows - 1, j), vid(n_rows - 1, j + 1)] for j in range(n_cols)]

    # UV of the head: u from longitude (seam at the back, duplicated at u = 1), v from latitude.
    u = 0.5 + cols / (2 * np.pi)
    v = 0.25 + 0.75 * (rows + np.pi / 2) / np.pi
    vt_grid = np.stack(np.broadcast_arrays(u[None, :], v[:, None]), -1).reshape(-1, 2)
    vt_seam = np.stack([np.ones(n_rows), v], -1)  # column 0 again, at u = 1
    n_vt_grid = len(vt_grid)
    mid_u = 0.5 * (u + np.append(u[1:], 1.0))  # between column j and j + 1
    vt_poles = np.concatenate(
        [np.stack([mid_u, np.full(n_cols, 0.25)], -1), np.stack([mid_u, np.ones(n_cols)], -1)]
    )

    def tid(i, j):
        return n_vt_grid + i if j == n_cols else i * n_cols + j

    ft = []
    for i in range(n_rows - 1):
        for j in range(n_cols):
            a, b, c, d = tid(i, j), tid(i, j + 1), tid(i + 1, j + 1), tid(i + 1, j)
            ft += [[a, b, c], [a, c, d]]
    pole_vt0 = n_vt_grid + n_rows
    ft += [[pole_vt0 + j, tid(0, j + 1), tid(0, j)] for j in range(n_cols)]
    ft += [
        [pole_vt0 + n_cols + j, tid(n_rows - 1, j), tid(n_rows - 1, j + 1)] for j in range(n_cols)
    ]
    vt = [vt_grid, vt_seam, vt_poles]

    verts = [grid, poles, grid[[r_m * n_cols + j for j in interior]]]
    slit_lower = np.array([r_m * n_cols + j for j in interior])
    slit_upper = up0 + np.arange(m)
    corners = np.array([r_m * n_cols + j0, r_m * n_cols + j1])

    # The mouth pocket. Its rim loop runs right corner -> upper lip -> left corner ->
    # lower lip, the reverse of how the head faces use those edges.
    loop = np.concatenate([[corners[1]], slit_upper[::-1], [corners[0]], slit_lower])
    side = np.concatenate([[0.0], np.ones(m), [0.0], -np.ones(m)])
    all_verts = np.concatenate(verts)
    rim = all_verts[loop]
    a = np.clip(rim[:, 0] / shp.MOUTH_HALF_WIDTH, -1.0, 1.0)
    taper = np.sqrt(np.clip(1.0 - a * a, 0.0, 1.0))
    base = len(all_verts)
    ring_ids = [loop]
    pocket_pts = []
    for k in range(k_rings):
        p = rim.copy()
        p[:, 0] *= POCKET_SHRINK[k]
        p[:, 1] += side * POCKET_HALF_HEIGHT[k] * (taper if POCKET_HALF_HEIGHT[k] > 0 else 1.0)
        p[:, 2] -= POCKET_DEPTH[k] + POCKET_LOWER_DEPTH[k] * (side < 0)
        pocket_pts.append(p)
        ring_ids.append(base + k * len(loop) + np.arange(len(loop)))
    mid_lip = rim[1 + m // 2] if m else rim[0]
    cap = base + k_rings * len(loop)
    pocket_pts.append([[0.0, mid_lip[1], mid_lip[2] - POCKET_CAP_DEPTH]])
    n_loop = len(loop)
    pocket_faces = []
    for k in range(k_rings):
        r0, r1 = ring_ids[k], ring_ids[k + 1]
        for t in range(n_loop):
            s = (t + 1) % n_loop
            pocket_faces += [[r0[t], r0[s], r1[s]], [r0[t], r1[s], r1[t]]]
    last = ring_ids[-1]
    pocket_faces += [[last[t], last[(t + 1) % n_loop], cap] for t in range(n_loop)]
    # Pocket UV: a strip, loop position across, ring down; seam column duplicated.
    vt_off = sum(len(x) for x in vt)
    pu = 0.45 + 0.55 * np.arange(n_loop + 1) / n_loop
    pv = 0.2 * np.arange(k_rings + 2) / (k_rings + 1)
    vt.append(np.stack(np.broadcast_arrays(pu[None, :], pv[:, None]), -1).reshape(-1, 2))

    def pt(k, t):
        return vt_off + k * (n_loop + 1) + t

    pocket_ft = []
    for k in range(k_rings):
        for t in range(n_loop):
            pocket_ft += [
                [pt(k, t), pt(k, t + 1), pt(k + 1, t + 1)],
                [pt(k, t), pt(k + 1, t + 1), pt(k + 1, t)],
            ]
    pocket_ft += [[pt(k_rings, t), pt(k_rings, t + 1), pt(k_rings + 1, t)] for t in range(n_loop)]
    # The rim loop's vt must be the head's (same vertices): remap ring 0 to the grid vt.
    rim_vt = [tid(r_m, j1)] + [tid(r_m, j) for j in interior[::-1]] + [tid(r_m, j0)]
    rim_vt += [tid(r_m, j) for j in interior] + [rim_vt[0]]
    pocket_ft = np.asarray(pocket_ft)
    first = pocket_ft[: 2 * n_loop]
    for col in range(3):
        is_rim = (first[:, col] >= vt_off) & (first[:, col] < vt_off + n_loop + 1)
        first[is_rim, col] = np.asarray(rim_vt)[first[is_rim, col] - vt_off]

    verts = np.concatenate([all_verts, np.concatenate(pocket_pts)])
    faces = np.concatenate([np.asarray(faces), np.asarray(pocket_faces)])
    ft = np.concatenate([np.asarray(ft), pocket_ft])
    vt = np.concatenate(vt)
    n_head = len(verts)
    pocket_ring = np.zeros(n_head, np.int64)
    pocket_side = np.zeros(n_head)
    for k in range(1, k_rings + 1):
        pocket_ring[ring_ids[k]] = k
        pocket_side[ring_ids[k]] = side
    pocket_ring[cap] = k_rings + 1
    part = np.zeros(n_head, np.int64)
    part[base:] = 1

    opening = np.concatenate([surf.opening, np.zeros(n_head - n_grid)])
    lid_shift = np.concatenate([surf.lid_shift, np.zeros(n_head - n_grid)])
    need = num_vertices - n_head - eye_count
    verts, faces, vt, ft = _fill(verts, faces, vt, ft, need, n_grid)
    extra = len(verts) - n_head
    opening = np.concatenate([opening, np.zeros(extra + eye_count)])
    lid_shift = np.concatenate([lid_shift, np.zeros(extra + eye_count)])
    part = np.concatenate([part, np.zeros(extra, np.int64)])
    pocket_ring = np.concatenate([pocket_ring, np.zeros(extra, np.int64)])
    pocket_side = np.concatenate([pocket_side, np.zeros(extra)])

    eye_angle = np.full(len(verts), np.nan)
    for e, (centre, uv_c) in enumerate(zip(eye_c, ([0.1, 0.1], [0.3, 0.1]))):
        ev, ef, evt, eft, ang = _eyeball(centre, n_rings, n_seg, len(verts), np.array(uv_c))
        eft = eft + len(vt)
        verts = np.concatenate([verts, ev])
        faces = np.concatenate([faces, ef])
        vt = np.concatenate([vt, evt])
        ft = np.concatenate([ft, eft])
        part = np.concatenate([part, np.full(len(ev), 2 + e)])
        pocket_ring = np.concatenate([pocket_ring, np.zeros(len(ev), np.int64)])
        pocket_side = np.concatenate([pocket_side, np.zeros(len(ev))])
        eye_angle = np.concatenate([eye_angle, ang])
    assert len(verts) == num_vertices, (len(verts), num_vertices)
    return HeadMesh(
        verts=verts,
        faces=faces.astype(np.int64),
        vt=vt,
        ft=ft.astype(np.int64),
        part=part,
        slit_upper=slit_upper,
        slit_lower=slit_lower,
        slit_corners=corners,
        pocket_ring=pocket_ring,
        pocket_side=pocket_side,
        eye_angle=eye_angle,
        eye_centres=eye_c,
        lip_lat=lip_lat,
        opening=opening,
        lid_shift=lid_shift,
    )


def _fill(verts, faces, vt, ft, need, n_grid):
    """Inserts `need` vertices at face centres on the back of the skull (1-to-3 splits)."""
    if need < 0:
        raise AssertionError(f"grid overshoots the vertex budget by {-need}")
    if need == 0:
        return verts, faces, vt, ft
    cen = verts[faces].mean(axis=1)
    d = cen - shp.CENTER
    lon = np.arctan2(d[:, 0], d[:, 2])
    lat = np.arcsin(d[:, 1] / np.linalg.norm(d, axis=-1))
    on_grid = (faces < n_grid).all(axis=1)
    cand = np.nonzero(on_grid & (np.abs(lon) > 2.3) & (lat > -0.1) & (lat < 1.1))[0]
    if need > len(cand):
        raise AssertionError(f"{need} vertices to insert but only {len(cand)} faces to split")
    tri = verts[faces[cand]]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    take = np.sort(cand[np.argsort(-area, kind="stable")[:need]])
    dirs = d[take] / np.linalg.norm(d[take], axis=-1, keepdims=True)
    new_v = shp.surface_points(dirs).points
    new_vt = vt[ft[take]].mean(axis=1)
    vi = len(verts) + np.arange(need)
    ti = len(vt) + np.arange(need)
    a, b, c = faces[take].T
    ta, tb, tc = ft[take].T
    faces, ft = faces.copy(), ft.copy()
    faces[take] = np.stack([a, b, vi], -1)
    ft[take] = np.stack([ta, tb, ti], -1)
    faces = np.concatenate([faces, np.stack([b, c, vi], -1), np.stack([c, a, vi], -1)])
    ft = np.concatenate([ft, np.stack([tb, tc, ti], -1), np.stack([tc, ta, ti], -1)])
    return np.concatenate([verts, new_v]), faces, np.concatenate([vt, new_vt]), ft
