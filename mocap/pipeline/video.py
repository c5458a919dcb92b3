"""Streaming video decoding with PyAV: one upright BGR frame at a time, memory flat in video length.

Reads any container and codec FFmpeg reads (H.264, HEVC, MPEG-4 part 2, VP9, AV1, MJPEG, ...) and
folders of images. Timestamps come from ``pts * time_base``, so variable-frame-rate video (phones,
screen recordings) keeps its true timing. Rotation metadata (the display matrix, or the legacy
``rotate`` tag) is applied to the pixels, so frames come out the way a player shows them.

    source = open_video("clip.mp4", start=2.0, end=10.0, stride=2)
    print(source.info.width, source.info.height, source.fps)
    for frame in source:            # Frame(index, time, image (H, W, 3) uint8 BGR)
        ...

``open_video`` reads the first frame at once, so a missing, empty or non-video file fails there with
a :class:`~mocap.errors.MocapError` before any work starts. A video that breaks midway (truncated
download, damaged packets) yields every frame that decodes and logs one warning. Folders of
images are read by :mod:`mocap.pipeline.image_folder`, containers probed and decoded by
:mod:`mocap.pipeline.video_container`.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from mocap.errors import MocapError
from mocap.paths import user_path
from mocap.pipeline.image_folder import DEFAULT_FOLDER_FPS, first_readable, iter_folder, list_frames
from mocap.pipeline.video_container import (
    Damage,
    DamageFound,
    VideoInfo,
    decode_frames,
    open_container,
    probe_video,
)


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position among the frames this source yields (after start/end/stride/fps).
        time: presentation time in seconds on the source's own clock (first frame of the file at 0).
        image: (H, W, 3) uint8 BGR, upright, C-contiguous.
    """

    index: int
    time: float
    image: np.ndarray


def rotate_image(image: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate an (H, W, C) image counter-clockwise by a multiple of 90 degrees.

    ``degrees`` follows FFmpeg's display matrix (``av_display_rotation_get``): the angle the stored
    picture must be turned counter-clockwise to be shown upright. Returns a C-contiguous array.
    """
    k = (round(degrees / 90.0)) % 4
    return image if k == 0 else np.ascontiguousarray(np.rot90(image, k))


@dataclass
class VideoSource:
    """A re-iterable stream of :class:`Frame` from a video file or an image folder.

    Every iteration re-opens the file and decodes lazily: no more than one frame is held at a time.
    Build it with :func:`open_video` (its arguments are documented there).
    """

    info: VideoInfo
    start: float | None = None
    end: float | None = None
    stride: int = 1
    target_fps: float | None = None
    files: list[Path] | None = None  # the images of a folder, in order

    @property
    def fps(self) -> float:
        """Nominal rate of the frames this source yields (after stride / target fps)."""
        rate = self.info.fps / self.stride
        return min(rate, self.target_fps) if self.target_fps else rate

    @property
    def expected_frames(self) -> int | None:
        """Estimated number of frames :meth:`__iter__` yields (for progress bars), or None."""
        duration = self.info.duration
        if duration is None and self.info.num_frames:
            duration = self.info.num_frames / self.info.fps
        if duration is None:
            return None
        lo = max(self.start or 0.0, 0.0)
        hi = min(self.end, duration) if self.end is not None else duration
        return max(0, math.ceil((hi - lo) * self.fps - 1e-6))

    def __iter__(self) -> Iterator[Frame]:
        if self.info.is_image_folder:
            assert self.files is not None
            size = (self.info.width, self.info.height)
            raw = iter_folder(self.files, self.info.fps, size, self.start, self.end)
        else:
            raw = self._iter_video()
        index = 0
        count = 0  # frames inside [start, end), before stride
        next_due = -math.inf
        last_time = -math.inf
        for time, image in raw:
            if time <= last_time:  # duplicated or out-of-order timestamp: not a new moment
                continue
            last_time = time
            if self.start is not None and time < self.start - 1e-6:
                continue
            if self.end is not None and time >= self.end - 1e-6:
                break
            count += 1
            if (count - 1) % self.stride:
                continue
            if self.target_fps:  # keep frames on a 1/fps grid, tolerant to timestamp jitter
                period = 1.0 / self.target_fps
                if time < next_due - 0.25 * period:
                    continue
                next_due = max(next_due + period, time + 0.75 * period) if index else time + period
            yield Frame(index=index, time=time, image=image)
            index += 1
        if index == 0 and self.start is None and self.end is None:
            raise MocapError(
                f"no frame of {self.info.path} could be decoded; check the file or re-export it"
            )
        if index == 0:
            raise MocapError(
                f"no frames of {self.info.path} fall between --start {self.start} and --end "
                f"{self.end}; choose a range inside the video's {self.info.duration or 0:.2f} s"
            )

    def _to_bgr(self, frame: av.VideoFrame) -> np.ndarray:
        """(H, W, 3) uint8 BGR of a decoded frame, resampled to square pixels, rotated upright."""
        if self.info.pixel_aspect == 1.0:
            image = frame.to_ndarray(format="bgr24")
        else:
            w, h = self.info.width, self.info.height
            if self.info.rotation in (90, 270):
                w, h = h, w
            image = frame.to_ndarray(format="bgr24", width=w, height=h)
        return rotate_image(image, self.info.rotation)

    def _iter_video(self) -> Iterator[tuple[float, np.ndarray]]:
        # Threaded decoding loses the frames still inside the decoder threads when a packet is
        # damaged, so a damaged file is re-read without threads from the keyframe before the last
        # frame yielded.
        # The damage is said once, when the pass ends, with the number of frames lost.
        last: float | None = None
        damage = Damage(strict=True)
        yielded = 0
        try:
            try:
                for time, image in self._decode_pass(damage, after=None):
                    last, yielded = time, yielded + 1
                    yield time, image
            except DamageFound as found:
                damage = Damage()
                for time, image in self._decode_pass(damage, after=last):
                    yielded += 1
                    yield time, image
                if not damage.count:  # the re-read went through: report what the first met
                    damage.report(self.info.path, str(found), None)
        finally:
            whole = not self.start and self.end is None
            damage.log(self.info.path, yielded if whole else None, self.info.num_frames)

    def _decode_pass(
        self, damage: "Damage", after: float | None
    ) -> Iterator[tuple[float, np.ndarray]]:
        """One pass from ``start`` (or the keyframe before ``after``); yields (time, image) of the
        frames after ``after``. Strict passes decode with threads and stop at the first damage."""
        container = open_container(self.info.path)
        try:
            stream = container.streams.video[0]
            if damage.strict:
                stream.thread_type = "AUTO"
            origin = stream.start_time or 0
            time_base = float(stream.time_base or 1.0 / 90000)
            seek_to = after if after is not None else self.start
            if seek_to:
                # Land on the keyframe before `seek_to`; frames before it are decoded and dropped.
                offset = origin + int(seek_to / time_base)
                try:
                    container.seek(offset, stream=stream, backward=True, any_frame=False)
                except av.error.FFmpegError:
                    container.seek(0)
            decoded = 0
            for frame in decode_frames(container, stream, self.info.path, damage):
                decoded += 1
                if frame.pts is None:
                    time = (decoded - 1) / self.info.fps
                else:
                    time = (frame.pts - origin) * time_base
                if after is not None and time <= after + 1e-9:
                    continue
                if self.end is not None and time >= self.end:
                    break
                yield time, self._to_bgr(frame)
            else:
                expected = stream.frames
                whole = not self.start and after is None
                if whole and expected and decoded < expected and not damage.count:
                    damage.report(self.info.path, "the file looks truncated", None)
        finally:
            container.close()


def _probe_folder(path: Path, fps: float | None) -> tuple[VideoInfo, list[Path]]:
    files = list_frames(path)
    rate = fps or DEFAULT_FOLDER_FPS
    height, width = first_readable(files)[1].shape[:2]
    info = VideoInfo(
        path=path,
        width=width,
        height=height,
        fps=rate,
        num_frames=len(files),
        duration=len(files) / rate,
        rotation=0,
        codec="images",
        is_image_folder=True,
    )
    return info, files


def open_video(
    path: str | Path,
    start: float | None = None,
    end: float | None = None,
    stride: int = 1,
    fps: float | None = None,
) -> VideoSource:
    """Open a video file or image folder for streaming.

    Arguments:
        path: video file (any format FFmpeg reads) or folder of images (sorted by name, naturally).
        start, end: keep frames with ``start <= time < end`` seconds (None: from the beginning / to
            the end).
        stride: keep every ``stride``-th frame of that range.
        fps: for image folders, their frame rate (default 30). For videos, an optional ceiling on
            the output rate: frames are dropped (never duplicated) by timestamp, so a 60 fps or
            variable-rate clip comes out near ``fps``.

    Raises:
        MocapError: missing path, not a video, no decodable frame, bad range or settings.
    """
    path = user_path(path)
    if stride < 1:
        raise MocapError(f"--stride must be 1 or more, got {stride}")
    if fps is not None and fps <= 0:
        raise MocapError(f"--fps must be positive, got {fps}")
    if start is not None and start < 0:
        raise MocapError(f"--start must be 0 or more seconds, got {start}")
    if start is not None and end is not None and end <= start:
        raise MocapError(f"--end ({end}) must be after --start ({start})")
    if not path.exists():
        raise MocapError(f"{path} does not exist; check the path to the video or image folder")
    if path.is_dir():
        info, files = _probe_folder(path, fps)
        return VideoSource(info, start, end, stride, files=files)
    if path.stat().st_size == 0:
        raise MocapError(f"{path} is empty (0 bytes); re-copy or re-export the video")
    info = probe_video(path)
    if start is not None and info.duration is not None and start >= info.duration:
        raise MocapError(
            f"--start {start} s is past the end of {path} ({info.duration:.2f} s); choose an earlier start"
        )
    return VideoSource(info, start, end, stride, fps)
