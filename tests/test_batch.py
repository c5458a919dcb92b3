"""`mocap batch`: the three real videos plus a corrupt file; resume, overwrite, summary, manifest."""

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mocap.cli import main
from mocap.motion import Motion

VIDEOS = ("walking_crowd_1080p", "street_5frames_540p", "posetrack_5frames_mpeg4")
pytestmark = pytest.mark.usefixtures("models_loaded_once")  # conftest


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A folder with the three real videos and one corrupt 'video'."""
    folder = tmp_path_factory.mktemp("clips")
    for name in VIDEOS:
        (folder / f"{name}.mp4").symlink_to(shared_data / "videos" / f"{name}.mp4")
    (folder / "corrupt.mp4").write_bytes(os.urandom(40_000))
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


@pytest.fixture(scope="module")
def first_batch(
    inputs: Path, flags: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Ran]:
    """``mocap batch`` over the folder (stdout / stderr captured; not a TTY: no progress bars)."""
    out = tmp_path_factory.mktemp("batch")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["batch", str(inputs), "-o", str(out), *flags])
    return out, Ran(code, stdout.getvalue(), stderr.getvalue())


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
    assert "not a readable video" in clips["corrupt"]["error"]
    assert manifest["settings"]["end"] == 0.2 and manifest["model"]


def test_second_batch_skips_finished_clips(
    first_batch: tuple[Path, Ran], inputs: Path, flags: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out, _ = first_batch
    stamps = {n: (out / n / "motion.npz").stat().st_mtime_ns for n in VIDEOS}
    assert main(["batch", str(inputs), "-o", str(out), *flags]) == 1  # corrupt still fails
    captured = capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 0, "skipped": 3, "failed": 1}
    assert manifest["model"] == ""  # the corrupt clip fails before the model is needed
    assert {n: (out / n / "motion.npz").stat().st_mtime_ns for n in VIDEOS} == stamps
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
