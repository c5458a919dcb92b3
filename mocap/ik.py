"""Two-bone inverse kinematics (hip -> knee -> ankle) as pure, batched numpy geometry.

Everything works on N independent chains at once (one per frame): positions are (N,3) world
points, rotations (N,3,3) world-frame matrices that pre-multiply a joint's global rotation.

The solver (after D. Holden's "simple two-joint IK") keeps the chain's own bending plane:

1. the knee turns about its hinge axis ``h`` (the normal of the hip-knee-ankle triangle) until the
   knee's interior angle gives the wanted hip-to-target distance (law of cosines);
2. the hip turns the whole chain back onto its old hip-to-ankle direction (a minimal rotation),
3. then by the minimal rotation from that direction to the target.

Minimal rotations keep the knee's swivel (where the knee points about the hip-ankle axis)
continuous from frame to frame. For a nearly straight leg the triangle's normal is undefined; the
hinge then comes from a pole (the direction the knee cap points, ``pole``), blended in smoothly,
so there is no flip. The interior angle never opens beyond ``max_angle`` (no hyper-extension) unless
the chain itself was straighter, and the knee never crosses to the other side of the leg: targets
further away are clamped, and :func:`reach_fraction` tells the caller how much of a move is
reachable so that it can release a lock instead of popping the leg straight.
"""

from dataclasses import dataclass

import numpy as np

POLE_BLEND = 0.02  # weight of the pole hinge for a straight knee (fading out by 6 degrees bent)
MIN_ANGLE = np.deg2rad(25.0)  # the knee never folds tighter than this interior angle


def unit(v: np.ndarray) -> np.ndarray:
    """(...,3) vectors scaled to unit length (zero vectors stay zero)."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(N,3,3) rotations by ``angle`` (N,) radians about unit ``axis`` (N,3) (Rodrigues)."""
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    c, s = np.cos(angle), np.sin(angle)
    k = 1.0 - c
    return np.stack(
        [
            np.stack([c + x * x * k, x * y * k - z * s, x * z * k + y * s], -1),
            np.stack([y * x * k + z * s, c + y * y * k, y * z * k - x * s], -1),
            np.stack([z * x * k - y * s, z * y * k + x * s, c + z * z * k], -1),
        ],
        -2,
    )


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,3,3) smallest rotation taking the direction of ``a`` (N,3) to that of ``b`` (N,3).

    Opposite directions (never met by the solver) turn about any axis perpendicular to ``a``.
    """
    a, b = unit(a), unit(b)
    axis = np.cross(a, b)
    sin = np.linalg.norm(axis, axis=-1)
    cos = np.sum(a * b, axis=-1)
    other = np.cross(a, np.where(np.abs(a[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]))
    axis = np.where((sin < 1e-9)[:, None], unit(other), axis / np.maximum(sin, 1e-12)[:, None])
    return axis_angle(axis, np.arctan2(sin, cos))


def slerp_identity(rot: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(N,3,3) the fraction ``weight`` (N,) of rotations ``rot`` (N,3,3), from the identity."""
    cos = np.clip((np.trace(rot, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.stack(
        [rot[:, 2, 1] - rot[:, 1, 2], rot[:, 0, 2] - rot[:, 2, 0], rot[:, 1, 0] - rot[:, 0, 1]], -1
    )
    small = angle < 1e-9
    axis = np.where(small[:, None], [[1.0, 0.0, 0.0]], unit(axis))
    return axis_angle(axis, np.where(small, 0.0, angle * weight))


def interior_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N,) angle at the knee ``b`` between the thigh (towards ``a``) and shank (towards ``c``)."""
    u, v = unit(a - b), unit(c - b)
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), np.sum(u * v, axis=-1))


def chain_reach(l1: np.ndarray, l2: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Hip-to-ankle distance of a chain with bone lengths l1, l2 and knee interior ``angle``."""
    return np.sqrt(np.maximum(l1**2 + l2**2 - 2.0 * l1 * l2 * np.cos(angle), 0.0))


def max_reach(hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray, max_angle: float) -> np.ndarray:
    """(N,) the furthest hip-to-target distance the solver goes to: the knee opened to
    ``max_angle``, or as far as the chain already is when it is straighter than that."""
    l1 = np.linalg.norm(knee - hip, axis=-1)
    l2 = np.linalg.norm(ankle - knee, axis=-1)
    limit = np.maximum(max_angle, interior_angle(hip, knee, ankle))
    return chain_reach(l1, l2, limit)


def reach_fraction(
    hip: np.ndarray, start: np.ndarray, move: np.ndarray, reach: np.ndarray
) -> np.ndarray:
    """(N,) largest s in [0, 1] with ``|start + s * move - hip| <= reach``.

    ``start`` is where the ankle is (inside the reach), ``move`` (N,3) the wanted displacement.
    """
    p = start - hip
    aa = np.sum(move * move, axis=-1)
    bb = 2.0 * np.sum(p * move, axis=-1)
    cc = np.sum(p * p, axis=-1) - reach**2
    inside = cc <= 0.0
    disc = np.maximum(bb * bb - 4.0 * aa * cc, 0.0)
    root = (-bb + np.sqrt(disc)) / np.maximum(2.0 * aa, 1e-18)
    s = np.where(inside, np.clip(root, 0.0, 1.0), 0.0)
    return np.where(aa < 1e-18, 1.0, s)


@dataclass
class TwoBoneSolution:
    """World rotations of a solved chain: new hip global = ``hip @ old``; new knee global =
    ``knee @ old`` (``knee`` already includes the hip's turn); and where the ankle ends up."""

    hip: np.ndarray  # (N,3,3)
    knee: np.ndarray  # (N,3,3)
    ankle: np.ndarray  # (N,3) the ankle's new position


def solve_two_bone(
    hip: np.ndarray,
    knee: np.ndarray,
    ankle: np.ndarray,
    target: np.ndarray,
    pole: np.ndarray,
    max_angle: float = np.deg2rad(178.0),
    iterations: int = 2,
) -> TwoBoneSolution:
    """Turn hip and knee so that the ankle reaches ``target`` (clamped to the reach).

    Arguments:
        hip, knee, ankle: (N,3) joint positions of the chain.
        target: (N,3) where the ankle should go.
        pole: (N,3) direction the knee cap points (e.g. the thigh's forward axis); only used when
            the leg is nearly straight.
        max_angle: largest knee interior angle (radians) the solver opens the knee to.
        iterations: passes (the second removes the small length error of a hinge blended with the
            pole).
    Returns:
        TwoBoneSolution: world rotations to pre-multiply the hip's and knee's global rotations.
    """
    n = len(hip)
    total_hip = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    total_knee = total_hip.copy()
    l1 = np.linalg.norm(knee - hip, axis=-1)
    l2 = np.linalg.norm(ankle - knee, axis=-1)
    limit = np.maximum(max_angle, interior_angle(hip, knee, ankle))
    lo, hi = chain_reach(l1, l2, np.full(n, MIN_ANGLE)), chain_reach(l1, l2, limit)
    b, c = knee.copy(), ankle.copy()
    for _ in range(iterations):
        dist = np.clip(np.linalg.norm(target - hip, axis=-1), lo, hi)
        cos = (l1**2 + l2**2 - dist**2) / np.maximum(2.0 * l1 * l2, 1e-12)
        want = np.arccos(np.clip(cos, -1.0, 1.0))
        # 1. the knee about its hinge: the triangle's normal, or the pole's when straight
        bend = np.cross(b - hip, c - b)
        pole_hinge = unit(np.cross(pole, unit(c - hip)))
        straight = np.clip(1.0 - np.linalg.norm(bend, axis=-1) / (0.1 * l1 * l2), 0.0, 1.0)
        hinge = unit(bend + (POLE_BLEND * l1 * l2 * straight)[:, None] * pole_hinge)
        turn_knee = axis_angle(hinge, interior_angle(hip, b, c) - want)  # + closes the knee
        c1 = b + np.einsum("nab,nb->na", turn_knee, c - b)
        # 2.-3. the hip: back onto the old hip-ankle line, then onto the target's
        turn_hip = rotation_between(c - hip, target - hip) @ rotation_between(c1 - hip, c - hip)
        b = hip + np.einsum("nab,nb->na", turn_hip, b - hip)
        c = hip + np.einsum("nab,nb->na", turn_hip, c1 - hip)
        total_knee = turn_hip @ turn_knee @ total_knee
        total_hip = turn_hip @ total_hip
    return TwoBoneSolution(hip=total_hip, knee=total_knee, ankle=c)
