"""FLAME's forward pass: blendshapes, joint regression, pose correctives, skinning.

Reproduces FLAME's linear blend skinning as its reference code does it (the
SMPL-X ``lbs`` that GAGAvatar ships in ``core/libs/flame_model/lbs.py``):

1. ``v_shaped = v_template + shapedirs @ shape + exprdirs @ expression``
2. ``J = J_regressor @ v_shaped``
3. ``R_j = rodrigues(pose_j)`` for the chain global, neck, jaw, left eye, right eye
4. ``v_posed = v_shaped + posedirs^T @ flatten(R_1..J-1 - I)`` (pose correctives)
5. world transforms ``G_j = G_parent(j) [R_j | J_j - J_parent(j)]``, made relative
   to the rest pose, blended per vertex by ``lbs_weights`` and applied to ``v_posed``.

Unlike the reference, which packs the pose as ``[global, neck, jaw, eyes]``,
the joints are named arguments, and a translation is added at the end.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gshead_jax.flame.landmarks import vertices_to_landmarks
from gshead_jax.flame.model import FlameModel, FlameOutput, FlameParams, concrete_value
from gshead_jax.flame.rotation import rodrigues

__all__ = ["forward"]

# Full float32 precision for every contraction: GPUs otherwise may use TF32
# (~1e-3 relative, a tenth of a millimetre on a head) and the cost is negligible.
_einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)


def _as_param(name, value, width, *, max_width=None):
    """Checks one parameter array: [..., width] (or [..., <= max_width])."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be an array, got {type(value).__name__}")
    x = jnp.asarray(value)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real array, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must be [..., {width or max_width}], got a scalar")
    n = x.shape[-1]
    if max_width is not None:
        if n > max_width:
            raise ValueError(
                f"{name} has {n} coefficients but the model has {max_width}: must be "
                f"[..., <= {max_width}] (fewer are zero-padded), got {x.shape}"
            )
    elif n != width:
        raise ValueError(f"{name} must be [..., {width}], got {x.shape}")
    return x


def _check_finite(named):
    for name, x in named.items():
        value = concrete_value(x)
        if value is not None and not np.all(np.isfinite(value)):
            bad = np.argwhere(~np.isfinite(value))[0]
            raise ValueError(
                f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)}); "
                "FLAME parameters must be finite"
            )


def forward(
    model: FlameModel,
    shape=None,
    expression=None,
    *,
    jaw=None,
    eyes=None,
    neck=None,
    global_pose=None,
    translation=None,
    check: bool = True,
) -> FlameOutput:
    """Poses a FLAME model: vertices, joints and (if embedded) landmarks.

    Every parameter may have any leading batch shape; the shapes broadcast.
    Omitted parameters are zero. Fewer shape or expression coefficients than
    the model has are zero-padded (the blendshape sum simply stops early);
    more is an error. The result dtype is the promotion of the model's and the
    parameters' dtypes (float64 needs ``jax.enable_x64``).

    Args:
        model: The head model.
        shape: Identity coefficients, or a :class:`FlameParams` holding all
            parameters (then no other parameter may be given). [..., <= S]
        expression: Expression coefficients. [..., <= E]
        jaw: Jaw axis-angle, radians. [..., 3]
        eyes: Left then right eyeball axis-angle (GAGAvatar's ``eyecode``). [..., 6]
        neck: Neck axis-angle. [..., 3]
        global_pose: Root axis-angle. [..., 3]
        translation: Added to vertices, joints and landmarks after skinning. [..., 3]
        check: Raise ``ValueError`` on NaN/Inf parameters. Shapes are always
            checked; values only when concrete (a traced call under ``jit``,
            ``vmap`` or ``grad`` skips the value check; pass ``check=False`` to
            skip the host transfer in an eager loop).

    Returns:
        ``FlameOutput(vertices [..., V, 3], joints [..., J, 3], landmarks [..., L, 3] | None)``.

    Example:
        >>> model = flame.standin()
        >>> out = flame.forward(model, jnp.zeros(300), jnp.zeros(100), jaw=jnp.array([0.2, 0, 0]))
        >>> out.vertices.shape  # (5023, 3)
    """
    if not isinstance(model, FlameModel):
        raise TypeError(f"model must be a FlameModel, got {type(model).__name__}")
    if isinstance(shape, FlameParams):
        others = (expression, jaw, eyes, neck, global_pose, translation)
        if any(o is not None for o in others):
            raise TypeError("pass either a FlameParams or separate parameter arrays, not both")
        p = shape
        shape, expression, jaw, eyes = p.shape, p.expression, p.jaw, p.eyes
        neck, global_pose, translation = p.neck, p.global_pose, p.translation

    nj = model.num_joints
    if nj != 5:
        # The named-joint API is FLAME's chain; other trees need another entry point.
        raise ValueError(f"model must have FLAME's 5 joints, got {nj} (parents {model.parents})")
    given = {}
    if shape is not None:
        given["shape"] = _as_param("shape", shape, None, max_width=model.num_shape)
    if expression is not None:
        given["expression"] = _as_param(
            "expression", expression, None, max_width=model.num_expression
        )
    for name, value, width in (
        ("jaw", jaw, 3),
        ("eyes", eyes, 6),
        ("neck", neck, 3),
        ("global_pose", global_pose, 3),
        ("translation", translation, 3),
    ):
        if value is not None:
            given[name] = _as_param(name, value, width)
    if check:
        _check_finite(given)
    try:
        batch = jnp.broadcast_shapes(*(x.shape[:-1] for x in given.values()))
    except ValueError:
        shapes = {k: tuple(v.shape) for k, v in given.items()}
        raise ValueError(f"parameter batch shapes do not broadcast: {shapes}") from None
    dtype = jnp.result_type(model.v_template.dtype, *given.values())
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = model.v_template.dtype

    return _forward_jit(model, given, batch, dtype)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _forward_jit(model: FlameModel, given: dict, batch: tuple, dtype) -> FlameOutput:
    # One compiled program per parameter layout: an eager call does not dispatch
    # (and compile) each of the ~100 primitives separately; under jit it inlines.
    def param(name, width):
        x = given.get(name)
        if x is None:
            return jnp.zeros(batch + (width,), dtype)
        return jnp.broadcast_to(x.astype(dtype), batch + x.shape[-1:])

    eyes = param("eyes", 6)
    pose = jnp.stack(
        [param("global_pose", 3), param("neck", 3), param("jaw", 3), eyes[..., :3], eyes[..., 3:]],
        axis=-2,
    )
    return _lbs(
        model, param("shape", 0), param("expression", 0), pose, param("translation", 3), dtype
    )


def _lbs(model: FlameModel, shape, expression, pose, translation, dtype) -> FlameOutput:
    """The skinning itself. shape [..., s], expression [..., e], pose [..., J, 3]."""
    v_template = model.v_template.astype(dtype)
    # Only the given coefficients take part: equal to zero-padding them.
    ns, ne = shape.shape[-1], expression.shape[-1]
    v_shaped = (
        v_template
        + _einsum("...s,vcs->...vc", shape, model.shapedirs[:, :, :ns].astype(dtype))
        + _einsum("...e,vce->...vc", expression, model.exprdirs[:, :, :ne].astype(dtype))
    )  # [..., V, 3]
    joints = _einsum("jv,...vc->...jc", model.J_regressor.astype(dtype), v_shaped)

    rot = rodrigues(pose)  # [..., J, 3, 3]
    nj = rot.shape[-3]
    pose_feature = (rot[..., 1:, :, :] - jnp.eye(3, dtype=dtype)).reshape(
        rot.shape[:-3] + ((nj - 1) * 9,)
    )  # [..., (J-1)*9]
    pose_offsets = _einsum("...p,pk->...k", pose_feature, model.posedirs.astype(dtype))
    pose_offsets = pose_offsets.reshape(v_shaped.shape)
    v_posed = v_shaped + pose_offsets

    # Forward kinematics down the (topologically ordered) chain.
    parents = model.parents
    world_rot = [rot[..., 0, :, :]]
    world_pos = [joints[..., 0, :]]
    for j in range(1, nj):
        p = parents[j]
        offset = joints[..., j, :] - joints[..., p, :]
        world_rot.append(_einsum("...ab,...bc->...ac", world_rot[p], rot[..., j, :, :]))
        world_pos.append(world_pos[p] + _einsum("...ij,...j->...i", world_rot[p], offset))
    g_rot = jnp.stack(world_rot, axis=-3)  # [..., J, 3, 3]
    g_pos = jnp.stack(world_pos, axis=-2)  # [..., J, 3]
    # Relative to the rest pose: x -> G_rot (x - J_rest) + G_pos.
    g_trans = g_pos - _einsum("...jab,...jb->...ja", g_rot, joints)

    weights = model.lbs_weights.astype(dtype)
    blend_rot = _einsum("vj,...jab->...vab", weights, g_rot)  # [..., V, 3, 3]
    blend_trans = _einsum("vj,...ja->...va", weights, g_trans)  # [..., V, 3]
    vertices = _einsum("...vab,...vb->...va", blend_rot, v_posed) + blend_trans
    t = translation[..., None, :]
    vertices = vertices + t
    posed_joints = g_pos + t

    landmarks = None
    if model.lmk_faces_idx is not None:
        landmarks = vertices_to_landmarks(
            vertices, model.faces, model.lmk_faces_idx, model.lmk_bary_coords.astype(dtype)
        )
    return FlameOutput(vertices=vertices, joints=posed_joints, landmarks=landmarks)
