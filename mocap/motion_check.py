"""Is a track usable? Shapes, finiteness, rotations and bounds of one person's arrays.

One bad person (a NaN pose, an infinite translation, a truncated array) must never poison the
others: the shared floor and world are fitted to every person at once, so a single non-finite
value makes everybody's root NaN. :func:`track_problem` names the first thing wrong with a track;
:meth:`mocap.motion.Motion.load` and :func:`mocap.world.build_world` keep such tracks out and say why.
"""

import zipfile
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mocap.motion import Track

# per-frame arrays of a Track: the shape of one frame's row
ROW_SHAPES: dict[str, tuple[int, ...]] = {
    "frames": (),
    "times": (),
    "global_orient": (3, 3),
    "body_pose": (23, 3, 3),
    "betas": (10,),
    "cam_crop": (3,),
    "transl": (3,),
    "boxes": (4,),
    "scores": (),
}
ROTATION_TOL = 1e-2  # max |R R^T - I| and |det R - 1| of a rotation matrix (float32, filtered)
MAX_DISTANCE_M = 1e4  # a person further than 10 km from the camera is a broken estimate
MAX_BETA = 100.0  # SMPL shape coefficients are in standard deviations (|beta| < 5 for people)
_CHUNK = 4096  # frames per block of the rotation check (memory flat in clip length)


def _shape_text(tail: tuple[int, ...]) -> str:
    return "(" + ",".join(("T", *map(str, tail))) + ")"


def _rotation_problem(name: str, rot: np.ndarray) -> str | None:
    """Why ``rot`` (T,...,3,3) is not a stack of rotation matrices, or None."""
    eye = np.eye(3)
    for start in range(0, len(rot), _CHUNK):
        r = np.asarray(rot[start : start + _CHUNK], dtype=np.float64).reshape(-1, 3, 3)
        if len(r) and np.abs(r).max() > 1.0 + ROTATION_TOL:  # no rotation has such entries
            return f"{name} holds matrices that are not rotations (entries up to {np.abs(r).max():.3g})"
        orth = np.abs(r @ np.swapaxes(r, -1, -2) - eye).max(initial=0.0)
        det = np.abs(np.linalg.det(r) - 1.0).max(initial=0.0) if len(r) else 0.0
        if orth > ROTATION_TOL or det > ROTATION_TOL:
            return (
                f"{name} holds matrices that are not rotations (orthonormality error "
                f"{max(orth, det):.3g} > {ROTATION_TOL})"
            )
    return None


def track_problem(track: "Track") -> str | None:
    """The first reason ``track`` cannot be used, as one phrase, or None when it is sound.

    Checks: every per-frame array numeric, of shape (T, row) with T = ``len(track.frames)``;
    frames non-negative, strictly increasing integers; all values finite; global orientation
    and body pose orthonormal with determinant 1 (within ``ROTATION_TOL``); translation within
    ``MAX_DISTANCE_M``, betas within ``MAX_BETA``; each extra's first axis T.
    """
    frames = np.asarray(track.frames)
    if frames.ndim != 1:
        return f"frames has shape {frames.shape}, expected (T,)"
    n = len(frames)
    if n == 0:
        return "has no frames"
    arrays: dict[str, np.ndarray] = {}
    for name, tail in ROW_SHAPES.items():
        a = np.asarray(getattr(track, name))
        if a.dtype.kind not in "biuf":
            return f"{name} is not numeric (dtype {a.dtype})"
        if a.shape[1:] != tail or a.ndim != 1 + len(tail):
            return f"{name} has shape {a.shape}, expected {_shape_text(tail)}"
        if len(a) != n:
            return f"{name} has {len(a)} rows but the track lists {n} frames"
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            return f"{name} holds {bad} non-finite value(s) (NaN or infinity)"
        arrays[name] = a
    if frames.dtype.kind not in "iu":
        return f"frames are not integers (dtype {frames.dtype})"
    if frames[0] < 0 or (n > 1 and np.any(np.diff(frames) <= 0)):
        return "frame indices are negative, repeated or out of order"
    for name in ("global_orient", "body_pose"):
        problem = _rotation_problem(name, arrays[name])
        if problem:
            return problem
    far = float(np.abs(arrays["transl"]).max())
    if far > MAX_DISTANCE_M:
        return f"transl reaches {far:.3g} m from the camera (more than {MAX_DISTANCE_M:g} m)"
    if float(np.abs(arrays["betas"]).max()) > MAX_BETA:
        return f"betas exceed {MAX_BETA:g} (not a human body shape)"
    for name, value in track.extras.items():
        shape = np.shape(value)
        if not shape or shape[0] != n:
            return f"extra array {name!r} has shape {shape}, expected {n} rows (one per frame)"
    return None


def integer_ids(ids: np.ndarray, path: object) -> list[int]:
    """``track_ids`` of a motion file as ints; MocapError when it is not a 1-D integer array."""
    from mocap.errors import MocapError

    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise MocapError(
            f"{path} is not a usable mocap motion file: track_ids is {ids.dtype} of shape "
            f"{ids.shape}, expected (P,) integers"
        )
    return [int(i) for i in ids]


def clip_problem(fps: np.ndarray, size: np.ndarray, focal: np.ndarray) -> str | None:
    """Why the clip-level arrays of a motion file are unusable, or None."""
    for name, a in (("fps", fps), ("focal_length", focal)):
        if a.size != 1 or a.dtype.kind not in "iuf":
            return f"{name} is {a.dtype} of shape {a.shape}, expected one number"
        if not (np.isfinite(a).all() and 0 < float(a.reshape(())) < 1e7):
            return f"{name} is {float(a.reshape(())):g}, expected a positive number"
    if size.shape != (2,) or size.dtype.kind not in "iu" or not np.all((size > 0) & (size < 1e6)):
        return f"image_size is {size.tolist() if size.size < 8 else size.shape}, expected (width, height)"
    return None


def declared_too_large(archive: "zipfile.ZipFile", name: str) -> bool:
    """True when the ``.npy`` header of archive member ``name`` declares more data than the
    member holds (a damaged or hostile file would make ``np.load`` allocate that much)."""
    try:
        info = archive.getinfo(name)
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return False  # left to np.load, which refuses what it cannot read
    except Exception:  # noqa: BLE001 - any damage to the archive: np.load meets and reports it
        return False
    return int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > info.file_size
