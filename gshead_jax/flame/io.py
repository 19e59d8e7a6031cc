"""Loading and saving FLAME models: official pickle, .npz, GAGAvatar's .pt.

Formats read by :func:`load`:

* ``.pkl``: the official FLAME 2020 / 2023 ``generic_model.pkl`` /
  ``flame2023.pkl`` (Python 2 pickle of chumpy arrays, scipy-sparse
  ``J_regressor``), read without chumpy (see ``unpickle.py``).
* ``.npz``: the same keys as plain arrays (what :func:`save` writes; it may also
  hold ``exprdirs``, ``vt``/``ft``, ``lmk_faces_idx``/``lmk_bary_coords`` and
  ``vertex_labels``).
* ``.pt``: GAGAvatar's ``FLAME_with_eye.pt``: ``torch.save`` of
  ``{'flame_model': {same keys as tensors}, 'lmk_embeddings': {...}}``
  (``core/libs/flame_model/FLAME.py``); needs torch (the ``convert`` extra).

Keys: ``v_template`` [V, 3], ``shapedirs`` [V, 3, 300 + 100] (identity then
expression, as FLAME packs them), ``posedirs`` [V, 3, (J-1)*9],
``J_regressor`` [J, V] (dense or sparse), ``weights`` [V, J],
``kintree_table`` [2, J] (row 0 = parents), ``f`` [F, 3].
"""

from __future__ import annotations

import os
import zipfile

import jax.numpy as jnp
import numpy as np

from gshead_jax.flame.model import FlameModel, validate_model
from gshead_jax.flame.unpickle import to_numpy, unpickle

__all__ = ["load", "load_landmark_embedding", "load_uv", "save"]

_REQUIRED = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
_OPTIONAL = ("exprdirs", "vt", "ft", "lmk_faces_idx", "lmk_bary_coords", "vertex_labels")


def load(
    path,
    *,
    landmarks=None,
    uv=None,
    dtype=jnp.float32,
    num_shape_components: int = 300,
) -> FlameModel:
    """Loads a FLAME model file.

    Args:
        path: ``.pkl`` (official FLAME), ``.npz`` or ``.pt`` (GAGAvatar's
            ``FLAME_with_eye.pt``).
        landmarks: Optional landmark embedding file (DECA's
            ``landmark_embedding.npy``, FLAME's ``flame_static_embedding.pkl``
            or an ``.npz``); see :func:`load_landmark_embedding`. A ``.pt``
            file brings its own (the first 68 of ``full_lmk_*_with_eye``).
        uv: Optional ``.obj`` with FLAME's UV layout (``head_template_mesh.obj``);
            its faces must equal the model's.
        dtype: Float dtype of the model arrays.
        num_shape_components: How many leading ``shapedirs`` columns are identity
            (FLAME: 300 of 400); the rest are expression. Ignored when the file
            has a separate ``exprdirs``.

    Returns:
        The model.

    Raises:
        ValueError: a missing key or a wrong shape (naming the key and the file),
            a truncated or foreign file, an unknown extension.
        ImportError: a ``.pt`` file without torch installed.

    Example:
        >>> model = flame.load("third_party/assets/flame/generic_model.pkl",
        ...                    landmarks="third_party/assets/flame/landmark_embedding.npy")
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    lmk = None
    if ext == ".pkl":
        with open(path, "rb") as f:
            data = unpickle(f, source=path)
    elif ext == ".npz":
        data = _read_npz(path)
    elif ext in (".pt", ".pth"):
        data, lmk = _read_gagavatar_pt(path)
    else:
        raise ValueError(f"{path}: unknown FLAME file type {ext!r} (expected .pkl, .npz or .pt)")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of FLAME arrays, got {type(data).__name__}")
    arrays = _collect(data, path)
    if landmarks is not None:
        lmk = load_landmark_embedding(landmarks)
    if lmk is not None:
        arrays["lmk_faces_idx"], arrays["lmk_bary_coords"] = lmk
    if uv is not None:
        arrays["vt"], arrays["ft"] = load_uv(uv, faces=arrays["f"])
    return _build(arrays, path, dtype, num_shape_components)


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: truncated or corrupt .npz ({e})") from None


def _read_gagavatar_pt(path):
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{path}: reading GAGAvatar's .pt needs torch (pip install 'gshead-jax[convert]')"
        ) from e
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise ValueError(f"{path}: not a readable torch file ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    data = ckpt.get("flame_model", ckpt)
    lmk = None
    emb = ckpt.get("lmk_embeddings")
    if isinstance(emb, dict):
        lmk = _pick_landmarks(emb, f"{path}['lmk_embeddings']")
    return data, lmk


def _collect(data, source):
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(
            f"{source}: missing key(s) {missing}; a FLAME model needs {list(_REQUIRED)}"
        )
    return {k: to_numpy(data[k], key=k, source=source) for k in _REQUIRED + _OPTIONAL if k in data}


def _build(a, source, dtype, num_shape_components):
    def need(key, ndim, spec):
        if a[key].ndim != ndim:
            raise ValueError(f"{source}: '{key}' must be {spec}, got {a[key].shape}")
        return a[key]

    v = need("v_template", 2, "[V, 3]")
    nv = v.shape[0]
    kin = need("kintree_table", 2, "[2, J]")
    if kin.shape[0] != 2:
        raise ValueError(f"{source}: 'kintree_table' must be [2, J], got {kin.shape}")
    # The root's parent is stored as uint32 max (4294967295) or -1.
    parents = tuple(-1 if (j == 0 or p >= 2**31 or p < 0) else int(p) for j, p in enumerate(kin[0]))
    nj = len(parents)
    sd = need("shapedirs", 3, "[V, 3, N]")
    if "exprdirs" in a:
        ed = need("exprdirs", 3, "[V, 3, E]")
    else:
        if sd.shape[-1] < num_shape_components:
            raise ValueError(
                f"{source}: 'shapedirs' has {sd.shape[-1]} components, fewer than "
                f"num_shape_components={num_shape_components}"
            )
        sd, ed = sd[..., :num_shape_components], sd[..., num_shape_components:]
    pd = a["posedirs"]
    if pd.ndim == 3:  # official layout [V, 3, P] -> [P, V * 3], as the reference does
        if pd.shape[:2] != (nv, 3):
            raise ValueError(f"{source}: 'posedirs' must be [V={nv}, 3, P], got {pd.shape}")
        pd = pd.reshape(-1, pd.shape[-1]).T
    elif pd.ndim != 2:
        raise ValueError(f"{source}: 'posedirs' must be [V, 3, (J-1)*9], got {pd.shape}")
    faces = need("f", 2, "[F, 3]")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"{source}: 'f' must hold integers, got {faces.dtype}")
    fdt = np.dtype(dtype)

    def floats(x):
        return None if x is None else jnp.asarray(np.asarray(x, fdt))

    def ints(x):
        return None if x is None else jnp.asarray(np.asarray(x, np.int32))

    model = FlameModel(
        v_template=floats(v),
        shapedirs=floats(sd),
        exprdirs=floats(ed),
        posedirs=floats(pd),
        J_regressor=floats(need("J_regressor", 2, f"[J={nj}, V={nv}]")),
        lbs_weights=floats(need("weights", 2, f"[V={nv}, J={nj}]")),
        faces=ints(faces),
        parents=parents,
        vt=floats(a.get("vt")),
        ft=ints(a.get("ft")),
        lmk_faces_idx=ints(a.get("lmk_faces_idx")),
        lmk_bary_coords=floats(a.get("lmk_bary_coords")),
        vertex_labels=ints(a.get("vertex_labels")),
    )
    return validate_model(model, source)


def _pick_landmarks(d, source):
    """(faces_idx [L], bary [L, 3]) from the key sets landmark files use."""
    for fkey, bkey, count in (
        ("full_lmk_faces_idx", "full_lmk_bary_coords", None),
        ("lmk_faces_idx", "lmk_bary_coords", None),
        # GAGAvatar's: the iBUG 68 followed by the two pupils (its tracker uses [:, 68:]).
        ("full_lmk_faces_idx_with_eye", "full_lmk_bary_coords_with_eye", 68),
        ("lmk_face_idx", "lmk_b_coords", None),  # FLAME's flame_static_embedding.pkl (51)
        ("static_lmk_faces_idx", "static_lmk_bary_coords", None),
    ):
        if fkey in d and bkey in d:
            idx = to_numpy(d[fkey], key=fkey, source=source).reshape(-1)
            bary = to_numpy(d[bkey], key=bkey, source=source).reshape(-1, 3)
            if idx.shape[0] != bary.shape[0]:
                raise ValueError(
                    f"{source}: '{fkey}' has {idx.shape[0]} landmarks but '{bkey}' {bary.shape[0]}"
                )
            if count is not None:
                idx, bary = idx[:count], bary[:count]
            return idx.astype(np.int32), bary
    raise ValueError(
        f"{source}: no landmark embedding keys (expected e.g. 'full_lmk_faces_idx' and "
        f"'full_lmk_bary_coords'), found {sorted(d)}"
    )


def load_landmark_embedding(path) -> tuple[np.ndarray, np.ndarray]:
    """Reads a static landmark embedding: each landmark's triangle and barycentrics.

    Supported: DECA/EMOCA's ``landmark_embedding.npy`` (a pickled dict; its
    68-point ``full_lmk_faces_idx`` / ``full_lmk_bary_coords`` are used, the
    torch-pickled dynamic contour tables are skipped without torch), FLAME's
    ``flame_static_embedding.pkl`` (51 points) and ``.npz`` with
    ``lmk_faces_idx`` / ``lmk_bary_coords``.

    Args:
        path: The file.

    Returns:
        faces_idx: int32 [L]; bary_coords: float [L, 3].
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        data = _read_npz(path)
    elif ext == ".pkl":
        with open(path, "rb") as f:
            data = unpickle(f, source=path, opaque_modules=("torch",))
    elif ext == ".npy":
        data = _read_npy_dict(path)
    else:
        raise ValueError(f"{path}: unknown landmark file type {ext!r} (.npy, .pkl or .npz)")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of landmark arrays, got {type(data).__name__}")
    return _pick_landmarks(data, path)


def _read_npy_dict(path):
    """A pickled dict inside an .npy, unpickled with the restricted unpickler."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, EOFError, SyntaxError) as e:
            raise ValueError(f"{path}: not an .npy file ({e})") from None
        if not dtype.hasobject:
            raise ValueError(f"{path}: expected a pickled dict, got a {dtype} array {shape}")
        obj = unpickle(f, source=path, opaque_modules=("torch",))
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
        obj = obj.reshape(()).item()
    return obj


def load_uv(path, *, faces=None) -> tuple[np.ndarray, np.ndarray]:
    """Reads UV coordinates from an ``.obj`` (FLAME's ``head_template_mesh.obj``).

    Args:
        path: The ``.obj`` file with ``vt`` lines and ``f v/vt ...`` faces.
        faces: The model's triangles, int [F, 3]; when given the file's must match.

    Returns:
        vt: float [VT, 2]; ft: int32 [F, 3].
    """
    path = os.fspath(path)
    vt, fv, ft = [], [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "vt":
                vt.append([float(parts[1]), float(parts[2])])
            elif parts[0] == "f":
                if len(parts) != 4 or any("/" not in p for p in parts[1:]):
                    raise ValueError(f"{path}:{n}: expected a triangle 'f v/vt v/vt v/vt'")
                fv.append([int(p.split("/")[0]) - 1 for p in parts[1:]])
                ft.append([int(p.split("/")[1]) - 1 for p in parts[1:]])
    if not vt or not ft:
        raise ValueError(f"{path}: no 'vt' coordinates or no textured faces")
    fv, ft = np.asarray(fv, np.int32), np.asarray(ft, np.int32)
    if faces is not None and not np.array_equal(fv, np.asarray(faces)):
        raise ValueError(
            f"{path}: its faces differ from the model's 'f' ({fv.shape} vs {np.shape(faces)})"
        )
    return np.asarray(vt, np.float32), ft


def save(model: FlameModel, path) -> None:
    """Writes a model to ``.npz`` (readable by :func:`load`), keeping every field."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"{path}: save writes .npz")
    nv = model.num_vertices
    arrays = {
        "v_template": model.v_template,
        "shapedirs": model.shapedirs,
        "exprdirs": model.exprdirs,
        "posedirs": np.asarray(model.posedirs).T.reshape(nv, 3, -1),
        "J_regressor": model.J_regressor,
        "weights": model.lbs_weights,
        "kintree_table": np.stack([np.asarray(model.parents), np.arange(model.num_joints)]),
        "f": model.faces,
    }
    for k in ("vt", "ft", "lmk_faces_idx", "lmk_bary_coords", "vertex_labels"):
        if getattr(model, k) is not None:
            arrays[k] = getattr(model, k)
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
