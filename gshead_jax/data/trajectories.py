"""Talking-head motion, cameras and lights of synthetic clips, computed per frame.

Every quantity is a deterministic function of ``(seed, identity, clip, frame)``
(and ``view`` for cameras): smooth channels are sums of seeded sinusoids
evaluated at the frame's time, blinks are seeded events on a jittered grid, so
any frame is computed without generating the others (random access). The
coefficients of a clip are drawn once and cached; a frame is then a few dozen
sines on arrays of a fixed shape, so its numbers do not depend on which other
frames were asked for.

Choice: **head pose goes into the camera**, as GAGAvatar's tracker does
(``posecode[:3]`` stays zero, the rotation is in ``transform_matrix``): the
record's FLAME ``global_pose``, ``neck`` and ``translation`` are zero and
``viewmat = view camera @ head motion``. Models trained on tracked and synthetic
data then see one convention. Lights are fixed in the capture rig, so in the
head's frame they turn against the head's rotation.

Motion (25 fps by default): head yaw / pitch / roll about the head centre
(RMS ~14 / 7 / 4 deg) and a few millimetres of drift; conjugate gaze
(RMS ~9 / 5 deg); speech: an on/off envelope (~0.1-0.3 Hz) times syllables
(2.5-6 Hz) opening the jaw up to ~0.3 rad with ``MOUTH_OPEN``; a clip mood
(smile, brows, frown) plus slow variation, puckers and wide mouths; blinks
every ~2-6 s lasting ~0.2 s; the stand-in's random expression components as
slow noise. Named components follow `flame.Expression` (the stand-in's); a
real FLAME model gets the same coefficients on its PCA components.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from gshead_jax import camera
from gshead_jax.flame import Expression

FPS = 25.0
# Stream tags: every random draw is default_rng([seed, tag, ...ids]).
TAG_TRAITS, TAG_SHAPE, TAG_PLACE, TAG_CLIP, TAG_VIEW = 1, 2, 3, 4, 5

_N_RANDOM_EXPR = 24  # random expression components animated (after the named 8)
_BLINK_EVENTS = 1024  # jitter table length (events repeat after ~1 h)
_BLINK_PERIOD = 3.5  # seconds between blinks on average
_BLINK_WIDTH = 0.07  # seconds (the closure's half-width)
# Channels: (name, frequency range Hz, RMS); sums of 3 seeded sinusoids each.
_CHANNELS = (
    ("yaw", (0.04, 0.35), 0.25),
    ("pitch", (0.05, 0.4), 0.12),
    ("roll", (0.04, 0.3), 0.07),
    ("tx", (0.03, 0.2), 0.003),
    ("ty", (0.03, 0.2), 0.003),
    ("tz", (0.03, 0.2), 0.003),
    ("gaze_yaw", (0.1, 0.8), 0.16),
    ("gaze_pitch", (0.1, 0.8), 0.09),
    ("speech", (0.08, 0.3), 1.0),
    ("syllable", (2.5, 6.0), 1.0),
    ("smile", (0.05, 0.3), 0.3),
    ("brows", (0.1, 0.7), 0.35),
    ("frown", (0.05, 0.4), 0.25),
    ("pucker", (0.2, 1.0), 0.3),
    ("wide", (0.2, 1.0), 0.3),
    ("jaw_side", (0.3, 1.5), 1.0),
)
_CH = {name: i for i, (name, _, _) in enumerate(_CHANNELS)}


@dataclasses.dataclass(frozen=True)
class FrameState:
    """One frame's motion (NumPy float32; FLAME metres, head frame).

    Attributes:
      expression: Expression coefficients. [E]
      jaw: Jaw axis-angle. [3]
      eyes: Left then right eyeball axis-angle. [6]
      head_rotation: Head rotation in the rig (into the camera). [3, 3]
      head_translation: Head translation in the rig, FLAME metres. [3]
      light: Lights in the rig frame (`synth_render.LIGHT_SIZE` layout). [9]
    """

    expression: np.ndarray
    jaw: np.ndarray
    eyes: np.ndarray
    head_rotation: np.ndarray
    head_translation: np.ndarray
    light: np.ndarray

    def replace(self, **kw) -> FrameState:
        return dataclasses.replace(self, **kw)


def euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Ry(yaw) Rx(pitch) Rz(roll)``: yaw turns the face towards +x (the subject's left),
    pitch > 0 tips it down, roll about the view axis. [3, 3]"""
    cy, sy, cp, sp, cr, sr = (f(a) for a in (yaw, pitch, roll) for f in (np.cos, np.sin))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def eye_rotation(yaw: float, pitch: float) -> np.ndarray:
    """Both eyes' axis-angle for a gaze (radians; yaw > 0 looks to the subject's left). [6]"""
    rotvec = np.array([-pitch, yaw, 0.0])  # small-angle axis-angle of Ry(yaw) Rx(-pitch)
    return np.concatenate([rotvec, rotvec])


def default_light() -> np.ndarray:
    """A frontal key from the upper left of the camera, a weak fill, ambient. [9]"""
    key = np.array([-0.35, 0.45, 0.82])
    fill = np.array([0.6, -0.1, 0.8])
    return np.concatenate(
        [key / np.linalg.norm(key), fill / np.linalg.norm(fill), [0.6, 0.12, 0.45]]
    )


def neutral(num_expression: int) -> FrameState:
    """The rest face, head straight, default light."""
    return FrameState(
        expression=np.zeros(num_expression, np.float32),
        jaw=np.zeros(3, np.float32),
        eyes=np.zeros(6, np.float32),
        head_rotation=np.eye(3, dtype=np.float32),
        head_translation=np.zeros(3, np.float32),
        light=default_light().astype(np.float32),
    )


@functools.lru_cache(maxsize=256)
def _clip(seed: int, identity: int, clip: int):
    """A clip's coefficients (cached): sinusoids, mood, blink jitter, light, distance."""
    rng = np.random.default_rng([seed, TAG_CLIP, identity, clip])
    c = len(_CHANNELS)
    lo = np.array([ch[1][0] for ch in _CHANNELS])[:, None]
    hi = np.array([ch[1][1] for ch in _CHANNELS])[:, None]
    freq = lo + (hi - lo) * rng.uniform(size=(c, 3))
    phase = rng.uniform(0, 2 * np.pi, (c, 3))
    amp = rng.normal(size=(c, 3))
    amp /= np.linalg.norm(amp, axis=1, keepdims=True)  # RMS of the sum: |amp| / sqrt(2)
    amp *= np.array([ch[2] for ch in _CHANNELS])[:, None] * np.sqrt(2.0)
    r = _N_RANDOM_EXPR
    rfreq = rng.uniform(0.05, 0.5, (r, 3))
    rphase = rng.uniform(0, 2 * np.pi, (r, 3))
    ramp = rng.normal(size=(r, 3)) * np.sqrt(2.0) / np.sqrt(3.0) * 0.45
    mood = {
        "smile": rng.uniform(-0.2, 0.7),
        "brows": rng.uniform(-0.1, 0.3),
        "frown": rng.uniform(-0.4, 0.3),
        "talk": rng.uniform(0.4, 1.0),
        "speech_bias": rng.uniform(-0.2, 0.6),
    }
    blink = rng.uniform(-0.35, 0.35, _BLINK_EVENTS) * _BLINK_PERIOD
    az, el = rng.uniform(-1.2, 1.2), rng.uniform(0.1, 0.9)
    key = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    fill = np.array([-0.6 * np.sign(az), -0.1, 0.8])
    strengths = [rng.uniform(0.5, 0.7), rng.uniform(0.05, 0.2), rng.uniform(0.35, 0.5)]
    light = np.concatenate([key, fill / np.linalg.norm(fill), strengths])
    distance = rng.uniform(0.96, 1.04)
    return (freq, phase, amp), (rfreq, rphase, ramp), mood, blink, light, distance


def _blink(t: float, jitter: np.ndarray) -> float:
    k0 = int(np.floor(t / _BLINK_PERIOD))
    out = 0.0
    for k in (k0 - 1, k0, k0 + 1, k0 + 2):
        centre = k * _BLINK_PERIOD + jitter[k % len(jitter)]
        out = max(out, float(np.exp(-(((t - centre) / _BLINK_WIDTH) ** 2))))
    return out


def frame_state(
    seed: int, identity: int, clip: int, frame: int, *, num_expression: int, fps: float = FPS
) -> FrameState:
    """The motion of one frame (random access: nothing else is computed).

    Args:
      seed: Dataset seed.
      identity: Identity number.
      clip: Clip number within the identity.
      frame: Frame number within the clip.
      num_expression: E, the model's expression components.
      fps: Frames per second (time = frame / fps).

    Returns:
      The frame's `FrameState`.
    """
    (freq, phase, amp), (rfreq, rphase, ramp), mood, jitter, light, _ = _clip(
        int(seed), int(identity), int(clip)
    )
    t = frame / fps
    ch = np.sum(amp * np.sin(2 * np.pi * freq * t + phase), axis=1)  # [C]

    def v(name):
        return float(ch[_CH[name]])

    expr = np.zeros(num_expression)
    speech = float(1.0 / (1.0 + np.exp(-4.0 * (v("speech") + mood["speech_bias"]))))
    syllable = float(np.clip(0.5 + 0.45 * v("syllable"), 0.0, 1.0))
    talk = mood["talk"] * speech * syllable
    blink = _blink(t, jitter)
    named = {
        Expression.MOUTH_OPEN: 0.6 * talk,
        Expression.SMILE: np.clip(mood["smile"] + v("smile"), -0.4, 1.3),
        Expression.BROWS_UP: np.clip(mood["brows"] + v("brows") + 0.3 * talk, -0.4, 1.2),
        Expression.BLINK_LEFT: blink,
        Expression.BLINK_RIGHT: blink,
        Expression.FROWN: np.clip(mood["frown"] + v("frown"), 0.0, 0.9),
        Expression.PUCKER: np.clip(v("pucker") - 0.1, 0.0, 0.7),
        Expression.MOUTH_WIDE: np.clip(v("wide") - 0.1, 0.0, 0.7),
    }
    for idx, value in named.items():
        if idx < num_expression:
            expr[idx] = value
    r = min(_N_RANDOM_EXPR, max(num_expression - len(Expression), 0))
    if r:
        noise = np.sum(ramp * np.sin(2 * np.pi * rfreq * t + rphase), axis=1)
        expr[len(Expression) : len(Expression) + r] = noise[:r]
    jaw = np.array([0.02 + 0.28 * talk, 0.015 * v("jaw_side") * talk, 0.0])
    rot = euler(v("yaw"), v("pitch"), v("roll"))
    return FrameState(
        expression=expr.astype(np.float32),
        jaw=jaw.astype(np.float32),
        eyes=eye_rotation(v("gaze_yaw"), v("gaze_pitch")).astype(np.float32),
        head_rotation=rot.astype(np.float32),
        head_translation=np.array([v("tx"), v("ty"), v("tz")], np.float32),
        light=light.astype(np.float32),
    )


def view_angles(
    seed: int, identity: int, clip: int, view: int, *, yaw_range: float, pitch_range: float
) -> tuple[float, float]:
    """(yaw, pitch) of a clip's camera ``view``, radians: view 0 is frontal, the others
    uniform in [-yaw_range, yaw_range] x [-pitch_range, pitch_range], fixed per clip (a rig)."""
    if view == 0:
        return 0.0, 0.0
    rng = np.random.default_rng([seed, TAG_VIEW, identity, clip, view])
    return float(rng.uniform(-yaw_range, yaw_range)), float(rng.uniform(-pitch_range, pitch_range))


def orbit_viewmat(yaw: float, pitch: float, radius: float) -> np.ndarray:
    """`camera.orbit`'s world-to-camera matrix (target the origin, +y up), in NumPy. [4, 4]"""
    eye = radius * np.array(
        [np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)]
    )
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = -rot @ eye
    return out


def frame_camera(
    state: FrameState, yaw: float, pitch: float, *, distance_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """The record's camera and the lights in the head frame.

    ``viewmat = orbit(yaw, pitch) @ [R_head | 5 t_head]`` in GAGAvatar's world
    (FLAME x 5), at GAGAvatar's distance (9.3 units) times ``distance_scale``.

    Returns:
      viewmat [4, 4] float32, light [9] float32 (directions rotated into the head frame).
    """
    s = camera.GAGAVATAR_FLAME_SCALE
    view = orbit_viewmat(yaw, pitch, camera.GAGAVATAR_DISTANCE * distance_scale)
    head = np.eye(4)
    head[:3, :3] = state.head_rotation
    head[:3, 3] = s * state.head_translation
    rt = state.head_rotation.T.astype(np.float64)
    light = state.light.astype(np.float64).copy()
    light[0:3] = rt @ light[0:3]
    light[3:6] = rt @ light[3:6]
    return (view @ head).astype(np.float32), light.astype(np.float32)


def clip_distance(seed: int, identity: int, clip: int) -> float:
    """The clip's camera distance factor (head size varies a little between clips)."""
    return float(_clip(int(seed), int(identity), int(clip))[5])
