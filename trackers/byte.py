"""Online identity tracker in the style of ByteTrack (Zhang et al., ECCV 2022).

Each frame, every live track's box is predicted by a Kalman filter, then detections are assigned in
three stages with Hungarian matching on IoU (``scipy.optimize.linear_sum_assignment``):

1. confident detections (score >= ``high_thresh``) to confirmed tracks, including lost ones;
2. the low-score rest (``low_thresh`` <= score < ``high_thresh``) to confirmed tracks still
   unmatched and seen last frame: a person half hidden keeps their identity instead of dropping out;
3. leftover confident detections to tentative tracks (born last frame).

A confident detection left over starts a new, tentative track; it is confirmed on its second
consecutive hit and removed at its first miss, so a one-frame false positive never lingers. A
confirmed track that misses is kept as lost for ``max_lost`` frames and may be re-found. Identities
count up from 1 and are never reused.

Boxes returned are the detections themselves (not the filtered boxes): the crop follows what was
seen, and smoothing happens later on the body parameters.
"""

import copy
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.optimize import linear_sum_assignment

from trackers.kalman import BoxKalman


@dataclass(frozen=True)
class TrackedBox:
    """One detection assigned to an identity in the current frame.

    Attributes:
        track_id: identity, >= 1, never reused within a tracker.
        box: (4,) float32 x1, y1, x2, y2 of the detection.
        score: detection confidence.
        detection_index: index of the detection in the arrays given to ``update``.
    """

    track_id: int
    box: np.ndarray
    score: float
    detection_index: int


class State(Enum):
    TENTATIVE = "tentative"
    TRACKED = "tracked"
    LOST = "lost"


@dataclass
class _Track:
    track_id: int
    kalman: BoxKalman
    state: State
    last_frame: int
    last_box: np.ndarray  # (4,) the last detection matched
    last_score: float = 1.0  # its confidence


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_iou(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Hungarian assignment maximising total IoU; pairs below ``min_iou`` are never matched.

    Arguments:
        iou: (N, M) IoU between N tracks and M detections.
    Returns:
        (track row, detection column) pairs.
    """
    if iou.size == 0:
        return []
    cost = np.where(iou >= min_iou, 1.0 - iou, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]


class ByteTracker:
    """Online multi-person tracker; call :meth:`update` once per frame, in frame order.

    Arguments:
        high_thresh: detections at or above it are "confident" (stage 1 and new tracks).
        low_thresh: detections below it are ignored; between the two they only extend tracks.
        new_track_thresh: minimum score to start a track (default: ``high_thresh``).
        min_iou: IoU needed to match a confident detection to a (predicted) track box.
        low_min_iou: IoU needed in the low-score stage (stricter: low scores are often clutter).
        max_lost: frames a confirmed track may go unseen and still be re-found.
    """

    def __init__(
        self,
        high_thresh: float = 0.4,
        low_thresh: float = 0.1,
        new_track_thresh: float | None = None,
        min_iou: float = 0.2,
        low_min_iou: float = 0.5,
        max_lost: int = 30,
    ) -> None:
        if not 0.0 <= low_thresh <= high_thresh:
            raise ValueError(
                f"need 0 <= low_thresh <= high_thresh, got {low_thresh}, {high_thresh}"
            )
        self.high_thresh = high_thresh
        self.low_thresh = low_thresh
        self.new_track_thresh = high_thresh if new_track_thresh is None else new_track_thresh
        self.min_iou = min_iou
        self.low_min_iou = low_min_iou
        self.max_lost = max_lost
        self.tracks: list[_Track] = []
        self.next_id = 1
        self.frame_index: int | None = None  # last frame seen
        self.first_frame: int | None = None

    def update(self, boxes: np.ndarray, scores: np.ndarray, frame_index: int) -> list[TrackedBox]:
        """Assign this frame's detections to identities.

        Arguments:
            boxes: (N, 4) detections x1, y1, x2, y2 in pixels.
            scores: (N,) confidences.
            frame_index: increasing frame number (gaps allowed: tracks are predicted across them).
        Returns:
            the detections that belong to a live track, sorted by track id.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        if self.frame_index is not None and frame_index <= self.frame_index:
            raise ValueError(f"frame {frame_index} does not follow frame {self.frame_index}")
        if self.first_frame is None:
            self.first_frame = frame_index
        steps = 1 if self.frame_index is None else frame_index - self.frame_index
        self.frame_index = frame_index
        for track in self.tracks:
            track.kalman.predict(steps)

        high = np.flatnonzero(scores >= self.high_thresh)
        low = np.flatnonzero((scores >= self.low_thresh) & (scores < self.high_thresh))
        matches: dict[int, int] = {}  # position in self.tracks -> detection index

        # Stage 1: confident detections vs confirmed tracks (tracked and lost).
        confirmed = [i for i, t in enumerate(self.tracks) if t.state is not State.TENTATIVE]
        high_left = self._associate(confirmed, high, boxes, self.min_iou, matches)
        # Stage 2: low-score detections vs tracks seen last frame and still unmatched.
        recent = [
            i for i in confirmed if i not in matches and self.tracks[i].state is State.TRACKED
        ]
        self._associate(recent, low, boxes, self.low_min_iou, matches)
        # Stage 3: tentative tracks take the leftover confident detections.
        tentative = [i for i, t in enumerate(self.tracks) if t.state is State.TENTATIVE]
        high_left = self._associate(tentative, high_left, boxes, self.min_iou, matches)

        assigned: dict[int, int] = {}  # track id -> detection index
        for pos, det in matches.items():
            track = self.tracks[pos]
            track.kalman.update(boxes[det])
            track.state = State.TRACKED
            track.last_frame = frame_index
            track.last_box = boxes[det]
            track.last_score = float(scores[det])
            assigned[track.track_id] = det
        self.tracks = [t for i, t in enumerate(self.tracks) if i in matches or self._survives(t)]
        for det in high_left:
            if scores[det] >= self.new_track_thresh:
                # The first frame has no earlier evidence to wait for: its tracks start confirmed.
                first = frame_index == self.first_frame
                state = State.TRACKED if first else State.TENTATIVE
                track = _Track(
                    self.next_id,
                    BoxKalman.start(boxes[det]),
                    state,
                    frame_index,
                    boxes[det],
                    float(scores[det]),
                )
                self.tracks.append(track)
                assigned[track.track_id] = int(det)
                self.next_id += 1
        return [
            TrackedBox(tid, boxes[d].copy(), float(scores[d]), d)
            for tid, d in sorted(assigned.items())
        ]

    def _associate(
        self,
        track_pos: list[int],
        dets: np.ndarray,
        boxes: np.ndarray,
        min_iou: float,
        matches: dict[int, int],
    ) -> np.ndarray:
        """Match tracks at ``track_pos`` to detections ``dets``; record pairs; return unmatched dets."""
        if not track_pos or len(dets) == 0:
            return dets
        tracks = [self.tracks[p] for p in track_pos]
        iou = box_iou(np.stack([t.kalman.box for t in tracks]), boxes[dets])
        lost = [k for k, t in enumerate(tracks) if t.state is State.LOST]
        if lost:
            # A person who stopped while hidden reappears where last seen, not where the filter
            # extrapolated them: lost tracks also match against their last detected box.
            last = box_iou(np.stack([tracks[k].last_box for k in lost]), boxes[dets])
            iou[lost] = np.maximum(iou[lost], last)
        pairs = match_iou(iou, min_iou)
        for row, col in pairs:
            matches[track_pos[row]] = int(dets[col])
        used = {col for _, col in pairs}
        return np.array([d for k, d in enumerate(dets) if k not in used], dtype=np.int64)

    def coast(self, frame_index: int) -> list[TrackedBox]:
        """Boxes, at a frame the detector skipped, of the tracks matched at the last detected frame:
        their motion model predicted forward, with their last score. The tracker is unchanged.

        Arguments:
            frame_index: a frame after the last one given to :meth:`update`.
        """
        if self.frame_index is None or frame_index <= self.frame_index:
            return []
        out = []
        for track in self.tracks:
            if track.state is State.TRACKED and track.last_frame == self.frame_index:
                kalman = copy.deepcopy(track.kalman)
                kalman.predict(frame_index - self.frame_index)
                box = kalman.box.astype(np.float32)
                out.append(TrackedBox(track.track_id, box, track.last_score, -1))
        return sorted(out, key=lambda t: t.track_id)

    def _survives(self, track: _Track) -> bool:
        """Unmatched this frame: tentative tracks die, confirmed ones are lost until ``max_lost``."""
        if track.state is State.TENTATIVE:
            return False
        if track.state is State.TRACKED:  # just lost: stop extrapolating its size change
            track.kalman.mean[6:8] = 0.0
        track.state = State.LOST
        return self.frame_index is not None and self.frame_index - track.last_frame <= self.max_lost

    @property
    def live_ids(self) -> list[int]:
        """Identities currently tracked or lost (not yet given up)."""
        return [t.track_id for t in self.tracks]


def build_tracker(
    max_gap: int = 30,
    high_thresh: float = 0.4,
    low_thresh: float = 0.1,
    min_iou: float = 0.2,
) -> ByteTracker:
    """Tracker from flat settings: a person unseen for more than ``max_gap`` frames is let go."""
    return ByteTracker(
        high_thresh=high_thresh, low_thresh=low_thresh, min_iou=min_iou, max_lost=max_gap
    )
