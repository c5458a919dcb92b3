"""Root motion for game engines: a transform of a :class:`~exporters.rig.RigAnimation`.

Modes (``--root-motion``), the same for every format:

``world`` (default)
    The hips (the rig's root, SMPL's pelvis) move through the world; unchanged.
``in-place``
    Horizontal root motion removed, for engine-driven locomotion: the hips keep their height,
    sway and turn, but stay over the point where they start (x and z of the first frame).
``root-bone``
    A ground-level bone ``root`` is added above the hips (joint 0; the hips become its child). It
    carries the hips' horizontal trajectory exactly, on the floor (y = ``floor``), and the body's
    heading: a turn about the vertical (y) axis by the yaw of the pelvis's forward direction
    projected on the floor (:func:`heading`), unwrapped and smoothed over ``HEADING_SMOOTH_S`` so
    that the hips' sway does not wobble it. The hips keep their height, sway and the rest of
    their turn relative to it (their local rotation and the rig's ``local_translations``, both in
    the root bone's frame). This is what Unreal's root-motion extraction and Unity's root node
    take: translation and yaw, so a character that turns while walking turns its capsule. Every
    joint keeps its world position and orientation. At rest the root sits on the rest pose's
    floor under the hips, facing the rest pose's front. A skinned mesh gets a zero weight for the
    new bone and, for its pose correctives, nine zero blend shapes for the hips' own rotation
    (which SMPL has none for).

The rig is Y-up (:mod:`exporters.rig`); the Blender writers turn the root bone's yaw about y into
one about Blender's z with everything else, so no format needs its own code for it.

:func:`smpl_view` undoes the root bone (the hips as the root again), for writers that report SMPL's
parameters.
"""

from dataclasses import replace

import numpy as np
from scipy.ndimage import gaussian_filter1d

from exporters.rig import RigAnimation, RigMesh
from mocap.errors import MocapError

ROOT_MOTIONS = ("world", "in-place", "root-bone")
ROOT_BONE = "root"
HEADING_SMOOTH_S = 0.2  # Gaussian sigma (s): halves a gait's ~1 Hz hip sway, keeps sharp turns
LEVEL_MIN = 0.3  # the pelvis's forward must lean < ~72 deg from the floor for its heading to count


def yaw_matrices(angle: np.ndarray) -> np.ndarray:
    """(T,3,3) turns by ``angle`` (T,) radians about +y (right-handed: +z towards +x)."""
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros((len(angle), 3, 3))
    out[:, 0, 0] = out[:, 2, 2] = c
    out[:, 0, 2], out[:, 2, 0] = s, -s
    out[:, 1, 1] = 1.0
    return out


def heading(rig: RigAnimation, smooth_s: float = HEADING_SMOOTH_S) -> np.ndarray:
    """(T,) the body's heading in radians: the yaw about +y that turns the rest pose's front onto
    the pelvis's forward direction projected on the floor, unwrapped and smoothed.

    The rest front is the normal of the rest hip line (left hip minus right hip) on the floor
    (+z for SMPL's T-pose), +z without hip joints. Frames whose pelvis forward is nearly vertical
    (lying, bent double) have no reliable heading: it is interpolated from their neighbours, so
    such frames never add a spurious full turn; with none reliable the heading is 0. Smoothing
    is a zero-phase Gaussian of ``smooth_s`` seconds (0: none) over the unwrapped angle.
    """
    names = rig.joint_names
    front = np.array([0.0, 0.0, 1.0])
    if "left_hip" in names and "right_hip" in names:
        rest = rig.rest_positions()
        left = rest[names.index("left_hip")] - rest[names.index("right_hip")]
        across = np.cross(left, [0.0, 1.0, 0.0])
        if np.hypot(across[0], across[2]) > 1e-9:
            front = across / np.linalg.norm(across)
    fwd = rig.local_rotations[:, 0] @ front  # (T,3) pelvis forward in the world
    level = np.hypot(fwd[:, 0], fwd[:, 2])
    angle = np.arctan2(fwd[:, 0], fwd[:, 2]) - np.arctan2(front[0], front[2])
    ok = level > LEVEL_MIN
    t = np.arange(len(angle), dtype=np.float64)
    if not ok.any():
        return np.zeros(len(angle))
    yaw = np.interp(t, t[ok], np.unwrap(angle[ok]))
    if smooth_s > 0 and len(yaw) > 1:
        yaw = gaussian_filter1d(yaw, smooth_s * rig.fps, mode="nearest")
    return yaw


def in_place(rig: RigAnimation) -> RigAnimation:
    """The rig with its root's horizontal (x, z) position held at the first frame's."""
    root = rig.root_positions.copy()
    root[:, [0, 2]] = root[:1, [0, 2]]
    return replace(rig, root_positions=root)


def with_root_bone(
    rig: RigAnimation, floor: float = 0.0, rest_floor: float | None = None
) -> RigAnimation:
    """The rig with a ground-level ``root`` bone above its root joint (see the module docstring).

    Arguments:
        floor: the floor's height in the rig's world (the root bone's y).
        rest_floor: the floor's height in the rest pose (default: the lowest rest joint).
    """
    if ROOT_BONE in rig.joint_names:
        raise MocapError(f"{rig.name} already has a joint named {ROOT_BONE!r}")
    t = rig.num_frames
    rest = rig.rest_positions()
    low = float(rest[:, 1].min()) if rest_floor is None else rest_floor
    hips = rig.root_positions
    ground = np.stack([hips[:, 0], np.full(t, floor), hips[:, 2]], axis=1)
    offsets = np.concatenate([[[rest[0, 0], low, rest[0, 2]]], rig.rest_offsets])
    offsets[1] = [0.0, rest[0, 1] - low, 0.0]
    yaw = yaw_matrices(heading(rig))
    back = np.swapaxes(yaw, 1, 2)
    rot = np.concatenate([yaw[:, None], rig.local_rotations], axis=1)
    rot[:, 1] = back @ rig.local_rotations[:, 0]  # the hips' turn relative to the root's
    moved = {j + 1: v for j, v in rig.local_translations.items()}
    moved[1] = np.einsum("tab,tb->ta", back, hips - ground)  # height and sway, in the root's frame
    return replace(
        rig,
        joint_names=(ROOT_BONE, *rig.joint_names),
        parents=(-1, *(p + 1 for p in rig.parents)),
        rest_offsets=offsets,
        root_positions=ground,
        local_rotations=rot,
        mesh=_mesh_with_root(rig.mesh),
        local_translations=moved,
    )


def _mesh_with_root(mesh: RigMesh | None) -> RigMesh | None:
    if mesh is None:
        return None
    weights = np.concatenate([np.zeros((len(mesh.weights), 1)), mesh.weights], axis=1)
    dirs = mesh.pose_dirs
    if dirs is not None:  # the hips become joint 1: nine features that move nothing
        dirs = np.concatenate([np.zeros((9, *dirs.shape[1:]), dirs.dtype), dirs])
    return replace(mesh, weights=weights, pose_dirs=dirs)


def smpl_view(rig: RigAnimation) -> RigAnimation:
    """A root-bone rig as its hips-rooted original (same world positions); others unchanged."""
    if not rig.joint_names or rig.joint_names[0] != ROOT_BONE:
        return rig
    hips = rig.root_positions + np.einsum(
        "tab,tb->ta", rig.local_rotations[:, 0], rig.local_translations[1]
    )
    rot = rig.local_rotations[:, 1:].copy()
    rot[:, 0] = rig.local_rotations[:, 0] @ rot[:, 0]
    offsets = rig.rest_offsets[1:].copy()
    offsets[0] = rig.rest_offsets[0] + rig.rest_offsets[1]
    mesh = rig.mesh
    if mesh is not None:
        dirs = None if mesh.pose_dirs is None else mesh.pose_dirs[9:]
        mesh = replace(mesh, weights=mesh.weights[:, 1:], pose_dirs=dirs)
    return replace(
        rig,
        joint_names=rig.joint_names[1:],
        parents=tuple(p - 1 for p in rig.parents[1:]),
        rest_offsets=offsets,
        root_positions=hips,
        local_rotations=rot,
        mesh=mesh,
        local_translations={j - 1: v for j, v in rig.local_translations.items() if j > 1},
    )


def apply_root_motion(
    rig: RigAnimation, mode: str, floor: float = 0.0, rest_floor: float | None = None
) -> RigAnimation:
    """The rig with root motion ``mode`` (one of ``ROOT_MOTIONS``)."""
    if mode == "world":
        return rig
    if mode == "in-place":
        return in_place(rig)
    if mode == "root-bone":
        return with_root_bone(rig, floor, rest_floor)
    raise MocapError(f"unknown root motion {mode!r}; use {', '.join(ROOT_MOTIONS)}")
