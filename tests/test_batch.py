"""`mocap batch`: the three real videos plus a corrupt file; resume, overwrite, summary, manifest,
per-clip logs, the progress bar's counts, and Ray flags without --ray."""

import contextlib
import io
import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from progress_watch import watching_progress

from mocap.cli import main
from mocap.motion import Motion
from mocap.pipeline.batch_progress import BatchProgress

# the corrupt clip's error: FFmpeg's probe finds no container, or (some builds) an audio one
CORRUPT = r"not a readable video|has no video stream"

VIDEOS = ("walking_crowd_1080p", "street_5frames_540p", "posetrack_5frames_mpeg4")
pytestmark = pytest.mark.usefixtures("models_loaded_once")  # conftest


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def inputs(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, corrupt_video_bytes: bytes
) -> Path:
    """A folder with the three real videos and one corrupt 'video'."""
    folder = tmp_path_factory.mktemp("clips")
    for name in VIDEOS:
        (folder / f"{name}.mp4").symlink_to(shared_data / "videos" / f"{name}.mp4")
    (folder / "corrupt.mp4").write_bytes(corrupt_video_bytes)
    (folder / "notes.txt").write_text("not a clip")
    return folder


@pytest.fixture(scope="module")
def flags(tiny_checkpoint: Path, yolo_weights: Path) -> list[str]:
    # --end 0.2: the first 0.2 s of each clip keeps the test fast (6, 1 and 5 frames)
    return ["--checkpoint", str(tiny_checkpoint), "--detector", str(yolo_weights), "--formats",
            "npz,bvh", "--end", "0.2", "--batch-size", "8"]  # fmt: skip


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    progress: list[tuple[float, str, str, int | None]]  # (time, event, clip, frames) as received


def batch(argv: list[str]) -> Ran:
    """``mocap batch`` (stdout / stderr captured; not a TTY: no progress bar drawn)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        watching_progress() as events,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        code = main(["batch", *argv])
    return Ran(code, stdout.getvalue(), stderr.getvalue(), events)


@pytest.fixture(scope="module")
def first_batch(
    inputs: Path, flags: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Ran]:
    out = tmp_path_factory.mktemp("batch")
    return out, batch([str(inputs), "-o", str(out), *flags])


def test_batch_finishes_good_clips_and_reports_the_corrupt_one(
    first_batch: tuple[Path, Ran],
) -> None:
    out, done = first_batch
    assert done.code == 1  # one clip failed
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "failed" in line]
    assert (
        len(errors) == 1
        and errors[0].startswith("mocap: corrupt: failed: ")
        and "corrupt.mp4" in errors[0]
    )
    for name in VIDEOS:
        assert (out / name / ".done").is_file(), name
        assert len(Motion.load(out / name / "motion.npz").tracks) >= 1
    assert not (out / "corrupt").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folders left
    lines = done.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("clip ")) :]
    assert table[0].split()[:2] == ["clip", "status"]
    status = {line.split()[0]: line.split()[1] for line in table[1:5]}
    assert status == {**dict.fromkeys(VIDEOS, "done"), "corrupt": "failed"}


def test_manifest(first_batch: tuple[Path, Ran], inputs: Path) -> None:
    out, _ = first_batch
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    clips = {c["name"]: c for c in manifest["clips"]}
    assert set(clips) == {*VIDEOS, "corrupt"}
    assert (
        clips["walking_crowd_1080p"]["frames"] == 6 and clips["walking_crowd_1080p"]["people"] >= 2
    )
    assert clips["posetrack_5frames_mpeg4"]["frames"] == 5
    assert re.search(CORRUPT, clips["corrupt"]["error"]), clips["corrupt"]["error"]
    assert manifest["settings"]["end"] == 0.2 and manifest["model"]


def test_progress_counts_frames_as_they_are_decoded(first_batch: tuple[Path, Ran]) -> None:
    out, done = first_batch
    clips = {c["name"]: c for c in json.loads((out / "manifest.json").read_text())["clips"]}
    finished = [e for e in done.progress if e[1] == "finished"]
    assert sorted(e[2] for e in finished) == sorted([*VIDEOS, "corrupt"])
    for name in VIDEOS:
        end = next(i for i, e in enumerate(done.progress) if e[1:3] == ("finished", name))
        seen = [e[3] or 0 for e in done.progress[:end] if e[1:3] == ("frames", name)]
        assert seen and sum(seen) == clips[name]["frames"] == done.progress[end][3], name
    assert "\r" not in done.stderr  # no terminal: no bar drawn into the log


def test_each_converted_clip_keeps_its_log(first_batch: tuple[Path, Ran]) -> None:
    out, _ = first_batch
    for name in (*VIDEOS, "corrupt"):
        lines = (out / "logs" / f"{name}.log").read_text().splitlines()
        assert f"info: {name}: converting " in lines[0], lines
        stamp = time.strptime(lines[0][:19], "%Y-%m-%d %H:%M:%S")
        assert abs(time.mktime(stamp) - time.time()) < 3600
        if name == "corrupt":
            assert "error: corrupt: failed: " in lines[-1] and re.search(CORRUPT, lines[-1])
        else:
            assert any("focal length not given" in line for line in lines), lines
            assert f"info: {name}: done: " in lines[-1] and " frames, " in lines[-1], lines
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(
        f"{n}.log" for n in (*VIDEOS, "corrupt")
    )  # and no temporary file


def test_ray_flags_without_ray_are_one_error_line(inputs: Path, tmp_path: Path) -> None:
    for flags in (["--workers", "2"], ["--gpus-per-worker", "1", "--retries", "0"]):
        ran = batch([str(inputs), "-o", str(tmp_path / "out"), *flags])
        assert ran.code == 1 and ran.stdout == "" and not (tmp_path / "out").exists()
        assert ran.stderr.count("\n") == 1 and ran.stderr.startswith(f"mocap: error: {flags[0]}")
        assert "only apply with --ray" in ran.stderr, ran.stderr
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        main(["batch", "--help"])
    assert "--workers, --gpus-per-worker and --retries need --ray" in help_text.getvalue()


def test_a_ray_address_nobody_answers_at_is_one_line_at_once(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    started = time.monotonic()
    code = main(["batch", str(inputs), "-o", str(tmp_path / "o"), "--ray", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"mocap: error: nothing answers at the Ray address 127.0.0.1:{port}")
    assert time.monotonic() - started < 10  # not Ray's 20 s of retries
    assert not [p for p in (tmp_path / "o").iterdir() if p.is_dir()]  # nothing converted


def test_no_clip_is_named_logs(tmp_path: Path) -> None:
    from mocap.pipeline.batch_cmd import output_names

    assert output_names([tmp_path / "logs.mp4", tmp_path / "a.mp4"]) == ["logs-2", "a"]


def test_the_bar_shows_clips_and_frames_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with BatchProgress(2, show=True, stream=screen) as bar:
        bar.add_frames("a", 4)
        bar.restart("a")  # its worker died: counted again by the retry
        bar.add_frames("a", 6)
        bar.finish("a", 6)
        bar.add_frames("b", 3)
        assert bar.frames == 9
        bar.finish("b", 5)
    assert bar.frames == 11
    last = screen.getvalue().split("\r")[-1]
    assert "2/2 clips, 11 frames" in last, last


def test_second_batch_skips_finished_clips(
    first_batch: tuple[Path, Ran], inputs: Path, flags: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out, _ = first_batch
    stamps = {n: (out / n / "motion.npz").stat().st_mtime_ns for n in VIDEOS}
    logs = {n: (out / "logs" / f"{n}.log").read_text() for n in VIDEOS}
    # temporary logs of batches killed while writing one: removed when their process is gone
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    gone.pid = 4_194_305  # above any pid_max: never alive (the exited one's pid may be reused)
    running = subprocess.Popen(["sleep", "60"])
    stale, owned, theirs = (out / "logs" / f".{VIDEOS[0]}.partial-{gone.pid}.log",
                            out / "logs" / f".{VIDEOS[1]}.partial-{running.pid}.log",
                            out / "logs" / f".notes.partial-{gone.pid}.txt")  # fmt: skip
    for planted in (stale, owned, theirs):
        planted.write_text("half a log\n")
    try:
        assert main(["batch", str(inputs), "-o", str(out), *flags]) == 1  # corrupt still fails
        assert not stale.exists() and owned.exists() and theirs.exists()
    finally:
        running.kill()
        running.wait()
        owned.unlink(missing_ok=True)
        theirs.unlink(missing_ok=True)
    captured = capsys.readouterr()
    assert f"removed logs/{stale.name} left by process {gone.pid}" in captured.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 0, "skipped": 3, "failed": 1}
    assert manifest["model"] == ""  # the corrupt clip fails before the model is needed
    assert {n: (out / n / "motion.npz").stat().st_mtime_ns for n in VIDEOS} == stamps
    assert {n: (out / "logs" / f"{n}.log").read_text() for n in VIDEOS} == logs  # kept
    assert captured.out.count("skipped") == 3


def test_overwrite_redoes_a_clip_and_a_missing_input_is_reported(
    first_batch: tuple[Path, Ran], inputs: Path, flags: list[str],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out, _ = first_batch
    clip = inputs / "posetrack_5frames_mpeg4.mp4"
    before = (out / clip.stem / ".done").stat().st_mtime_ns
    gone = tmp_path / "gone.mp4"
    argv = ["batch", str(gone), str(clip), "-o", str(out), *flags, "--overwrite", "--end", "0.1"]
    assert main(argv) == 1  # the missing input fails ...
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "failed" in line] == [
        f"mocap: gone: failed: {gone} does not exist; check the path"
    ]
    # ... and the other clip is redone
    assert (out / clip.stem / ".done").stat().st_mtime_ns > before
    assert json.loads((out / clip.stem / "run.json").read_text())["video"]["frames"] == 3


def test_missing_weights_stop_the_batch_with_one_line(
    tmp_path: Path, inputs: Path, yolo_weights: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path / "empty_cache"))
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            str(inputs),
            "-o",
            str(out),
            "--model",
            "featup-deformable",
            "--detector",
            str(yolo_weights),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "Traceback" not in "".join(err)
    # the corrupt clip's line, then the one error that stops the batch (not one per clip)
    assert (
        err[-1].startswith("mocap: error: featup-deformable is missing")
        and "--checkpoint" in err[-1]
    )
    assert len(err) == 2 and err[0].startswith(
        "mocap: corrupt: failed: "
    )  # clips run in name order
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["status"] for c in manifest["clips"]] == ["failed", "failed"] and manifest[
        "model"
    ] == ""
