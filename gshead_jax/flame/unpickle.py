"""Reading FLAME's Python-2 pickles without chumpy, scipy or torch, and safely.

The official ``generic_model.pkl`` is a Python 2 pickle of a dict whose arrays
are chumpy ``Ch`` objects (the array in the object's state under ``'x'``) and
whose ``J_regressor`` is a ``scipy.sparse.csc_matrix``. DECA's
``landmark_embedding.npy`` pickles a dict that also holds torch tensors.

:class:`RestrictedUnpickler` resolves only the globals such files contain:
numpy's array reconstruction, a few builtins, chumpy classes (mapped to
:class:`ChumpyArray`, which keeps the state) and scipy sparse matrices (mapped
to :class:`SparseMatrix`, densified here). Anything else -- a foreign pickle,
or one that would run code on load -- is refused with a clear error instead of
being imported.
"""

from __future__ import annotations

import pickle

import numpy as np

__all__ = ["ChumpyArray", "Opaque", "RestrictedUnpickler", "SparseMatrix", "to_numpy"]


class ChumpyArray:
    """Stand-in for ``chumpy.ch.Ch`` (and its subclasses): keeps the pickled state."""

    def __init__(self, *args, **kwargs):
        self.state = {"x": args[0]} if args else dict(kwargs)

    def __setstate__(self, state):
        self.state = state

    def to_numpy(self):
        state = self.state
        if isinstance(state, dict) and "x" in state:
            return np.asarray(state["x"])
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"a chumpy object without its array 'x' (state: {keys})")


class SparseMatrix:
    """Stand-in for scipy.sparse matrices and arrays: densified from their state."""

    format = "csc"

    def __init__(self, *args, **kwargs):
        self.state = dict(kwargs)

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"_raw": state}

    def to_numpy(self):
        s = self.state
        shape = tuple(int(n) for n in s.get("_shape", s.get("shape", ())))
        if len(shape) != 2:
            raise ValueError(f"a sparse matrix without a 2-D shape (state keys {sorted(s)})")
        fmt = self.format
        data = np.asarray(s.get("data"))
        dense = np.zeros(shape, dtype=data.dtype if data.dtype != object else np.float64)
        if fmt in ("csc", "csr"):
            indices = np.asarray(s["indices"]).astype(np.int64)
            indptr = np.asarray(s["indptr"]).astype(np.int64)
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if fmt == "csc" else (major, indices)
        elif fmt == "coo":
            if "coords" in s:
                rows, cols = (np.asarray(c).astype(np.int64) for c in s["coords"])
            else:
                rows, cols = np.asarray(s["row"]).astype(np.int64), np.asarray(s["col"])
        else:
            raise ValueError(f"unsupported sparse format {fmt!r} (csc, csr or coo)")
        np.add.at(dense, (rows, np.asarray(cols).astype(np.int64)), data)
        return dense


def _sparse_class(fmt):
    return type(f"Sparse_{fmt}", (SparseMatrix,), {"format": fmt})


class Opaque:
    """Placeholder for objects a caller has declared irrelevant (e.g. torch tensors)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return Opaque()


_BUILTINS = {
    "object",
    "set",
    "frozenset",
    "slice",
    "complex",
    "bytearray",
    "range",
    "int",
    "float",
    "str",
    "bytes",
    "list",
    "tuple",
    "dict",
    "bool",
}
_NUMPY_NAMES = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer", "frombuffer"}


class ForeignPickleError(pickle.UnpicklingError):
    """The pickle refers to a global that FLAME files never contain."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves the globals FLAME-related files use.

    Args:
        file: Binary file object.
        opaque_modules: Top-level modules whose objects become :class:`Opaque`
            (e.g. ``("torch",)`` for DECA's landmark embedding).
    """

    def __init__(self, file, *, opaque_modules=()):
        # latin1: the only encoding that round-trips Python 2 str (numpy's raw data).
        super().__init__(file, encoding="latin1")
        self._opaque = tuple(opaque_modules)

    def find_class(self, module, name):
        top = module.split(".")[0]
        if top == "chumpy":
            return ChumpyArray
        if top == "scipy" and ".sparse" in module:
            for fmt in ("csc", "csr", "coo"):
                if name.startswith(fmt):
                    return _sparse_class(fmt)
        if top in self._opaque:
            return Opaque
        if top == "numpy":
            if module.startswith("numpy.core"):
                # numpy 2 renamed numpy.core to numpy._core (old pickles say numpy.core).
                module = "numpy._core" + module[len("numpy.core") :]
            if name in _NUMPY_NAMES or module == "numpy.dtypes":
                return super().find_class(module, name)
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return super().find_class(module, name)
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return super().find_class(module, name)
        if module == "_codecs" and name == "encode":
            return super().find_class(module, name)
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        raise ForeignPickleError(f"refers to {module}.{name}, which a FLAME file does not contain")

    def persistent_load(self, pid):
        if self._opaque:
            return Opaque()
        raise ForeignPickleError("uses persistent ids (a torch.save file?)")


def unpickle(file, *, source: str, opaque_modules=()):
    """Reads one pickle with :class:`RestrictedUnpickler`; errors name ``source``.

    Raises:
        ValueError: for a truncated, corrupt or foreign pickle.
    """
    try:
        return RestrictedUnpickler(file, opaque_modules=opaque_modules).load()
    except ForeignPickleError as e:
        raise ValueError(f"{source}: not a FLAME pickle: {e}") from None
    except (
        pickle.UnpicklingError, EOFError, IndexError, KeyError, TypeError, ValueError,
        AttributeError, MemoryError,
    ) as e:  # fmt: skip
        raise ValueError(
            f"{source}: truncated or corrupt pickle ({type(e).__name__}: {e})"
        ) from None


def to_numpy(value, *, key: str, source: str) -> np.ndarray:
    """Any array-like a FLAME file holds (numpy, chumpy, sparse, torch) as NumPy."""
    try:
        if isinstance(value, (ChumpyArray, SparseMatrix)):
            return value.to_numpy()
        if hasattr(value, "detach"):  # torch.Tensor
            value = value.detach().cpu()
            if getattr(value, "is_sparse", False):
                value = value.to_dense()
            return value.numpy()
        if hasattr(value, "toarray"):  # a real scipy.sparse matrix
            return np.asarray(value.toarray())
        if isinstance(value, Opaque):
            raise ValueError("an object this reader does not decode")
        out = np.asarray(value)
        if out.dtype == object:
            raise ValueError(f"not a numeric array (object dtype, {out.shape})")
        return out
    except ValueError as e:
        raise ValueError(f"{source}: key '{key}': {e}") from None
