"""Root motion for game engines: a transform of a :class:`~exporters.rig.RigAnimation`.

Modes (``--root-motion``), the same for every format:

``world`` (default)
    The hips (the rig's root, SMPL's pelvis) move through the world; unchanged.
``in-place``
    Horizontal root motion removed, for engine-driven locomotion: the hips keep their height,
    sway and turn, but stay over the point where they start (x and z of the first frame).
``root-bone``
    A ground-level bone ``root`` is added above the hips (joint 0; the hips become its child). It
    carries the hips' horizontal trajectory exactly, on the floor (y = ``floor``), without
    rotation; the hips keep their height and sway as a per-frame offset from it (the rig's
    ``local_translations``). This is what Unreal's root-motion extraction expects. Every joint
    keeps its world position. At rest the root sits on the rest pose's floor under the hips.
    A skinned mesh gets a zero weight for the new bone and, for its pose correctives, nine zero
    blend shapes for the hips' own rotation (which SMPL has none for).

:func:`smpl_view` undoes the root bone (the hips as the root again), for writers that report SMPL's
parameters.
"""

from dataclasses import replace

import numpy as np

from exporters.rig import RigAnimation, RigMesh
from mocap.errors import MocapError

ROOT_MOTIONS = ("world", "in-place", "root-bone")
ROOT_BONE = "root"


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
    rot = np.concatenate([np.broadcast_to(np.eye(3), (t, 1, 3, 3)), rig.local_rotations], axis=1)
    moved = {j + 1: v for j, v in rig.local_translations.items()}
    moved[1] = hips - ground  # the hips over the root bone: height and sway
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
