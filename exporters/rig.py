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
      (the world position of joint 0 at each frame).
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class RigMesh:
    """Optional skinned mesh bound to the rig at rest (SMPL mesh with the track's betas)."""

    rest_vertices: np.ndarray  # (V,3) world (Y-up) metres, at rest
    faces: np.ndarray  # (F,3) int
    weights: np.ndarray  # (V,24) skinning weights, rows sum to 1


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
                pos[:, k] = pos[:, p] + glob[:, p] @ self.rest_offsets[k]
        return pos
