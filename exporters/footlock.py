"""Planted feet re-locked on a retargeted character: two-bone IK on each leg (pure numpy).

A character's legs rarely have the source's thigh-to-shin proportions, so a foot the source keeps
still can slide on the character even with the root scaled by the leg-length ratio. Given the
source's foot contacts (``Track.extras["contacts"]``: per frame, left ankle, right ankle, left toe,
right toe; > 0.5 is planted), each span of frames where a foot pivots on the same point (the heel
/ ankle while it is planted, else the toe) locks that point at its mean position over the span;
the ankle's goal follows from the foot's own (unchanged) orientation. The offset to the goal
fades out over ``BLEND_FRAMES`` frames on either side of a span. The two-bone IK of
:mod:`mocap.ik` (the foot-locking issue's solver: knee plane and swivel kept, no hyper-extension)
then turns the thigh and the shin; a goal out of reach stops short of it rather than stretching
the leg.
"""

import numpy as np

from mocap.ik import solve_two_bone

BLEND_FRAMES = 4
MIN_SPAN = 2  # frames: a shorter contact is not locked
_COLUMNS = {"left": (0, 2), "right": (1, 3)}  # ankle and toe columns of the contacts


def _spans(kind: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of equal non-zero ``kind`` at least MIN_SPAN frames long."""
    spans, start = [], 0
    for t in range(1, len(kind) + 1):
        if t == len(kind) or kind[t] != kind[start]:
            if kind[start] and t - start >= MIN_SPAN:
                spans.append((start, t))
            start = t
    return spans


def ankle_offsets(
    ankle: np.ndarray, toe: np.ndarray | None, heel_on: np.ndarray, toe_on: np.ndarray
) -> tuple[np.ndarray, int]:
    """(T,3) offset of the ankle's goal from where it is, and the number of locked spans."""
    kind = np.where(heel_on, 1, np.where(toe_on, 2 if toe is not None else 1, 0))
    frames = len(ankle)
    offset = np.zeros((frames, 3))
    weight = np.zeros(frames)
    spans = _spans(kind)
    for start, stop in spans:
        pivot = ankle if kind[start] == 1 or toe is None else toe
        lock = pivot[start:stop].mean(axis=0)
        inside = lock - pivot[start:stop]
        offset[start:stop], weight[start:stop] = inside, 1.0
        for step in range(1, BLEND_FRAMES + 1):  # fade out on both sides
            fade = 1.0 - step / (BLEND_FRAMES + 1)
            for t, edge in ((start - step, inside[0]), (stop - 1 + step, inside[-1])):
                if 0 <= t < frames and fade > weight[t]:
                    offset[t], weight[t] = fade * edge, fade
    return offset, len(spans)


def lock_planted_feet(
    rotations: dict[int, np.ndarray],
    heads: dict[int, np.ndarray],
    legs: dict[str, list[int | None]],
    contacts: np.ndarray,
    parents: list[int],
    poles: dict[str, np.ndarray],
) -> tuple[set[int], list[str]]:
    """Turn thighs and shins (world rotations, in place) so planted feet stay where they land.

    Arguments:
        rotations, heads: bone -> (T,3,3) world rotations and (T,3) heads (forward kinematics).
        legs: side -> [thigh, shin, foot, toe] bones (None where unmapped).
        contacts: (T,4) left ankle, right ankle, left toe, right toe contact (> 0.5 planted).
        parents: bone parents (to check each leg is one chain).
        poles: side -> (T,3) direction the knee cap points (used for a nearly straight leg).
    Returns:
        (the bones whose rotations changed, notes).
    """
    contacts = np.asarray(contacts, dtype=np.float64)
    frames = len(next(iter(heads.values())))
    if contacts.ndim != 2 or contacts.shape != (frames, 4):
        return set(), [f"foot contacts of shape {contacts.shape} ignored (expected ({frames}, 4))"]
    changed: set[int] = set()
    notes = []
    for side, (thigh, shin, foot, toe) in legs.items():
        if thigh is None or shin is None or foot is None or not _chain(parents, thigh, shin, foot):
            notes.append(f"{side} foot not re-locked: its thigh, shin and foot are not one chain")
            continue
        heel_col, toe_col = _COLUMNS[side]
        offset, count = ankle_offsets(
            heads[foot], heads[toe] if toe is not None else None,
            contacts[:, heel_col] > 0.5, contacts[:, toe_col] > 0.5,
        )  # fmt: skip
        moved = np.linalg.norm(offset, axis=1) > 1e-9
        if not np.any(moved):
            continue
        solved = solve_two_bone(
            heads[thigh], heads[shin], heads[foot], heads[foot] + offset, poles[side]
        )
        upper, lower = solved.hip, solved.knee
        upper[~moved], lower[~moved] = np.eye(3), np.eye(3)
        rotations[thigh] = upper @ rotations[thigh]
        rotations[shin] = lower @ rotations[shin]
        changed.update((thigh, shin))
        notes.append(f"{side} foot re-locked by IK on {count} contact span(s)")
    return changed, notes


def _chain(parents: list[int], top: int, *below: int) -> bool:
    """True when each bone of ``below`` descends from the one before it, starting at ``top``."""
    for bone in below:
        p = parents[bone]
        while p >= 0 and p != top:
            p = parents[p]
        if p != top:
            return False
        top = bone
    return True
