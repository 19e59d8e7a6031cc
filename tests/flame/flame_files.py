"""Writers of FLAME files in the official formats, for the tests (no chumpy needed).

* ``write_official_pickle``: FLAME's ``generic_model.pkl`` layout -- a protocol-2
  pickle of a dict of chumpy ``Ch`` objects (the array in the state's ``'x'``)
  and a ``scipy.sparse.csc_matrix`` regressor. A fake ``chumpy.ch`` module with a
  ``Ch`` class is registered only while pickling.
* ``write_deca_landmarks``: DECA's ``landmark_embedding.npy`` (a pickled dict in
  an .npy, with torch tensors among the values when torch is importable).
* ``write_gagavatar_pt``: GAGAvatar's ``FLAME_with_eye.pt`` (torch.save of tensors).
"""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import scipy.sparse

ROOT_PARENT = 4294967295  # how the official kintree_table stores the root's parent


def random_flame_arrays(rng, *, num_vertices=600, num_shape=300, num_expression=100):
    """A random FLAME-layout model (numpy), built on the stand-in's mesh and weights."""
    from gshead_jax import flame

    base = flame.standin(0, num_vertices=num_vertices, num_shape=1, num_expression=1)
    nv = num_vertices
    shapedirs = rng.normal(scale=0.002, size=(nv, 3, num_shape + num_expression))
    posedirs = rng.normal(scale=0.01, size=(nv, 3, 36))
    regressor = np.asarray(base.J_regressor, np.float64)
    regressor[np.abs(regressor) < 1e-9] = 0.0
    return {
        "v_template": np.asarray(base.v_template, np.float64),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": regressor,
        "weights": np.asarray(base.lbs_weights, np.float64),
        "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "f": np.asarray(base.faces).astype(np.uint32),
    }


def write_official_pickle(path, arrays, *, drop=()):
    """Writes ``arrays`` like FLAME's generic_model.pkl (chumpy arrays, sparse regressor)."""
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")

    class Ch:  # what chumpy.ch.Ch pickles as: its __dict__, the array under 'x'
        pass

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    chumpy_ch.Ch = Ch
    chumpy.ch = chumpy_ch

    def ch(array):
        obj = Ch()
        obj.__dict__.update({"x": np.asarray(array), "_dirty_vars": set(), "_itr": None})
        return obj

    data = {
        "v_template": ch(arrays["v_template"]),
        "shapedirs": ch(arrays["shapedirs"]),
        "posedirs": ch(arrays["posedirs"]),
        "weights": ch(arrays["weights"]),
        "J": ch(arrays["J_regressor"] @ arrays["v_template"]),
        "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"]),
        "kintree_table": arrays["kintree_table"],
        "f": arrays["f"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    for key in drop:
        del data[key]
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, chumpy_ch
    try:
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_deca_landmarks(path, faces_idx, bary):
    """Writes DECA's landmark_embedding.npy layout (68-point 'full_*' keys)."""
    emb = {
        "static_lmk_faces_idx": np.asarray(faces_idx[17:], np.int64),
        "static_lmk_bary_coords": np.asarray(bary[17:]),
        "full_lmk_faces_idx": np.asarray(faces_idx, np.int64)[None],
        "full_lmk_bary_coords": np.asarray(bary)[None],
    }
    try:  # DECA stores the dynamic contour tables as torch tensors
        import torch

        emb["dynamic_lmk_faces_idx"] = torch.zeros(79, 17, dtype=torch.long)
        emb["dynamic_lmk_bary_coords"] = torch.zeros(79, 17, 3)
    except ImportError:
        pass
    np.save(path, emb, allow_pickle=True)


def write_gagavatar_pt(path, arrays, faces_idx, bary):
    """Writes GAGAvatar's FLAME_with_eye.pt layout (torch tensors)."""
    import torch

    model = {k: torch.as_tensor(np.asarray(v, np.float64 if k != "f" else np.int64))
             for k, v in arrays.items()}  # fmt: skip
    with_eye_idx = np.concatenate([faces_idx, faces_idx[:2]])  # 68 + the two pupils
    with_eye_bary = np.concatenate([bary, bary[:2]])
    lmk = {
        "static_lmk_faces_idx": torch.as_tensor(faces_idx[17:]),
        "static_lmk_bary_coords": torch.as_tensor(bary[17:]),
        "full_lmk_faces_idx_with_eye": torch.as_tensor(with_eye_idx[None]),
        "full_lmk_bary_coords_with_eye": torch.as_tensor(with_eye_bary[None]),
    }
    torch.save({"flame_model": model, "lmk_embeddings": lmk}, path)
