"""BlazePose's 33 landmarks and where they sit on the SMPL 24-joint skeleton.

Every landmark hangs off one SMPL joint with a fixed offset in that joint's rest frame (SMPL
canonical: x to the body's left, y up, z forward, metres, for a 1.70 m adult; scaled with the
skeleton). Joint landmarks (shoulders, elbows, wrists, hips, knees, ankles) sit on the joint itself.
The same table serves both directions: the IK builds its rest frames from it, and forward
kinematics of a pose gives the landmark positions that pose would show (tests, reprojection).
"""

import numpy as np

from mocap.body.skeleton import forward_kinematics_global

LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip
NUM_LANDMARKS = 33
L = {name: i for i, name in enumerate(LANDMARK_NAMES)}

# (SMPL joint, offset in the joint's rest frame for a 1.70 m body); left side x > 0.
_HEAD, _LW, _RW, _LA, _RA = 15, 20, 21, 7, 8
_TABLE: dict[str, tuple[int, tuple[float, float, float]]] = {
    "nose": (_HEAD, (0.0, 0.0, 0.10)),
    "left_eye_inner": (_HEAD, (0.016, 0.035, 0.080)),
    "left_eye": (_HEAD, (0.032, 0.035, 0.075)),
    "left_eye_outer": (_HEAD, (0.048, 0.035, 0.068)),
    "right_eye_inner": (_HEAD, (-0.016, 0.035, 0.080)),
    "right_eye": (_HEAD, (-0.032, 0.035, 0.075)),
    "right_eye_outer": (_HEAD, (-0.048, 0.035, 0.068)),
    "left_ear": (_HEAD, (0.072, 0.005, -0.020)),
    "right_ear": (_HEAD, (-0.072, 0.005, -0.020)),
    "mouth_left": (_HEAD, (0.024, -0.040, 0.085)),
    "mouth_right": (_HEAD, (-0.024, -0.040, 0.085)),
    "left_shoulder": (16, (0.0, 0.0, 0.0)),
    "right_shoulder": (17, (0.0, 0.0, 0.0)),
    "left_elbow": (18, (0.0, 0.0, 0.0)),
    "right_elbow": (19, (0.0, 0.0, 0.0)),
    "left_wrist": (_LW, (0.0, 0.0, 0.0)),
    "right_wrist": (_RW, (0.0, 0.0, 0.0)),
    "left_pinky": (_LW, (0.075, 0.0, -0.030)),
    "right_pinky": (_RW, (-0.075, 0.0, -0.030)),
    "left_index": (_LW, (0.085, 0.0, 0.025)),
    "right_index": (_RW, (-0.085, 0.0, 0.025)),
    "left_thumb": (_LW, (0.040, -0.010, 0.050)),
    "right_thumb": (_RW, (-0.040, -0.010, 0.050)),
    "left_hip": (1, (0.0, 0.0, 0.0)),
    "right_hip": (2, (0.0, 0.0, 0.0)),
    "left_knee": (4, (0.0, 0.0, 0.0)),
    "right_knee": (5, (0.0, 0.0, 0.0)),
    "left_ankle": (_LA, (0.0, 0.0, 0.0)),
    "right_ankle": (_RA, (0.0, 0.0, 0.0)),
    "left_heel": (_LA, (0.0, -0.045, -0.060)),
    "right_heel": (_RA, (0.0, -0.045, -0.060)),
    "left_foot_index": (_LA, (0.015, -0.045, 0.190)),
    "right_foot_index": (_RA, (-0.015, -0.045, 0.190)),
}
LANDMARK_JOINT = np.array([_TABLE[n][0] for n in LANDMARK_NAMES], dtype=np.int64)
_OFFSETS = np.array([_TABLE[n][1] for n in LANDMARK_NAMES], dtype=np.float64)
REFERENCE_STATURE = 1.70

# SMPL joints that a landmark marks directly (landmark index -> joint), for 2D/3D correspondences.
JOINT_LANDMARKS: dict[int, int] = {
    L["left_shoulder"]: 16, L["right_shoulder"]: 17, L["left_elbow"]: 18, L["right_elbow"]: 19,
    L["left_wrist"]: 20, L["right_wrist"]: 21, L["left_hip"]: 1, L["right_hip"]: 2,
    L["left_knee"]: 4, L["right_knee"]: 5, L["left_ankle"]: 7, L["right_ankle"]: 8,
}  # fmt: skip


def stature(rest_joints: np.ndarray) -> float:
    """Approximate standing height of a rest skeleton (24,3): head joint to ankles, plus the
    built-in proportions' head top and ankle height (1.70 m for the built-in skeleton)."""
    head_to_ankle = float(rest_joints[15, 1] - rest_joints[[7, 8], 1].mean())
    return head_to_ankle * REFERENCE_STATURE / (1.555 - 0.066)


def landmark_offsets(rest_joints: np.ndarray) -> np.ndarray:
    """(33,3) landmark offsets from their joints, scaled to the skeleton's stature."""
    return _OFFSETS * (stature(rest_joints) / REFERENCE_STATURE)


def rest_landmarks(rest_joints: np.ndarray) -> np.ndarray:
    """(33,3) landmark positions on the rest skeleton (24,3) (rest frames are the canonical one)."""
    return rest_joints[LANDMARK_JOINT] + landmark_offsets(rest_joints)


def posed_landmarks(
    rest_joints: np.ndarray, rotations: np.ndarray, transl: np.ndarray
) -> np.ndarray:
    """(T,33,3) landmark positions of a posed skeleton.

    Arguments:
        rest_joints: (24,3) or (T,24,3) rest joints.
        rotations: (T,24,3,3) local rotations (joint 0: global orientation).
        transl: (T,3) translation of the model origin.
    """
    pos, glob = forward_kinematics_global(rest_joints, rotations, transl)
    rest = rest_joints if rest_joints.ndim == 2 else rest_joints[0]
    off = landmark_offsets(rest)
    return pos[:, LANDMARK_JOINT] + np.einsum("tlab,lb->tla", glob[:, LANDMARK_JOINT], off)
