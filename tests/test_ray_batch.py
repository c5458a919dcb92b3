"""`mocap batch --ray` on a local Ray with 2 CPUs, on the real clips and a corrupt one: the same
motion.npz bytes as the sequential batch although a worker is SIGKILLed mid-clip, the corrupt clip
reported as today, nothing half-written left, a re-run that skips every finished clip, frames
reaching the driver's bar and log lines its console while the clips run, and every clip's log
(the retry's too) kept."""

import contextlib
import io
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from progress_watch import watching_progress

from mocap.cli import main

# the corrupt clip's error: FFmpeg's probe finds no container, or (some builds) an audio one
CORRUPT = r"not a readable video|has no video stream"

ray = pytest.importorskip("ray", reason="ray comes with the dev extra: pip install -e '.[dev]'")

VIDEOS = ("walking_crowd_1080p", "street_5frames_540p", "posetrack_5frames_mpeg4")
KILLED = "walking_crowd_1080p"  # its worker is killed while the clip's staging is being written
pytestmark = pytest.mark.usefixtures("models_loaded_once")  # conftest: the sequential reference


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    progress: list[tuple[float, str, str, int | None]]  # (time, event, clip, frames) as received
    console: list[tuple[float, str]]  # (time, text) of every write to stdout and stderr


class _Timed(io.StringIO):
    """A captured stream that also notes when each text was written (in ``writes``)."""

    def __init__(self, writes: list[tuple[float, str]]) -> None:
        super().__init__()
        self.writes = writes

    def write(self, text: str) -> int:
        self.writes.append((time.time(), text))
        return super().write(text)


def _batch(argv: list[str]) -> Ran:
    """``mocap batch`` in this process (the Ray driver), recording what its bar receives and
    when each console line was written."""
    writes: list[tuple[float, str]] = []
    stdout, stderr = _Timed(writes), _Timed(writes)
    with (
        watching_progress() as events,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        code = main(["batch", *argv])
    return Ran(code, stdout.getvalue(), stderr.getvalue(), events, writes)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module (starting one takes ~15 s): `--ray` joins it."""
    os.environ.pop("RAY_ADDRESS", None)  # never a cluster someone else started
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, corrupt_video_bytes: bytes
) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for name in VIDEOS:
        (folder / f"{name}.mp4").symlink_to(shared_data / "videos" / f"{name}.mp4")
    (folder / "corrupt.mp4").write_bytes(corrupt_video_bytes)
    return folder


@pytest.fixture(scope="module")
def flags(tmp_path_factory: pytest.TempPathFactory, yolo_weights: Path) -> list[str]:
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(ckpt)]) == 0
    # --batch-size 2: a clip's frames reach the driver in steps (6, 1 and 5 frames in all)
    return ["--checkpoint", str(ckpt), "--detector", str(yolo_weights), "--formats", "npz,bvh",
            "--end", "0.2", "--batch-size", "2", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def sequential(inputs: Path, flags: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sequential")
    assert _batch([str(inputs), "-o", str(out), *flags]).code == 1  # the corrupt clip fails
    return out


class _KillWhenStaging(threading.Thread):
    """SIGKILL the worker whose staging folder of ``clip`` appears first (once)."""

    def __init__(self, out: Path, clip: str) -> None:
        super().__init__(daemon=True)
        self.out, self.clip, self.killed, self.stop = out, clip, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for staging in self.out.glob(f".{self.clip}.partial-*"):
                pid = int(staging.name.rsplit("-", 1)[1])
                if pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    self.killed = pid
                    return
            time.sleep(0.005)


@pytest.fixture(scope="module")
def on_ray(
    local_ray: None, inputs: Path, flags: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Ran, int]:
    out = tmp_path_factory.mktemp("ray")
    killer = _KillWhenStaging(out, KILLED)
    killer.start()
    try:
        # 3 workers asked of a 2-CPU Ray: 2 (a third it cannot place would hold its clip forever)
        ran = _batch([str(inputs), "-o", str(out), *flags, "--ray", "--workers", "3"])
    finally:
        killer.stop.set()
    return out, ran, killer.killed


def test_same_bytes_as_sequential_although_a_worker_was_killed(
    sequential: Path, on_ray: tuple[Path, Ran, int]
) -> None:
    out, ran, killed = on_ray
    assert killed, f"the staging of {KILLED} never appeared"
    assert ran.code == 1 and "Traceback" not in ran.stderr
    assert f"mocap: warning: {KILLED}: its worker (pid {killed} " in ran.stderr  # it was retried
    for name in VIDEOS:
        assert (out / name / ".done").is_file(), name
        ours, theirs = (out / name / "motion.npz").read_bytes(), (sequential / name / "motion.npz")
        assert ours == theirs.read_bytes(), name
    # one finished copy per clip (and the logs), no staging, old result, lock or temporary file
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([*VIDEOS, "logs"])
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)


def test_workers_are_capped_at_what_the_cluster_can_place(on_ray: tuple[Path, Ran, int]) -> None:
    _, ran, _ = on_ray
    assert "--workers 3, but the Ray cluster has room for 2 now: 2 workers" in ran.stderr
    assert "on 2 Ray workers" in ran.stdout + ran.stderr


def test_plan_follows_the_free_resources_and_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a cluster: the worker count and GPU share from the flags and what is free."""
    import argparse

    from mocap.errors import MocapError
    from mocap.pipeline import ray_batch
    from mocap.pipeline.ray_batch import _actor_env, _plan

    monkeypatch.setattr(ray_batch, "SETTLE", 1.0)

    class FakeRay:
        """``free``: what each look at the free resources finds (the last one from then on)."""

        def __init__(self, total: dict[str, float], *free: dict[str, float]) -> None:
            self.total, self.free = total, list(free)

        def cluster_resources(self) -> dict[str, float]:
            return self.total

        def available_resources(self) -> dict[str, float]:
            return self.free.pop(0) if len(self.free) > 1 else self.free[0]

    def args(**kw: object) -> argparse.Namespace:
        base = {"workers": None, "gpus_per_worker": None, "retries": None, "device": "auto"}
        return argparse.Namespace(**{**base, **kw})

    gpu_node = FakeRay({"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0})
    assert _plan(gpu_node, args(), 10) == (2, 1.0)  # one worker per GPU
    assert _plan(gpu_node, args(gpus_per_worker=0.5), 10) == (4, 0.5)
    assert _plan(gpu_node, args(device="cpu"), 10) == (10, 0.0)  # CPU workers, not 2 GPU ones
    assert _actor_env(2.0, 0.0) == {"runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}
    assert _actor_env(2.0, 1.0) == {} and _actor_env(0.0, 0.0) == {}
    busy = FakeRay({"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 1.0})  # a GPU in use elsewhere
    assert _plan(busy, args(workers=2), 10) == (1, 1.0)
    ending = FakeRay({"CPU": 2.0}, {"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 2.0})  # a batch just ended
    assert _plan(ending, args(workers=2), 10) == (2, 0.0)  # waits for its CPU, not 1 worker
    full = FakeRay({"CPU": 2.0}, {"CPU": 0.0})
    with pytest.raises(MocapError, match="no room for a worker now"):
        _plan(full, args(), 3)


def test_bad_clip_reported_and_manifest(on_ray: tuple[Path, Ran, int]) -> None:
    out, ran, _ = on_ray
    errors = [line for line in ran.stderr.splitlines() if "failed" in line]
    assert len(errors) == 1 and errors[0].startswith("mocap: corrupt: failed: "), errors
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    clips = {c["name"]: c for c in manifest["clips"]}
    assert re.search(CORRUPT, clips["corrupt"]["error"]), clips["corrupt"]["error"]
    assert (
        clips["walking_crowd_1080p"]["frames"] == 6 and clips["posetrack_5frames_mpeg4"]["people"]
    )
    assert manifest["model"].startswith("featup-deformable (tiny)")
    table = ran.stdout[ran.stdout.index("clip "):].splitlines()  # fmt: skip
    assert {line.split()[0]: line.split()[1] for line in table[1:5]} == {
        **dict.fromkeys(VIDEOS, "done"),
        "corrupt": "failed",
    }


def test_frames_reach_the_driver_while_the_clips_run(on_ray: tuple[Path, Ran, int]) -> None:
    out, ran, _ = on_ray
    clips = {c["name"]: c for c in json.loads((out / "manifest.json").read_text())["clips"]}
    for name in VIDEOS:
        end = next(i for i, e in enumerate(ran.progress) if e[1:3] == ("finished", name))
        seen = [e for e in ran.progress[:end] if e[1:3] == ("frames", name)]
        assert sum(e[3] or 0 for e in seen) > 0, name
        assert ran.progress[end][3] == clips[name]["frames"], name  # the final count
        if clips[name]["frames"] > 2:  # more than one batch: the first came while it ran
            finished = (out / name / ".done").stat().st_mtime
            assert seen[0][0] < finished, (name, finished - seen[0][0])
    finished = [e[2] for e in ran.progress if e[1] == "finished"]
    assert sorted(finished) == sorted([*VIDEOS, "corrupt"])  # each once, the retried one too
    assert "\r" not in ran.stderr  # not a terminal: no bar drawn


def test_log_lines_reach_the_console_while_the_clips_run(on_ray: tuple[Path, Ran, int]) -> None:
    out, ran, _ = on_ray
    clips = {c["name"]: c for c in json.loads((out / "manifest.json").read_text())["clips"]}
    for name in VIDEOS:  # each line once, prefixed by its clip; the killed clip's twice
        said = [(t, text) for t, text in ran.console if text.startswith(f"mocap: {name}: ")]
        focal = [t for t, text in said if "focal length not given" in text]
        assert len(focal) == (2 if name == KILLED else 1), said
        assert not [text for _, text in said if text.startswith(f"mocap: {name}: {name}: ")]
        if clips[name]["frames"] > 2:  # its first line came while it ran, not when it ended
            finished = (out / name / ".done").stat().st_mtime
            assert focal[0] < finished, (name, finished - focal[0])
    # the dead attempt's lines, then the retry's warning, then the retry's lines
    said = [text for _, text in ran.console if KILLED in text]
    died = next(i for i, text in enumerate(said) if "its worker (pid " in text)
    converting = [i for i, text in enumerate(said) if f"mocap: {KILLED}: converting " in text]
    assert len(converting) == 2 and converting[0] < died < converting[1], said


def test_every_clip_keeps_its_log_and_the_retry_says_so(on_ray: tuple[Path, Ran, int]) -> None:
    out, _, dead = on_ray
    for name in (*VIDEOS, "corrupt"):
        lines = (out / "logs" / f"{name}.log").read_text().splitlines()
        assert f"info: {name}: converting " in lines[0], lines
        last = f"error: {name}: failed: " if name == "corrupt" else f"info: {name}: done: "
        assert last in lines[-1], lines
    killed = (out / "logs" / f"{KILLED}.log").read_text()
    assert killed.count(f"{KILLED}: converting ") == 2  # the dead attempt's lines, then the retry's
    retry = next(line for line in killed.splitlines() if "its worker (pid " in line)
    assert "warning: " in retry and "retrying on another worker (attempt 2 of 3)" in retry
    # each log names the worker that converted the clip: for the killed clip, not the dead one
    host = re.escape(socket.gethostname())
    for name in (*VIDEOS, "corrupt"):
        lines = (out / "logs" / f"{name}.log").read_text().splitlines()
        by = re.search(rf"converted by the Ray worker pid (\d+) on {host}, Ray node [0-9a-f]{{8}}$",
                       lines[-2])  # fmt: skip
        assert by is not None, lines
        if name == KILLED:
            assert f"pid {dead} on {socket.gethostname()}" in retry and int(by[1]) != dead


def test_rerun_skips_every_finished_clip(
    on_ray: tuple[Path, Ran, int], inputs: Path, flags: list[str]
) -> None:
    out, _, _ = on_ray
    stamps = {n: (out / n / "motion.npz").stat().st_mtime_ns for n in VIDEOS}
    stamps |= {f"logs/{n}": (out / "logs" / f"{n}.log").stat().st_mtime_ns for n in VIDEOS}
    again = _batch([str(inputs), "-o", str(out), *flags, "--ray", "--workers", "2"])
    assert again.code == 1  # the corrupt clip still fails
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 0, "skipped": 3, "failed": 1}
    logs = {f"logs/{n}": (out / "logs" / f"{n}.log").stat().st_mtime_ns for n in VIDEOS}
    assert {n: (out / n / "motion.npz").stat().st_mtime_ns for n in VIDEOS} | logs == stamps


def test_without_ray_one_line_says_how_to_install(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    ran = _batch([str(inputs), "-o", str(tmp_path / "out"), "--ray"])
    assert ran.code == 1
    assert ran.stderr.strip().splitlines()[-1] == (
        "mocap: error: --ray needs Ray, which is not installed: pip install 'mocap[cluster]'"
    )
