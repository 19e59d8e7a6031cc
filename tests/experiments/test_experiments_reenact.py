"""Reenactment: driver files read as NumPy conversions say, videos written and read back,
and ``reenact`` renders exactly what the model renders for the same inputs."""

import os
import pickle
import sys

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from gshead_jax import camera
from gshead_jax.flame import FlameParams
from gshead_jax.train import inputs, reenactment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "train"))
import train_testing as tt  # noqa: E402

FLIP = np.diag([-1.0, -1.0, 1.0])


def viewmat_from_p3d(tm):
    """GAGAvatar's [R | T] (row vectors, x/y flipped) -> OpenCV world-to-camera, in NumPy."""
    out = np.eye(4)
    out[:3, :3] = FLIP @ tm[:3, :3].T
    out[:3, 3] = FLIP @ tm[:3, 3]
    return out


def gagavatar_entries(t, rng):
    r = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    r *= np.sign(np.linalg.det(r))
    return {
        f"clip_{i * 3}": {
            "shapecode": rng.normal(size=300).astype(np.float32),
            "expcode": rng.normal(size=100).astype(np.float32),
            "posecode": rng.normal(size=6).astype(np.float32),
            "eyecode": rng.normal(size=6).astype(np.float32),
            "transform_matrix": np.concatenate([r, [[0.1], [0.2], [9.3]]], 1).astype(np.float32),
        }
        for i in range(t)
    }


def test_gagavatar_pkl_and_npz_drivers(tmp_path):
    rng = np.random.default_rng(0)
    data = gagavatar_entries(5, rng)
    # Keys out of order on disk: frames sort by the number after the last '_'.
    shuffled = dict(reversed(list(data.items())))
    with open(tmp_path / "smoothed.pkl", "wb") as f:
        pickle.dump(shuffled, f)
    seq = reenactment.load_driver(str(tmp_path / "smoothed.pkl"), max_frames=4)
    keys = [f"clip_{i * 3}" for i in range(4)]
    assert len(seq) == 4
    np.testing.assert_array_equal(seq.params["expression"], [data[k]["expcode"] for k in keys])
    np.testing.assert_array_equal(
        seq.params["global_pose"], [data[k]["posecode"][:3] for k in keys]
    )
    np.testing.assert_array_equal(seq.params["jaw"], [data[k]["posecode"][3:] for k in keys])
    np.testing.assert_array_equal(seq.params["eyes"], [data[k]["eyecode"] for k in keys])
    np.testing.assert_array_equal(seq.params["neck"], np.zeros((4, 3)))
    for i, k in enumerate(keys):
        ref = viewmat_from_p3d(data[k]["transform_matrix"].astype(np.float64))
        np.testing.assert_allclose(seq.viewmat[i], ref, atol=1e-5)
    np.testing.assert_allclose(seq.K[0], [[3072, 0, 256], [0, 3072, 256], [0, 0, 1]])  # focal 12

    expr = rng.normal(size=(3, 7)).astype(np.float32)
    np.savez(
        tmp_path / "d.npz", expression=expr, jaw=np.ones((3, 3)), images=np.zeros((3, 8, 8, 3))
    )
    seq = reenactment.load_driver(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(seq.params["expression"], expr)
    np.testing.assert_array_equal(seq.params["jaw"], np.ones((3, 3)))
    assert seq.viewmat is None and seq.images.shape == (3, 8, 8, 3)
    np.savez(tmp_path / "bad.npz", jaw=np.ones((3, 3)))
    with pytest.raises(ValueError, match="needs 'expression'"):
        reenactment.load_driver(str(tmp_path / "bad.npz"))
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        reenactment.load_driver(str(tmp_path / "nope.npz"))


def test_video_files_read_back(tmp_path):
    t, h, w = 6, 32, 48
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, :, : 8 * (i + 1)] = (255, 128, 0)  # a growing bar: few colours
    gif = reenactment.write_gif(frames, str(tmp_path / "a.gif"), fps=10)
    with Image.open(gif) as im:
        assert im.n_frames == t
        for i in range(t):
            im.seek(i)
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), frames[i])
    mp4 = reenactment.write_mp4(frames, str(tmp_path / "a.mp4"), fps=10)
    back = np.stack(imageio.mimread(mp4))
    assert back.shape == (t, h, w, 3)
    assert np.abs(back.astype(float) - frames).mean() < 8  # H.264 is lossy
    side = reenactment.compose([frames, frames[:, :, :h].astype(np.float32) / 255.0], height=64)
    assert side.shape == (t, 64, 128, 3) and side.dtype == np.uint8


def test_reenact_equals_the_model_on_the_same_inputs(tmp_path):
    c = tt.config(str(tmp_path))
    model = inputs.build_model(c)
    params = model.init(jax.random.key(0))
    s = tt.SIZE
    rng = np.random.default_rng(1)
    cam = camera.head_camera(width=s, height=s)
    portrait = {
        "image": rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
        "shape": rng.normal(size=20).astype(np.float32),
        "expression": np.zeros(10, np.float32),
        **{k: np.zeros(n, np.float32) for k, n in (("jaw", 3), ("eyes", 6), ("neck", 3),
                                                   ("global_pose", 3), ("translation", 3))},
        "viewmat": np.asarray(cam.viewmat), "K": np.asarray(cam.K),
    }  # fmt: skip
    t = 4
    short = rng.normal(size=(t, 6)).astype(np.float32)  # 6 of the model's 10 components
    jaw = np.zeros((t, 3), np.float32)
    jaw[:, 0] = [0.0, 0.2, 0.4, 0.1]
    driver = reenactment.DrivingSequence(params={"expression": short, "jaw": jaw})
    for k, n in (("shape", 20), ("eyes", 6), ("neck", 3), ("global_pose", 3), ("translation", 3)):
        driver.params[k] = np.zeros((t, n), np.float32)
    frames = reenactment.reenact(
        model, params, portrait, driver, render_size=s, use_driver_camera=False, chunk=t
    )
    # Reference: the model's own programs on explicitly built inputs (one jitted program).
    one = lambda x: jnp.asarray(x)[None]  # noqa: E731
    src = FlameParams(**{k: one(portrait[k]) for k in FlameParams.__dataclass_fields__})
    expr = np.concatenate([short, np.zeros((t, 4), np.float32)], 1)

    @jax.jit
    def reference(params):
        src_cam = camera.make_camera(one(portrait["viewmat"]), one(portrait["K"]), width=s,
                                     height=s)  # fmt: skip
        avatar = model.reconstruct(params, one(portrait["image"]) / 255.0, src, src_cam)
        drv = FlameParams(
            shape=jnp.broadcast_to(src.shape, (t, 20)), expression=expr, jaw=jaw,
            eyes=jnp.zeros((t, 6)), neck=jnp.zeros((t, 3)), global_pose=jnp.zeros((t, 3)),
            translation=jnp.zeros((t, 3)),
        )  # fmt: skip
        av = jax.tree.map(lambda x: jnp.broadcast_to(x, (t,) + x.shape[1:]), avatar)
        cams = camera.make_camera(
            jnp.broadcast_to(cam.viewmat, (t, 4, 4)), jnp.broadcast_to(cam.K, (t, 3, 3)),
            width=s, height=s,
        )  # fmt: skip
        return model.drive(params, av, drv, cams)[0]

    ref = reference(params)
    np.testing.assert_allclose(frames, np.clip(np.asarray(ref), 0, 1), atol=1e-5)
    assert np.abs(frames[2] - frames[0]).max() > 1e-4  # the jaw moved something
    long = dict(driver.params, expression=rng.normal(size=(t, 11)).astype(np.float32))
    with pytest.raises(ValueError, match="driver expression has 11 components"):
        reenactment.reenact(
            model, params, portrait, reenactment.DrivingSequence(params=long), render_size=s
        )
