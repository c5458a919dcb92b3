"""Per-person SMPL motion of one clip, and its ``motion.npz`` file format.

The pipeline writes it, smoothing filters it, exporters read it. All arrays are numpy, in the
camera frame of the source video (x right, y down, z forward), metres, rotation matrices.

``motion.npz`` layout (flat keys, so ``np.load`` needs no pickle):
    ``track_ids``                (P,) int64 identities, in order
    ``fps``, ``image_size``      scalar float, (2,) int (width, height)
    ``focal_length``             scalar float, pixels, of the full image
    ``source``                   str (0-d unicode array)
    ``t{id}_<field>``            one array per :class:`Track` field below
"""

import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mocap.errors import MocapError
from mocap.paths import atomic_output

TRACK_FIELDS = (
    "frames",
    "times",
    "global_orient",
    "body_pose",
    "betas",
    "cam_crop",
    "transl",
    "boxes",
    "scores",
)


@dataclass
class Track:
    """The motion of one person over the frames where they were seen (T frames).

    Attributes:
        track_id: identity, unique within the clip and never reused.
        frames: (T,) int frame indices into the decoded video (after --start/--stride).
        times: (T,) float presentation timestamps in seconds.
        global_orient: (T,3,3) root rotation, camera frame.
        body_pose: (T,23,3,3) joint rotations relative to the parent.
        betas: (T,10) SMPL shape.
        cam_crop: (T,3) weak-perspective crop camera (s, tx, ty) as predicted.
        transl: (T,3) full-image camera translation of the SMPL origin, metres.
        boxes: (T,4) person boxes x1, y1, x2, y2 in pixels.
        scores: (T,) detection confidences.
    """

    track_id: int
    frames: np.ndarray
    times: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    cam_crop: np.ndarray
    transl: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(len(self.frames))

    def replace(self, **changes: Any) -> "Track":
        """A copy with the given fields changed (per-frame arrays, or ``track_id``)."""
        return replace(self, **changes)


@dataclass
class Motion:
    """All tracks of one clip plus the clip's timing and camera."""

    tracks: list[Track]
    fps: float
    image_size: tuple[int, int]
    focal_length: float
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write ``motion.npz`` atomically (temporary name, then rename)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "track_ids": np.array([t.track_id for t in self.tracks], dtype=np.int64),
            "fps": np.array(self.fps, dtype=np.float64),
            "image_size": np.array(self.image_size, dtype=np.int64),
            "focal_length": np.array(self.focal_length, dtype=np.float64),
            "source": np.array(self.source),
        }
        for t in self.tracks:
            for name in TRACK_FIELDS:
                arrays[f"t{t.track_id}_{name}"] = np.asarray(getattr(t, name))
        try:
            with atomic_output(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        except OSError as exc:
            raise MocapError(
                f"cannot write {path}: {exc.strerror}; choose a writable output folder"
            ) from exc
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Motion":
        path = Path(path)
        if not path.is_file():
            raise MocapError(f"motion file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                ids = [int(i) for i in data["track_ids"]]
                tracks = [
                    Track(track_id=i, **{n: data[f"t{i}_{n}"] for n in TRACK_FIELDS}) for i in ids
                ]
                size = data["image_size"]
                return cls(
                    tracks=tracks,
                    fps=float(data["fps"]),
                    image_size=(int(size[0]), int(size[1])),
                    focal_length=float(data["focal_length"]),
                    source=str(data["source"]),
                )
        except KeyError as exc:
            raise MocapError(
                f"{path} is not a mocap motion file (no {exc} array); use the motion.npz "
                "written by `mocap run`"
            ) from exc
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise MocapError(
                f"{path} is not a readable mocap motion file (empty, damaged or another format); "
                "re-run `mocap run` to write it again"
            ) from exc


def track_field_names() -> tuple[str, ...]:
    """Names of the per-frame arrays of a :class:`Track` (for tests and tools)."""
    return tuple(f.name for f in fields(Track) if f.name != "track_id")
