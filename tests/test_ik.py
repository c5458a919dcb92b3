"""Two-bone IK (mocap.ik): exact reach, bone lengths, knee side and swivel, no hyper-extension."""

import numpy as np
from scipy.spatial.transform import Rotation

from mocap.ik import (
    axis_angle,
    interior_angle,
    max_reach,
    reach_fraction,
    rotation_between,
    slerp_identity,
    solve_two_bone,
)


def legs(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random bent legs (hip at the origin, knee forward) and targets around their ankles."""
    rng = np.random.default_rng(seed)
    hip = rng.normal(0.0, 0.2, (n, 3))
    knee = hip + np.array([0.0, -0.4, 0.06]) + rng.normal(0.0, 0.02, (n, 3))
    ankle = knee + np.array([0.0, -0.42, -0.1]) + rng.normal(0.0, 0.02, (n, 3))
    target = ankle + rng.normal(0.0, 0.06, (n, 3))
    return hip, knee, ankle, target


def chain(sol_hip: np.ndarray, sol_knee: np.ndarray, hip, knee, ankle):  # type: ignore[no-untyped-def]
    """Knee and ankle positions after applying the solution's rotations to the bones."""
    new_knee = hip + np.einsum("nab,nb->na", sol_hip, knee - hip)
    return new_knee, new_knee + np.einsum("nab,nb->na", sol_knee, ankle - knee)


def test_rotation_helpers():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    rot = rotation_between(a, b)
    moved = np.einsum("nab,nb->na", rot, a)
    np.testing.assert_allclose(moved / np.linalg.norm(moved, axis=1, keepdims=True),
                               b / np.linalg.norm(b, axis=1, keepdims=True), atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(
        np.einsum("nab,ncb->nac", rot, rot), np.tile(np.eye(3), (50, 1, 1)), atol=1e-12
    )
    opposite = rotation_between(a[:3], -a[:3])
    np.testing.assert_allclose(np.einsum("nab,nb->na", opposite, a[:3]), -a[:3], atol=1e-9)
    axis = a / np.linalg.norm(a, axis=1, keepdims=True)
    want = Rotation.from_rotvec(axis * 0.7).as_matrix()
    np.testing.assert_allclose(axis_angle(axis, np.full(50, 0.7)), want, atol=1e-12)
    half = slerp_identity(want, np.full(50, 0.5))
    np.testing.assert_allclose(half @ half, want, atol=1e-9)


def test_reachable_targets_are_reached_exactly_with_bone_lengths_kept():
    hip, knee, ankle, target = legs(2000)
    reach = max_reach(hip, knee, ankle, np.deg2rad(175.0))
    ok = np.linalg.norm(target - hip, axis=1) < reach
    assert 0.3 < ok.mean() < 0.95  # both kinds are there to be checked
    sol = solve_two_bone(
        hip, knee, ankle, target, np.tile([0.0, 0.0, 1.0], (2000, 1)), np.deg2rad(175.0)
    )
    new_knee, new_ankle = chain(sol.hip, sol.knee, hip, knee, ankle)
    np.testing.assert_allclose(new_ankle, sol.ankle, atol=1e-12)
    assert np.abs(new_ankle - target)[ok].max() < 1e-6
    np.testing.assert_allclose(
        np.linalg.norm(new_knee - hip, axis=1), np.linalg.norm(knee - hip, axis=1)
    )
    np.testing.assert_allclose(
        np.linalg.norm(new_ankle - new_knee, axis=1), np.linalg.norm(ankle - knee, axis=1)
    )
    # out of reach: the knee opens to the limit (or stays as straight as it was), never beyond
    before = interior_angle(hip, knee, ankle)
    after = interior_angle(hip, new_knee, new_ankle)
    assert np.all(after <= np.maximum(np.deg2rad(175.0), before) + 1e-9)
    assert np.abs(after[~ok] - np.maximum(np.deg2rad(175.0), before[~ok])).max() < 1e-4


def test_the_knee_keeps_its_side_and_swivel():
    """The knee stays in front of the leg (no flip) and its swivel about the hip-ankle axis turns
    only by the minimal rotation of that axis: a small move gives a small swivel change."""
    hip, knee, ankle, target = legs(500, seed=2)
    pole = np.tile([0.0, 0.0, 1.0], (500, 1))
    sol = solve_two_bone(hip, knee, ankle, target, pole)
    new_knee, new_ankle = chain(sol.hip, sol.knee, hip, knee, ankle)

    def bend(k, a):  # the knee's offset from the hip-ankle line, unit
        axis = (a - hip) / np.linalg.norm(a - hip, axis=1, keepdims=True)
        off = (k - hip) - np.sum((k - hip) * axis, axis=1, keepdims=True) * axis
        return off / np.linalg.norm(off, axis=1, keepdims=True)

    old, new = bend(knee, ankle), bend(new_knee, new_ankle)
    assert np.all(new[:, 2] > 0)  # still forward: no flip to a backward knee
    turn = rotation_between(ankle - hip, target - hip)
    carried = np.einsum("nab,nb->na", turn, old)
    assert np.degrees(np.arccos(np.clip(np.sum(carried * new, axis=1), -1, 1))).max() < 1.0


def test_a_straight_leg_bends_towards_the_pole_and_changes_continuously():
    """From a straight leg (no triangle), moving the target closer bends the knee towards the
    pole, and a slowly moving target gives a slowly changing knee (no jumps)."""
    n = 200
    hip = np.zeros((n, 3))
    knee = np.tile([0.0, -0.42, 0.0], (n, 1))
    ankle = np.tile([0.0, -0.84, 0.0], (n, 1))
    s = np.linspace(0.0, 1.0, n)
    target = np.stack([0.05 * np.sin(3 * s), -0.84 + 0.25 * s, 0.1 * s], 1)
    pole = np.tile([0.0, 0.0, 1.0], (n, 1))
    sol = solve_two_bone(hip, knee, ankle, target, pole)
    new_knee, new_ankle = chain(sol.hip, sol.knee, hip, knee, ankle)
    assert np.all(new_knee[5:, 2] > 0.0)
    angle = np.degrees(interior_angle(hip, new_knee, new_ankle))
    # leaving a straight knee is fast (the reach changes with the angle squared), then smooth
    assert np.abs(np.diff(angle))[5:].max() < 1.5 and angle[-1] < 120.0
    assert np.abs(np.diff(new_knee, axis=0))[5:].max() < 0.01


def test_reach_fraction():
    hip = np.zeros((3, 3))
    start = np.array([[0.0, -0.5, 0.0]] * 3)
    move = np.array([[0.0, -0.5, 0.0], [0.0, 0.2, 0.0], [0.0, -0.2, 0.0]])
    s = reach_fraction(hip, start, move, np.full(3, 0.8))
    np.testing.assert_allclose(s, [0.6, 1.0, 1.0])
