"""Issue 17, the output side: nothing lost. Real clips, the real detector, a tiny random model.

Clip names are never empty or dots, --overwrite only replaces mocap's own results, a full disk
is one line, killed runs leave nothing that the next run does not clean up, SIGTERM is Ctrl-C,
and two batches on one output folder convert each clip once.
"""

import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from mocap.cli import main
from mocap.errors import MocapError
from mocap.pipeline.config import RunSettings
from mocap.pipeline.staging import (
    MARKER,
    check_clip_name,
    clean_stale,
    clip_lock,
    clip_name,
    make_staging,
    publish,
)

REPO = Path(__file__).resolve().parents[1]
CLIP = "posetrack_5frames_mpeg4"


@pytest.fixture(scope="module", autouse=True)
def models_loaded_once() -> Iterator[None]:
    """In-process runs share the loaded detector and model."""
    from mocap.pipeline import run_cmd

    real, cache = run_cmd.build_engines, {}

    def cached(settings: RunSettings) -> object:
        keep = ("checkpoint", "detector", "device", "precision", "model", "smpl", "batch_size")
        key = json.dumps({k: v for k, v in settings.to_dict().items() if k in keep})
        if key not in cache:
            cache[key] = real(settings)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_cmd, "build_engines", cached)
        yield


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(path)]) == 0
    return path


@pytest.fixture()
def flags(tiny_checkpoint: Path, yolo_weights: Path) -> list[str]:
    return ["--checkpoint", str(tiny_checkpoint), "--detector", str(yolo_weights), "-q",
            "--end", "0.1", "--formats", "npz"]  # fmt: skip


@pytest.fixture()
def video(shared_data: Path) -> Path:
    return shared_data / "videos" / f"{CLIP}.mp4"


@pytest.fixture()
def frames(tmp_path: Path, video: Path) -> Path:
    """An image folder ``shot`` with the clip's first three frames."""
    folder = tmp_path / "shot"
    folder.mkdir()
    with av.open(str(video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i < 3:
                f.to_image().save(folder / f"frame_{i + 1}.png")
    return folder


def user_folder(path: Path) -> dict[str, str]:
    """Fill ``path`` with a user's files; returns them (relative path -> content)."""
    files = {"thesis.txt": "years of work", "notes/a.txt": "a", ".hidden": "h"}
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return files


def untouched(path: Path, files: dict[str, str]) -> bool:
    return all((path / rel).is_file() and (path / rel).read_text() == t for rel, t in files.items())


def leftovers(out: Path) -> list[str]:
    """Hidden entries mocap may leave in OUT (staging, old results, locks, temporary files)."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".hidden")


def one_error_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mocap: error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- 1: clip names


def test_clip_names_are_never_empty_or_dots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shot").mkdir()
    monkeypatch.chdir(tmp_path / "shot")
    assert clip_name(Path(".")) == "shot"
    assert clip_name(Path("..mp4")) == "mp4"
    assert clip_name(Path("...")) == "clip"  # nothing but dots
    assert clip_name(Path(".hidden.mp4")) == "hidden"
    assert clip_name(Path("/")) == "clip"
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(MocapError):
            check_clip_name(bad)


def test_run_dot_inside_an_image_folder_keeps_the_output_folder(
    frames: Path, tmp_path: Path, flags: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "out"
    mine = user_folder(out)
    monkeypatch.chdir(frames)
    assert main(["run", ".", "-o", str(out), "--overwrite", *flags]) == 0
    assert untouched(out, mine)
    assert (out / "shot" / ".done").is_file() and leftovers(out) == []
    # the batch of "." (an image folder) is that folder too, and keeps the user's files
    assert main(["batch", ".", "-o", str(out), "--overwrite", *flags]) == 0
    assert untouched(out, mine) and (out / "shot" / ".done").is_file()
    assert leftovers(out) == [] and "Traceback" not in capsys.readouterr().err


def test_a_file_named_dot_dot_mp4(tmp_path: Path, video: Path, flags: list[str]) -> None:
    clip = tmp_path / "..mp4"
    shutil.copy(video, clip)
    out = tmp_path / "out"
    mine = user_folder(out)
    assert main(["run", str(clip), "-o", str(out), "--overwrite", *flags]) == 0
    assert untouched(out, mine) and (out / "mp4" / ".done").is_file() and leftovers(out) == []


@pytest.mark.parametrize("overwrite", [True, False])
def test_overwrite_never_replaces_a_folder_mocap_did_not_write(
    overwrite: bool, tmp_path: Path, video: Path, flags: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "out"
    theirs = user_folder(out / CLIP)
    argv = ["run", str(video), "-o", str(out), *flags] + (["--overwrite"] if overwrite else [])
    line = one_error_line(main(argv), capsys.readouterr().err)
    assert "not written by mocap" in line and str(out / CLIP) in line
    assert untouched(out / CLIP, theirs) and leftovers(out) == []


def test_publish_replaces_only_mocap_results(tmp_path: Path) -> None:
    final, staging = tmp_path / "clip", tmp_path / ".clip.partial-1"
    staging.mkdir()
    (staging / "run.json").write_text("new")
    theirs = user_folder(final)
    with pytest.raises(MocapError, match="not written by mocap"):
        publish(staging, final)
    assert untouched(final, theirs) and (staging / "run.json").read_text() == "new"
    shutil.rmtree(final)
    final.mkdir()
    (final / "run.json").write_text("old")
    publish(staging, final)
    assert (final / "run.json").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["clip"]


# ----------------------------------------------------------------------------- 5: full disk


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory: pytest.TempPathFactory, shared_data: Path,
              tiny_checkpoint: Path, yolo_weights: Path) -> int:  # fmt: skip
    """Bytes one run of the clip writes (npz, bvh)."""
    out = tmp_path_factory.mktemp("full")
    argv = ["run", str(shared_data / "videos" / f"{CLIP}.mp4"), "-o", str(out), "--checkpoint",
            str(tiny_checkpoint), "--detector", str(yolo_weights), "-q", "--end", "0.1",
            "--formats", "npz,bvh"]  # fmt: skip
    assert main(argv) == 0
    return sum(p.stat().st_size for p in (out / CLIP).iterdir() if p.name != "report.html")


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.9])  # of the animation files (not the report)
def test_a_full_disk_is_one_line_and_leaves_nothing(
    fraction: float, full_size: int, tmp_path: Path, video: Path, flags: list[str],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)  # "Exception ignored in ..."
    size_kb = max(24, int(full_size * fraction / 4096) * 4)
    with small_disk(tmp_path / "disk", size_kb) as disk:
        argv = ["run", str(video), "-o", str(disk), *flags[:-1], "npz,bvh"]
        line = one_error_line(main(argv), capsys.readouterr().err)
        gc.collect()
        assert "No space left on device" in line and "free some space" in line, line
        assert ".partial" not in line  # the clip's own name, not the staging folder's
        assert os.listdir(disk) == []  # no staging, no half clip folder, no lock
    assert unraisable == []


# ----------------------------------------------------------------------------- 6: killed runs


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_stale_staging_of_dead_processes_is_cleaned(tmp_path: Path) -> None:
    gone = dead_pid()
    stale = tmp_path / f".clip.partial-{gone}"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"pid": gone, "host": socket.gethostname()}))
    (stale / "motion.npz").write_bytes(b"half")
    empty = tmp_path / f".other.partial-{gone}"  # killed between mkdir and the marker
    empty.mkdir()
    theirs = tmp_path / f".notes.partial-{gone}"  # looks like staging, is not ours: kept
    user_folder(theirs)
    alive = tmp_path / f".clip.partial-{os.getpid()}"
    alive.mkdir()
    old = tmp_path / f".done_clip.old-{gone}"  # a publish killed between its two renames
    old.mkdir()
    (old / "run.json").write_text("{}")
    temp = tmp_path / f".manifest.partial-{gone}.json"
    temp.write_text("{")
    notes = clean_stale(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([theirs.name, alive.name, "done_clip"]), notes
    assert (tmp_path / "done_clip" / "run.json").is_file() and len(notes) == 4


def staging_of(out: Path, clip: str) -> list[Path]:
    return list(out.glob(f".{clip}.partial-*")) if out.is_dir() else []


def start(argv: list[str], **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mocap", *argv], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,  # type: ignore[call-overload]
    )  # fmt: skip


def wait_for(check: object, proc: subprocess.Popen[str], timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture()
def two_clips(tmp_path: Path, shared_data: Path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(shared_data / "videos" / f"{CLIP}.mp4", folder / "a_first.mp4")
    shutil.copy(shared_data / "videos" / "street_5frames_540p.mp4", folder / "b_second.mp4")
    return folder


def test_sigkill_then_the_next_batch_cleans_up_and_the_manifest_survives(
    two_clips: Path, tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "out"
    slow = [*flags[:-1], "npz,fbx"]  # Blender writes FBX in a child: a wide window to kill in
    proc = start(["batch", str(two_clips), "-o", str(out), *slow], start_new_session=True)
    wait_for(lambda: staging_of(out, "b_second"), proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, Blender's child too
    proc.wait()
    time.sleep(0.5)
    assert staging_of(out, "b_second")  # SIGKILL: nothing can clean up ...
    manifest = json.loads((out / "manifest.json").read_text())  # ... but the record is there
    assert [(c["name"], c["status"]) for c in manifest["clips"]] == [("a_first", "done")]
    # the next batch removes the dead process's staging, converts the rest, lists every clip
    assert main(["batch", str(two_clips), "-o", str(out), *flags]) == 0
    assert leftovers(out) == [] and (out / "b_second" / ".done").is_file()
    clips = {
        c["name"]: c["status"] for c in json.loads((out / "manifest.json").read_text())["clips"]
    }
    assert clips == {"a_first": "skipped", "b_second": "done"}
    capsys.readouterr()


def test_stopped_inside_make_staging_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM right after the staging folder's mkdir (before the caller holds its name)."""

    def stop() -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(socket, "gethostname", stop)  # the marker is written after mkdir
    with pytest.raises(KeyboardInterrupt):
        make_staging(tmp_path, "clip")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_is_ctrl_c(two_clips: Path, tmp_path: Path, flags: list[str]) -> None:
    out = tmp_path / "out"
    proc = start(["batch", str(two_clips / "a_first.mp4"), "-o", str(out), *flags[:-1], "fbx"])
    wait_for(lambda: staging_of(out, "a_first"), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "mocap: terminated; finished files are kept, unfinished ones removed"
    )
    assert leftovers(out) == [] and not (out / "a_first").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(c["name"], c["status"]) for c in manifest["clips"]] == [("a_first", "interrupted")]


# ----------------------------------------------------------------------------- 7: concurrency


def test_a_clip_locked_by_another_process_is_skipped_or_refused(
    tmp_path: Path, video: Path, flags: list[str], capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    with clip_lock(out, CLIP):  # as another process converting it would hold it
        line = one_error_line(
            main(["run", str(video), "-o", str(out), *flags]), capsys.readouterr().err
        )
        assert "being converted by another mocap process" in line and f"pid {os.getpid()}" in line
        assert main(["batch", str(video), "-o", str(out), *flags]) == 0
        clips = json.loads((out / "manifest.json").read_text())["clips"]
        assert [(c["name"], c["status"]) for c in clips] == [(CLIP, "skipped")]
        assert "another mocap process" in clips[0]["error"] and not (out / CLIP).exists()
    assert leftovers(out) == []  # the lock file goes with its holder
    capsys.readouterr()


def test_two_batches_on_one_output_convert_each_clip_once(
    tmp_path: Path, shared_data: Path, tiny_checkpoint: Path, yolo_weights: Path,
) -> None:  # fmt: skip
    folder = tmp_path / "clips"
    folder.mkdir()
    names = ["c1", "c2", "c3", "c4", "c5", "c6"]
    for k, name in enumerate(names):
        src = ("posetrack_5frames_mpeg4", "street_5frames_540p")[k % 2]
        shutil.copy(shared_data / "videos" / f"{src}.mp4", folder / f"{name}.mp4")
    out = tmp_path / "out"
    argv = ["batch", str(folder), "-o", str(out), "--checkpoint", str(tiny_checkpoint),
            "--detector", str(yolo_weights), "--end", "0.1", "--formats", "npz,bvh"]  # fmt: skip
    procs = [start(argv) for _ in range(2)]
    tables = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "Traceback" not in stderr, stderr
        lines = stdout.splitlines()
        head = next(i for i, line in enumerate(lines) if line.startswith("clip "))
        tables.append(
            {ln.split()[0]: ln.split()[1] for ln in lines[head + 1 : head + 1 + len(names)]}
        )
    for name in names:  # converted by exactly one of the two, skipped by the other
        assert sorted(t[name] for t in tables) == ["done", "skipped"], (name, tables)
        assert (out / name / ".done").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(c["name"] for c in manifest["clips"]) == names
    assert all(c["status"] == "done" for c in manifest["clips"])  # a skip keeps the other's row
    assert leftovers(out) == []
