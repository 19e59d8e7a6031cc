"""Synthetic identities: shape coefficients, traits and attached Gaussians from (seed, number).

``make_identity(model, seed, i, num_gaussians=N)`` is deterministic: the shape,
the traits and the Gaussians' placement each come from their own seeded stream
(`trajectories.TAG_*`), so changing one (say, the Gaussian count) leaves the
others as they were.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gshead_jax import flame
from gshead_jax.data import accessories, appearance
from gshead_jax.data import head_gaussians as hg
from gshead_jax.data.trajectories import TAG_PLACE, TAG_SHAPE, TAG_TRAITS
from gshead_jax.flame import Region

#: Budget shares of the Gaussians that do not lie on the skin.
_VOLUME_SHARE = {"shaved": 0.0, "buzz": 0.0, "short": 0.18, "medium": 0.28, "curly": 0.35}
_VOLUME_SHARE["long"] = 0.16
_SHEET_SHARE = 0.2
_GLASSES_SHARE = 1 / 24
MIN_GAUSSIANS = 1024
_LID_CLEARANCE = 0.0005  # metres: an open eye's skin stays this far inside the eyeball


@dataclasses.dataclass(frozen=True)
class Identity:
    """One synthetic person.

    Attributes:
      index: Identity number.
      name: Record id (``synth{seed}_id{index:05d}``).
      shape: FLAME shape coefficients. [S] float32
      traits: The look (`appearance.Traits`).
      gaussians: The attached Gaussians (NumPy). [N]
    """

    index: int
    name: str
    shape: np.ndarray
    traits: appearance.Traits
    gaussians: hg.HeadGaussians


def identity_name(seed: int, index: int) -> str:
    """The record id of identity ``index`` of a dataset with ``seed``."""
    return f"synth{seed}_id{index:05d}"


def identity_shape(model: flame.FlameModel, seed: int, index: int) -> np.ndarray:
    """Shape coefficients: FLAME's standard normal prior, clipped at +-2.5, shrunk if needed.

    The stand-in's eyeballs move rigidly under shape changes while the lids
    follow the skin's fields, so a strong draw can close an eye opening at rest.
    The coefficients are scaled by 0.8 until every opening vertex (eye-region
    skin at least 1 mm inside the eyeball sphere on the template) stays at
    least `_LID_CLEARANCE` inside its eyeball.
    """
    rng = np.random.default_rng([seed, TAG_SHAPE, index])
    shape = np.clip(rng.normal(size=model.num_shape), -2.5, 2.5)
    for _ in range(12):
        if _lid_gap(model, shape) <= -_LID_CLEARANCE:
            break
        shape = shape * 0.8
    return shape.astype(np.float32)


def _lid_gap(model: flame.FlameModel, shape: np.ndarray) -> float:
    """Largest distance outside its eyeball of any eye-opening vertex (negative: inside)."""
    labels = np.asarray(model.vertex_labels)
    lid = labels == Region.EYE_REGION
    balls = ((Region.EYEBALL_LEFT, Region.IRIS_LEFT), (Region.EYEBALL_RIGHT, Region.IRIS_RIGHT))

    def gaps(out):
        v, j = np.asarray(out.vertices), np.asarray(out.joints)
        res = []
        for e, regions in enumerate(balls):
            r = np.median(np.linalg.norm(v[np.isin(labels, regions)] - j[3 + e], axis=-1))
            res.append(np.linalg.norm(v - j[3 + e], axis=-1) - r)
        return np.minimum(*res)

    rest = gaps(flame.forward(model, np.zeros(1, np.float32), check=False))
    opening = lid & (rest < -0.001)
    if not opening.any():
        return -np.inf
    return float(gaps(flame.forward(model, shape.astype(np.float32), check=False))[opening].max())


def make_identity(
    model: flame.FlameModel, seed: int, index: int, *, num_gaussians: int
) -> Identity:
    """Builds identity ``index`` of a dataset (deterministic in ``(seed, index)``).

    Args:
      model: A FLAME-layout model with ``vertex_labels`` (``flame.standin()``).
      seed: Dataset seed.
      index: Identity number (>= 0).
      num_gaussians: Gaussians per identity (>= `MIN_GAUSSIANS`).

    Returns:
      The `Identity`.
    """
    if num_gaussians < MIN_GAUSSIANS:
        raise ValueError(f"num_gaussians must be >= {MIN_GAUSSIANS}, got {num_gaussians}")
    if index < 0:
        raise ValueError(f"identity index must be >= 0, got {index}")
    shape = identity_shape(model, seed, index)
    traits = appearance.sample_traits(np.random.default_rng([seed, TAG_TRAITS, index]))
    rng = np.random.default_rng([seed, TAG_PLACE, index])
    gaussians = build_head(model, shape, traits, rng, num_gaussians=num_gaussians)
    return Identity(index, identity_name(seed, index), shape, traits, gaussians)


def build_head(
    model: flame.FlameModel,
    shape: np.ndarray,
    traits: appearance.Traits,
    rng: np.random.Generator,
    *,
    num_gaussians: int,
) -> hg.HeadGaussians:
    """Realises a look as exactly ``num_gaussians`` Gaussians attached to the mesh.

    The budget goes to the glasses (1/24 when worn), the hair volume and sheet
    (by style), and the rest to the surface.

    Args:
      model: A FLAME-layout model with ``vertex_labels``.
      shape: Shape coefficients. [<= S]
      traits: The look.
      rng: Placement and colour-field generator.
      num_gaussians: N.

    Returns:
      The Gaussians (NumPy float32). [N]
    """
    if model.vertex_labels is None:
        raise ValueError(
            "the synthetic appearance needs model.vertex_labels (flame.Region ids per vertex): "
            "flame.standin() has them; give a real FLAME model labels with "
            "model.replace(vertex_labels=...)"
        )
    rest = flame.forward(model, np.asarray(shape, np.float32), check=False)
    v = np.asarray(rest.vertices, np.float64)
    faces = np.asarray(model.faces)
    labels = np.asarray(model.vertex_labels)
    anchors = hg.anchors_of(model, rest)
    frames, area2 = hg.face_frames(v, faces)

    n_glasses = int(num_gaussians * _GLASSES_SHARE) if traits.glasses else 0
    n_volume = int(num_gaussians * _VOLUME_SHARE[traits.hair_style])
    n_sheet = int(num_gaussians * _SHEET_SHARE) if traits.hair_style == "long" else 0
    n_surface = num_gaussians - n_glasses - n_volume - n_sheet
    surface, hair = hg.surface(v, faces, labels, frames, area2, anchors, traits, rng, n_surface)
    parts = [surface]
    if n_volume:
        parts.append(hg.volume(v, faces, frames, area2, hair, anchors, traits, rng, n_volume))
    crown = hg.crown_face(v, faces, labels, area2)
    if n_sheet:
        sheet = accessories.sheet(
            v, labels, faces, frames, area2, crown, anchors, traits, rng, n_sheet
        )
        parts.append(sheet)
    if n_glasses:
        parts.append(
            accessories.glasses(v, labels, faces, frames, area2, crown, anchors, traits, n_glasses)
        )
    out = hg.concatenate(parts)
    assert out.num == num_gaussians, (out.num, num_gaussians)
    return out
