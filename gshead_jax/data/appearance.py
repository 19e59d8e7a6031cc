"""Procedural looks of synthetic identities: traits and the colour fields they paint.

An identity's look is a handful of *traits* drawn from a seeded generator
(`sample_traits`): skin tone, hair colour and style, hairline, eye colour,
brow shape, lip colour, beard, glasses. The colour of a point on the head is
then a field over its rest position and its region label (`flame.Region`)
(`surface_albedo`): skin with low-frequency variation (cheeks, nose, ears and
lips redder, the neck darker towards the collar), eyes with sclera, an iris
with radial streaks and a limbal ring and a pupil, brows, lips, the mouth's
interior and teeth, a beard or stubble, and a hair cap. `head_gaussians.py`
places the Gaussians these colours go on; the hair volume and the glasses get
their colours there from the same traits.

Positions are read relative to `Anchors` measured on the identity's rest mesh
(eye centres, brow landmarks, the cranium's centre), so the fields fit any
head with FLAME's layout and region labels, not only the stand-in's numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gshead_jax.flame import Region

# Skin tones from light to dark (linear blend along the ramp, then jitter);
# plausible sRGB albedos, not measurements.
_SKIN_RAMP = np.array(
    [
        [0.97, 0.82, 0.72],
        [0.90, 0.70, 0.58],
        [0.80, 0.59, 0.44],
        [0.68, 0.48, 0.33],
        [0.52, 0.34, 0.22],
        [0.36, 0.23, 0.15],
    ]
)
HAIR_COLOURS = {
    "black": (0.045, 0.04, 0.04),
    "dark_brown": (0.15, 0.09, 0.055),
    "brown": (0.30, 0.19, 0.10),
    "auburn": (0.42, 0.16, 0.07),
    "ginger": (0.70, 0.36, 0.14),
    "blonde": (0.82, 0.66, 0.40),
    "platinum": (0.90, 0.86, 0.76),
    "grey": (0.55, 0.55, 0.56),
    "blue_dye": (0.15, 0.30, 0.70),
    "pink_dye": (0.85, 0.35, 0.60),
}
_HAIR_P = (0.16, 0.18, 0.16, 0.08, 0.07, 0.13, 0.05, 0.09, 0.04, 0.04)
EYE_COLOURS = {
    "dark_brown": (0.18, 0.09, 0.04),
    "brown": (0.36, 0.20, 0.08),
    "hazel": (0.45, 0.36, 0.14),
    "green": (0.25, 0.45, 0.22),
    "blue": (0.25, 0.45, 0.75),
    "grey": (0.50, 0.56, 0.60),
}
_EYE_P = (0.3, 0.2, 0.12, 0.1, 0.18, 0.1)
#: Hair styles: cap only (shaved, buzz), a volume over the cap (short, medium,
#: curly), a volume plus a hanging sheet at the sides and back (long).
HAIR_STYLES = ("shaved", "buzz", "short", "medium", "curly", "long")
_STYLE_P = (0.06, 0.12, 0.27, 0.2, 0.1, 0.25)
GLASSES_COLOURS = ((0.03, 0.03, 0.03), (0.25, 0.12, 0.05), (0.65, 0.6, 0.5), (0.5, 0.1, 0.1))


@dataclasses.dataclass(frozen=True)
class Traits:
    """The look of one identity (all colours sRGB albedo in [0, 1]).

    Attributes:
      skin: Base skin colour. [3]
      blush: Redness added on cheeks, nose and ears, 0..1.
      hair: Hair colour name (`HAIR_COLOURS`); ``hair_rgb`` its value.
      hair_style: One of `HAIR_STYLES`.
      hair_thickness: Volume thickness over the crown, metres.
      hair_length: How far a long style hangs below the eyes, metres.
      hairline: Front hairline height shift, metres (+ receding, - fringe).
      temples: How much the hairline recedes at the temples, metres.
      hair_part: x of a side parting, metres (NaN: combed back from the crown).
      hair_top: Extra volume on top (a quiff), a thickness factor >= 1.
      eye: Iris colour name (`EYE_COLOURS`); ``eye_rgb`` its value.
      pupil: Pupil radius as an angle from the gaze axis, radians.
      brow_raise, brow_arch, brow_thickness, brow_length: Brow shape, metres
        (thickness is the half-height at the brow's middle; length scales the tail).
      lips: Lip colour. [3]
      beard: 0 none, 1 stubble, 2 full beard.
      glasses: Whether the identity wears glasses.
      glasses_rgb: Frame colour. [3]
      glasses_round: Rim shape, 0 rectangular .. 1 round.
      glasses_size: Rim half-width, metres.
    """

    skin: np.ndarray
    blush: float
    hair: str
    hair_style: str
    hair_thickness: float
    hair_length: float
    hairline: float
    temples: float
    hair_part: float
    hair_top: float
    eye: str
    pupil: float
    brow_raise: float
    brow_arch: float
    brow_thickness: float
    brow_length: float
    lips: np.ndarray
    beard: int
    glasses: bool
    glasses_rgb: np.ndarray
    glasses_round: float
    glasses_size: float

    @property
    def hair_rgb(self) -> np.ndarray:
        return np.asarray(HAIR_COLOURS[self.hair])

    @property
    def eye_rgb(self) -> np.ndarray:
        return np.asarray(EYE_COLOURS[self.eye])


def sample_traits(rng: np.random.Generator) -> Traits:
    """Draws an identity's traits (every draw happens, in a fixed order: stable streams)."""
    t = rng.uniform(0.0, 1.0) * (len(_SKIN_RAMP) - 1)
    i = min(int(t), len(_SKIN_RAMP) - 2)
    skin = _SKIN_RAMP[i] * (i + 1 - t) + _SKIN_RAMP[i + 1] * (t - i)
    skin = np.clip(skin * rng.uniform(0.95, 1.05) + rng.normal(0, 0.015, 3), 0.05, 1.0)
    blush = rng.uniform(0.2, 1.0)
    hair = str(rng.choice(list(HAIR_COLOURS), p=_HAIR_P))
    style = str(rng.choice(HAIR_STYLES, p=_STYLE_P))
    thickness = {
        "shaved": 0.0,
        "buzz": 0.0,
        "short": rng.uniform(0.005, 0.012),
        "medium": rng.uniform(0.012, 0.022),
        "curly": rng.uniform(0.022, 0.04),
        "long": rng.uniform(0.008, 0.016),
    }[style]
    length = rng.uniform(0.10, 0.20)
    hairline = rng.uniform(-0.028, 0.012) if rng.uniform() < 0.35 else rng.uniform(-0.004, 0.03)
    if style == "long":
        hairline = min(hairline, rng.uniform(-0.01, 0.01))
    eye = str(rng.choice(list(EYE_COLOURS), p=_EYE_P))
    pupil = rng.uniform(0.17, 0.25)
    brow = (
        rng.uniform(-0.003, 0.004),
        rng.uniform(-0.002, 0.005),
        rng.uniform(0.0022, 0.0055),
        rng.uniform(0.8, 1.15),
    )
    lip_mix = rng.uniform(0.3, 0.8)
    lips = np.clip(
        skin * (1 - lip_mix) + np.array([0.72, 0.30, 0.32]) * lip_mix * (0.6 + 0.4 * skin.mean()),
        0,
        1,
    )
    beard = int(rng.choice(3, p=(0.72, 0.16, 0.12)))
    glasses = bool(rng.uniform() < 0.3)
    g_rgb = np.asarray(GLASSES_COLOURS[int(rng.integers(len(GLASSES_COLOURS)))])
    temples = rng.uniform(-0.004, 0.014)
    part = rng.choice([np.nan, -1.0, 1.0, 0.0], p=(0.4, 0.25, 0.25, 0.1)) * rng.uniform(0.01, 0.03)
    top = 1.0 + rng.uniform(0.0, 1.0) ** 2 * 1.2
    return Traits(
        skin=skin,
        blush=float(blush),
        hair=hair,
        hair_style=style,
        hair_thickness=float(thickness),
        hair_length=float(length),
        hairline=float(hairline),
        temples=float(temples),
        hair_part=float(part),
        hair_top=float(top),
        eye=eye,
        pupil=float(pupil),
        brow_raise=float(brow[0]),
        brow_arch=float(brow[1]),
        brow_thickness=float(brow[2]),
        brow_length=float(brow[3]),
        lips=lips,
        beard=beard,
        glasses=glasses,
        glasses_rgb=g_rgb,
        glasses_round=float(rng.uniform()),
        glasses_size=float(rng.uniform(0.019, 0.025)),
    )


@dataclasses.dataclass(frozen=True)
class Anchors:
    """Landmarks of an identity's rest mesh (FLAME metres) the fields are placed by.

    Attributes:
      eyes: Eyeball centres, left (+x) then right. [2, 3]
      eye_radius: Eyeball radius.
      centre: Centre of the cranium (longitudes are measured around it). [3]
      brows: Brow landmarks (iBUG 17-26), or None. [10, 3]
      mouth: Mouth corners (iBUG 48, 54), or None. [2, 3]
      top: Highest point of the head. [3]
    """

    eyes: np.ndarray
    eye_radius: float
    centre: np.ndarray
    brows: np.ndarray | None
    mouth: np.ndarray | None
    top: np.ndarray

    @property
    def eye_y(self) -> float:
        return float(self.eyes[:, 1].mean())


def longitude(anchors: Anchors, p: np.ndarray) -> np.ndarray:
    """Angle around the vertical axis through the cranium, 0 at the face, +-pi at the back."""
    return np.arctan2(p[..., 0] - anchors.centre[0], p[..., 2] - anchors.centre[2])


def smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lowfreq(rng: np.random.Generator, p: np.ndarray, count: int, wavelength) -> np.ndarray:
    """``count`` smooth random scalar fields of unit RMS-ish amplitude at p. [count, N]"""
    k = rng.normal(size=(count, 3, 3))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    k *= 2 * np.pi / rng.uniform(*wavelength, size=(count, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(count, 3, 1))
    return np.sin(np.einsum("ctd,nd->ctn", k, p) + phase).sum(axis=1) / np.sqrt(1.5)


def hairline(traits: Traits, anchors: Anchors, lon: np.ndarray) -> np.ndarray:
    """Height of the hairline (absolute y) at each longitude; below it there is no hair.

    An arch over the forehead (receding at the temples by ``traits.temples``),
    sideburns in front of the ears, above the ears, down to the nape; heights
    relative to the eyes.
    """
    knots = [0.0, 0.35, 0.75, 1.05, 1.3, 1.5, 1.8, 2.3, np.pi]
    f, t = 0.042 + traits.hairline, traits.temples
    rel = [f, f - 0.002 + 0.3 * t, f - 0.008 + t, 0.022 + 0.5 * t, -0.012, 0.014, -0.006, -0.06]
    rel = np.array(rel + [-0.095])
    if traits.hair_style == "long":
        rel = np.minimum(rel, [f, f, f - 0.004, 0.012, -0.02, 0.0, -0.02, -0.07, -0.1])
    return anchors.eye_y + np.interp(np.abs(lon), knots, rel)


def parting(traits: Traits, anchors: Anchors, p: np.ndarray) -> np.ndarray:
    """1 on a side parting's line (the scalp shows through), else 0. [N]"""
    if not np.isfinite(traits.hair_part):
        return np.zeros(len(p))
    line = np.exp(-(((p[:, 0] - traits.hair_part) / 0.0018) ** 2))
    top = smoothstep(anchors.eye_y + 0.05, anchors.eye_y + 0.08, p[:, 1])
    return line * top * smoothstep(anchors.centre[2] - 0.06, anchors.centre[2] - 0.02, p[:, 2])


def hair_weight(traits: Traits, anchors: Anchors, p: np.ndarray, region: np.ndarray):
    """How much hair covers each surface point, 0..1 (soft edge at the hairline). [N]"""
    if traits.hair_style == "shaved":
        return np.zeros(len(p))
    lon = longitude(anchors, p)
    y0 = hairline(traits, anchors, lon)
    w = smoothstep(y0 - 0.003, y0 + 0.004, p[:, 1]) * (1.0 - 0.8 * parting(traits, anchors, p))
    ok = np.isin(region, [Region.SKIN, Region.SCALP, Region.NECK])
    return w * ok


def brow_weight(traits: Traits, anchors: Anchors, p: np.ndarray, region: np.ndarray):
    """Brow coverage per surface point, 0..1, from the brow landmarks and the traits. [N]"""
    ok = np.isin(region, [Region.SKIN, Region.BROWS, Region.EYE_REGION, Region.NOSE])
    front = p[:, 2] > anchors.eyes[:, 2].mean() - 0.01
    if anchors.brows is None:  # no landmarks: the labelled brows
        return (region == Region.BROWS).astype(np.float64)
    out = np.zeros(len(p))
    for side in (-1.0, 1.0):
        lm = anchors.brows[anchors.brows[:, 0] * side > 0]
        lm = lm[np.argsort(np.abs(lm[:, 0]))]  # inner to outer
        x_in, x_out = np.abs(lm[0, 0]), np.abs(lm[-1, 0])
        x_out = x_in + (x_out - x_in) * traits.brow_length
        u = (np.abs(p[:, 0]) - x_in) / (x_out - x_in)
        xs = (np.abs(lm[:, 0]) - x_in) / (np.abs(lm[-1, 0]) - x_in)
        y = np.interp(u, xs, lm[:, 1]) + traits.brow_raise
        y += traits.brow_arch * np.sin(np.pi * np.clip(u, 0, 1) ** 0.8)
        half = traits.brow_thickness * (1.1 - 0.55 * np.clip(u, 0, 1) ** 2)
        inside = smoothstep(1.0, 0.6, np.abs(p[:, 1] - y) / half)
        along = smoothstep(-0.08, 0.02, u) * smoothstep(1.05, 0.9, u)
        out = np.maximum(out, inside * along * (np.sign(p[:, 0]) == side))
    return out * ok * front


def surface_albedo(
    traits: Traits,
    anchors: Anchors,
    p: np.ndarray,
    region: np.ndarray,
    eye_angle: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Colours of points on the head surface and how much hair covers them.

    Args:
      traits: The identity's traits.
      anchors: Its rest-mesh anchors.
      p: Rest positions, FLAME metres. [N, 3]
      region: `flame.Region` id of each point. [N]
      eye_angle: Angle from the gaze axis for eyeball points (anything elsewhere). [N]
      rng: Generator for the low-frequency fields and the per-point grain.

    Returns:
      albedo: sRGB albedo in [0, 1]. [N, 3]
      hair: Hair coverage of each point, 0..1 (the caller grows the volume there). [N]
    """
    n = len(p)
    r = Region
    eye_y, eye_z = anchors.eye_y, float(anchors.eyes[:, 2].mean())
    fields = _lowfreq(rng, p, 4, (0.05, 0.16))
    # Per-point grain: mostly luminance (hair strands, pores), a little colour.
    grain = rng.normal(0.0, 1.0, (n, 1)) + 0.25 * rng.normal(0.0, 1.0, (n, 3))

    # Skin: tone x low-frequency luminance/redness, blush on cheeks, nose, ears.
    skin = np.broadcast_to(traits.skin, (n, 3)).copy()
    skin *= (1.0 + 0.05 * fields[0])[:, None]
    red = np.array([0.06, -0.03, -0.03])
    cheek = np.zeros(n)
    for side in (-1.0, 1.0):
        c = np.array([side * 0.045, eye_y - 0.035, eye_z + 0.005])
        cheek += np.exp(-np.sum(((p - c) / [0.02, 0.018, 0.04]) ** 2, axis=-1))
    flush = traits.blush * (0.8 * cheek + 0.6 * (region == r.NOSE) + 0.7 * (region == r.EARS))
    skin += (flush + 0.3 * fields[1])[:, None] * red * traits.skin.mean()
    under_eye = np.exp(-(((np.abs(p[:, 0]) - anchors.eyes[0, 0]) / 0.015) ** 2))
    under_eye *= np.exp(-(((p[:, 1] - (eye_y - 0.014)) / 0.006) ** 2)) * (p[:, 2] > eye_z - 0.01)
    skin *= (1.0 - 0.08 * under_eye)[:, None]
    # Jaw shadow and a darker neck towards the collar (the body would shade it).
    skin *= (0.55 + 0.45 * smoothstep(-0.16, -0.08, p[:, 1] - eye_y + 0.03))[:, None]
    # Eyelid margins: darker where the lids meet the eyeball (lashes, liner).
    lid = region == r.EYE_REGION
    d_eye = np.min(np.linalg.norm(p[:, None] - anchors.eyes[None], axis=-1), axis=1)
    lash = lid * smoothstep(anchors.eye_radius + 0.0035, anchors.eye_radius + 0.001, d_eye)
    lash *= np.where(p[:, 1] > eye_y, 1.0, 0.5)
    skin *= (1.0 - 0.55 * lash)[:, None]

    albedo = skin
    # Lips, with a darker line where they meet.
    lips = np.isin(region, [r.LIP_UPPER, r.LIP_LOWER])
    lip = traits.lips * (1.0 + 0.04 * fields[2])[:, None]
    albedo = np.where(lips[:, None], lip, albedo)
    if anchors.mouth is not None:
        line_y = anchors.mouth[:, 1].mean()
        seam = lips * np.exp(-(((p[:, 1] - line_y) / 0.0012) ** 2))
        albedo *= (1.0 - 0.35 * seam)[:, None]
        mouth_y = line_y
    else:
        mouth_y = eye_y - 0.075
    # Mouth interior: dark red, darker deeper in; the tongue's lower part pinker.
    inner = region == r.MOUTH_INTERIOR
    depth = smoothstep(0.0, 0.03, eye_z + 0.03 - p[:, 2])
    cavity = np.array([0.45, 0.12, 0.12]) * (1.0 - 0.75 * depth)[:, None]
    tongue = (p[:, 1] < mouth_y - 0.006)[:, None] * np.array([0.25, 0.08, 0.06])
    albedo = np.where(inner[:, None], cavity + tongue * (1 - depth[:, None]), albedo)
    teeth = np.array([0.93, 0.9, 0.82]) * rng.uniform(0.85, 1.0)
    albedo = np.where((region == r.TEETH)[:, None], teeth, albedo)

    # Eyes: sclera, iris with radial streaks and a dark limbal ring, pupil.
    ball = np.isin(region, [r.EYEBALL_LEFT, r.EYEBALL_RIGHT, r.IRIS_LEFT, r.IRIS_RIGHT])
    iris_edge = 0.56
    sclera = np.array([0.92, 0.89, 0.86]) - 0.15 * smoothstep(0.9, 1.4, eye_angle)[:, None] * [
        0.0,
        1.0,
        1.0,
    ]
    streak = 1.0 + 0.25 * np.sin(37.0 * np.arctan2(p[:, 1] - eye_y, p[:, 0]) + 3 * fields[3])
    iris = traits.eye_rgb * streak[:, None]
    iris *= (1.0 - 0.6 * smoothstep(iris_edge - 0.12, iris_edge, eye_angle))[:, None]
    iris *= (0.75 + 0.25 * smoothstep(traits.pupil, traits.pupil + 0.12, eye_angle))[:, None]
    pupil = eye_angle < traits.pupil
    eye = np.where((eye_angle < iris_edge)[:, None], iris, sclera)
    eye = np.where(pupil[:, None], 0.02, eye)
    albedo = np.where(ball[:, None], eye, albedo)

    # Brows and facial hair, blended over the skin.
    hair_rgb = traits.hair_rgb
    brow_rgb = hair_rgb * 0.55 + 0.45 * np.minimum(hair_rgb, 0.12)
    brow = brow_weight(traits, anchors, p, region)
    albedo = albedo * (1 - brow[:, None]) + brow[:, None] * brow_rgb * (1 + 0.25 * grain)
    if traits.beard:
        # Upper edge: the moustache above the lip, the mouth corners, then up the
        # cheeks to the sideburns; lower edge under the chin, not down the neck.
        ax = np.abs(p[:, 0])
        top = np.interp(
            ax,
            [0.0, 0.02, 0.034, 0.05, 0.07],
            [mouth_y + 0.013, mouth_y + 0.011, mouth_y + 0.003, eye_y - 0.04, eye_y - 0.012],
        )
        lower = smoothstep(top + 0.002, top - 0.002, p[:, 1])
        lower *= smoothstep(eye_y - 0.15, eye_y - 0.13, p[:, 1])
        lower *= smoothstep(-0.01, 0.03, p[:, 2] - anchors.centre[2])  # face side only
        lower *= np.isin(region, [r.SKIN, r.NECK])
        amount = (0.35 if traits.beard == 1 else 0.92) * lower
        albedo = albedo * (1 - amount[:, None]) + amount[:, None] * brow_rgb * (1 + 0.3 * grain)
    hair = hair_weight(traits, anchors, p, region)
    cap = hair * (0.6 if traits.hair_style == "buzz" else 1.0)
    albedo = albedo * (1 - cap[:, None]) + cap[:, None] * hair_rgb * (1 + 0.25 * grain)
    # Per-point grain (pores, strands), weaker on eyes and teeth.
    amp = np.where(ball | (region == r.TEETH), 0.01, 0.025)
    albedo *= 1.0 + amp[:, None] * grain
    return np.clip(albedo, 0.0, 1.0), hair
