"""The camera pass of `mocap run` (``--camera static|moving|auto``), run after tracking.

It decodes the clip once more (same ``--start``/``--end``/``--stride``, so frame indices match the
motion's), hands frames and the tracks' boxes to :func:`mocap.camera.estimate_camera`, and stores
the camera's path in ``Motion.extras`` (``camera_R``, ``camera_t``, ``camera_frames``), which
:mod:`mocap.world` composes with each person's camera-frame pose and the Blender writers export
as an animated camera.

- ``static``: no pass; the world assumes a camera on a tripod (as before).
- ``moving``: the path is always stored.
- ``auto`` (default): stored only when the camera turned at least 1 degree or travelled at least
  10 cm; otherwise the clip is treated as static and its world motion is the static one. The run
  says which it chose.
"""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from mocap.camera import CameraPath, PeopleInFrame, estimate_camera
from mocap.motion import Motion

log = logging.getLogger("mocap")


def people_by_frame(motion: Motion) -> dict[int, PeopleInFrame]:
    """Frame index -> every tracked person's box and root depth (metres) in that frame."""
    rows: dict[int, tuple[list[np.ndarray], list[float]]] = {}
    for track in motion.tracks:
        transl = np.asarray(track.transl, np.float64)
        for k, frame in enumerate(np.asarray(track.frames)):
            boxes, depths = rows.setdefault(int(frame), ([], []))
            boxes.append(np.asarray(track.boxes[k], np.float64))
            depths.append(float(transl[k, 2]))
    return {f: PeopleInFrame(np.array(b).reshape(-1, 4), np.array(d)) for f, (b, d) in rows.items()}


def estimate_clip_camera(
    video: Path, motion: Motion, start: float = 0.0, end: float | None = None, stride: int = 1
) -> CameraPath:
    """Decode ``video`` again and estimate its camera path (see :mod:`mocap.camera`)."""
    from mocap.pipeline.video import open_video

    stream = open_video(video, start=start, end=end, stride=stride)
    frames = ((f.index, f.image) for f in stream)
    return estimate_camera(frames, people_by_frame(motion), motion.focal_length, motion.image_size)


def camera_pass(
    video: Path,
    motion: Motion,
    mode: str,
    start: float = 0.0,
    end: float | None = None,
    stride: int = 1,
) -> tuple[Motion, list[str]]:
    """The motion with its camera path (``mode`` moving, or auto finding motion) and notes."""
    if mode == "static":
        return motion, []
    import cv2

    try:
        path = estimate_clip_camera(video, motion, start, end, stride)
    except cv2.error as exc:  # a frame OpenCV cannot work on: keep the static world
        line = f"camera: static (its motion could not be estimated: {str(exc).strip().splitlines()[-1]})"
        log.warning("%s", line)
        return motion, [line]
    turned, travelled = path.max_angle_deg, path.travel_m
    how = f"turns up to {turned:.1f} deg, travels {travelled:.2f} m, drift check {path.drift_deg:.2f} deg"
    if mode == "auto" and path.is_static():
        line = f"camera: static (auto: the background {how}; below 1 deg and 0.1 m)"
        log.info("%s", line)
        return motion, [line, *path.notes]
    line = f"camera: moving ({'auto' if mode == 'auto' else '--camera moving'}: {how})"
    log.info("%s", line)
    return replace(motion, extras={**motion.extras, **path.to_extras()}), [line, *path.notes]
