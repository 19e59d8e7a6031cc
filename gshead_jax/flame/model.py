"""FLAME's data: the model arrays, the parameters, the forward output."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FlameModel", "FlameOutput", "FlameParams", "JOINT_NAMES", "validate_model"]

# FLAME's kinematic chain (Li et al. 2017, Sec. 3): the root ("global"), the
# neck, the jaw and the two eyeballs; left = the subject's left (+x).
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")


@flax.struct.dataclass
class FlameModel:
    """A FLAME-structured head model, usable as a ``jit`` argument.

    Generic in the vertex, component and joint counts (V, S, E, J): the official
    FLAME 2020/2023 files (V = 5023, S = 300, E = 100, J = 5) and the procedural
    stand-in both fit.

    Attributes:
        v_template: Template (mean) mesh, metres, y up, face towards +z. [V, 3]
        shapedirs: Identity blendshapes. [V, 3, S]
        exprdirs: Expression blendshapes. [V, 3, E]
        posedirs: Pose correctives, rows = flattened (R - I) of joints 1..J-1. [(J-1)*9, V*3]
        J_regressor: Dense joint regressor. [J, V]
        lbs_weights: Skinning weights. [V, J]
        faces: Triangles, counter-clockwise seen from outside. int32 [F, 3]
        parents: Parent joint of each joint, -1 for the root (static). tuple of J ints
        vt: UV coordinates, optional. [VT, 2]
        ft: UV index per triangle corner, optional. int32 [F, 3]
        lmk_faces_idx: Landmark triangle indices, optional. int32 [L]
        lmk_bary_coords: Landmark barycentric coordinates, optional. [L, 3]
        vertex_labels: Region id per vertex, optional (see ``flame.Region``). int32 [V]
    """

    v_template: jax.Array
    shapedirs: jax.Array
    exprdirs: jax.Array
    posedirs: jax.Array
    J_regressor: jax.Array
    lbs_weights: jax.Array
    faces: jax.Array
    parents: tuple[int, ...] = flax.struct.field(pytree_node=False)
    vt: jax.Array | None = None
    ft: jax.Array | None = None
    lmk_faces_idx: jax.Array | None = None
    lmk_bary_coords: jax.Array | None = None
    vertex_labels: jax.Array | None = None

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def num_expression(self) -> int:
        return int(self.exprdirs.shape[-1])

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_landmarks(self) -> int:
        return 0 if self.lmk_faces_idx is None else int(self.lmk_faces_idx.shape[0])

    @property
    def dtype(self):
        return self.v_template.dtype

    def astype(self, dtype) -> FlameModel:
        """The same model with its float arrays cast to ``dtype`` (indices kept)."""
        cast = {
            k: None if getattr(self, k) is None else jnp.asarray(getattr(self, k), dtype)
            for k in (
                "v_template",
                "shapedirs",
                "exprdirs",
                "posedirs",
                "J_regressor",
                "lbs_weights",
                "vt",
                "lmk_bary_coords",
            )
        }
        return self.replace(**cast)


@flax.struct.dataclass
class FlameParams:
    """FLAME parameters of a batch of frames (any leading batch shape).

    Attributes:
        shape: Identity coefficients. [..., S]
        expression: Expression coefficients. [..., E]
        jaw: Jaw axis-angle, radians (+x opens the mouth). [..., 3]
        eyes: Left then right eyeball axis-angle (GAGAvatar's ``eyecode``). [..., 6]
        neck: Neck axis-angle. [..., 3]
        global_pose: Root axis-angle (GAGAvatar: ``posecode[:3]``). [..., 3]
        translation: Translation added after skinning, metres. [..., 3]
    """

    shape: jax.Array
    expression: jax.Array
    jaw: jax.Array
    eyes: jax.Array
    neck: jax.Array
    global_pose: jax.Array
    translation: jax.Array

    @classmethod
    def zeros(
        cls,
        batch_shape: tuple[int, ...] = (),
        num_shape: int = 300,
        num_expression: int = 100,
        dtype=jnp.float32,
    ) -> FlameParams:
        """All-zero parameters (the template at rest) of the given batch shape."""
        batch_shape = tuple(int(b) for b in batch_shape)

        def z(n):
            return jnp.zeros(batch_shape + (n,), dtype)

        return cls(
            shape=z(num_shape),
            expression=z(num_expression),
            jaw=z(3),
            eyes=z(6),
            neck=z(3),
            global_pose=z(3),
            translation=z(3),
        )

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.shape.shape[:-1])


@flax.struct.dataclass
class FlameOutput:
    """Result of :func:`gshead_jax.flame.forward`.

    Attributes:
        vertices: Posed vertices. [..., V, 3]
        joints: Posed joint locations (global, neck, jaw, left eye, right eye). [..., J, 3]
        landmarks: Landmarks when the model has an embedding, else None. [..., L, 3]
    """

    vertices: jax.Array
    joints: jax.Array
    landmarks: jax.Array | None = None


def _shape_error(source, key, expected, got):
    where = f"{source}: " if source else ""
    return ValueError(f"{where}'{key}' must be {expected}, got {tuple(got)}")


def validate_model(model: FlameModel, source: str = "") -> FlameModel:
    """Checks the shapes and index ranges of a model; returns it unchanged.

    Args:
        model: The model to check.
        source: Where it came from (a file name), for error messages.

    Returns:
        ``model``.

    Raises:
        ValueError: naming the array (key) and the expected shape.
    """
    v = model.v_template.shape
    if len(v) != 2 or v[1] != 3:
        raise _shape_error(source, "v_template", "[V, 3]", v)
    nv = v[0]
    nj = len(model.parents)
    if nj < 1:
        raise ValueError(f"{source}: the kinematic tree has no joints")
    for key, arr in (("shapedirs", model.shapedirs), ("exprdirs", model.exprdirs)):
        if arr.ndim != 3 or arr.shape[:2] != (nv, 3):
            raise _shape_error(source, key, f"[V={nv}, 3, N]", arr.shape)
    if model.posedirs.shape != ((nj - 1) * 9, nv * 3):
        raise _shape_error(source, "posedirs", f"[{(nj - 1) * 9}, {nv * 3}]", model.posedirs.shape)
    if model.J_regressor.shape != (nj, nv):
        raise _shape_error(source, "J_regressor", f"[J={nj}, V={nv}]", model.J_regressor.shape)
    if model.lbs_weights.shape != (nv, nj):
        raise _shape_error(source, "weights", f"[V={nv}, J={nj}]", model.lbs_weights.shape)
    if model.parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(model.parents) if j):
        raise ValueError(
            f"{source}: 'kintree_table' parents must be -1 for the root and point to an "
            f"earlier joint otherwise, got {model.parents}"
        )
    f = model.faces.shape
    if len(f) != 2 or f[1] != 3:
        raise _shape_error(source, "f", "[F, 3]", f)
    if not jnp.issubdtype(model.faces.dtype, jnp.integer):
        raise ValueError(f"{source}: 'f' must hold integers, got {model.faces.dtype}")
    _check_index_range(source, "f", model.faces, nv)
    if (model.vt is None) != (model.ft is None):
        raise ValueError(f"{source}: 'vt' and 'ft' come together (UV needs both)")
    if model.vt is not None:
        if model.vt.ndim != 2 or model.vt.shape[1] != 2:
            raise _shape_error(source, "vt", "[VT, 2]", model.vt.shape)
        if model.ft.shape != f:
            raise _shape_error(source, "ft", f"[F={f[0]}, 3]", model.ft.shape)
        _check_index_range(source, "ft", model.ft, model.vt.shape[0])
    if (model.lmk_faces_idx is None) != (model.lmk_bary_coords is None):
        raise ValueError(f"{source}: 'lmk_faces_idx' and 'lmk_bary_coords' come together")
    if model.lmk_faces_idx is not None:
        nl = model.lmk_faces_idx.shape
        if len(nl) != 1:
            raise _shape_error(source, "lmk_faces_idx", "[L]", nl)
        if model.lmk_bary_coords.shape != (nl[0], 3):
            raise _shape_error(
                source, "lmk_bary_coords", f"[L={nl[0]}, 3]", model.lmk_bary_coords.shape
            )
        _check_index_range(source, "lmk_faces_idx", model.lmk_faces_idx, f[0])
    if model.vertex_labels is not None and model.vertex_labels.shape != (nv,):
        raise _shape_error(source, "vertex_labels", f"[V={nv}]", model.vertex_labels.shape)
    return model


def concrete_value(x) -> np.ndarray | None:
    """``x`` as a NumPy array, or None while it is being traced (jit, vmap, grad)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_index_range(source, key, idx, bound):
    idx = concrete_value(idx)
    if idx is None:
        return
    if idx.size and (idx.min() < 0 or idx.max() >= bound):
        raise ValueError(
            f"{source}: '{key}' indices must lie in [0, {bound}), got [{idx.min()}, {idx.max()}]"
        )
