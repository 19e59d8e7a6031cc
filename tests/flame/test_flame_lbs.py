"""FLAME forward vs an independent NumPy LBS, on files in the official formats."""

import flame_files
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gshead_jax import flame


def numpy_lbs(a, shape, expression, pose, translation):
    """FLAME's LBS written out with 4x4 matrices, one frame. pose [5, 3] (global, neck,
    jaw, left eye, right eye). Follows the paper: blendshapes, regressed joints,
    (R - I) pose correctives, rigid chain, transforms relative to the rest joints."""
    sd = a["shapedirs"]
    betas = np.zeros(sd.shape[-1])
    betas[: len(shape)] = shape
    betas[300 : 300 + len(expression)] = expression
    v_shaped = a["v_template"] + sd @ betas
    joints = a["J_regressor"] @ v_shaped
    rots = Rotation.from_rotvec(pose).as_matrix()
    feature = np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
    v_posed = v_shaped + a["posedirs"] @ feature
    parents = [-1, 0, 1, 1, 1]
    world = []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if j else 0.0)
        world.append(local if j == 0 else world[parents[j]] @ local)
    skin = []
    for j in range(5):
        rest = np.eye(4)
        rest[:3, 3] = -joints[j]
        skin.append(world[j] @ rest)
    blended = np.einsum("vj,jab->vab", a["weights"], np.stack(skin))
    homo = np.concatenate([v_posed, np.ones((len(v_posed), 1))], axis=1)
    verts = np.einsum("vab,vb->va", blended, homo)[:, :3] + translation
    posed_joints = np.stack([w[:3, 3] for w in world]) + translation
    return verts, posed_joints


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    rng = np.random.default_rng(7)
    arrays = flame_files.random_flame_arrays(rng)
    d = tmp_path_factory.mktemp("flame")
    path = d / "generic_model.pkl"
    flame_files.write_official_pickle(path, arrays)
    nf = len(arrays["f"])
    lmk_idx = rng.integers(0, nf, size=68)
    lmk_bary = rng.dirichlet(np.ones(3), size=68)
    lmk_path = d / "landmark_embedding.npy"
    flame_files.write_deca_landmarks(lmk_path, lmk_idx, lmk_bary)
    return dict(
        arrays=arrays, path=path, lmk_path=lmk_path, lmk_idx=lmk_idx, lmk_bary=lmk_bary, dir=d
    )


def _random_params(rng, batch):
    return dict(
        shape=rng.normal(size=batch + (120,)),  # fewer than 300: zero-padded
        expression=rng.normal(size=batch + (100,)),
        jaw=rng.normal(scale=0.3, size=batch + (3,)),
        eyes=rng.normal(scale=0.3, size=batch + (6,)),
        neck=rng.normal(scale=0.3, size=batch + (3,)),
        global_pose=rng.normal(scale=0.5, size=batch + (3,)),
        translation=rng.normal(scale=0.1, size=batch + (3,)),
    )


def test_forward_matches_numpy_lbs_float64(official):
    rng = np.random.default_rng(0)
    p = _random_params(rng, (2, 3))
    a = official["arrays"]
    with jax.enable_x64(True):
        model = flame.load(official["path"], landmarks=official["lmk_path"], dtype=jnp.float64)
        out = flame.forward(model, **{k: jnp.asarray(v) for k, v in p.items()})
        assert out.vertices.dtype == jnp.float64
        assert out.vertices.shape == (2, 3, 600, 3) and out.joints.shape == (2, 3, 5, 3)
        verts, joints, lmks = (np.asarray(x) for x in (out.vertices, out.joints, out.landmarks))
    for i in np.ndindex(2, 3):
        pose = np.stack(
            [p["global_pose"][i], p["neck"][i], p["jaw"][i], p["eyes"][i][:3], p["eyes"][i][3:]]
        )
        ref_v, ref_j = numpy_lbs(a, p["shape"][i], p["expression"][i], pose, p["translation"][i])
        np.testing.assert_allclose(verts[i], ref_v, atol=1e-6, rtol=0)
        np.testing.assert_allclose(joints[i], ref_j, atol=1e-6, rtol=0)
        # Landmarks: barycentric interpolation of the reference vertices.
        tri = ref_v[a["f"].astype(np.int64)[official["lmk_idx"]]]  # [68, 3, 3]
        ref_l = np.einsum("lkc,lk->lc", tri, official["lmk_bary"])
        np.testing.assert_allclose(lmks[i], ref_l, atol=1e-6, rtol=0)


def test_float32_vmap_and_grad(official):
    rng = np.random.default_rng(1)
    p = {k: jnp.asarray(v, jnp.float32) for k, v in _random_params(rng, (4,)).items()}
    model = flame.load(official["path"])
    # vmap of the per-frame forward (one compiled program) vs the NumPy reference.
    verts = jax.jit(jax.vmap(lambda q: flame.forward(model, **q).vertices))(p)
    assert verts.dtype == jnp.float32 and verts.shape == (4, 600, 3)
    q = {k: np.asarray(v, np.float64) for k, v in p.items()}
    for i in range(4):
        pose = np.stack(
            [q["global_pose"][i], q["neck"][i], q["jaw"][i], q["eyes"][i][:3], q["eyes"][i][3:]]
        )
        ref, _ = numpy_lbs(
            official["arrays"], q["shape"][i], q["expression"][i], pose, q["translation"][i]
        )
        np.testing.assert_allclose(np.asarray(verts[i]), ref, atol=2e-5)

    # grad: finite at zero pose (Rodrigues' series branch) and equal to central
    # finite differences elsewhere.
    @jax.jit
    def loss(jaw):
        v = flame.forward(model, p["shape"][0], p["expression"][0], jaw=jaw).vertices
        return jnp.sum(v[..., 1] * jnp.linspace(-1.0, 1.0, v.shape[-2]), axis=-1)

    grad = jax.jit(jax.grad(loss))
    jaw = jnp.array([[0.0, 0.0, 0.0], [0.2, -0.1, 0.05]])
    g = np.asarray(jax.vmap(grad)(jaw))
    assert np.all(np.isfinite(g))
    eps = 1e-2
    steps = jnp.concatenate([jnp.eye(3), -jnp.eye(3)]) * eps  # one batched call
    vals = np.asarray(loss(jaw[1] + steps), np.float64)
    fd = (vals[:3] - vals[3:]) / (2 * eps)
    np.testing.assert_allclose(g[1], fd, rtol=2e-2, atol=1e-3)


def test_flame_params_struct_matches_keywords(official):
    model = flame.load(official["path"])
    rng = np.random.default_rng(3)
    raw = {k: jnp.asarray(v, jnp.float32) for k, v in _random_params(rng, (2,)).items()}
    raw["shape"] = jnp.pad(raw["shape"], ((0, 0), (0, 180)))
    params = flame.FlameParams.zeros((2,), 300, 100).replace(**raw)
    a = flame.forward(model, params).vertices
    b = flame.forward(model, **raw).vertices
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    zeros = flame.forward(model, flame.FlameParams.zeros((2,), 300, 100))
    np.testing.assert_allclose(
        np.asarray(zeros.vertices[1]), np.asarray(model.v_template), atol=1e-7
    )
    assert zeros.joints.shape == (2, 5, 3) and zeros.landmarks is None


def test_npz_and_gagavatar_pt_load_the_same_model(official):
    pytest.importorskip("torch")
    d = official["dir"]
    model = flame.load(official["path"], landmarks=official["lmk_path"])
    flame.save(model, d / "copy.npz")
    from_npz = flame.load(d / "copy.npz")
    flame_files.write_gagavatar_pt(
        d / "FLAME_with_eye.pt", official["arrays"], official["lmk_idx"], official["lmk_bary"]
    )
    from_pt = flame.load(d / "FLAME_with_eye.pt")
    for other in (from_npz, from_pt):
        assert other.parents == model.parents == (-1, 0, 1, 1, 1)
        for key in ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor",
                    "lbs_weights", "faces", "lmk_faces_idx", "lmk_bary_coords"):  # fmt: skip
            np.testing.assert_allclose(
                np.asarray(getattr(other, key)),
                np.asarray(getattr(model, key)),
                atol=1e-7,
                err_msg=key,
            )
    assert model.num_shape == 300 and model.num_expression == 100 and model.num_landmarks == 68


def test_standin_npz_roundtrip_keeps_uv_and_labels(tmp_path):
    model = flame.standin(0, num_vertices=700, num_shape=12, num_expression=9)
    flame.save(model, tmp_path / "standin.npz")
    back = flame.load(tmp_path / "standin.npz")
    assert (back.num_shape, back.num_expression) == (12, 9)
    for key in ("v_template", "exprdirs", "posedirs", "vt", "ft", "vertex_labels", "lmk_faces_idx"):
        np.testing.assert_array_equal(
            np.asarray(getattr(back, key)), np.asarray(getattr(model, key))
        )
