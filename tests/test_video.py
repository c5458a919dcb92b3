"""Streaming decoder: real clips, codecs written here with PyAV, rotation, VFR, damage, folders."""

import logging
import shutil
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from mocap.errors import MocapError
from mocap.pipeline.video import Frame, VideoSource, open_video, rotate_image

REAL = {
    # name: (frames, width, height, fps, codec)
    "walking_crowd_1080p.mp4": (32, 1920, 1080, 30.0, "h264"),
    "street_5frames_540p.mp4": (5, 960, 540, 5.0, "h264"),
    "posetrack_5frames_mpeg4.mp4": (5, 1280, 720, 30.0, "mpeg4"),
}


@pytest.fixture(scope="module")
def street_frames(shared_data: Path) -> list[np.ndarray]:
    """The 5 real street frames at quarter size (240x136), used as content for written clips."""
    frames = open_video(shared_data / "videos" / "street_5frames_540p.mp4")
    return [cv2.resize(f.image, (240, 136), interpolation=cv2.INTER_AREA) for f in frames]


def write_clip(
    path: Path,
    images: list[np.ndarray],
    codec: str,
    pix_fmt: str = "yuv420p",
    rate: int = 25,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
) -> Path:
    """Encode BGR images with PyAV; ``pts``/``time_base`` give explicit (variable) timestamps."""
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream: av.video.stream.VideoStream = container.add_stream(codec, rate=rate)  # type: ignore[assignment]
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-9))


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_videos(shared_data: Path, name: str) -> None:
    count, width, height, fps, codec = REAL[name]
    source = open_video(shared_data / "videos" / name)
    info = source.info
    assert (info.width, info.height, info.codec, info.rotation) == (width, height, codec, 0)
    assert info.fps == pytest.approx(fps)
    assert info.num_frames == count and source.expected_frames == count
    assert info.duration == pytest.approx(count / fps, abs=1e-3)
    assert not info.is_image_folder
    frames = list(source)
    assert [f.index for f in frames] == list(range(count))
    np.testing.assert_allclose([f.time for f in frames], np.arange(count) / fps, atol=1e-6)
    for frame in frames:
        assert frame.image.shape == (height, width, 3) and frame.image.dtype == np.uint8
        assert frame.image.flags["C_CONTIGUOUS"]
    # Real pictures, not blank frames: plenty of contrast, and consecutive frames differ.
    assert all(f.image.std() > 20 for f in frames)
    assert np.abs(frames[0].image.astype(int) - frames[-1].image.astype(int)).mean() > 1


def test_frames_are_bgr(shared_data: Path, street_frames: list[np.ndarray], tmp_path: Path) -> None:
    """A pure red picture comes out red in BGR order (channel 2)."""
    red = np.zeros((64, 96, 3), np.uint8)
    red[..., 2] = 220
    path = write_clip(tmp_path / "red.mp4", [red] * 3, "libx264")
    image = next(iter(open_video(path))).image
    assert image[..., 2].mean() > 180 and image[..., 0].mean() < 40 and image[..., 1].mean() < 40


def test_start_end_stride(shared_data: Path) -> None:
    path = shared_data / "videos" / "walking_crowd_1080p.mp4"
    full = list(open_video(path))
    source = open_video(path, start=0.3, end=0.8, stride=3)
    frames = list(source)
    # Frames with 0.3 <= t < 0.8 are 9..23; every third of them.
    expected = [full[i] for i in range(9, 24, 3)]
    assert [f.index for f in frames] == list(range(len(expected)))
    np.testing.assert_allclose([f.time for f in frames], [f.time for f in expected], atol=1e-6)
    for got, want in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got.image, want.image)  # the seek lands on the same pictures
    assert source.fps == pytest.approx(10.0)
    assert source.expected_frames == len(expected)


def test_fps_ceiling_drops_frames_by_time(shared_data: Path) -> None:
    frames = list(open_video(shared_data / "videos" / "walking_crowd_1080p.mp4", fps=10))
    np.testing.assert_allclose([f.time for f in frames], np.arange(11) / 10, atol=1e-6)


@pytest.mark.parametrize(("codec", "pix_fmt", "name"), [
    ("libvpx-vp9", "yuv420p", "clip.webm"),
    ("mjpeg", "yuvj420p", "clip.avi"),
    ("mpeg4", "yuv420p", "clip.mkv"),
])  # fmt: skip
def test_other_codecs(
    tmp_path: Path, street_frames: list[np.ndarray], codec: str, pix_fmt: str, name: str
) -> None:
    path = write_clip(tmp_path / name, street_frames, codec, pix_fmt)
    source = open_video(path)
    assert source.info.codec == {"libvpx-vp9": "vp9"}.get(codec, codec)
    assert (source.info.width, source.info.height) == (240, 136)
    frames = list(source)
    assert len(frames) == len(street_frames)
    np.testing.assert_allclose([f.time for f in frames], np.arange(5) / 25, atol=1e-3)
    for got, want in zip(frames, street_frames, strict=True):
        assert psnr(got.image, want) > 25  # the same pictures, up to compression


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata(tmp_path: Path, street_frames: list[np.ndarray], degrees: int) -> None:
    """A phone clip stored sideways with a display matrix comes out upright (as players show it)."""
    path = write_clip(tmp_path / "rot.mp4", street_frames, "libx264", rotation=degrees)
    source = open_video(path)
    assert source.info.rotation == degrees
    upright = np.rot90(street_frames[0], degrees // 90)  # counter-clockwise, as FFmpeg's matrix
    assert (source.info.height, source.info.width) == upright.shape[:2]
    image = next(iter(source)).image
    assert image.shape == upright.shape
    assert psnr(image, upright) > 25
    if degrees != 180:
        assert image.shape != street_frames[0].shape


def test_legacy_rotate_tag(tmp_path: Path) -> None:
    """The old ``rotate`` tag (clockwise degrees, here in an MKV) is honoured too."""
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :32] = 255  # left half white
    path = tmp_path / "tagged.mkv"
    with av.open(str(path), "w") as container:
        stream: av.video.stream.VideoStream = container.add_stream("libx264", rate=30)  # type: ignore[assignment]
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.metadata["rotate"] = "90"
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    source = open_video(path)
    assert (source.info.rotation, source.info.width, source.info.height) == (270, 32, 64)
    upright = next(iter(source)).image
    assert upright.shape == (64, 32, 3)
    # Turned 90 degrees clockwise: the left half of the stored picture is now on top.
    assert upright[:28].mean() > 200 and upright[36:].mean() < 50


def test_non_square_pixels_are_resampled(tmp_path: Path) -> None:
    """Pixels stored 4:3 wide (anamorphic) come out square: 64x48 stored -> 85x48 shown."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, 16:48] = 255  # a centred white band, half the width
    path = tmp_path / "anamorphic.mp4"
    with av.open(str(path), "w") as container:
        stream: av.video.stream.VideoStream = container.add_stream("libx264", rate=30)  # type: ignore[assignment]
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(4, 3)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    source = open_video(path)
    assert source.info.pixel_aspect == pytest.approx(4 / 3)
    assert (source.info.width, source.info.height) == (85, 48)
    shown = next(iter(source)).image
    assert shown.shape == (48, 85, 3)
    white = np.flatnonzero(shown[24, :, 0] > 128)
    assert abs(len(white) - 85 / 2) <= 3 and abs(white.mean() - 42) <= 2


def test_rotate_image_directions() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 2] = 255  # top-right corner
    assert rotate_image(image, 0) is image
    assert rotate_image(image, 90)[0, 0, 0] == 255  # counter-clockwise: top-right -> top-left
    assert rotate_image(image, -90)[2, 1, 0] == 255  # clockwise: top-right -> bottom-right
    assert rotate_image(image, 180)[1, 0, 0] == 255
    assert rotate_image(image, 270).flags["C_CONTIGUOUS"]


def test_variable_frame_rate_uses_timestamps(
    tmp_path: Path, street_frames: list[np.ndarray]
) -> None:
    pts = [0, 40, 60, 200, 230]  # milliseconds: uneven spacing, a 140 ms hole
    path = write_clip(
        tmp_path / "vfr.mkv", street_frames, "libx264", pts=pts, time_base=Fraction(1, 1000)
    )
    frames = list(open_video(path))
    np.testing.assert_allclose([f.time for f in frames], np.array(pts) / 1000, atol=1e-3)
    assert [f.index for f in frames] == list(range(5))


def test_truncated_video_keeps_decodable_frames(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = shared_data / "videos" / "walking_crowd_1080p.mp4"
    full = list(open_video(real))
    data = real.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with caplog.at_level(logging.WARNING, logger="mocap.pipeline.video"):
        frames = list(open_video(cut))
    assert 10 < len(frames) < len(full)
    for got, want in zip(frames, full, strict=False):
        assert got.time == pytest.approx(want.time)
        assert psnr(got.image, want.image) > 40
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(cut) in warnings[0].getMessage()


def test_truncated_before_first_frame(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / "videos" / "walking_crowd_1080p.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:20_000])  # header and a sliver of the first keyframe
    with pytest.raises(MocapError, match="no decodable video frames"):
        open_video(cut)


def test_damaged_middle(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = bytearray((shared_data / "videos" / "walking_crowd_1080p.mp4").read_bytes())
    rng = np.random.default_rng(0)
    middle = len(data) * 3 // 5
    data[middle : middle + 30_000] = rng.integers(0, 256, 30_000, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mocap.pipeline.video"):
        frames = list(open_video(path))
    # FFmpeg conceals most damage; what matters is that decoding goes on, in order, and that
    # the user is told at most once.
    assert 10 < len(frames) <= 32
    assert np.all(np.diff([f.time for f in frames]) > 0)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) <= 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"this is a text file, not a video\n" * 40, "not a readable video"),
        (np.random.default_rng(1).integers(0, 256, 50_000, np.uint8).tobytes(), "not a readable"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(MocapError, match=message) as err:
        open_video(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_file_and_bad_settings(tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(MocapError, match="does not exist"):
        open_video(tmp_path / "nope.mp4")
    real = shared_data / "videos" / "street_5frames_540p.mp4"
    with pytest.raises(MocapError, match="--stride"):
        open_video(real, stride=0)
    with pytest.raises(MocapError, match="--end"):
        open_video(real, start=0.5, end=0.2)
    with pytest.raises(MocapError, match="past the end"):
        open_video(real, start=5.0)
    # Inside the duration (1.0 s) but after the last frame (0.8 s): found while decoding.
    with pytest.raises(MocapError, match="no frames .* fall between --start 0.9"):
        list(open_video(real, start=0.9))


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    with pytest.raises(MocapError, match="no video stream"):
        open_video(path)


def test_image_folder(shared_data: Path, tmp_path: Path) -> None:
    photos = sorted((shared_data / "images").glob("*.jpg"))
    folder = tmp_path / "frames"
    folder.mkdir()
    # Names that sort wrongly as plain strings; sizes made equal, as in an exported sequence.
    for i, photo in enumerate(photos):
        image = cv2.resize(cv2.imread(str(photo)), (320, 240))
        cv2.imwrite(
            str(folder / f"frame_{i * 5}.png" if i % 2 else folder / f"frame_{i * 5}.jpg"), image
        )
    (folder / "notes.txt").write_text("not an image")
    source = open_video(folder)
    assert source.info.is_image_folder and source.info.codec == "images"
    assert (source.info.width, source.info.height, source.info.fps) == (320, 240, 30.0)
    assert source.info.num_frames == len(photos)
    frames = list(source)
    assert [f.time for f in frames] == pytest.approx(np.arange(len(photos)) / 30)
    for frame, photo in zip(frames, photos, strict=True):  # natural order: 0, 5, 10, 15, ...
        want = cv2.resize(cv2.imread(str(photo)), (320, 240))
        assert psnr(frame.image, want) > 30
    strided = list(open_video(folder, fps=10, stride=2, start=0.1))
    assert [round(f.time, 6) for f in strided] == [0.1, 0.3, 0.5]


def test_image_folder_errors(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(MocapError, match="holds no images"):
        open_video(tmp_path)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    photos = sorted((shared_data / "images").glob("*.jpg"))
    shutil.copy(photos[0], mixed / "a.jpg")  # 640x480
    shutil.copy(photos[1], mixed / "b.jpg")  # 480x640
    with pytest.raises(MocapError, match="share one size"):
        list(open_video(mixed))
    (mixed / "b.jpg").write_bytes(b"broken")  # skipped with a note (tests/test_hostile_inputs.py)
    assert [f.time for f in open_video(mixed)] == [0.0]


def test_streaming_memory_is_flat(shared_data: Path) -> None:
    """Decoding 32 full-HD frames never holds more than a couple of them (numpy allocations)."""
    source = open_video(shared_data / "videos" / "walking_crowd_1080p.mp4")
    assert isinstance(source, VideoSource)
    frame_bytes = 1920 * 1080 * 3
    tracemalloc.start()
    try:
        count = 0
        for frame in source:
            assert isinstance(frame, Frame)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 32
    assert peak < 3 * frame_bytes
