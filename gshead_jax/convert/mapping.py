"""Map every tensor of a checkpoint, by name, onto a Flax parameter tree -- or refuse.

An importer describes the checkpoint it expects as a *plan*: one ``TensorMap`` per
parameter, naming the checkpoint tensor(s) it is built from, their expected shapes and
the layout change (transpose, concatenation). ``map_tensors`` applies a plan and refuses
the checkpoint, listing every unmatched name, when

* a tensor the plan needs is absent (``missing``),
* a tensor of the checkpoint is used by no entry (``unexpected``),
* a tensor has another shape than the plan says (``wrong_shapes``).

Nothing is dropped or guessed silently. ``check_tree`` compares a finished tree with the
shapes a model expects (``jax.eval_shape`` of its ``init``).

Example:
    >>> plan = [TensorMap("dense/kernel", ("fc.weight",), lambda w: w.T, ((4, 3),)),
    ...         TensorMap("dense/bias", ("fc.bias",), shapes=((4,),))]
    >>> params = map_tensors(state_dict, plan, source="model.safetensors")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def transpose_linear(w: np.ndarray) -> np.ndarray:
    """torch ``nn.Linear`` weight [out, in] -> Flax ``Dense`` kernel [in, out]."""
    return np.ascontiguousarray(w.T)


def concat_linear(*ws: np.ndarray) -> np.ndarray:
    """Several torch Linear weights [out_i, in] (or biases [out_i]) fused along ``out``."""
    if ws[0].ndim == 1:
        return np.concatenate(ws, axis=0)
    return np.ascontiguousarray(np.concatenate([w.T for w in ws], axis=1))


def conv_oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """torch ``nn.Conv2d`` weight [O, I, kh, kw] -> Flax ``Conv`` kernel [kh, kw, I, O]."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """One parameter of the tree, built from one or more checkpoint tensors.

    Attributes:
        target: ``/``-joined path of the parameter (``"blocks_0/attn/qkv/kernel"``).
        sources: Checkpoint tensor names, in the order ``fn`` takes them.
        fn: Layout conversion from the source arrays to the parameter.
        shapes: Expected shape of each source (None: not checked).
    """

    target: str
    sources: tuple[str, ...]
    fn: Callable[..., np.ndarray] = _identity
    shapes: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self):
        if not self.sources:
            raise ValueError(f"TensorMap {self.target!r} needs at least one source")
        if self.shapes is not None and len(self.shapes) != len(self.sources):
            raise ValueError(f"TensorMap {self.target!r}: one shape per source expected")


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not all map onto the expected parameters.

    Attributes:
        missing: Names the plan needs that the checkpoint lacks.
        unexpected: Names of the checkpoint no plan entry uses.
        wrong_shapes: ``name -> (found, expected)`` shapes.
    """

    def __init__(
        self,
        source: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        wrong_shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
        hint: str = "",
    ):
        self.source = source
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.wrong_shapes = dict(sorted((wrong_shapes or {}).items()))
        lines = [f"{source}: the checkpoint does not match the expected parameters."]
        if self.missing:
            lines.append(f"missing tensors ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(
                f"unexpected tensors ({len(self.unexpected)}): {', '.join(self.unexpected)}"
            )
        for name, (found, want) in self.wrong_shapes.items():
            lines.append(f"wrong shape: {name} is {found}, expected {want}")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(sep)
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"path {path!r} goes through a leaf")
        if leaf in node:
            raise ValueError(f"duplicate path {path!r}")
        node[leaf] = value
    return tree


def flatten(tree: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}`` (nested mappings only)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, sep, path))
        else:
            out[path] = v
    return out


def map_tensors(
    tensors: Mapping[str, np.ndarray],
    plan: Iterable[TensorMap],
    *,
    source: str,
    display_names: Mapping[str, str] | None = None,
    hint: str = "",
) -> dict[str, Any]:
    """Builds a nested parameter tree from a checkpoint, using every tensor exactly.

    Args:
        tensors: Checkpoint tensors by name.
        plan: One entry per parameter; a source may feed several entries.
        source: What the tensors came from (path), for the error message.
        display_names: Optional ``name -> name as stored`` for the error message, when
            the importer renamed tensors before mapping.
        hint: A sentence appended to the error message.

    Returns:
        The parameter tree (nested dicts of NumPy arrays).

    Raises:
        CheckpointMismatchError: Missing, unexpected or wrongly shaped tensors, all listed.
    """
    plan = list(plan)
    show = (lambda n: display_names.get(n, n)) if display_names else (lambda n: n)
    used = {name for entry in plan for name in entry.sources}
    missing = sorted({show(n) for n in used if n not in tensors})
    unexpected = sorted(show(n) for n in tensors if n not in used)
    wrong: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for entry in plan:
        for name, want in zip(entry.sources, entry.shapes or (None,) * len(entry.sources)):
            if name in tensors and want is not None and tuple(tensors[name].shape) != tuple(want):
                wrong[show(name)] = (tuple(tensors[name].shape), tuple(want))
    if missing or unexpected or wrong:
        raise CheckpointMismatchError(source, missing, unexpected, wrong, hint)
    flat = {e.target: e.fn(*(np.asarray(tensors[n]) for n in e.sources)) for e in plan}
    return unflatten(flat)


def check_tree(
    params: Mapping[str, Any], expected: Mapping[str, Any], *, source: str, hint: str = ""
) -> None:
    """Checks that a parameter tree has exactly the expected paths and shapes.

    Args:
        params: The tree to check (arrays).
        expected: The reference tree (arrays or ``jax.ShapeDtypeStruct``).
        source: What the tree came from, for the error message.
        hint: A sentence appended to the error message.

    Raises:
        CheckpointMismatchError: Naming the missing, unexpected and misshaped parameters.
    """
    got, want = flatten(params), flatten(expected)
    wrong = {
        k: (tuple(np.shape(got[k])), tuple(want[k].shape))
        for k in got.keys() & want.keys()
        if tuple(np.shape(got[k])) != tuple(want[k].shape)
    }
    missing, unexpected = want.keys() - got.keys(), got.keys() - want.keys()
    if missing or unexpected or wrong:
        raise CheckpointMismatchError(source, missing, unexpected, wrong, hint)
