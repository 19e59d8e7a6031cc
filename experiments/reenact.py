r"""Drives an avatar built from one portrait with a sequence; writes MP4, GIF and a PNG sheet.

    # The run's held-out portrait, driven by the built-in synthetic driver:
    python experiments/reenact.py --config=experiments/configs/tiny_synthetic.py \
        --workdir=runs/tiny_synthetic --driver=synthetic:3 --frames=100 --orbit

    # A portrait from a dataset (ArrayRecord folder or a configured source) and a
    # GAGAvatar tracker output or an npz of FLAME parameters as the driver:
    python experiments/reenact.py --config=... --workdir=... \
        --portrait=data/vfhq_test:KEY --driver=/data/clip/smoothed.pkl

Params come from ``--params`` (an export folder; default WORKDIR/export). The
portrait is ``SOURCE:IDENTITY`` (a source of the config, identity number), ``DIR:KEY``
(an ArrayRecord dataset and a record key), or ``IMAGE.png`` with ``--portrait_params``
(an npz with ``shape`` [n] and ``viewmat`` [4, 4] + ``K`` [3, 3] in the image's pixels,
or GAGAvatar's ``transform_matrix`` [3, 4] -- e.g. from a tracker). The driver is
``synthetic[:IDENTITY[:CLIP[:SEED]]]`` (rendered now, with its frames shown beside
the avatar), ``SOURCE:IDENTITY[:CLIP]`` (a clip of a configured source), an ``.npz``
or GAGAvatar's ``optim.pkl`` / ``smoothed.pkl`` (gshead_jax/train/reenactment.py
lists the fields). ``--orbit`` adds a column of novel views.
"""

import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/tiny_synthetic.py", "The run's training config."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_PARAMS = flags.DEFINE_string("params", None, "Export folder (default WORKDIR/export).")
_PORTRAIT = flags.DEFINE_string("portrait", None, "Portrait (see the module docstring).")
_PORTRAIT_PARAMS = flags.DEFINE_string("portrait_params", None, "npz for an image portrait.")
_DRIVER = flags.DEFINE_string("driver", None, "Driving sequence (see the module docstring).")
_FRAMES = flags.DEFINE_integer("frames", None, "Frames to render (default: the driver's).")
_FPS = flags.DEFINE_float("fps", 25.0, "Frames per second of file drivers.")
_ORBIT = flags.DEFINE_bool("orbit", False, "Add a column of orbiting novel views.")
_SIDE = flags.DEFINE_bool("side_by_side", True, "Show the driver's frames when it has them.")
_CAMERA = flags.DEFINE_enum("camera", "driver", ["driver", "portrait"], "Render cameras.")
_HEIGHT = flags.DEFINE_integer("height", 256, "Video row height in pixels.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/reenact).")
_NAME = flags.DEFINE_string("name", "reenact", "Output file stem.")
flags.mark_flags_as_required(["workdir"])


def _portrait(spec: str, config, workdir: str, size: int) -> dict:
    from gshead_jax.data import ArrayRecordSource
    from gshead_jax.train import inputs, video

    if spec.lower().endswith((".png", ".jpg", ".jpeg")):
        return _image_portrait(spec, _PORTRAIT_PARAMS.value)
    head, _, tail = spec.rpartition(":")
    if head in config.data.sources:
        (src,) = inputs.build_sources(config, [head], workdir, progress=False)
        return video.portrait_record(src, int(tail))
    if os.path.isdir(head):
        src = ArrayRecordSource(head)
        keys = {k: i for i, k in enumerate(src.index.keys)}
        if tail not in keys:
            raise ValueError(f"{head} has no record {tail!r}")
        return src[keys[tail]]
    raise ValueError(
        f"--portrait={spec!r}: expected SOURCE:IDENTITY (sources {list(config.data.sources)}), "
        "DIR:KEY or an image with --portrait_params"
    )


def _image_portrait(path: str, params_path: str | None) -> dict:
    from PIL import Image

    from gshead_jax import camera
    from gshead_jax.models.base import FLAME_FIELDS

    if not params_path:
        raise ValueError("an image portrait needs --portrait_params (its FLAME shape and camera)")
    image = np.asarray(Image.open(path).convert("RGB"))
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"{path}: the portrait must be square (crop it first), got {image.shape}")
    with np.load(params_path) as z:
        d = {k: z[k] for k in z.files}
    s = image.shape[0]
    rec = {k: np.asarray(d.get(k, np.zeros(3)), np.float32) for k in FLAME_FIELDS}
    rec["shape"] = np.asarray(d.get("shape", d.get("shapecode")), np.float32)
    if "viewmat" in d:
        rec["viewmat"], rec["K"] = d["viewmat"], d["K"]
    elif "transform_matrix" in d:
        c = camera.from_gagavatar(d["transform_matrix"], width=s, height=s)
        rec["viewmat"], rec["K"] = np.asarray(c.viewmat), np.asarray(c.K)
    else:
        raise ValueError(f"{params_path}: needs viewmat + K or transform_matrix")
    rec["image"] = image
    return rec


def _driver(spec: str, config, workdir: str, size: int):
    from gshead_jax.data.synthetic import SyntheticConfig
    from gshead_jax.train import reenactment, video

    frames = _FRAMES.value
    if spec.startswith("synthetic"):
        parts = [int(x) for x in spec.split(":")[1:]]
        identity, clip, seed = (parts + [0, 0, 7][len(parts) :])[:3]
        cfg = SyntheticConfig(identities=identity + 1, clips=clip + 1, image_size=size, seed=seed)
        return reenactment.synthetic_driver(cfg, identity, clip, frames or 100)
    if spec.endswith((".npz", ".pkl")):
        return reenactment.load_driver(spec, fps=_FPS.value, max_frames=frames)
    head, _, tail = spec.partition(":")
    if head in config.data.sources:
        ids = [int(x) for x in tail.split(":")] if tail else [0]
        spec_d = dict(source=head, identity=ids[0], clip=ids[1] if len(ids) > 1 else 0)
        return video.driver_from_spec({**spec_d, "frames": frames}, config, workdir)
    raise ValueError(f"--driver={spec!r}: see the module docstring for the accepted forms")


def main(argv):
    del argv
    from gshead_jax.train import checkpoint, video

    config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
    model, params = checkpoint.load_model(_PARAMS.value or os.path.join(workdir, "export"))
    size = int(model.config.render_size)
    vspec = dict(config.video)
    portrait = _portrait(_PORTRAIT.value, config, workdir, size) if _PORTRAIT.value else None
    driver = _driver(_DRIVER.value, config, workdir, size) if _DRIVER.value else None
    if _CAMERA.value == "portrait" and driver is not None:
        driver.viewmat = None
    vspec.update(orbit=_ORBIT.value, side_by_side=_SIDE.value, height=_HEIGHT.value)
    if _FRAMES.value and "driver" in vspec:
        vspec["driver"] = {**dict(vspec["driver"]), "frames": _FRAMES.value}
    out = video.run_video(
        config,
        workdir,
        model,
        params,
        out_dir=_OUT.value or os.path.join(workdir, "reenact"),
        spec=vspec,
        portrait=portrait,
        driver=driver,
        name=_NAME.value,
    )
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    app.run(main)
