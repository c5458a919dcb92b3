"""The one interface every body model enters the pipeline through.

An estimator turns people in video frames into SMPL parameters, whatever runs inside (the HMR
networks on 256x192 crops, or the embedded BlazePose landmarks with inverse kinematics). The
pipeline holds one and never asks which (segment-anything's predictor idea):

    item = estimator.prepare(frame_bgr, box_xyxy, track_id)      # at frame time, per person
    est = estimator.estimate(items, image_size, focal_length)     # in batches, in frame order
    track = estimator.finish_track(track, body, image_size, focal)  # once a track is complete

``prepare`` keeps only what the model needs of the frame (a crop), so frames are not held;
``estimate`` sees each identity's items in frame order (temporal trackers rely on it);
``finish_track`` is where a model that works on whole tracks (body proportions, translation,
holding low-confidence joints) does so. ``close`` ends a clip.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mocap.model.predictor import Predictor, SMPLParams
from mocap.motion import Track


@dataclass
class Estimate:
    """What an estimator says about N prepared items.

    Attributes:
        params: SMPL parameters of all N items (rows of invalid items are placeholders).
        valid: (N,) bool; False where the model found no body (a missed detection for the track).
        extras: per-item arrays (first axis N) stored with the track (``Track.extras``).
    """

    params: SMPLParams
    valid: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class Estimator(Protocol):
    """Frames, boxes and track ids in; SMPL parameters out (see the module docstring)."""

    label: str  # one line naming the model, for logs and run.json
    detect_interval: int  # detector runs needed: every frame (1), or every n-th frame for a model
    # that follows each person between detections itself

    def prepare(self, image_bgr: np.ndarray, box_xyxy: np.ndarray, track_id: int) -> Any: ...

    def estimate(
        self, items: list[Any], image_size: tuple[int, int], focal_length: float
    ) -> Estimate: ...

    def finish_track(
        self, track: Track, body: Any | None, image_size: tuple[int, int], focal_length: float
    ) -> Track: ...

    def close(self) -> None: ...


def finite_rows(params: SMPLParams) -> np.ndarray:
    """(N,) True where every output of a row is finite (a NaN model gives all-False)."""
    ok = np.ones(len(params), dtype=bool)
    for value in (params.global_orient, params.body_pose, params.betas, params.transl):
        ok &= np.isfinite(value.reshape(len(value), -1)).all(axis=1)
    return ok


class HMREstimator:
    """The HMR networks (HMR2.0, the paper's model) behind the :class:`Estimator` interface.

    Arguments:
        predictor: a loaded :class:`~mocap.model.predictor.Predictor`.
        label: model description for logs.
    """

    detect_interval = 1  # the crop is all it sees: a detection in every frame

    def __init__(self, predictor: Predictor, label: str) -> None:
        self.predictor = predictor
        self.label = label

    def prepare(self, image_bgr: np.ndarray, box_xyxy: np.ndarray, track_id: int) -> Any:
        from mocap.model.crop import crop_person

        return crop_person(image_bgr, box_xyxy)

    def estimate(
        self, items: list[Any], image_size: tuple[int, int], focal_length: float
    ) -> Estimate:
        params = self.predictor.predict_crops(
            np.stack([c.image for c in items]),
            np.stack([c.center for c in items]),
            np.array([c.size for c in items], dtype=np.float32),
            image_size,
            focal_length,
        )
        return Estimate(params, finite_rows(params))

    def finish_track(
        self, track: Track, body: Any | None, image_size: tuple[int, int], focal_length: float
    ) -> Track:
        return track

    def close(self) -> None:
        pass
