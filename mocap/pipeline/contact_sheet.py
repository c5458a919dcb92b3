"""The report's contact sheet: a few frames of the clip with everyone drawn as in the preview, and
the frames where a quality figure is at its worst, cut around the person concerned.

Only the chosen frames are decoded: the video is opened at each frame's time (a seek to the
keyframe before it), frames closer than ``GROUP_S`` apart share one decoding pass. Overlays are
drawn by :func:`mocap.pipeline.preview.draw_people` (meshes with SMPL, else the skeleton), plus the
detection box and, when the model gave them, its landmarks for the worst frames.
"""

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mocap.motion import Motion
from mocap.pipeline.quality import ClipQuality, TrackQuality

OVERVIEW_FRAMES = 4
OVERVIEW_WIDTH = 460  # pixels (two a row) of a whole-frame thumbnail
DETAIL_HEIGHT = 300  # pixels of a worst-frame cut-out
GROUP_S = 2.0  # wanted frames closer than this are decoded in one pass
JPEG_QUALITY = 80


@dataclass
class Thumb:
    """One picture of the contact sheet."""

    frame: int
    caption: str
    uri: str  # data:image/jpeg;base64,...


@dataclass
class _Wanted:
    frame: int
    time: float
    caption: str
    track_id: int | None = None  # None: the whole frame; else cut around this person


def _frame_times(motion: Motion) -> dict[int, float]:
    times: dict[int, float] = {}
    for t in motion.tracks:
        seconds = np.asarray(t.times, dtype=np.float64).tolist()
        times.update(zip(t.frames.tolist(), seconds, strict=True))
    return times


def worst_frames(quality: ClipQuality) -> list[tuple[int, int, str]]:
    """(frame, track id, caption) of the worst frame of each quality figure, over all people."""
    figures: list[tuple[str, str, float, Any]] = [
        ("largest reprojection error", "px", 1.0, lambda t: t.reprojection),
        ("deepest ground penetration", "cm", -100.0, lambda t: t.sole_height),
        ("largest joint acceleration", "m/s²", 1.0, lambda t: t.acceleration),
        ("largest foot sliding", "mm/frame", 1.0, lambda t: t.sliding),
    ]
    out = []
    for title, unit, scale, get in figures:
        best: tuple[float, int, int] | None = None
        for tq in quality.tracks:
            values = get(tq)
            if values is None or not np.isfinite(values).any():
                continue
            v = np.where(np.isfinite(values), values * scale, -np.inf)
            k = int(np.argmax(v))
            if best is None or v[k] > best[0]:
                best = (float(v[k]), tq.track_id, int(tq.frames[k]))
        if best is not None and best[0] > 0:
            out.append((best[2], best[1], f"{title}: #{best[1]}, {best[0]:.1f} {unit}"))
    return out


def overview_frames(quality: ClipQuality, count: int = OVERVIEW_FRAMES) -> list[int]:
    """``count`` frames spread over the clip, each the one with most people tracked near its spot."""
    seen = np.zeros(max(quality.num_frames, 1), dtype=np.int64)
    for tq in quality.tracks:
        seen[tq.frames[tq.frames < len(seen)]] += 1
    candidates = np.flatnonzero(seen)
    if not len(candidates):
        return []
    picks = []
    for part in np.array_split(candidates, min(count, len(candidates))):
        picks.append(int(part[np.argmax(seen[part])]))
    return picks


def _encode(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _detail(image: np.ndarray, tq: TrackQuality, motion: Motion, frame: int) -> np.ndarray:
    """Box (white) and landmarks (black dots) of person ``tq`` at ``frame``, cut out around it."""
    track = next(t for t in motion.tracks if t.track_id == tq.track_id)
    row = int(np.searchsorted(track.frames, frame))
    x1, y1, x2, y2 = (int(v) for v in track.boxes[row])
    thickness = max(2, image.shape[0] // 360)
    cv2.rectangle(image, (x1, y1), (x2, y2), (255, 255, 255), thickness, cv2.LINE_AA)
    landmarks = track.extras.get("keypoints2d")
    if landmarks is not None:
        for x, y, conf in np.asarray(landmarks[row], dtype=np.float64)[:, :3]:
            if conf >= 0.5:
                cv2.circle(image, (int(x), int(y)), thickness + 1, (0, 0, 0), -1, cv2.LINE_AA)
    h, w = y2 - y1, x2 - x1
    side = max(h, w) * 0.65
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    top, bottom = int(max(cy - side, 0)), int(min(cy + side, image.shape[0]))
    left, right = int(max(cx - side, 0)), int(min(cx + side, image.shape[1]))
    cut = image[top:bottom, left:right] if bottom > top and right > left else image
    scale = DETAIL_HEIGHT / cut.shape[0]
    size = (max(1, round(cut.shape[1] * scale)), DETAIL_HEIGHT)
    return cv2.resize(cut, size, interpolation=cv2.INTER_AREA)


def _decode(video: Path, wanted: list[_Wanted], fps: float) -> dict[int, np.ndarray]:
    """BGR images of the wanted frames (by frame index); seeks per group of nearby frames."""
    from mocap.pipeline.video import open_video

    tol = 0.25 / fps if fps > 0 else 0.01
    todo = sorted({(w.time, w.frame) for w in wanted})
    images: dict[int, np.ndarray] = {}
    groups: list[list[tuple[float, int]]] = []
    for item in todo:
        if groups and item[0] - groups[-1][-1][0] < GROUP_S:
            groups[-1].append(item)
        else:
            groups.append([item])
    for group in groups:
        pending = list(group)
        for frame in open_video(video, start=max(group[0][0] - tol, 0.0)):
            for item in [p for p in pending if abs(frame.time - p[0]) <= tol]:
                images[item[1]] = frame.image
                pending.remove(item)
            if not pending or frame.time > group[-1][0] + tol:
                break
    return images


def contact_sheet(
    video: Path, motion: Motion, quality: ClipQuality, body: Any | None = None
) -> list[Thumb]:
    """Thumbnails: ``OVERVIEW_FRAMES`` frames spread over the clip, then the worst frames.

    Raises:
        MocapError: the video cannot be opened or decoded.
    """
    from mocap.pipeline.preview import draw_people

    times = _frame_times(motion)
    wanted = [
        _Wanted(f, times[f], f"frame {f} ({times[f]:.1f} s)") for f in overview_frames(quality)
    ]
    wanted += [
        _Wanted(f, times[f], f"frame {f}: {caption}", track_id)
        for f, track_id, caption in worst_frames(quality)
    ]
    images = _decode(video, wanted, motion.fps)
    by_id = {tq.track_id: tq for tq in quality.tracks}
    thumbs = []
    for w in wanted:
        if w.frame not in images:
            continue
        image = draw_people(images[w.frame].copy(), w.frame, motion, body)
        if w.track_id is None:
            scale = OVERVIEW_WIDTH / image.shape[1]
            size = (OVERVIEW_WIDTH, max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        else:
            image = _detail(image, by_id[w.track_id], motion, w.frame)
        thumbs.append(Thumb(w.frame, w.caption, _encode(image)))
    return thumbs
