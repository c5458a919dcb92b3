"""PyAV container access for :mod:`mocap.pipeline.video`: open, probe, decode through damage.

:func:`probe_video` opens a file, decodes its first frame and describes it as a :class:`VideoInfo`
(size after rotation and square-pixel resampling, rate, duration, rotation from the display matrix
or the legacy ``rotate`` tag); :func:`decode_frames` decodes a stream packet by packet, skipping
damaged packets and stopping at a broken tail, reporting to a :class:`Damage` (the first problem is
logged once, or, in a strict pass, raised as :class:`DamageFound` so that the caller can re-read).
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av

from mocap.errors import MocapError
from mocap.pipeline.image_folder import DEFAULT_FOLDER_FPS

# Decoding problems are the video source's warnings: callers watch (and hold) that logger.
log = logging.getLogger("mocap.pipeline.video")


@dataclass(frozen=True)
class VideoInfo:
    """What the source holds, before ``start``/``end``/``stride`` are applied.

    Attributes:
        path: the video file or image folder.
        width, height: frame size in pixels after rotation (what :class:`Frame` images have).
        fps: nominal frame rate (average rate of the stream; the given or default rate for folders).
        num_frames: frame count from the container header (an estimate for some formats) or None.
        duration: seconds, or None when the container does not say.
        rotation: counter-clockwise degrees (0, 90, 180, 270) applied to decoded pixels.
        codec: decoder name ("h264", "mpeg4", "vp9", ...) or "images" for a folder.
        is_image_folder: True for a folder of images.
        pixel_aspect: stored pixel width / height (sample aspect ratio). Non-square pixels (DV,
            broadcast, some screen captures) are resampled to square ones, as players show them.
    """

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int | None
    duration: float | None
    rotation: int
    codec: str
    is_image_folder: bool
    pixel_aspect: float = 1.0


def normalise_rotation(degrees: float) -> int:
    """Snap an angle to 0/90/180/270 (display matrices carry small float errors)."""
    return int(round(degrees / 90.0)) % 4 * 90


class DamageFound(Exception):
    """Raised inside a threaded decoding pass at the first damaged packet."""


@dataclass
class Damage:
    """Problems met while decoding one pass over a file; :meth:`log` says so once, at the end.

    ``strict`` passes raise :class:`DamageFound` instead, so that the caller can re-decode.
    """

    strict: bool = False
    count: int = 0
    first: str = ""  # the first problem met, with its detail

    def report(
        self, path: Path, what: str, exc: Exception | None, recoverable: bool = False
    ) -> None:
        if self.strict and not recoverable:
            raise DamageFound(what)
        if self.count == 0:
            self.first = f"{what} ({exc})" if exc else what
        self.count += 1

    def log(self, path: Path, decoded: int | None = None, expected: int | None = None) -> None:
        """One warning for the whole pass (none without damage), with the frames lost when the
        pass read the whole file (``decoded``) and its header lists a count (``expected``)."""
        if not self.count:
            return
        lost = ""
        if decoded is not None and expected and decoded < expected:
            lost = f"; decoded {decoded} of the {expected} frames its header lists ({expected - decoded} lost)"
        log.warning("%s: %s%s; keeping the frames that decode", path, self.first, lost)


def decode_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    path: Path,
    damage: "Damage",
) -> Iterator[av.VideoFrame]:
    """Decode ``stream`` packet by packet, skipping damaged packets and stopping at a broken tail."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:  # unreadable container data: keep what we have
            damage.report(path, "stopped at a damaged part of the file", exc)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            damage.report(path, "skipped damaged video data", exc)
            continue
        for frame in frames:
            if frame.is_corrupt:  # concealed by the decoder: usable, but say so
                damage.report(path, "some frames are damaged", None, recoverable=True)
            yield frame


def open_container(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MocapError(
            f"{path} is not a readable video ({exc.__class__.__name__}); "
            "check the file or re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
        ) from None
    if not container.streams.video:
        container.close()
        raise MocapError(f"{path} has no video stream; give a video file or a folder of images")
    return container


def probe_video(path: Path) -> VideoInfo:
    """Open the file, decode its first frame and describe it; MocapError if nothing decodes."""
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        first = next(decode_frames(container, stream, path, Damage()), None)
        if first is None:
            raise MocapError(
                f"{path} has no decodable video frames (empty or damaged); "
                "check the file or re-export it"
            )
        rotation = normalise_rotation(first.rotation or 0.0)
        tags = {k.lower(): v for k, v in stream.metadata.items()}
        if rotation == 0 and "rotate" in tags:  # legacy tag (old FFmpeg, MKV): clockwise degrees
            try:
                rotation = normalise_rotation(-float(tags["rotate"]))
            except ValueError:
                log.warning("%s: ignoring unreadable rotate tag %r", path, tags["rotate"])
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else DEFAULT_FOLDER_FPS
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        pixel_aspect = float(sar) if sar and 0.1 < float(sar) < 10 else 1.0
        width, height = round(first.width * pixel_aspect), first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            fps=fps,
            num_frames=stream.frames or None,
            duration=duration,
            rotation=rotation,
            codec=stream.codec_context.name,
            is_image_folder=False,
            pixel_aspect=pixel_aspect,
        )
    finally:
        container.close()
