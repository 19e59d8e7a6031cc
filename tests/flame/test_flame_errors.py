"""Bad inputs give clear errors at the boundary, not a crash deep inside."""

import collections
import pickle

import flame_files
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gshead_jax import flame


@pytest.fixture(scope="module")
def small():
    return flame.standin(0, num_vertices=600, num_shape=10, num_expression=6)


@pytest.fixture(scope="module")
def official_bytes(tmp_path_factory):
    arrays = flame_files.random_flame_arrays(np.random.default_rng(0))
    path = tmp_path_factory.mktemp("err") / "generic_model.pkl"
    flame_files.write_official_pickle(path, arrays)
    return path.read_bytes(), arrays


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"jaw": np.zeros(2)}, r"jaw must be \[\.\.\., 3\], got \(2,\)"),
        ({"eyes": np.zeros((4, 3))}, r"eyes must be \[\.\.\., 6\], got \(4, 3\)"),
        ({"shape": np.zeros(11)}, r"shape has 11 coefficients but the model has 10"),
        ({"expression": np.zeros((2, 7))}, r"expression has 7 coefficients .* has 6"),
        ({"neck": 0.1}, r"neck must be \[\.\.\., 3\], got a scalar"),
        ({"translation": np.zeros((2, 3)), "jaw": np.zeros((3, 3))}, "do not broadcast"),
        ({"global_pose": "zeros"}, "global_pose must be an array"),
    ],
)
def test_wrong_parameter_shapes(small, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        flame.forward(small, **kwargs)


def test_nan_parameters_are_caught_eagerly_and_skipped_under_jit(small):
    jaw = np.array([0.1, np.nan, 0.0], np.float32)
    with pytest.raises(ValueError, match=r"jaw contains NaN or Inf \(first at index \(1,\)\)"):
        flame.forward(small, jaw=jaw)
    expr = np.zeros((2, 6), np.float32)
    expr[1, 4] = np.inf
    with pytest.raises(ValueError, match=r"expression contains NaN or Inf .*\(1, 4\)"):
        flame.forward(small, expression=expr)
    # Traced values cannot be checked without breaking jit: the check is skipped.
    out = jax.jit(lambda j: flame.forward(small, jaw=j).vertices)(jnp.asarray(jaw))
    assert np.isnan(np.asarray(out)).any()
    flame.forward(small, jaw=jaw, check=False)  # opt-out in eager loops


def test_truncated_pickle(tmp_path, official_bytes):
    data, _ = official_bytes
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"generic_model\.pkl: truncated or corrupt pickle"):
        flame.load(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="truncated or corrupt pickle"):
        flame.load(path)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo should-never-run",))


@pytest.mark.parametrize(
    "payload, match",
    [
        (_Evil(), r"not a FLAME pickle: refers to (posix|nt|os)\.system"),
        (collections.Counter(a=1), r"not a FLAME pickle: refers to collections\.Counter"),
        ([1, 2, 3], "expected a dict of FLAME arrays, got list"),
    ],
)
def test_foreign_pickle(tmp_path, payload, match):
    path = tmp_path / "foreign.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match=match):
        flame.load(path)


def test_missing_key_and_wrong_shape_name_the_key_and_file(tmp_path, official_bytes):
    _, arrays = official_bytes
    path = tmp_path / "no_posedirs.pkl"
    flame_files.write_official_pickle(path, arrays, drop=("posedirs",))
    with pytest.raises(ValueError, match=r"no_posedirs\.pkl: missing key\(s\) \['posedirs'\]"):
        flame.load(path)
    bad = dict(arrays, weights=arrays["weights"][:, :4])
    path = tmp_path / "bad_weights.pkl"
    flame_files.write_official_pickle(path, bad)
    with pytest.raises(ValueError, match=r"bad_weights\.pkl: 'weights' must be \[V=600, J=5\]"):
        flame.load(path)
    bad = dict(arrays, v_template=arrays["v_template"][:, :2])
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match=r"bad\.npz: 'v_template' must be \[V, 3\]"):
        flame.load(tmp_path / "bad.npz")


def test_other_bad_files(tmp_path, small):
    (tmp_path / "model.obj").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match=r"unknown FLAME file type '\.obj'"):
        flame.load(tmp_path / "model.obj")
    flame.save(small, tmp_path / "ok.npz")
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cut\.npz: truncated or corrupt \.npz"):
        flame.load(tmp_path / "cut.npz")
    np.save(tmp_path / "lmk.npy", np.zeros((68, 3)))
    with pytest.raises(ValueError, match=r"lmk\.npy: expected a pickled dict"):
        flame.load(tmp_path / "ok.npz", landmarks=tmp_path / "lmk.npy")
    with pytest.raises(TypeError, match="model must be a FlameModel"):
        flame.forward({"v_template": 0})
