"""A panning camera with exact ground truth, made from real images.

A real 1080p frame (the walking-crowd clip, frame 0) is the scene at infinity, seen by a wide
"source" camera at identity; a video camera turning by ``R(t)`` sees it through the homography
``K_src R(t) K_v^-1`` (video pixels -> source pixels). A real person (a COCO photo crop) is pasted
where a given camera-frame point projects, so the person moves in the image as the test wants.
"""

from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from mocap.body.skeleton import builtin_skeleton
from mocap.motion import Motion, Track

SIZE = (960, 540)  # video width, height
FOCAL = float(np.hypot(*SIZE))  # the motion's default focal length (image diagonal)
SOURCE_FOCAL = 800.0  # the 1920x1080 photo spans ~100 x 68 degrees
PERSON_PHOTO = "images/coco_val2014_241.jpg"
PERSON_CROP = (130, 10, 330, 630)  # x1, y1, x2, y2 of the standing man in that photo
STANDING = np.array([0.4, 1.0, 8.0])  # a standing person's pelvis, source frame, metres


def pan_tilt(n: int, pan_deg: float = 26.0, tilt_deg: float = 15.0) -> np.ndarray:
    """(n,3,3) world-from-camera rotations of a smooth pan and tilt (about 30 degrees in all),
    symmetric about the photo's centre, eased in and out."""
    s = (1.0 - np.cos(np.pi * np.linspace(0.0, 1.0, n))) / 2.0 - 0.5
    yaw, pitch = np.radians(pan_deg) * s, np.radians(tilt_deg) * s
    return Rotation.from_euler("YX", np.stack([yaw, pitch], 1)).as_matrix()


def relative(rotations: np.ndarray) -> np.ndarray:
    """(n,3,3) camera-k -> first-camera rotations (what :mod:`mocap.camera` estimates)."""
    return np.einsum("ba,kbc->kac", rotations[0], rotations)


def load_scene(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the 1080p background photo, the person crop) as BGR uint8."""
    with av.open(str(shared / "videos/walking_crowd_1080p.mp4")) as c:
        photo = next(c.decode(video=0)).to_ndarray(format="bgr24")
    x1, y1, x2, y2 = PERSON_CROP
    person = cv2.imread(str(shared / PERSON_PHOTO))[y1:y2, x1:x2]
    return photo, person


def intrinsics(focal: float, width: float, height: float) -> np.ndarray:
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])


def person_box(point_cam: np.ndarray, height_m: float = 1.75) -> np.ndarray:
    """(4,) image box of a standing person whose pelvis is at ``point_cam`` (camera frame, m)."""
    K = intrinsics(FOCAL, *SIZE)
    top = K @ (point_cam + [0.0, -0.85, 0.0])
    bottom = K @ (point_cam + [0.0, height_m - 0.85, 0.0])
    y1, y2 = top[1] / top[2], bottom[1] / bottom[2]
    x = (top[0] / top[2] + bottom[0] / bottom[2]) / 2
    w = (y2 - y1) * 0.32
    return np.array([x - w / 2, y1, x + w / 2, y2])


def render(
    photo: np.ndarray, person: np.ndarray, rotations: np.ndarray, boxes: np.ndarray
) -> Iterator[np.ndarray]:
    """Video frames (H,W,3) BGR: the photo seen by each rotation, the person pasted in each box
    of ``boxes`` (N,P,4) (every other person mirrored)."""
    k_src = intrinsics(SOURCE_FOCAL, photo.shape[1], photo.shape[0])
    k_v = intrinsics(FOCAL, *SIZE)
    for rot, frame_boxes in zip(rotations, boxes, strict=True):
        H = k_src @ rot @ np.linalg.inv(k_v)
        frame = cv2.warpPerspective(photo, H, SIZE, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        for p, box in enumerate(frame_boxes):
            x1, y1, x2, y2 = np.round(box).astype(int)
            w, h = x2 - x1, y2 - y1
            xa, ya, xb, yb = max(x1, 0), max(y1, 0), min(x2, SIZE[0]), min(y2, SIZE[1])
            if w > 2 and h > 2 and xb > xa and yb > ya:
                patch = cv2.resize(person[:, ::-1] if p % 2 else person, (w, h))
                frame[ya:yb, xa:xb] = patch[ya - y1 : yb - y1, xa - x1 : xb - x1]
        yield frame


def walker(n: int) -> np.ndarray:
    """(n,3) a person walking a straight line across the room, 3 m at 1 m/s, at 8-9 m."""
    s = np.linspace(0.0, 1.0, n)[:, None]
    return np.array([-1.6, 1.0, 8.5]) + s * np.array([2.9, 0.0, -1.0])


def person_track(tid: int, rotations: np.ndarray, path: np.ndarray) -> Track:
    """A person whose pelvis follows ``path`` (N,3) (source frame, OpenCV axes, metres), as the
    model sees it from each turned camera (built-in skeleton, T-pose, facing the camera)."""
    n = len(rotations)
    upright = np.diag([1.0, -1.0, -1.0])  # SMPL's y-up body, facing the camera, in OpenCV axes
    in_cam = np.einsum("kba,kb->ka", rotations, path)
    boxes = np.stack([person_box(p) for p in in_cam])
    transl = in_cam - builtin_skeleton().rest_joints[0]  # the pelvis on the path
    return Track(tid, np.arange(n), np.arange(n) / 30.0, np.einsum("kba,bc->kac", rotations, upright),
                 np.repeat(np.eye(3)[None, None], n, 0).repeat(23, 1), np.zeros((n, 10)),
                 np.zeros((n, 3)), transl, boxes, np.ones(n))  # fmt: skip


def pan_clip(shared: Path, folder: Path, n: int) -> tuple[Path, Motion]:
    """``folder/pan.mp4``: a 30-degree pan and tilt over ``n`` frames with a person standing at
    ``STANDING`` and one walking (:func:`walker`), and their motion as the model would see it."""
    rotations = pan_tilt(n)
    photo, person = load_scene(shared)
    tracks = [person_track(1, rotations, np.repeat(STANDING[None], n, 0))]
    tracks.append(person_track(2, rotations, walker(n)))
    boxes = np.stack([t.boxes for t in tracks], axis=1)
    clip = write_video(render(photo, person, rotations, boxes), folder / "pan.mp4")
    return clip, Motion(tracks, 30.0, SIZE, FOCAL, source=str(clip))


def write_video(frames: Iterator[np.ndarray], path: Path, fps: int = 30) -> Path:
    """H.264 (high quality) MP4 of the frames."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.options = {"crf": "16", "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
