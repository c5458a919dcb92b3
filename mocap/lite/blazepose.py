"""``--model lite``: MediaPipe's BlazePose GHUM 3D on each tracked person, then IK to SMPL.

BlazePose (Apache-2.0; its weights ship inside the ``mediapipe`` wheel, nothing is downloaded)
gives 33 landmarks per person: image positions with a visibility, and metric "world" positions
centred between the hips. mocap runs it on each tracked person's enlarged square crop, with one
landmark tracker per identity so it can follow its own region of interest from frame to frame,
and turns the landmarks into SMPL motion per track (:mod:`mocap.lite.fit`).

World landmarks are seen by a virtual camera looking straight at the crop; they are rotated onto
the ray through the crop's centre so that their orientation is the video camera's.
"""

import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mocap.errors import MocapError, native_stderr_silenced
from mocap.model.estimator import Estimate
from mocap.model.predictor import SMPLParams
from mocap.motion import Track

CROP_SCALE = 1.35  # crop side / the box's longer side: the whole body with some context
CROP_MAX = 384  # crops are downscaled to at most this side (the landmark model runs at 256)
FORGET_FRAMES = 90  # a landmark tracker unused this many frames is closed
MIN_BODY_VISIBILITY = 0.5  # median visibility of the body's joint landmarks for a found person
MIN_BOX_FILL = 0.3  # the landmarks span at least this share of the detected box's longer side
BODY_LANDMARKS = [11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]  # shoulders ... ankles
UPRIGHT = np.diag([1.0, -1.0, -1.0]).astype(np.float32)  # SMPL facing the camera, upright


@dataclass
class LiteItem:
    """One person in one frame, prepared for BlazePose."""

    track_id: int
    crop_rgb: np.ndarray  # (S,S,3) uint8
    origin: np.ndarray  # (2,) image pixel of the crop's top-left corner
    scale: float  # image pixels per crop pixel
    box: np.ndarray  # (4,) the tracked box


def mediapipe_version() -> str:
    """Version of the installed mediapipe (MocapError when it is missing)."""
    try:
        import mediapipe
    except ImportError as exc:
        raise MocapError(
            "the embedded model needs mediapipe 0.10.21: pip install 'mediapipe==0.10.21'"
        ) from exc
    return str(mediapipe.__version__)


def ray_rotation(center_xy: np.ndarray, image_size: tuple[int, int], focal: float) -> np.ndarray:
    """(3,3) smallest rotation taking the optical axis (0,0,1) onto the ray through a pixel."""
    w, h = image_size
    d = np.array([center_xy[0] - w / 2.0, center_xy[1] - h / 2.0, focal], dtype=np.float64)
    d /= np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, d)
    s, c = np.linalg.norm(axis), float(d @ z)
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def _fills_box(points: np.ndarray, visibility: np.ndarray, box: np.ndarray) -> bool:
    """Whether landmarks (33,2) image pixels describe the person the detector boxed: confident,
    centred inside the box and spanning a fair part of it (BlazePose also "finds" tiny bodies in
    walls and ceilings)."""
    if np.median(visibility[BODY_LANDMARKS]) < MIN_BODY_VISIBILITY:
        return False
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = points[BODY_LANDMARKS].mean(axis=0)
    span = np.ptp(points[BODY_LANDMARKS], axis=0).max()
    return x1 <= cx <= x2 and y1 <= cy <= y2 and span >= MIN_BOX_FILL * max(x2 - x1, y2 - y1)


class LiteEstimator:
    """BlazePose GHUM 3D + IK behind the :class:`~mocap.model.estimator.Estimator` interface.

    Its landmark trackers follow each person inside the enlarged crop, so the person detector
    only needs to run on every ``detect_interval``-th frame (in between, the tracker's predicted
    boxes place the crops; a person it loses is detected again on the next frame). The detector
    costs ~10x BlazePose per frame on a CPU; every 6th frame moves the landmarks by 0.6-0.9% of
    the body's height against every frame (docs/benchmarks.md).

    Arguments:
        complexity: BlazePose model, 1 = "full" (bundled; 0 lite and 2 heavy are downloads).
        min_confidence: detection / tracking confidence of the landmark trackers.
    """

    detect_interval = 6

    def __init__(self, complexity: int = 1, min_confidence: float = 0.5) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")  # quiet MediaPipe's C++ logging
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        version = mediapipe_version()
        from mediapipe.python.solutions import pose as mp_pose

        self._pose_cls = mp_pose.Pose
        self.complexity = complexity
        self.min_confidence = min_confidence
        self.label = f"lite (BlazePose GHUM 3D full, mediapipe {version}, IK to SMPL)"
        self._trackers: dict[int, Any] = {}
        self._last_used: dict[int, int] = {}
        self._calls = 0

    # -- per frame -------------------------------------------------------------------------
    def prepare(self, image_bgr: np.ndarray, box_xyxy: np.ndarray, track_id: int) -> LiteItem:
        x1, y1, x2, y2 = (float(v) for v in box_xyxy)
        side = max(x2 - x1, y2 - y1, 8.0) * CROP_SCALE
        out = int(min(CROP_MAX, max(64, round(side))))
        scale = side / out
        origin = np.array([(x1 + x2 - side) / 2.0, (y1 + y2 - side) / 2.0])
        M = np.array([[1 / scale, 0, -origin[0] / scale], [0, 1 / scale, -origin[1] / scale]])
        crop = cv2.warpAffine(
            image_bgr, M, (out, out), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT
        )
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        return LiteItem(track_id, rgb, origin, scale, np.asarray(box_xyxy, np.float32))

    def _tracker(self, track_id: int) -> Any:
        tracker = self._trackers.get(track_id)
        if tracker is None:
            with native_stderr_silenced():  # MediaPipe's absl/TFLite start-up chatter
                tracker = self._new_tracker()
            self._trackers[track_id] = tracker
        self._last_used[track_id] = self._calls
        return tracker

    def _new_tracker(self) -> Any:
        tracker = self._pose_cls(
            static_image_mode=False,
            model_complexity=self.complexity,
            smooth_landmarks=True,
            enable_segmentation=False,
            min_detection_confidence=self.min_confidence,
            min_tracking_confidence=self.min_confidence,
        )
        tracker.process(np.zeros((64, 64, 3), np.uint8))  # builds the graph (and its chatter)
        return tracker

    def estimate(
        self, items: list[Any], image_size: tuple[int, int], focal_length: float
    ) -> Estimate:
        n = len(items)
        valid = np.zeros(n, dtype=bool)
        kp2d = np.zeros((n, 33, 3), np.float32)
        kp3d = np.zeros((n, 33, 4), np.float32)
        for k, item in enumerate(items):
            self._calls += 1
            tracker = self._tracker(item.track_id)
            with native_stderr_silenced():  # MediaPipe's absl/TFLite start-up chatter
                result = tracker.process(item.crop_rgb)
            if result.pose_landmarks is None or result.pose_world_landmarks is None:
                continue
            size = item.crop_rgb.shape[0]
            img = np.array([[p.x, p.y, p.visibility] for p in result.pose_landmarks.landmark])
            world = np.array([[p.x, p.y, p.z] for p in result.pose_world_landmarks.landmark])
            if not (np.isfinite(img).all() and np.isfinite(world).all()):
                continue
            kp2d[k, :, :2] = item.origin + img[:, :2] * size * item.scale
            kp2d[k, :, 2] = np.clip(img[:, 2], 0.0, 1.0)
            if not _fills_box(kp2d[k, :, :2], img[:, 2], item.box):  # a body that is not there
                kp2d[k] = 0.0
                continue
            center = item.origin + 0.5 * size * item.scale
            kp3d[k, :, :3] = world @ ray_rotation(center, image_size, focal_length).T
            kp3d[k, :, 3] = kp2d[k, :, 2]
            valid[k] = True
        self._forget()
        params = SMPLParams(
            global_orient=np.broadcast_to(UPRIGHT, (n, 3, 3)).copy(),
            body_pose=np.broadcast_to(np.eye(3, dtype=np.float32), (n, 23, 3, 3)).copy(),
            betas=np.zeros((n, 10), np.float32),
            cam_crop=np.zeros((n, 3), np.float32),
            transl=np.zeros((n, 3), np.float32),
            focal_length=focal_length,
        )
        return Estimate(params, valid, {"keypoints2d": kp2d, "landmarks3d": kp3d})

    def _forget(self) -> None:
        """Close the trackers of people not seen for a while (tracks end; ids are not reused)."""
        for tid in [t for t, last in self._last_used.items() if self._calls - last > FORGET_FRAMES]:
            self._trackers.pop(tid).close()
            del self._last_used[tid]

    # -- per track ---------------------------------------------------------------------------
    def finish_track(
        self, track: Track, body: Any | None, image_size: tuple[int, int], focal_length: float
    ) -> Track:
        from mocap.lite.fit import fit_track

        return fit_track(track, body, image_size, focal_length)

    def close(self) -> None:
        for tracker in self._trackers.values():
            tracker.close()
        self._trackers.clear()
        self._last_used.clear()
