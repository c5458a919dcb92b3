"""Per-person SMPL motion of one clip, and its ``motion.npz`` file format.

The pipeline writes it, smoothing filters it, exporters read it. All arrays are numpy, in the
camera frame of the source video (x right, y down, z forward), metres, rotation matrices.

``motion.npz`` layout (flat keys, so ``np.load`` needs no pickle):
    ``track_ids``                (P,) int64 identities, in order
    ``fps``, ``image_size``      scalar float, (2,) int (width, height)
    ``focal_length``             scalar float, pixels, of the full image
    ``source``                   str (0-d unicode array)
    ``t{id}_<field>``            one array per :class:`Track` field below
    ``t{id}_x_<name>``           optional per-frame arrays of a track (:attr:`Track.extras`, first
                                 axis T), e.g. ``keypoints2d`` (T,K,3) or ``contacts`` (T,4)
    ``x_<name>``                 optional clip-level arrays (:attr:`Motion.extras`), e.g. the camera
                                 trajectory
"""

import tokenize
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mocap.errors import MocapError
from mocap.npz import open_npz
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
        extras: optional per-frame arrays (first axis T) that some models or stages add, by name:
            ``keypoints2d`` (T,K,3) image-pixel landmarks x, y, confidence of the model itself.
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
    extras: dict[str, np.ndarray] = field(default_factory=dict)

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
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # clip-level arrays, by name

    rejected: dict[int, str] = field(default_factory=dict)  # track id -> why it was not loaded

    def save(self, path: str | Path) -> Path:
        """Write ``motion.npz`` atomically (temporary name, then rename)."""
        path = Path(path)
        ids = [t.track_id for t in self.tracks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"track ids must be unique within a clip, got {ids}")
        arrays: dict[str, np.ndarray] = {
            "track_ids": np.array(ids, dtype=np.int64),
            "fps": np.array(self.fps, dtype=np.float64),
            "image_size": np.array(self.image_size, dtype=np.int64),
            "focal_length": np.array(self.focal_length, dtype=np.float64),
            "source": np.array(self.source),
        }
        for t in self.tracks:
            for name in TRACK_FIELDS:
                arrays[f"t{t.track_id}_{name}"] = np.asarray(getattr(t, name))
            for name, value in t.extras.items():
                arrays[f"t{t.track_id}_x_{name}"] = np.asarray(value)
        for name, value in self.extras.items():
            arrays[f"x_{name}"] = np.asarray(value)
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:  # OSError -> one-line MocapError
            _savez(fh, arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Motion":
        """Read ``motion.npz``, checking every array before it is used.

        A file that is not a motion file, or whose clip-level arrays are broken, raises
        MocapError. A broken track (see :func:`mocap.motion_check.track_problem`: shapes,
        non-finite values, non-rotations, duplicate ids) is left out and listed in ``rejected``,
        so that the other people are still usable.
        """
        path = Path(path)
        if not path.is_file():
            raise MocapError(f"motion file not found: {path}")
        unreadable = (
            f"{path} is not a readable mocap motion file (empty, damaged or another format); "
            "re-run `mocap run` to write it again"
        )
        if not zipfile.is_zipfile(path):
            raise MocapError(unreadable)
        try:
            with open_npz(path) as data:
                return _from_npz(cls, path, data)
        except MemoryError as exc:
            raise MocapError(f"{path} declares arrays too large to load; {unreadable}") from exc
        except _UNREADABLE as exc:
            raise MocapError(unreadable) from exc


# what numpy and zipfile raise on damaged archives and .npy headers (a header is parsed as Python)
_UNREADABLE = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    NotImplementedError,
    tokenize.TokenError,
    SyntaxError,
    RecursionError,
)


def _savez(fh: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` whose archive is closed even when a write fails (a full disk): no half-closed
    ``ZipFile`` is left for the garbage collector to complain about."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


def _from_npz(cls: type[Motion], path: Path, data: Any) -> Motion:
    """Motion from an open npz archive: clip arrays checked (MocapError), bad tracks rejected."""
    from mocap.motion_check import (
        clip_problem,
        declared_too_large,
        integer_ids,
        track_problem,
    )

    def get(key: str) -> np.ndarray:
        if key not in data.files:
            raise MocapError(
                f"{path} is not a mocap motion file: array {key!r} is missing; "
                "use the motion.npz written by `mocap run`"
            )
        if declared_too_large(data.zip, f"{key}.npy"):
            raise MocapError(f"{path} is damaged: array {key!r} is larger than the file")
        try:
            return np.asarray(data[key])
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip / npy parsing of damaged bytes, any error
            raise MocapError(
                f"{path} is not a readable mocap motion file (array {key!r} is damaged); "
                "re-run `mocap run` to write it again"
            ) from exc

    ids = integer_ids(get("track_ids"), path)
    fps, size, focal = get("fps"), get("image_size"), get("focal_length")
    problem = clip_problem(fps, size, focal)
    if problem:
        raise MocapError(f"{path} is not a usable mocap motion file: {problem}")
    keys = list(data.files)
    tracks: list[Track] = []
    rejected: dict[int, str] = {}
    for i in dict.fromkeys(ids):  # unique, in order
        if ids.count(i) > 1:
            rejected[i] = (
                f"its id is listed {ids.count(i)} times, but only one person's arrays are stored "
                "under an id: the others are lost"
            )
        prefix = f"t{i}_x_"
        track = Track(
            track_id=i,
            **{n: get(f"t{i}_{n}") for n in TRACK_FIELDS},
            extras={k[len(prefix) :]: get(k) for k in keys if k.startswith(prefix)},
        )
        problem = track_problem(track)
        if problem:
            rejected[i] = problem
            continue
        tracks.append(track)
    source = get("source")
    return cls(
        tracks=tracks,
        fps=float(fps),
        image_size=(int(size[0]), int(size[1])),
        focal_length=float(focal),
        source=str(source) if source.size == 1 else "",
        extras={k[2:]: get(k) for k in keys if k.startswith("x_")},
        rejected=rejected,
    )


def track_field_names() -> tuple[str, ...]:
    """Names of the per-frame arrays of a :class:`Track` (for tests and tools)."""
    return tuple(f.name for f in fields(Track) if f.name not in ("track_id", "extras"))
