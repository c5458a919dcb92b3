"""The exporters' common input: one skeleton animation, in a Y-up world, ready to write.

Built from a :class:`mocap.motion.Track` by ``exporters.export_motion`` (world transform, skeleton
from betas or the built-in one) and consumed by every format writer (BVH natively, FBX / .blend /
glTF through Blender), so all formats carry exactly the same numbers.

Conventions:
    - World: right-handed, Y up, metres. (Blender writers convert to Z-up themselves.)
    - Rest pose: SMPL's T-pose with identity joint orientations; ``rest_offsets[j]`` is the vector
      from the parent joint to joint j at rest (root: the root's rest position).
    - ``local_rotations[t, j]`` rotates joint j relative to its parent (SMPL semantics, expressed in
      the world axes); joint 0's is the global orientation in the world.
    - Joint world positions: forward kinematics of rest offsets, local rotations and ``root_positions``
      (the world position of joint 0 at each frame). A joint listed in ``local_translations``
      (a root bone's hips) is placed by its per-frame offset from the parent instead.
    - Pose correctives (SMPL's pose blend shapes): ``mesh.pose_dirs[f]`` is the rest-mesh offset per
      unit of pose feature f, the features being ``(R_j - I)`` of the rig's local rotations as stored,
      flattened row-major for joints 1..J-1 (:func:`pose_features`; 207 for SMPL). The rest mesh is
      displaced by ``features @ pose_dirs`` before skinning. For a rig whose world axes are SMPL's
      canonical ones (Y up, facing +Z: what ``mocap.world`` builds) these are SMPL's posedirs
      unchanged; :func:`rotate_pose_dirs` converts them for a rig whose axes are turned.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RigMesh:
    """Optional skinned mesh bound to the rig at rest (SMPL mesh with the track's betas)."""

    rest_vertices: np.ndarray  # (V,3) world (Y-up) metres, at rest
    faces: np.ndarray  # (F,3) int
    weights: np.ndarray  # (V,24) skinning weights, rows sum to 1
    pose_dirs: np.ndarray | None = (
        None  # (9*(J-1),V,3) world offsets per pose feature; None: LBS only
    )


@dataclass
class RigAnimation:
    """One person's animation (T frames, J joints)."""

    name: str  # e.g. "person_3"
    joint_names: tuple[str, ...]  # (J,)
    parents: tuple[int, ...]  # (J,) parent index, -1 for the root
    rest_offsets: np.ndarray  # (J,3)
    root_positions: np.ndarray  # (T,3)
    local_rotations: np.ndarray  # (T,J,3,3)
    fps: float
    frame_start: int = 0  # first frame index in the source video (for combined scenes)
    mesh: RigMesh | None = None
    # per-frame offsets (T,3) from the parent, in the parent's frame, of joints that translate
    # (the hips under a root bone, exporters.root_motion); other joints keep their rest offsets
    local_translations: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.local_rotations.shape[0])

    def rest_positions(self) -> np.ndarray:
        """(J,3) joint positions at rest."""
        pos = np.zeros_like(self.rest_offsets)
        for j, p in enumerate(self.parents):
            pos[j] = self.rest_offsets[j] if p < 0 else pos[p] + self.rest_offsets[j]
        return pos

    def world_positions(self) -> np.ndarray:
        """(T,J,3) joint world positions by forward kinematics (the reference every format must match)."""
        t, j = self.local_rotations.shape[:2]
        glob = np.zeros((t, j, 3, 3))
        pos = np.zeros((t, j, 3))
        for k, p in enumerate(self.parents):
            if p < 0:
                glob[:, k] = self.local_rotations[:, k]
                pos[:, k] = self.root_positions
            else:
                glob[:, k] = glob[:, p] @ self.local_rotations[:, k]
                offset = self.local_translations.get(k)
                if offset is None:
                    pos[:, k] = pos[:, p] + glob[:, p] @ self.rest_offsets[k]
                else:
                    pos[:, k] = pos[:, p] + np.einsum("tab,tb->ta", glob[:, p], offset)
        return pos


def pose_features(local_rotations: np.ndarray) -> np.ndarray:
    """SMPL's pose-corrective features: ``(R_j - I)`` for joints 1.., flattened row-major.

    Arguments:
        local_rotations: (T,J,3,3) rotations relative to the parent (joint 0, the root, is unused).
    Returns:
        (T, 9*(J-1)) features; ``features @ pose_dirs.reshape(len(pose_dirs), -1)`` gives (T, V*3)
        rest-mesh offsets, as smplx's ``lbs`` does with its (207, V*3) ``posedirs``.
    """
    rot = np.asarray(local_rotations, dtype=np.float64)[:, 1:]
    return (rot - np.eye(3)).reshape(len(rot), -1)


def smpl_pose_dirs(body: object) -> np.ndarray | None:
    """(207,V,3) float32 SMPL pose blend shapes of an smplx-backed body model (a copy of
    ``body.layer.posedirs``, stored by smplx as (207, V*3)); None when the body has none.

    float32 (17 MB for SMPL, per person) as smplx keeps them and as Blender stores shape keys.
    """
    dirs = getattr(getattr(body, "layer", None), "posedirs", None)
    if dirs is None:
        return None
    arr = dirs.detach().cpu().numpy() if hasattr(dirs, "detach") else np.asarray(dirs)
    return np.array(arr, dtype=np.float32).reshape(arr.shape[0], -1, 3)


def rotate_pose_dirs(pose_dirs: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Pose blend shapes for a rig whose world is SMPL's canonical frame turned by ``axes`` (C).

    Such a rig holds the rest mesh as ``C v`` and local rotations as ``C R C^T``, so its features
    are ``vec(C (R - I) C^T)``, while SMPL's are ``vec(R - I) = (C^T kron C^T) vec(C (R - I) C^T)``
    (row-major vec). Folding that 9x9 map and the rotation of the offsets into the blend shapes
    keeps the rig's contract: its own features times its own pose_dirs.

    Arguments:
        pose_dirs: (9*K,V,3) blend shapes in SMPL's frame. axes: (3,3) rotation C.
    Returns:
        (9*K,V,3) blend shapes for the turned rig.
    """
    c = np.asarray(axes, dtype=np.float64)
    mix = np.kron(c.T, c.T)  # (9,9): SMPL feature (f) from rig feature (g)
    dirs = np.asarray(pose_dirs, dtype=np.float64).reshape(-1, 9, *pose_dirs.shape[1:])
    return np.einsum("fg,kfvb,ab->kgva", mix, dirs, c).reshape(pose_dirs.shape)
