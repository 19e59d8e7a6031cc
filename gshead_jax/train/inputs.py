"""What a run reads from disk: data sources, the model, pretrained weights -- checked first.

``check_inputs(config)`` runs before anything slow and raises one
``FileNotFoundError`` listing every missing dataset, asset or weight file with
how to get it. ``build_sources`` opens the configured data sources (rendering a
synthetic cache first when the config asks for it); ``build_model`` and
``init_params`` make the model and its parameters, with pretrained weights
(``config.model.init``) loaded over the random ones.

A source entry of ``config.data.sources`` (paths may contain ``{workdir}``)::

    synth=dict(kind="synthetic", path="{workdir}/data/synth", generate=True,
               identities=16, clips=2, frames=16, views=1, image_size=64,
               num_gaussians=8192, seed=0)        # path None: render on the fly
    vfhq=dict(kind="tracked", path="/data/VFHQ_CENTERED", split="train")
    vfhq_ar=dict(kind="arrayrecord", path="data/vfhq_train")
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax.data import ArrayRecordSource, SyntheticSource, TrackedSource
from gshead_jax.models.base import FROZEN, TRAINABLE, AvatarModel, get_model

__all__ = [
    "HOW_TO_GET",
    "build_model",
    "build_sources",
    "check_inputs",
    "init_params",
    "model_kwargs",
    "model_overrides",
    "resolve_path",
]

log = logging.getLogger(__name__)

SOURCE_KINDS = ("synthetic", "arrayrecord", "tracked")

#: Where each kind of file comes from (the messages of ``check_inputs``).
HOW_TO_GET = {
    "tracked": (
        "GAGAvatar's tracked layout (img_lmdb/, optim.pkl, dataset.json), written by "
        "GAGAvatar_track (https://github.com/xg-chu/GAGAvatar_track) for VFHQ/HDTF videos; "
        "see the README's 'Data' guide"
    ),
    "arrayrecord": (
        "convert a tracked dataset with `python -m gshead_jax.data.tracked convert --src DIR "
        "--out {path} --split train`, or render synthetic data with `python -m "
        "gshead_jax.data.synthetic --out {path}` (README 'Data')"
    ),
    "synthetic": (
        "render it with `python -m gshead_jax.data.synthetic --out {path} ...` or set "
        "generate=True on the source to render it at start-up"
    ),
    "flame": (
        "FLAME 2020/2023 from https://flame.is.tue.mpg.de (register and accept the licence), "
        "put at third_party/assets/flame/generic_model.pkl (third_party/README.md); or drop "
        "flame_path to use the built-in stand-in"
    ),
    "vit": (
        "a DINOv2 / WebSSL Hugging Face folder (config.json + model.safetensors): "
        "`huggingface-cli download facebook/{name} --local-dir {path}` "
        "(third_party/README.md, README 'Weights')"
    ),
    "synthetic_flame": (
        "the FLAME file the synthetic heads are rendered with must carry region labels "
        "(docs/data.md, 'Real FLAME'); or drop model= to use the built-in stand-in"
    ),
    "gagavatar": (
        "GAGAvatar.pt from https://huggingface.co/xg-chu/GAGAvatar (needs torch: "
        "pip install -e '.[convert]'; third_party/README.md)"
    ),
}


def resolve_path(path: str | None, workdir: str) -> str | None:
    """Expands ``{workdir}`` and ``~`` in a configured path."""
    if path is None:
        return None
    return os.path.expanduser(str(path).replace("{workdir}", workdir))


def _how(kind: str, path: str) -> str:
    name = os.path.basename(os.path.normpath(path))
    return HOW_TO_GET[kind].format(path=path, name=name)


def model_overrides(config: Any) -> dict[str, Any]:
    """The model's config overrides, with ``config.mixed_precision`` as ``dtype``."""
    overrides = dict(config.model.get("overrides", {}) or {})
    if config.get("mixed_precision", False):
        overrides["dtype"] = "bfloat16"
    return overrides


def _used_sources(config: Any) -> list[str]:
    names: list[str] = []
    for s in config.stage_order:
        names += list(config.stages[s].data.sources)
    names += list(config.eval.get("sources", ()) or ())
    return list(dict.fromkeys(names))


def check_inputs(config: Any, workdir: str) -> None:
    """Fails fast, before any slow work, if a configured file is missing.

    Checks the data sources the stages and the evaluation use, the model's FLAME
    file, pretrained weights (``config.model.init``) and perceptual-loss weights.

    Raises:
      FileNotFoundError: listing each missing file and how to get it.
      ValueError: an unknown source kind or a source name that is not configured.
    """
    problems: dict[str, str] = {}  # path -> line (sources sharing a folder: once)

    def missing(path: str, what: str, how: str) -> None:
        problems.setdefault(path, f"  {what}: {path} not found -- {how}")

    sources = config.data.sources
    for name in _used_sources(config):
        if name not in sources:
            raise ValueError(f"source {name!r} is used but not in config.data.sources")
        spec = sources[name]
        kind = spec.kind
        if kind not in SOURCE_KINDS:
            raise ValueError(f"config.data.sources.{name}.kind must be one of {SOURCE_KINDS}")
        path = resolve_path(spec.get("path"), workdir)
        what = f"data source {name!r} ({kind})"
        if kind == "tracked":
            for f in ("img_lmdb", "optim.pkl", "dataset.json"):
                p = os.path.join(path, f)
                if not os.path.exists(p):
                    missing(p, what, _how("tracked", path))
        elif kind == "arrayrecord" or (kind == "synthetic" and path and not spec.get("generate")):
            p = os.path.join(path, "manifest.json")
            if not os.path.exists(p):
                missing(p, what, _how(kind, path))
        elif kind == "synthetic" and spec.get("model"):
            cache = path and os.path.exists(os.path.join(path, "manifest.json"))
            model = resolve_path(spec["model"], workdir)
            if not cache and not os.path.exists(model):
                missing(model, what, _how("synthetic_flame", model))
    flame_path = resolve_path(model_overrides(config).get("flame_path"), workdir)
    if flame_path and not os.path.exists(flame_path):
        missing(flame_path, "FLAME model", _how("flame", flame_path))
    init = config.model.get("init", {}) or {}
    for key in ("vit", "gagavatar"):
        p = resolve_path(init.get(key), workdir)
        if p and not os.path.exists(p):
            missing(p, f"pretrained weights (model.init.{key})", _how(key, p))
    perceptual = dict(config.get("perceptual", {}) or {})
    if perceptual.get("kind", "none") != "none":
        from gshead_jax.train.losses import build_perceptual_loss

        try:
            build_perceptual_loss(**perceptual)
        except FileNotFoundError as e:
            problems["perceptual"] = f"  perceptual loss ({perceptual['kind']}): {e}"
    if problems:
        raise FileNotFoundError(
            "missing input files (nothing was started):\n" + "\n".join(problems.values())
        )


# ----------------------------------------------------------------------------- sources


def _synthetic_config(spec: Mapping[str, Any]):
    from gshead_jax.data.synthetic import SyntheticConfig

    fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
    return SyntheticConfig(**{k: v for k, v in spec.items() if k in fields})


def _build_synthetic(name: str, spec: Mapping[str, Any], workdir: str, *, progress: bool):
    path = resolve_path(spec.get("path"), workdir)
    cfg = _synthetic_config(spec)
    if path is None:
        return SyntheticSource(cfg, name=f"synthetic:{name}")
    if spec.get("generate") and not os.path.exists(os.path.join(path, "manifest.json")):
        if jax.process_index() == 0:
            from gshead_jax.data.synth_dataset import write_dataset

            gpu = jax.default_backend() == "gpu"
            log.info("rendering synthetic source %r (%d records) to %s", name, len(cfg), path)
            write_dataset(
                path,
                cfg,
                batch=int(spec.get("render_batch", 32 if gpu else 16)),
                backend="auto" if gpu else "xla",
                progress=progress,
            )
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"synthetic source {name}")
    return ArrayRecordSource(path)


def build_sources(
    config: Any, names: Iterable[str], workdir: str, *, progress: bool = True
) -> list[Any]:
    """Opens the named sources of ``config.data.sources`` (module docstring).

    A synthetic source with ``generate=True`` whose cache is missing is rendered
    first (by process 0; the others wait). Every process must see the same files.
    """
    out = []
    for name in names:
        spec = dict(config.data.sources[name])
        kind = spec["kind"]
        if kind == "synthetic":
            out.append(_build_synthetic(name, spec, workdir, progress=progress))
        elif kind == "arrayrecord":
            out.append(ArrayRecordSource(resolve_path(spec["path"], workdir)))
        elif kind == "tracked":
            out.append(
                TrackedSource(resolve_path(spec["path"], workdir), spec.get("split", "train"))
            )
        else:
            raise ValueError(f"config.data.sources.{name}.kind must be one of {SOURCE_KINDS}")
    return out


# ----------------------------------------------------------------------------- model


def model_kwargs(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able overrides -> ``get_model`` keywords (``dtype`` names become dtypes)."""
    out = dict(overrides)
    if isinstance(out.get("dtype"), str):
        out["dtype"] = jnp.dtype(out["dtype"])
    return out


def build_model(config: Any) -> AvatarModel:
    """``get_model(config.model.name, **model_overrides(config))``."""
    return get_model(config.model.name, **model_kwargs(model_overrides(config)))


def _vit_slot(params: Mapping[str, Any]) -> tuple[str, str]:
    for group in (FROZEN, TRAINABLE):
        for key in ("vit", "encoder"):
            if key in params[group]:
                return group, key
    raise ValueError("this model has no ViT encoder params (frozen/trainable 'vit' or 'encoder')")


def _check_same_tree(name: str, loaded: Any, expected: Any) -> None:
    ls = jax.tree.map(np.shape, loaded)
    es = jax.tree.map(np.shape, expected)
    if jax.tree.structure(ls) != jax.tree.structure(es) or ls != es:
        raise ValueError(
            f"{name}: the weights do not match the model's encoder (different architecture "
            "or size); pick the checkpoint of the model's variant"
        )


def init_params(model: AvatarModel, config: Any, workdir: str, rng: jax.Array) -> dict[str, Any]:
    """``model.init(rng)`` with the pretrained weights of ``config.model.init`` loaded.

    ``init.gagavatar``: a ``GAGAvatar.pt`` checkpoint (all of the model's weights);
    ``init.vit``: DINOv2 / WebSSL weights for the encoder (GAGAvatar's frozen
    DINOv2, RAR's WebSSL), replacing the random ones.
    """
    params = model.init(rng)
    init = config.model.get("init", {}) or {}
    gaga = resolve_path(init.get("gagavatar"), workdir)
    if gaga:
        from gshead_jax.convert.gagavatar import load_gagavatar
        from gshead_jax.models.gagavatar import params_from_weights

        params = params_from_weights(model, load_gagavatar(gaga))
        log.info("initialised from %s", gaga)
    vit = resolve_path(init.get("vit"), workdir)
    if vit:
        from gshead_jax.convert import load_dinov2

        _, loaded = load_dinov2(vit)
        group, key = _vit_slot(params)
        _check_same_tree(vit, loaded, params[group][key])
        params[group] = {**params[group], key: jax.tree.map(np.asarray, loaded)}
        log.info("encoder params[%r][%r] from %s", group, key, vit)
    return params
