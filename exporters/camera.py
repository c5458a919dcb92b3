"""The video's camera in the rigs' world, for the Blender writers (FBX, .blend, glTF).

With it, looking through the exported camera in Blender (or any FBX / glTF viewer) puts every
character where the footage shows the person: same position, lens and frame.

The camera's path comes from ``motion.extras`` (``camera_R``, ``camera_t``, ``camera_frames``:
camera-k -> first-camera, see :mod:`mocap.camera`) and is turned into the world of the rigs with
the clip's :class:`mocap.world.WorldFrame` (``p_world = rotation @ p_first_camera - offset``).
Without a stored path the camera stands still where the world frame puts it.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mocap.motion import Motion

if TYPE_CHECKING:
    from mocap.world import WorldFrame

# OpenCV camera axes (x right, y down, z ahead) -> Blender / glTF camera axes (y up, looking -z)
CV_TO_GL = np.diag([1.0, -1.0, -1.0])


@dataclass
class CameraAnimation:
    """The camera of a clip, keyed at video frame indices, in the rigs' Y-up world.

    Attributes:
        frames: (T,) video frame indices of the keys (ascending).
        positions: (T,3) camera centre, metres.
        rotations: (T,3,3) world-from-camera with Blender / glTF camera axes (x right, y up,
            looking along -z).
        focal_px: focal length in pixels of the full image; image_size: (width, height).
        footage: the source video (shown behind the camera in .blend files), or "".
    """

    frames: np.ndarray
    positions: np.ndarray
    rotations: np.ndarray
    focal_px: float
    image_size: tuple[int, int]
    name: str = "camera"
    footage: str = ""


def camera_animation(motion: Motion, world: "WorldFrame") -> CameraAnimation:
    """The clip's camera (moving when ``motion.extras`` holds its path) in the rigs' world."""
    from mocap.camera import CameraPath

    path = CameraPath.from_extras(motion.extras)
    if path is None or not len(path.frames):
        first = min((int(t.frames[0]) for t in motion.tracks if len(t)), default=0)
        frames, rot, pos = np.array([first]), np.eye(3)[None], np.zeros((1, 3))
    else:
        frames, rot, pos = path.frames, path.rotations, path.positions
    w = np.asarray(world.rotation, np.float64)
    return CameraAnimation(
        frames=np.asarray(frames, np.int64),
        positions=pos @ w.T - np.asarray(world.offset, np.float64),
        rotations=np.einsum("ab,tbc,cd->tad", w, rot, CV_TO_GL),
        focal_px=float(motion.focal_length),
        image_size=(int(motion.image_size[0]), int(motion.image_size[1])),
        footage=str(motion.source or ""),
    )
