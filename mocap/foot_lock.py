"""Foot locking: planted feet stay where they were put down, on the floor.

Works on one world-frame rig (Y up, floor at ``floor``) whose foot contacts are known
(:mod:`mocap.contacts` finds them), in three steps:

1. **Root drift** (:mod:`mocap.root_drift`). While points are in contact, the body should not slide
   over them: as in GVHMR's post-processing, the confidence-weighted displacement of the contact
   points is taken off the root, and their soles are brought onto the floor; smooth in time, and
   back to zero away from contacts, so frames far from any contact keep their motion.
2. **Two-bone IK** (:mod:`mocap.ik`) on each leg: a planted point is held at its lock (the
   confidence-weighted mean corrected position of its span, sole on the floor; a foot's ankle lock
   a foot's length from its toe lock). Heel planted: the ankle is held, the foot keeps its turn
   and comes down onto the toe's lock as the toe plants; toe planted (heel off): the foot turns
   about the toe. Locks blend in before and out after each span over ``BLEND_S``, as an offset
   that fades, so a foot leaving fast (a take-off) is followed rather than held back. The knee
   never opens beyond ``MAX_KNEE_DEG`` (unless the estimate itself was straighter) and keeps its
   swivel. A lock is released instead of stretching or snapping the leg: when the leg cannot
   reach it, when it would pull the foot more than ``RELEASE_PULL`` from the estimate (the foot
   has left), or when holding it would change the knee angle by more than ``MAX_KNEE_STEP_DEG``
   from one frame to the next; releases ramp over a blend, never at once.
3. **Ground.** On every frame a sole that would end below the floor is brought onto it, turning
   the foot about a planted toe (or about the ankle), else lifting the foot.
"""

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import minimum_filter1d

from exporters import joint_positions
from exporters.rig import RigAnimation
from mocap.ik import (
    interior_angle,
    max_reach,
    reach_fraction,
    rotation_between,
    slerp_identity,
    solve_two_bone,
)
from mocap.root_drift import root_correction

LEGS = ((1, 4, 7, 10), (2, 5, 8, 11))  # hip, knee, ankle, toe joints: left, right leg
POINTS = (7, 8, 10, 11)  # the contact points: left/right ankle, left/right toe (SMPL joints)
BLEND_S = 0.1  # seconds over which a lock blends in before and out after its span
HOLD_PULL, RELEASE_PULL = 0.06, 0.12  # m: a lock pulling further than this fades, and is let go
HELD_M = 0.002  # a contact point this close to its lock counts as planted
MAX_KNEE_DEG = 175.0  # the IK opens the knee to at most this interior angle
MAX_KNEE_STEP_DEG = 8.0  # the IK changes the knee angle by at most this per frame (30 fps or less)
GUARD_PASSES = 4


@dataclass
class LockResult:
    """A locked rig and how much of the locks had to be given up."""

    rig: RigAnimation
    correction: np.ndarray  # (T,3) added to the root positions (drift removal)
    released: np.ndarray  # (T,2) per leg, the share of the lock given up (0: held, 1: released)
    planted: np.ndarray  # (T,4) contact frames on which the point is on its lock (within 2 mm)


def spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame of each run of True in ``flags`` (T,)."""
    f = np.concatenate([[False], np.asarray(flags, bool), [False]])
    edges = np.flatnonzero(np.diff(f.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def span_locks(
    points: np.ndarray, clearance: np.ndarray, contacts: np.ndarray, confidence: np.ndarray,
    floor: float, foot_length: np.ndarray | None = None,
) -> list[list[tuple[int, int, np.ndarray]]]:  # fmt: skip
    """Per point, its spans (first, last, lock (3,)): the span's confidence-weighted mean
    position, sole on the floor. With ``foot_length`` (2,: left, right ankle-to-toe), an ankle
    lock is moved horizontally to exactly that distance from the toe lock of the same foot it
    overlaps most (the foot is rigid: two locks that disagree would tear it)."""
    locks: list[list[tuple[int, int, np.ndarray]]] = []
    for p in range(points.shape[1]):
        found = []
        for a, b in spans(contacts[:, p]):
            ww = confidence[a : b + 1, p, None] + 1e-9
            lock = (ww * points[a : b + 1, p]).sum(0) / ww.sum()
            lock[1] = floor + clearance[p]
            found.append((a, b, lock))
        locks.append(found)
    if foot_length is None or len(locks) != 4:
        return locks
    for side in (0, 1):
        rise = clearance[side] - clearance[2 + side]
        flat = np.sqrt(max(foot_length[side] ** 2 - rise**2, 1e-12))
        for a, b, lock in locks[side]:
            overlap = [(min(b, d) - max(a, c), toe) for c, d, toe in locks[2 + side]]
            best = max(overlap, key=lambda o: o[0], default=(-1, None))
            if best[0] < 0 or best[1] is None:
                continue
            toe = best[1]
            along = (lock - toe)[[0, 2]]
            lock[[0, 2]] = toe[[0, 2]] + flat * along / max(float(np.linalg.norm(along)), 1e-9)
    return locks


def lock_positions(
    points: np.ndarray, locks: list[list[tuple[int, int, np.ndarray]]], blend: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and point the target (T,P,3) and its weight (T,P), from :func:`span_locks`.

    In a span the target is the lock. Over ``blend`` frames before and after it the target is
    the point itself plus the lock's offset at the span's first (last) frame, easing to 0: the
    target follows a foot that leaves fast (a take-off) instead of holding it back, so the leg
    never snaps. Weights are 1 in a span and ease to 0 over the same frames.
    """
    targets = points.copy()
    weight = np.zeros(points.shape[:2])
    ease = 1.0 - np.arange(1, blend + 1) / (blend + 1)
    ease = ease * ease * (3.0 - 2.0 * ease)
    last = len(points) - 1
    for p, found in enumerate(locks):
        for a, b, lock in found:
            frames = [np.arange(a, b + 1)]
            values = [np.broadcast_to(lock, (b - a + 1, 3))]
            ramps = [np.ones(b - a + 1)]
            before = np.arange(a - 1, max(a - blend, 0) - 1, -1)
            after = np.arange(b + 1, min(b + blend, last) + 1)
            for side, edge in ((before, a), (after, b)):
                e = ease[: len(side)]
                frames.append(side)
                values.append(points[side, p] + e[:, None] * (lock - points[edge, p]))
                ramps.append(e)
            for f, v, r in zip(frames, values, ramps, strict=True):
                stronger = r >= weight[f, p]
                targets[f[stronger], p] = v[stronger]
                weight[f[stronger], p] = r[stronger]
    return targets, weight


def _global_rotations(rig: RigAnimation) -> np.ndarray:
    glob = np.empty_like(rig.local_rotations)
    for k, p in enumerate(rig.parents):
        glob[:, k] = rig.local_rotations[:, k] if p < 0 else glob[:, p] @ rig.local_rotations[:, k]
    return glob


def _apply(v: np.ndarray, rot: np.ndarray) -> np.ndarray:
    return np.einsum("tab,tb->ta", rot, v)


def lock_feet(
    rig: RigAnimation,
    clearance: np.ndarray,
    contacts: np.ndarray,
    confidence: np.ndarray,
    floor: float = 0.0,
) -> LockResult:
    """Remove root drift, hold planted feet with two-bone IK, keep soles above the floor.

    Arguments:
        rig: world-frame rig with SMPL's 24-joint topology.
        clearance: (4,) height above the sole of the points (left/right ankle, left/right toe).
        contacts, confidence: (T,4) contact flags and weights of those points.
        floor: the floor's height in the rig's world.
    """
    fps, blend = rig.fps, max(1, int(round(BLEND_S * rig.fps)))
    t = rig.num_frames
    if t < 3:
        return LockResult(rig, np.zeros((t, 3)), np.zeros((t, 2)), np.zeros((t, 4), bool))
    points = joint_positions(rig)[:, list(POINTS)]
    corr = np.zeros((t, 3))  # no contacts: only the ground constraint below
    if np.any(contacts):
        corr = root_correction(points, clearance, contacts, confidence, floor, fps, BLEND_S)
    rig = replace(
        rig, root_positions=rig.root_positions + corr, local_rotations=rig.local_rotations.copy()
    )
    feet = np.linalg.norm(rig.rest_offsets[[toe for *_, toe in LEGS]], axis=-1)
    found = span_locks(points + corr[:, None], clearance, contacts, confidence, floor, feet)
    locks, weight = lock_positions(points + corr[:, None], found, blend)
    pos, glob = joint_positions(rig), _global_rotations(rig)
    released = np.zeros((rig.num_frames, 2))
    knee_step = np.deg2rad(MAX_KNEE_STEP_DEG) * np.sqrt(min(30.0 / fps, 1.0))
    for side, (hip, knee, ankle, _) in enumerate(LEGS):
        wa, wt = weight[:, side], weight[:, 2 + side]
        a_in = pos[:, ankle]
        move, toe_goal = _ankle_goal(pos, side, weight, locks)
        reach = max_reach(pos[:, hip], pos[:, knee], a_in, np.deg2rad(MAX_KNEE_DEG))
        fit = reach_fraction(pos[:, hip], a_in, move, 0.999 * reach)
        # a lock pulling a point far from the estimate: the foot has left (or was never down)
        pull = np.linalg.norm(move, axis=-1)
        fit = np.minimum(fit, np.clip((RELEASE_PULL - pull) / (RELEASE_PULL - HOLD_PULL), 0, 1))
        scale = _ramp(fit, blend)
        knee_in = interior_angle(pos[:, hip], pos[:, knee], a_in)
        for _ in range(GUARD_PASSES):  # the knee must not snap: limit the rate of the IK's change
            leg = _pose_leg(
                pos, glob, rig.parents, side, move, scale, wt, toe_goal, clearance, floor
            )
            added = leg.knee_angle - knee_in
            allowed = lipschitz_envelope(added, knee_step)
            if np.all(np.abs(added) <= allowed + 1e-6):
                break
            scale = _ramp(scale * np.minimum(allowed / np.maximum(np.abs(added), 1e-9), 1.0), blend)
        released[:, side] = np.where(np.maximum(wa, wt) > 0, 1.0 - scale, 0.0)
        idx = leg.frames
        parent = glob[idx, rig.parents[hip]]
        rig.local_rotations[idx, hip] = np.swapaxes(parent, 1, 2) @ leg.hip
        rig.local_rotations[idx, knee] = np.swapaxes(leg.hip, 1, 2) @ leg.knee
        rig.local_rotations[idx, ankle] = np.swapaxes(leg.knee, 1, 2) @ leg.foot
    off = np.linalg.norm(joint_positions(rig)[:, list(POINTS)] - locks, axis=-1)
    planted = contacts & (weight >= 1.0) & (off < HELD_M)
    return LockResult(rig=rig, correction=corr, released=released, planted=planted)


def _ankle_goal(
    pos: np.ndarray, side: int, weight: np.ndarray, locks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where the leg's ankle should go (as a move (T,3) from where it is) and the toe's goal.

    Ankle planted (heel strike): the ankle goes to its lock, the foot keeps its turn (and turns
    towards the toe's goal by the toe's weight, in :func:`_pose_leg`). Toe planted (heel off):
    the foot turns about the toe's goal, at the foot's length, towards where the ankle wants to
    be by the ankle's weight, so the toe stays on its goal while the heel comes down or goes up.
    In between, the more firmly planted point has the say; with both planted the two agree (the
    locks are a foot's length apart, :func:`span_locks`).
    """
    _, _, ankle, toe = LEGS[side]
    wa, wt = weight[:, side], weight[:, 2 + side]
    toe_goal = pos[:, toe] + wt[:, None] * (locks[:, 2 + side] - pos[:, toe])
    foot = pos[:, toe] - pos[:, ankle]
    ankle_only = pos[:, ankle] + wa[:, None] * (locks[:, side] - pos[:, ankle])
    pivot = slerp_identity(rotation_between(foot, toe_goal - ankle_only), wa)
    toe_first = toe_goal - _apply(foot, pivot)
    toe_say, ankle_say = wt * (1.0 - wa), wa * (1.0 - wt)
    share = np.where(wt >= 1.0, 1.0, toe_say / np.maximum(toe_say + ankle_say, 1e-12))
    goal = ankle_only + share[:, None] * (toe_first - ankle_only)
    return goal - pos[:, ankle], toe_goal


def _ramp(fit: np.ndarray, blend: int) -> np.ndarray:
    """The largest (T,) below ``fit`` that changes by at most 1 / (blend + 1) a frame: a lock is
    released (and taken up again) over a blend, never at once."""
    ramps = [
        minimum_filter1d(fit, 2 * k + 1, mode="nearest") + k / (blend + 1) for k in range(blend + 1)
    ]
    return np.clip(np.min(ramps, axis=0), 0.0, 1.0)


def lipschitz_envelope(values: np.ndarray, step: float) -> np.ndarray:
    """(T,) magnitudes at most ``|values|``, keeping the signs of ``values``, such that the signed
    sequence changes by at most ``step`` a frame (a sign change spends the step on both sides)."""
    mag = np.abs(values).astype(np.float64)
    flip = np.signbit(values[1:]) != np.signbit(values[:-1])
    for t in range(1, len(mag)):
        limit = step - mag[t - 1] if flip[t - 1] else mag[t - 1] + step
        mag[t] = min(mag[t], max(limit, 0.0))
    for t in range(len(mag) - 2, -1, -1):
        limit = step - mag[t + 1] if flip[t] else mag[t + 1] + step
        mag[t] = min(mag[t], max(limit, 0.0))
    return mag


@dataclass
class _Leg:
    frames: np.ndarray  # (N,) frames the IK changed
    hip: np.ndarray  # (N,3,3) new global rotations of hip, knee and foot (ankle joint)
    knee: np.ndarray
    foot: np.ndarray
    knee_angle: np.ndarray  # (T,) the knee's interior angle on every frame afterwards


def _raised(v: np.ndarray, rise: np.ndarray) -> np.ndarray:
    """Vectors (N,3) turned up (same length, same horizontal direction) by ``rise`` (N,) in y."""
    length = np.linalg.norm(v, axis=-1)
    y = np.minimum(v[:, 1] + np.maximum(rise, 0.0), length)
    flat = np.linalg.norm(v[:, [0, 2]], axis=-1)
    shrink = np.sqrt(np.maximum(length**2 - y**2, 0.0)) / np.maximum(flat, 1e-12)
    return np.stack([v[:, 0] * shrink, y, v[:, 2] * shrink], axis=-1)


def _pose_leg(
    pos: np.ndarray, glob: np.ndarray, parents: tuple[int, ...], side: int, move: np.ndarray,
    scale: np.ndarray, aim_weight: np.ndarray, toe_goal: np.ndarray, clearance: np.ndarray,
    floor: float,
) -> _Leg:  # fmt: skip
    """One leg moved by ``scale * move`` at the ankle, its foot aimed at the toe's goal by
    ``scale * aim_weight``, turned (about a planted toe, else about the ankle) or lifted (by
    ``scale`` times what is left) so that its soles stay above the floor."""
    hip, knee, ankle, toe = LEGS[side]
    a_in, foot = pos[:, ankle], pos[:, toe] - pos[:, ankle]
    target = a_in + scale[:, None] * move
    aim = slerp_identity(rotation_between(foot, toe_goal - target), scale * aim_weight)
    toe_pos = target + _apply(foot, aim)
    # ground: a sole below the floor turns the foot about the other point (the toe when it is
    # planted: it stays on its lock), what is left lifts the whole foot
    heel = target[:, 1] - floor - clearance[side]
    tip = toe_pos[:, 1] - floor - clearance[2 + side]
    about_toe = (scale * aim_weight >= 0.5) & (heel < 0)
    about_heel = ~about_toe & (tip < 0) & (heel >= 0)
    target[about_toe] = toe_pos[about_toe] + _raised(target - toe_pos, -heel)[about_toe]
    toe_pos[about_heel] = target[about_heel] + _raised(toe_pos - target, -tip)[about_heel]
    turned = about_toe | about_heel
    aim[turned] = rotation_between(foot[turned], toe_pos[turned] - target[turned])
    lift = np.maximum.reduce(
        [np.zeros(len(target)), floor + clearance[side] - target[:, 1],
         floor + clearance[2 + side] - toe_pos[:, 1]]
    )  # fmt: skip
    target[:, 1] += scale * lift
    idx = np.flatnonzero(
        (scale * np.linalg.norm(move, axis=-1) > 1e-6)
        | (scale * aim_weight > 0)
        | (lift > 0)
        | turned
    )
    pole = glob[idx, hip][:, :, 2]  # the thigh's forward axis: where the knee cap points
    sol = solve_two_bone(pos[idx, hip], pos[idx, knee], a_in[idx], target[idx], pole,
                         np.deg2rad(MAX_KNEE_DEG))  # fmt: skip
    angle = interior_angle(pos[:, hip], pos[:, knee], a_in)
    new_knee = pos[idx, hip] + _apply(pos[idx, knee] - pos[idx, hip], sol.hip)
    angle[idx] = interior_angle(pos[idx, hip], new_knee, sol.ankle)
    return _Leg(
        idx,
        sol.hip @ glob[idx, hip],
        sol.knee @ glob[idx, knee],
        aim[idx] @ glob[idx, ankle],
        angle,
    )
