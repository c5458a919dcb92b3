"""Synthetic locomotion with known foot contacts, for the foot-locking tests.

A clip is built from targets, as an animator would key it: the pelvis path, and for each foot where
it is planted and how it rolls (heel strike with the toe up, foot flat, heel off with the toe
planted), swinging between plants on a smooth arc. The legs are then posed by two-bone IK onto
those targets, the upper body carries real SMPL poses fitted by MoSh (``test_mosh.npz``) slerped over
time, and the skeleton is the built-in one or an SMPL rest skeleton. The truth therefore holds by
construction: while a point is in contact it does not move and its sole touches the floor (y = 0),
which the tests re-check by forward kinematics.

Then :func:`add_estimator_noise` adds what a monocular estimate does to such motion: a slow, smooth
error of the root position (depth and drift: the planted feet slide), slow errors of the leg angles,
and per-frame jitter of the root and every joint.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation, Slerp

from exporters.rig import RigAnimation
from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mocap.body.skeleton import Skeleton, builtin_skeleton
from mocap.ik import solve_two_bone
from mocap.motion import Motion, Track

LEGS = ((1, 4, 7, 10), (2, 5, 8, 11))  # hip, knee, ankle, toe: left, right
UPPER = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)
HEEL_STRIKE = 0.15  # share of stance on the heel, toe still up
HEEL_OFF = 0.30  # share of stance on the toe, heel rising
TOE_UP_DEG = 12.0
HEEL_UP_DEG = 35.0


@dataclass
class Gait:
    """A synthetic clip: the world-frame rig, its skeleton and the true contacts (T,4) of the
    points (left ankle, right ankle, left toe, right toe) = SMPL joints 7, 8, 10, 11."""

    rig: RigAnimation
    skeleton: Skeleton
    contacts: np.ndarray


def _smooth01(u: np.ndarray) -> np.ndarray:
    """Minimum-jerk ramp from 0 to 1 on u in [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10.0 - 15.0 * u + 6.0 * u**2)


def _yaw(angle: np.ndarray | float) -> np.ndarray:
    a = np.asarray(angle, dtype=np.float64)
    return Rotation.from_euler("y", a.reshape(-1, 1)).as_matrix().reshape(*a.shape, 3, 3)


def _pitch(angle: np.ndarray) -> np.ndarray:
    """Foot pitch: positive lifts the toe (a turn about the foot's left axis, -x)."""
    a = -np.asarray(angle, dtype=np.float64)
    return Rotation.from_euler("x", a.reshape(-1, 1)).as_matrix().reshape(*a.shape, 3, 3)


@dataclass
class Stance:
    start: int  # first frame on the ground
    end: int  # last frame on the ground
    plant: np.ndarray  # (3,) ankle position while the foot is flat
    roll: bool = True  # heel strike and heel off (walking); False: flat all along (standing)


def _foot_track(
    stances: list[Stance], frames: int, heading: float, toe_offset: np.ndarray, clearance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ankle positions (T,3), foot rotations (T,3,3) and contacts (T,2: ankle, toe) of one foot."""
    yaw = _yaw(heading)
    toe_off = yaw @ toe_offset
    ankle = np.zeros((frames, 3))
    pitch = np.zeros(frames)
    contact = np.zeros((frames, 2), bool)
    for s in stances:
        length = s.end - s.start + 1
        strike = int(round(HEEL_STRIKE * length)) if s.roll else 0
        off = int(round(HEEL_OFF * length)) if s.roll else 0
        for t in range(s.start, s.end + 1):
            k = t - s.start
            if k < strike:  # on the heel: toe comes down
                pitch[t] = np.deg2rad(TOE_UP_DEG) * (1.0 - _smooth01(np.array((k + 1) / strike)))
                ankle[t] = s.plant
                contact[t, 0] = True
            elif k >= length - off:  # on the toe: heel comes up
                u = (k - (length - off) + 1) / off
                pitch[t] = -np.deg2rad(HEEL_UP_DEG) * _smooth01(np.array(u))
                toe = s.plant + toe_off
                ankle[t] = toe - yaw @ _pitch(pitch[t]) @ toe_offset
                contact[t, 1] = True
            else:
                ankle[t] = s.plant
                contact[t] = True
    for a, b in zip(stances[:-1], stances[1:], strict=True):  # swing: smooth arc between plants
        span = b.start - a.end
        u = _smooth01(np.arange(1, span) / span)
        lift = 0.07 * np.sin(np.pi * np.arange(1, span) / span)
        t = np.arange(a.end + 1, b.start)
        ankle[t] = (1 - u)[:, None] * ankle[a.end] + u[:, None] * ankle[b.start]
        ankle[t, 1] += lift
        pitch[t] = (1 - u) * pitch[a.end] + u * pitch[b.start]
    first, last = stances[0], stances[-1]
    ankle[: first.start], pitch[: first.start] = ankle[first.start], pitch[first.start]
    ankle[last.end + 1 :], pitch[last.end + 1 :] = ankle[last.end], pitch[last.end]
    feet = yaw @ _pitch(pitch)
    return ankle, feet, contact


def upper_body(shared_data: Path, frames: int) -> np.ndarray:
    """(T,24,3,3) local rotations with MoSh's upper body (spine, head, arms) slerped over time."""
    poses = np.load(shared_data / "spin_npz" / "test_mosh.npz")["pose"].reshape(-1, 24, 3)
    keys = np.linspace(0, frames - 1, len(poses))
    out = np.tile(np.eye(3), (frames, 24, 1, 1))
    for j in UPPER:
        rots = Rotation.from_rotvec(0.5 * poses[:, j])  # half the fitted pose: a calm walk
        out[:, j] = Slerp(keys, rots)(np.arange(frames)).as_matrix()
    return out


def pose_legs(
    skeleton: Skeleton,
    pelvis: np.ndarray,
    pelvis_rot: np.ndarray,
    local: np.ndarray,
    ankles: list[np.ndarray],
    feet: list[np.ndarray],
) -> np.ndarray:
    """Local rotations (T,24,3,3) with each leg posed by IK onto its ankle target and foot turn."""
    rest = skeleton.rest_joints
    local = local.copy()
    local[:, 0] = pelvis_rot
    for (hip, knee, ankle, _), target, foot in zip(LEGS, ankles, feet, strict=True):
        local[:, hip] = local[:, knee] = np.eye(3)
        h = pelvis + np.einsum("tab,b->ta", pelvis_rot, rest[hip] - rest[0])
        k = h + np.einsum("tab,b->ta", pelvis_rot, rest[knee] - rest[hip])
        a = k + np.einsum("tab,b->ta", pelvis_rot, rest[ankle] - rest[knee])
        reach = np.linalg.norm(target - h, axis=1) / (
            np.linalg.norm(rest[knee] - rest[hip]) + np.linalg.norm(rest[ankle] - rest[knee])
        )
        assert reach.max() < 0.985, (
            f"gait target out of reach ({reach.max():.3f} at {reach.argmax()})"
        )
        pole = pelvis_rot[:, :, 2]  # knees point forward
        sol = solve_two_bone(h, k, a, target, pole, iterations=4)
        g_hip = sol.hip @ pelvis_rot
        g_knee = sol.knee @ pelvis_rot
        local[:, hip] = np.swapaxes(pelvis_rot, 1, 2) @ g_hip
        local[:, knee] = np.swapaxes(g_hip, 1, 2) @ g_knee
        local[:, ankle] = np.swapaxes(g_knee, 1, 2) @ foot
    return local


def _rig(name: str, skeleton: Skeleton, root: np.ndarray, rot: np.ndarray, fps: float) -> Gait:
    rig = RigAnimation(
        name, SMPL_JOINT_NAMES, SMPL_PARENTS, skeleton.offsets(), root, rot, fps, 0, None
    )
    return Gait(rig, skeleton, np.zeros((len(root), 4), bool))


def walk(
    shared_data: Path,
    strides: int = 4,
    fps: float = 30.0,
    heading_deg: float = 150.0,
    skeleton: Skeleton | None = None,
) -> Gait:
    """Stand, then walk ``strides`` strides (1.1 s, 1.1 m each) with heel-toe roll, then stand."""
    skel = skeleton or builtin_skeleton()
    rest, clear = skel.rest_joints, skel.sole_clearance
    heading = np.deg2rad(heading_deg)
    forward = np.array([np.sin(heading), 0.0, np.cos(heading)])
    left = np.array([np.cos(heading), 0.0, -np.sin(heading)])
    period = int(round(1.1 * fps))
    stance = int(round(0.62 * period))
    lead = int(round(0.5 * fps))  # standing before the first step
    frames = lead + strides * period + period // 2 + period + lead
    speed = 1.1 / period  # metres per frame while walking
    t = np.arange(frames, dtype=np.float64)
    walk_end = lead + strides * period + period // 2
    ramp = _smooth01((t - lead) / period) * (1.0 - _smooth01((t - walk_end + period / 2) / period))
    dist = np.cumsum(speed * ramp) - speed * ramp[0]
    hip_height = rest[1, 1] - rest[7, 1]  # rest hip-to-ankle height
    scale = hip_height / 0.834  # the built-in skeleton's walking numbers, scaled to this one
    bob = 0.012 * scale * np.cos(4 * np.pi * (t - lead) / period) * ramp
    pelvis_y = clear[0] - 0.03 * scale - 0.04 * scale * ramp + bob
    sway = 0.02 * np.sin(2 * np.pi * (t - lead) / period) * ramp
    pelvis = dist[:, None] * forward + sway[:, None] * left
    pelvis[:, 1] = pelvis_y
    pelvis_rot = _yaw(heading + 0.06 * np.sin(2 * np.pi * (t - lead) / period) * ramp)
    ankles, feet, contacts = [], [], np.zeros((frames, 4), bool)
    for side, (_, _, ankle, toe) in enumerate(LEGS):
        lateral = (rest[ankle, 0] - rest[0, 0]) * left  # the body's left is +x at rest
        swing = period - stance
        first = lead + swing + (0 if side == 0 else period // 2)
        stances = [Stance(0, first - swing - 1, np.zeros(3), roll=False)]
        for s in range(first, walk_end, period):
            stances.append(Stance(s, s + stance - 1, np.zeros(3)))
        stances.append(Stance(stances[-1].end + swing + 1, frames - 1, np.zeros(3), roll=False))
        for st in stances:  # the pelvis passes over the ankle 40 % into a stance
            mid = st.start + 0.4 * (stance - 1) if st.start > 0 else 0
            at = dist[-1] if st is stances[-1] else np.interp(mid, t, dist)
            st.plant = at * forward + lateral + np.array([0.0, clear[ankle], 0.0])
            st.plant += forward * (rest[ankle, 2] - rest[0, 2])
        a, f, c = _foot_track(stances, frames, heading, rest[toe] - rest[ankle], clear[ankle])
        ankles.append(a)
        feet.append(f)
        contacts[:, side], contacts[:, 2 + side] = c[:, 0], c[:, 1]
    rot = pose_legs(skel, pelvis, pelvis_rot, upper_body(shared_data, frames), ankles, feet)
    gait = _rig("person_1", skel, pelvis, rot, fps)
    return replace(gait, contacts=contacts)


def turning(rig: RigAnimation, degrees: float, start: int, end: int) -> RigAnimation:
    """The rig turning ``degrees`` about the vertical (left for positive) between frames ``start``
    and ``end`` (a minimum-jerk ramp): each frame's pose is turned about its own pelvis and the
    pelvis's horizontal steps are turned with it, so the path curves with the heading. Returns
    the rig; the turn added at each frame is ``turn_angles(...)``."""
    turn = _yaw(turn_angles(rig.num_frames, degrees, start, end))
    step = np.diff(rig.root_positions, axis=0)
    step[:, 1] = 0.0
    root = rig.root_positions.copy()
    root[1:, [0, 2]] = root[0, [0, 2]]
    root[1:] += np.cumsum(np.einsum("tab,tb->ta", turn[1:], step), axis=0)
    rot = rig.local_rotations.copy()
    rot[:, 0] = turn @ rot[:, 0]
    return replace(rig, root_positions=root, local_rotations=rot)


def turn_angles(frames: int, degrees: float, start: int, end: int) -> np.ndarray:
    """(T,) radians: the turn :func:`turning` adds at each frame."""
    return np.deg2rad(degrees) * _smooth01((np.arange(frames) - start) / max(end - start, 1))


def jump(shared_data: Path, fps: float = 30.0, skeleton: Skeleton | None = None) -> Gait:
    """Stand, crouch, jump 0.25 m forward with 0.4 s of flight, land, stand."""
    skel = skeleton or builtin_skeleton()
    rest, clear = skel.rest_joints, skel.sole_clearance
    frames = int(round(2.4 * fps))
    t = np.arange(frames) / fps
    up, down = 1.0, 1.4  # take-off and landing times
    flying = (t > up) & (t < down)
    dip = lambda c: np.exp(-(((t - c) / 0.12) ** 2))  # noqa: E731
    crouch = 0.12 * (dip(up - 0.12) + dip(down + 0.1))
    rise = np.where(flying, 0.25 * np.sin(np.pi * (t - up) / (down - up)), 0.0)
    forward = 0.25 * _smooth01((t - up) / (down - up))
    pelvis = np.zeros((frames, 3))
    pelvis[:, 2] = forward
    pelvis[:, 1] = clear[0] - 0.04 - crouch + rise
    pelvis_rot = _yaw(np.zeros(frames))
    ankles, feet, contacts = [], [], np.zeros((frames, 4), bool)
    u = np.clip((t - up) / (down - up), 0.0, 1.0)
    for side, (_, _, ankle, _) in enumerate(LEGS):
        base = rest[ankle] - rest[0]
        a = np.tile([base[0], clear[ankle], base[2]], (frames, 1))
        a[:, 2] += forward
        a[:, 1] += rise  # the legs keep their length in the air
        ankles.append(a)
        feet.append(_pitch(-np.deg2rad(20.0) * np.sin(np.pi * u)))  # toes pointed in the air
        contacts[~flying, side] = contacts[~flying, 2 + side] = True
    rot = pose_legs(skel, pelvis, pelvis_rot, upper_body(shared_data, frames), ankles, feet)
    gait = _rig("person_1", skel, pelvis, rot, fps)
    return replace(gait, contacts=contacts)


def add_estimator_noise(
    rig: RigAnimation,
    seed: int = 0,
    drift_m: float = 0.02,
    drift_s: float = 0.2,
    leg_deg: float = 2.0,
    jitter_m: float = 0.002,
    jitter_deg: float = 0.4,
) -> RigAnimation:
    """What a monocular estimate adds: slow root error (``drift_m`` std horizontally, half of it
    vertically, correlated over ``drift_s``), slow leg-angle errors (``leg_deg``), per-frame root
    (``jitter_m``) and joint (``jitter_deg``) jitter."""
    rng = np.random.default_rng(seed)
    frames, joints = rig.local_rotations.shape[:2]
    sigma = drift_s * rig.fps

    def slow(shape: tuple[int, ...], std: float) -> np.ndarray:
        x = gaussian_filter1d(rng.normal(size=shape), sigma, axis=0, mode="nearest")
        return x / max(float(x.std()), 1e-12) * std

    drift = slow((frames, 3), drift_m) * [1.0, 0.5, 1.0]
    root = rig.root_positions + drift + rng.normal(0.0, jitter_m, (frames, 3))
    vec = rng.normal(0.0, np.deg2rad(jitter_deg), (frames, joints, 3))
    for j in (1, 2, 4, 5, 7, 8):
        vec[:, j] += slow((frames, 3), np.deg2rad(leg_deg))
    noise = Rotation.from_rotvec(vec.reshape(-1, 3)).as_matrix().reshape(frames, joints, 3, 3)
    return replace(rig, root_positions=root, local_rotations=rig.local_rotations @ noise)


CAMERA_AT = np.array([0.0, 1.2, 5.0])  # a level camera 1.2 m up, 5 m behind the start, facing -z


def to_track(rig: RigAnimation, track_id: int = 1) -> Track:
    """The world rig as a camera-frame track, as a model would estimate it (x right, y down,
    z forward; ``p_cam = C (p_world - CAMERA_AT)`` with C = diag(1, -1, -1))."""
    flip = np.diag([1.0, -1.0, -1.0])
    frames = rig.num_frames
    rest_root = rig.rest_offsets[0]
    transl = (rig.root_positions - CAMERA_AT) @ flip.T - rest_root
    rot = rig.local_rotations.copy()
    rot[:, 0] = flip @ rot[:, 0]
    return Track(
        track_id=track_id,
        frames=np.arange(frames),
        times=np.arange(frames) / rig.fps,
        global_orient=rot[:, 0],
        body_pose=rot[:, 1:],
        betas=np.zeros((frames, 10)),
        cam_crop=np.zeros((frames, 3)),
        transl=transl,
        boxes=np.tile([800.0, 200.0, 1100.0, 900.0], (frames, 1)),
        scores=np.ones(frames),
    )


def to_motion(rigs: list[RigAnimation]) -> Motion:
    """A clip of these world rigs (one track each, ids 1, 2, ...)."""
    tracks = [to_track(rig, i + 1) for i, rig in enumerate(rigs)]
    return Motion(tracks, rigs[0].fps, (1920, 1080), 1500.0, source="synthetic_gait")
