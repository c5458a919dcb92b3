"""Gap handling on finished tracks: bridge short occlusions, drop tracks too short to be a person.

The tracker keeps an identity through an occlusion of up to ``max_lost`` frames; the frames in
between have no detection. :func:`plan_gaps` returns a :class:`GapFill` that says, for every output
frame, which two observed samples to blend and with what weight. The plan is data-agnostic: the
pipeline applies it to any per-frame array (``GapFill.lerp`` for vectors such as boxes, betas,
translations; slerp with the same ``lo``, ``hi``, ``alpha`` for rotations).

    plan = plan_gaps(frames, max_gap=15)          # frames: (T,) where the person was seen
    boxes_out = plan.lerp(boxes)                  # (T', 4) with the short holes filled
    R_out = slerp(R[plan.lo], R[plan.hi], plan.alpha)
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GapFill:
    """How to resample one track's observed samples onto its output frames.

    With T observed samples and T' output frames (observed plus bridged):

    Attributes:
        frames_out: (T',) int64 increasing frame indices of the finished track.
        lo, hi: (T',) int64 indices into the observed arrays (in the order given to
            :func:`plan_gaps`) of the samples before and after each output frame; equal at
            observed frames.
        alpha: (T',) float64 weight of ``hi``: ``value = (1 - alpha) * v[lo] + alpha * v[hi]``;
            0 at observed frames.
        observed: (T',) bool, True where the frame was seen, False where it was filled.
    """

    frames_out: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    alpha: np.ndarray
    observed: np.ndarray

    def __len__(self) -> int:
        return int(len(self.frames_out))

    @property
    def num_filled(self) -> int:
        return int((~self.observed).sum())

    def lerp(self, values: np.ndarray) -> np.ndarray:
        """Linear interpolation of observed ``values`` (T, ...) onto the output frames (T', ...)."""
        values = np.asarray(values)
        if len(values) != int(self.observed.sum()):
            raise ValueError(
                f"plan has {int(self.observed.sum())} observed samples, got {len(values)}"
            )
        a = self.alpha.reshape((-1,) + (1,) * (values.ndim - 1))
        out = (1.0 - a) * values[self.lo] + a * values[self.hi]
        return out.astype(values.dtype) if np.issubdtype(values.dtype, np.floating) else out


def plan_gaps(frames: Sequence[int] | np.ndarray, max_gap: int) -> GapFill:
    """Plan to bridge holes of at most ``max_gap`` missing frames; longer holes stay holes.

    Arguments:
        frames: (T,) distinct frame indices where the identity was observed (any order).
        max_gap: longest run of missing frames that is filled.
    Returns:
        the :class:`GapFill`; ``lo``/``hi`` index ``frames`` as given.
    """
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    if len(frames) == 0:
        raise ValueError("a track needs at least one observed frame")
    order = np.argsort(frames, kind="stable")
    seen = frames[order]
    if np.any(np.diff(seen) == 0):
        raise ValueError("a track was observed twice in the same frame")

    # Output frames: every observed frame plus each frame inside a bridgeable hole.
    missing = np.diff(seen) - 1
    bridge = (missing > 0) & (missing <= max_gap)
    filled = [np.arange(seen[i] + 1, seen[i + 1]) for i in np.flatnonzero(bridge)]
    frames_out = np.sort(np.concatenate([seen, *filled])) if filled else seen.copy()

    # Position of each output frame among the sorted observations.
    right = np.searchsorted(seen, frames_out, side="left")  # first observation >= frame
    observed = seen[np.minimum(right, len(seen) - 1)] == frames_out
    lo_sorted = np.where(observed, right, right - 1)
    hi_sorted = right
    span = (seen[hi_sorted] - seen[lo_sorted]).astype(np.float64)
    alpha = np.where(observed, 0.0, (frames_out - seen[lo_sorted]) / np.maximum(span, 1.0))
    return GapFill(
        frames_out=frames_out,
        lo=order[lo_sorted],
        hi=order[hi_sorted],
        alpha=alpha,
        observed=observed,
    )


def finish_tracks(
    frames_by_id: Mapping[int, Sequence[int] | np.ndarray], max_gap: int, min_length: int
) -> dict[int, GapFill]:
    """Plans for every identity seen in at least ``min_length`` frames; shorter ones are dropped.

    Arguments:
        frames_by_id: track id -> (T,) frames where it was observed.
        max_gap: longest hole bridged (see :func:`plan_gaps`).
        min_length: fewest observed frames a kept track has (spurious detections rarely persist).
    Returns:
        track id -> :class:`GapFill`, ids in increasing order; ids are kept as given.
    """
    return {
        tid: plan_gaps(frames, max_gap)
        for tid, frames in sorted(frames_by_id.items())
        if len(frames) >= min_length
    }
