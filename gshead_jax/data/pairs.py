"""Pair rules: which source frame reconstructs the avatar that renders each target frame.

Rules, after GAGAvatar's ``TrackedData`` (``core/data/loader_track.py``):

* ``same_clip`` -- train: the source is a uniformly drawn *other* frame of the
  target's clip; eval: the source is the clip's first frame and the targets are
  the other frames (GAGAvatar drops first frames from val/test targets).
* ``cross_identity`` -- each clip takes its source from the *next* identity in
  sorted order, wrapping (GAGAvatar's ``build_video_info(cross_video=True)``;
  there identity = video). Train: any frame of that identity; eval: the first
  frame of its first clip (clips sorted by name).
* ``multi_view`` -- synthetic multi-view sets: the source is another view of
  the same (identity, clip, frame); eval: the lowest view id is the source.

Frames within a clip are ordered by (frame, view). A `PairPlan` holds the
candidates as flat arrays (no per-target lists), so it is cheap to copy into
worker processes, and the choice for a target is a pure function of
(plan, target position, rng).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from gshead_jax.data.source import FrameIndex

RULES = ("same_clip", "cross_identity", "multi_view")

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class PairPlan:
    """Targets and, per target, the group its source is drawn from.

    Attributes:
      targets: Record position of each target, in canonical order. [T] int64
      group: Candidate group of each target. [T] int64
      offsets: Start of each group in ``members``. [G + 1] int64
      members: Record positions of the groups' candidates, in order. [M] int64
      exclude: Position within its group that a target must not draw (itself), or -1. [T]
      random: Draw the source uniformly (train) or take the group's first member (eval).
    """

    targets: np.ndarray
    group: np.ndarray
    offsets: np.ndarray
    members: np.ndarray
    exclude: np.ndarray
    random: bool

    def __len__(self) -> int:
        return len(self.targets)

    def source_of(self, t: int, rng: np.random.Generator | None = None) -> int:
        """The source record for target position ``t`` (``rng`` needed when ``random``)."""
        g = self.group[t]
        lo, hi = int(self.offsets[g]), int(self.offsets[g + 1])
        if not self.random:
            return int(self.members[lo])
        ex = int(self.exclude[t])
        if ex >= 0:
            j = int(rng.integers(hi - lo - 1))
            j += j >= ex  # skip the target itself
        else:
            j = int(rng.integers(hi - lo))
        return int(self.members[lo + j])

    def pairs(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """All (target, source) record pairs, one draw each. [T, 2]"""
        return np.asarray([(int(t), self.source_of(i, rng)) for i, t in enumerate(self.targets)])


def _split(order: np.ndarray, group_keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group id per sorted position and offsets, grouping by equal ``group_keys``."""
    n = len(order)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    change = np.zeros(n, bool)
    change[0] = True
    for k in group_keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    gid = np.cumsum(change) - 1
    offsets = np.concatenate([np.flatnonzero(change), [n]]).astype(np.int64)
    return gid.astype(np.int64), offsets


def make_plan(index: FrameIndex, rule: str, *, train: bool, name: str = "source") -> PairPlan:
    """Builds the pair plan of ``rule`` over a source's index.

    Args:
      index: The source's ids.
      rule: One of `RULES`.
      train: Random sources over all usable targets (True) or the fixed eval pairs.
      name: The source's name, for messages.

    Raises:
      ValueError: on an unknown rule or when no pair can be formed.
    """
    if rule not in RULES:
        raise ValueError(f"pair rule must be one of {RULES}, got {rule!r}")
    n = len(index)
    ident, clip, frame, view = index.identity, index.clip, index.frame, index.view
    # Identity order is by name (GAGAvatar sorts video ids), not by position.
    name_rank = np.argsort(np.argsort(np.asarray(index.identities, dtype=object)))
    id_rank = name_rank[ident]
    clip_rank = np.argsort(np.argsort(np.asarray(index.clips, dtype=object)))[clip]

    order = np.lexsort((view, frame, clip_rank, id_rank))
    by = [id_rank, clip_rank, frame] if rule == "multi_view" else [id_rank, clip_rank]
    gid, offsets = _split(order, by)
    sizes = np.diff(offsets)
    pos_sorted = np.arange(n) - offsets[gid]  # position of each sorted record in its group

    if rule == "cross_identity":
        id_sorted = id_rank[order]
        present = np.unique(id_sorted)
        if len(present) < 2:
            raise ValueError(f"{name}: cross_identity pairs need at least 2 identities")
        _, id_offsets = _split(order, [id_rank])
        # Source group of identity present[k] is identity present[k + 1] (wrapping).
        next_group = {int(present[k]): (k + 1) % len(present) for k in range(len(present))}
        if train:
            targets = order
            group = np.asarray([next_group[int(r)] for r in id_sorted], np.int64)
            exclude = np.full(n, -1, np.int64)
        else:
            keep = pos_sorted >= 1  # first frames of clips are sources only
            targets = order[keep]
            group = np.asarray([next_group[int(r)] for r in id_sorted[keep]], np.int64)
            exclude = np.full(len(targets), -1, np.int64)
        plan = PairPlan(targets, group, id_offsets, order.astype(np.int64), exclude, train)
    else:
        if train:
            keep = sizes[gid] >= 2
            exclude = pos_sorted[keep]
        else:
            keep = pos_sorted >= 1
            exclude = np.full(int(keep.sum()), -1, np.int64)
        unpaired = int(np.sum(sizes == 1))
        if unpaired:
            what = "single-frame clips" if rule == "same_clip" else "single-view frames"
            example = index.keys[int(order[offsets[np.flatnonzero(sizes == 1)[0]]])]
            _log.warning(
                "%s: %d %s cannot be paired and are not used as targets (e.g. %r)",
                name,
                unpaired,
                what,
                example,
            )
        plan = PairPlan(
            order[keep].astype(np.int64),
            gid[keep],
            offsets,
            order.astype(np.int64),
            exclude.astype(np.int64),
            train,
        )
    if len(plan) == 0:
        raise ValueError(f"{name}: no {rule} pair can be formed ({n} records)")
    return plan
