"""preview.mp4: each person's mesh (with SMPL) or skeleton (without) drawn over the video.

A second streaming pass over the clip (same --start/--end/--stride, so frame indices match the
tracks), one frame in memory at a time. Meshes are drawn with the painter's algorithm (back faces
culled, far triangles first, flat shading by the face normal) in a per-identity colour; the
skeleton is the built-in 24-joint one posed by forward kinematics. Written with PyAV (H.264 when
available) to a temporary name, then renamed.
"""

import colorsys
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mocap.body.joints import SMPL_PARENTS
from mocap.errors import MocapError
from mocap.motion import Motion, Track
from mocap.paths import atomic_path
from mocap.pipeline.config import RunSettings

DEPTH_LAYERS = 48  # painter's algorithm granularity
SHADE_LEVELS = 12  # flat-shading levels


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per identity (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((0.13 + track_id * 0.618034) % 1.0, 0.75, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def project(points: np.ndarray, focal: float, size: tuple[int, int]) -> np.ndarray:
    """Pinhole projection with the principal point at the image centre.

    Arguments:
        points: (..., 3) camera-frame points (x right, y down, z forward), metres.
        focal: focal length in pixels; size: (width, height).
    Returns:
        (..., 2) pixel coordinates.
    """
    z = np.maximum(points[..., 2:3], 1e-3)
    centre = np.array([size[0] / 2.0, size[1] / 2.0])
    return points[..., :2] / z * focal + centre


def draw_mesh(
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    focal: float,
    colour: tuple[int, int, int],
) -> None:
    """Fill the visible triangles of one mesh into ``image`` (H,W,3 uint8, in place).

    Arguments:
        vertices: (V,3) camera-frame vertices; faces: (F,3) int vertex indices.
    """
    tri = vertices[faces]  # (F,3,3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centres = tri.mean(axis=1)
    facing = (
        np.einsum("fi,fi->f", normals, centres) < 0
    )  # SMPL faces wind counter-clockwise outward
    visible = facing & (centres[:, 2] > 0.05)
    if not visible.any():
        return
    tri, normals, centres = tri[visible], normals[visible], centres[visible]
    unit = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    view = -centres / np.linalg.norm(centres, axis=1, keepdims=True)
    shade = 0.35 + 0.65 * np.clip(np.einsum("fi,fi->f", unit, view), 0.0, 1.0)
    pixels = np.round(project(tri, focal, (image.shape[1], image.shape[0])) * 4).astype(np.int32)
    # Painter's algorithm in depth layers: far layers first; inside a layer one fillPoly call per
    # shade level (faces of one layer are at nearly the same depth, so their order hardly matters).
    order = np.argsort(-centres[:, 2])
    level = np.minimum((shade * SHADE_LEVELS).astype(np.int64), SHADE_LEVELS - 1)
    for layer in np.array_split(order, DEPTH_LAYERS):
        for lv in np.unique(level[layer]):
            faces_lv = layer[level[layer] == lv]
            c = (np.array(colour, dtype=np.float64) * (lv + 0.5) / SHADE_LEVELS).tolist()
            cv2.fillPoly(image, pixels[faces_lv], c, cv2.LINE_8, 2)


def draw_skeleton(
    image: np.ndarray, joints: np.ndarray, focal: float, colour: tuple[int, int, int]
) -> None:
    """Bones and joints of one (24,3) camera-frame skeleton, in place."""
    pts = project(joints, focal, (image.shape[1], image.shape[0]))
    thickness = max(2, round(image.shape[0] / 270))
    for j, p in enumerate(SMPL_PARENTS):
        if p >= 0:
            a, b = tuple(int(v) for v in pts[p]), tuple(int(v) for v in pts[j])
            cv2.line(image, a, b, colour, thickness, cv2.LINE_AA)
    for x, y in pts:
        cv2.circle(image, (int(x), int(y)), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)


def _posed(track: Track, rows: np.ndarray, body: Any | None) -> np.ndarray:
    """(N,V,3) mesh vertices (with SMPL) or (N,24,3) joints (built-in skeleton), camera frame."""
    if body is None:
        from mocap.body.skeleton import builtin_skeleton, forward_kinematics, track_scale

        rot = np.concatenate([track.global_orient[rows, None], track.body_pose[rows]], axis=1)
        return forward_kinematics(
            builtin_skeleton(track_scale(track)).rest_joints,
            rot.astype(np.float64),
            track.transl[rows],
        )
    import torch

    with torch.inference_mode():
        out = body.forward(
            torch.from_numpy(np.asarray(track.global_orient[rows], np.float32)),
            torch.from_numpy(np.asarray(track.body_pose[rows], np.float32)),
            torch.from_numpy(np.asarray(track.betas[rows], np.float32)),
        )
    return out.vertices.float().numpy() + track.transl[rows, None, :]


def _draw_frame(
    image: np.ndarray,
    index: int,
    motion: Motion,
    lookup: dict[int, dict[int, int]],
    body: Any | None,
    faces: np.ndarray | None,
) -> np.ndarray:
    """Draw every track present at frame ``index`` onto ``image`` (in place) and return it."""
    for track in motion.tracks:
        row = lookup[track.track_id].get(index)
        if row is None:
            continue
        colour = track_colour(track.track_id)
        posed = _posed(track, np.array([row]), body)[0]
        if faces is not None:
            draw_mesh(image, posed, faces, motion.focal_length, colour)
        else:
            draw_skeleton(image, posed, motion.focal_length, colour)
        x1, y1 = (int(v) for v in track.boxes[row, :2])
        cv2.putText(
            image, f"#{track.track_id}", (x1, max(y1 - 6, 12)), 0, 0.8, colour, 2, cv2.LINE_AA
        )
    return image


def draw_people(
    image: np.ndarray, index: int, motion: Motion, body: Any | None = None
) -> np.ndarray:
    """Draw everyone present at frame ``index`` onto ``image`` (in place) as the preview does, and
    return it (for single frames, e.g. the report's contact sheet)."""
    lookup = {t.track_id: {int(f): k for k, f in enumerate(t.frames)} for t in motion.tracks}
    faces = np.asarray(body.faces, dtype=np.int64) if body is not None else None
    return _draw_frame(image, index, motion, lookup, body, faces)


def _open_encoder(path: Path, fps: float, size: tuple[int, int]) -> tuple[Any, Any]:
    import av

    container = av.open(str(path), mode="w")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream: Any = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = size[0] - size[0] % 2, size[1] - size[1] % 2
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": "23", "preset": "veryfast"}
    return container, stream


def render_preview(
    video: str | Path,
    motion: Motion,
    out_path: Path,
    settings: RunSettings,
    body: Any | None = None,
) -> Path:
    """Write ``out_path`` (MP4): the clip with every track drawn in its colour and labelled ``#id``.

    Arguments:
        video: the clip the motion came from (decoded again, streaming).
        motion: its tracks (frame indices must match ``settings``' start/end/stride).
        body: ``BodyModel`` to draw meshes; None draws the built-in skeleton.
    Returns:
        ``out_path``.
    """
    import av

    from mocap.pipeline.video import open_video

    stream = open_video(video, start=settings.start, end=settings.end, stride=settings.stride)
    faces = np.asarray(body.faces, dtype=np.int64) if body is not None else None
    lookup = {t.track_id: {int(f): k for k, f in enumerate(t.frames)} for t in motion.tracks}
    tmp = atomic_path(out_path)
    size = (stream.info.width, stream.info.height)
    container, encoder = _open_encoder(tmp, motion.fps, size)
    try:
        try:
            for frame in stream:
                image = _draw_frame(frame.image.copy(), frame.index, motion, lookup, body, faces)
                image = np.ascontiguousarray(image[: encoder.height, : encoder.width])
                for packet in encoder.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                    container.mux(packet)
            for packet in encoder.encode():
                container.mux(packet)
        finally:
            container.close()
        os.replace(tmp, out_path)
    except av.error.FFmpegError as exc:
        raise MocapError(f"cannot write {out_path} ({exc}); check free disk space") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
