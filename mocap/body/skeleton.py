"""The 24-joint skeleton that carries the animation: built-in average proportions, or SMPL's shape.

Without the licensed SMPL file, exports still work on a built-in skeleton with SMPL's 24-joint
topology (names and parents from :mod:`mocap.body.joints`) posed in SMPL's rest T-pose. Its joint
positions are our own, from segment-length proportions of stature (Drillis & Contini, 1966) for a
1.70 m adult: they carry the predicted rotations and root motion, but not the track's body shape.
With SMPL present, the rest joints follow each track's betas (``BodyModel.rest_joints``).

Frame (SMPL's canonical one): x to the body's left, y up, z forward (the body faces +z), metres.
Like SMPL, the model origin sits above the pelvis joint; the global orientation rotates the body
about the pelvis joint and the translation moves the origin.
"""

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from mocap.motion import Track

STATURE = 1.70  # metres, the built-in skeleton's standing height
PELVIS_BELOW_ORIGIN = (
    0.23  # metres from the model origin down to the pelvis joint (SMPL convention)
)
SOLE_BELOW_FOOT = 0.03  # metres from the built-in foot (ball) joint down to the sole
FOOT_JOINTS = (7, 8, 10, 11)  # ankles and feet: candidates for floor contact

# Built-in rest T-pose: (x, height above the floor, z) per joint, metres. Heights of hip, knee,
# ankle, shoulder and chin follow the stature fractions 0.530, 0.285, 0.039, 0.818 and 0.870;
# upper arm 0.186 H, forearm 0.146 H, hand 0.108 H, foot 0.152 H; arms horizontal (T-pose).
_BUILTIN_REST: dict[str, tuple[float, float, float]] = {
    "pelvis": (0.0, 0.960, 0.000),
    "left_hip": (0.082, 0.900, -0.005),
    "right_hip": (-0.082, 0.900, -0.005),
    "spine1": (0.0, 1.070, -0.015),
    "left_knee": (0.090, 0.485, 0.005),
    "right_knee": (-0.090, 0.485, 0.005),
    "spine2": (0.0, 1.200, -0.005),
    "left_ankle": (0.080, 0.066, -0.030),
    "right_ankle": (-0.080, 0.066, -0.030),
    "spine3": (0.0, 1.255, 0.005),
    "left_foot": (0.095, 0.030, 0.100),
    "right_foot": (-0.095, 0.030, 0.100),
    "neck": (0.0, 1.450, -0.015),
    "left_collar": (0.075, 1.370, -0.005),
    "right_collar": (-0.075, 1.370, -0.005),
    "head": (0.0, 1.555, 0.030),
    "left_shoulder": (0.175, 1.395, -0.015),
    "right_shoulder": (-0.175, 1.395, -0.015),
    "left_elbow": (0.491, 1.395, -0.025),
    "right_elbow": (-0.491, 1.395, -0.025),
    "left_wrist": (0.739, 1.395, -0.020),
    "right_wrist": (-0.739, 1.395, -0.020),
    "left_hand": (0.823, 1.390, -0.020),
    "right_hand": (-0.823, 1.390, -0.020),
}


class RestJointSource(Protocol):
    """What the skeleton needs from a body model (``mocap.body.smpl.BodyModel`` satisfies it)."""

    def rest_joints(self, betas: np.ndarray) -> np.ndarray: ...


class BodySource(RestJointSource, Protocol):
    """What the exporters need from a body model: rest joints and the skinned rest mesh."""

    def rest_vertices(self, betas: np.ndarray) -> np.ndarray: ...

    @property
    def faces(self) -> np.ndarray: ...

    @property
    def lbs_weights(self) -> np.ndarray: ...


@dataclass
class Skeleton:
    """Rest pose of one person's 24-joint skeleton.

    Attributes:
        rest_joints: (24,3) joint positions at rest, SMPL canonical frame, metres.
        sole_clearance: (24,) height of each joint above the sole at rest (floor placement).
        shaped: True when the rest joints come from SMPL and the track's betas.
        betas: (10,) the SMPL shape the rest joints were made from (None for the built-in one).
    """

    rest_joints: np.ndarray
    sole_clearance: np.ndarray
    shaped: bool
    betas: np.ndarray | None = None
    joint_names: tuple[str, ...] = SMPL_JOINT_NAMES
    parents: tuple[int, ...] = SMPL_PARENTS

    def offsets(self) -> np.ndarray:
        """(24,3) vector from each joint's parent to the joint at rest; the root's rest position."""
        off = self.rest_joints.copy()
        for j, p in enumerate(self.parents):
            if p >= 0:
                off[j] = self.rest_joints[j] - self.rest_joints[p]
        return off


def builtin_skeleton(scale: float = 1.0) -> Skeleton:
    """The built-in skeleton (no SMPL data): 1.70 m adult at average proportions, times ``scale``."""
    table = scale * np.array([_BUILTIN_REST[name] for name in SMPL_JOINT_NAMES], dtype=np.float64)
    floor = -(table[0, 1] + PELVIS_BELOW_ORIGIN)  # the floor's y in the model frame
    rest = table.copy()
    rest[:, 1] += floor
    return Skeleton(rest_joints=rest, sole_clearance=table[:, 1].copy(), shaped=False)


def smpl_skeleton(
    body: RestJointSource, betas: np.ndarray, sole_height: float | None = None
) -> Skeleton:
    """Skeleton with SMPL's rest joints for ``betas`` (10,).

    ``sole_height`` is the lowest rest vertex's y (floor contact); estimated from the built-in foot
    clearance when not given.
    """
    betas = np.asarray(betas, dtype=np.float64)
    rest = np.asarray(body.rest_joints(betas), dtype=np.float64)
    if sole_height is None:
        sole_height = float(rest[10:12, 1].min()) - SOLE_BELOW_FOOT
    return Skeleton(rest, rest[:, 1] - sole_height, shaped=True, betas=betas.copy())


def forward_kinematics(
    rest_joints: np.ndarray,
    rotations: np.ndarray,
    transl: np.ndarray,
    parents: tuple[int, ...] = SMPL_PARENTS,
) -> np.ndarray:
    """Posed joint positions, exactly as SMPL computes its 24 joints.

    Args:
        rest_joints: (J,3) rest joint positions (model frame), or (T,J,3) when they vary per frame.
        rotations: (T,J,3,3) local rotations; joint 0's is the global orientation.
        transl: (T,3) translation of the model origin.

    Returns:
        (T,J,3) joint positions: the root at ``rest_joints[0] + transl``, every other joint at its
        parent's position plus the parent's global rotation applied to the rest offset.
    """
    return forward_kinematics_global(rest_joints, rotations, transl, parents)[0]


def forward_kinematics_global(
    rest_joints: np.ndarray,
    rotations: np.ndarray,
    transl: np.ndarray,
    parents: tuple[int, ...] = SMPL_PARENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`forward_kinematics` that also returns the (T,J,3,3) global rotation of every joint."""
    t, j = rotations.shape[:2]
    rest = np.broadcast_to(rest_joints, (t, j, 3))
    glob = np.empty((t, j, 3, 3))
    pos = np.empty((t, j, 3))
    for k, p in enumerate(parents[:j]):
        if p < 0:
            glob[:, k] = rotations[:, k]
            pos[:, k] = rest[:, k] + transl
        else:
            glob[:, k] = glob[:, p] @ rotations[:, k]
            pos[:, k] = pos[:, p] + np.einsum("tab,tb->ta", glob[:, p], rest[:, k] - rest[:, p])
    return pos, glob


def track_scale(track: Track) -> float:
    """Uniform size of the built-in skeleton for a track (``extras["skeleton_scale"]``, else 1):
    the embedded model scales it to the person's measured bone lengths when SMPL is absent."""
    scale = track.extras.get("skeleton_scale")
    return float(np.median(scale)) if scale is not None and len(scale) else 1.0


def track_joints(track: Track, body: RestJointSource | None = None) -> np.ndarray:
    """(T,24,3) camera-frame joints of a track by forward kinematics (SMPL's joints when ``body``).

    Rest joints are linear in betas (SMPL regresses them from the shaped mesh), so the per-frame
    rest joints come from 11 calls of ``body.rest_joints``; the built-in skeleton ignores betas.
    """
    rotations = np.concatenate([track.global_orient[:, None], track.body_pose], axis=1)
    if body is None:
        rest = np.broadcast_to(
            builtin_skeleton(track_scale(track)).rest_joints, (len(track), 24, 3)
        )
    else:
        base = np.asarray(body.rest_joints(np.zeros(10)), dtype=np.float64)
        basis = np.stack(
            [np.asarray(body.rest_joints(e), dtype=np.float64) - base for e in np.eye(10)]
        )
        rest = base + np.einsum(
            "tb,bjc->tjc", np.asarray(track.betas, dtype=np.float64)[:, :10], basis
        )
    return forward_kinematics(rest, rotations, np.asarray(track.transl, dtype=np.float64))
