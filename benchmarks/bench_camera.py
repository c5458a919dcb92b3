"""Camera motion (``--camera``): accuracy on clips with exact ground truth, and its share of a run.

Run: ``.venv/bin/python benchmarks/bench_camera.py [--frames 300] [--no-blender] [--no-run]``.
Writes the ``camera`` section of docs/benchmarks.md.

Accuracy: the synthetic pan of the tests (a real 1080p frame seen by a camera turning 30 degrees,
a standing and a walking person pasted in, H.264 at 960x540; tests/synthetic_pan.py), decoded and
estimated as `mocap run` does, and a Blender-rendered room with a travelling camera
(tests/blender_parallax.py). Cost: whole `mocap run` calls with the embedded model (``--model
lite``, default formats), timed by the run itself (run.json ``timings_s``).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests")]

import synthetic_pan as sp  # noqa: E402
from _report import write_section  # noqa: E402

from mocap.camera import PeopleInFrame, estimate_camera  # noqa: E402
from mocap.camera_geometry import angle_deg  # noqa: E402
from mocap.pipeline.camera_pass import camera_pass, estimate_clip_camera  # noqa: E402
from mocap.world import build_world  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TOP_STAGES = ("load", "pass", "camera", "contacts", "write", "export", "report", "preview")


def pan_row(frames: int, tmp: Path) -> str:
    clip, motion = sp.pan_clip(SHARED, tmp, frames)
    start = time.perf_counter()
    path = estimate_clip_camera(clip, motion)
    seconds = time.perf_counter() - start
    err = angle_deg(np.einsum("kba,kbc->kac", sp.relative(sp.pan_tilt(frames)), path.rotations))
    moving, _ = camera_pass(clip, motion, "moving")
    rigs = {r.name: r.root_positions for r in build_world(moving).rigs}
    still = rigs["person_1"]
    walk = rigs["person_2"] - rigs["person_2"].mean(0)
    line = np.linalg.svd(walk)[2][0]
    off = np.linalg.norm(walk - np.outer(walk @ line, line), axis=1).max()
    drift_cm = 100 * np.linalg.norm(still - still.mean(0), axis=1).max()
    return (
        f"| pure rotation: 30 deg pan + tilt, {frames} frames, 960x540 H.264 | "
        f"{err.max():.3f} | {err[-1]:.3f} | none (0.00 m) | standing: {drift_cm:.2f} cm drift; "
        f"walking 3 m: {100 * off:.2f} cm off the line | {path.drift_deg:.3f} | "
        f"{1000 * seconds / frames:.1f} |"
    )


def parallax_row(tmp: Path, frames: int = 40) -> str:
    with __import__("av").open(str(SHARED / "videos/walking_crowd_1080p.mp4")) as c:
        cv2.imwrite(str(tmp / "crowd.png"), next(c.decode(video=0)).to_ndarray(format="bgr24"))
    script = REPO / "tests" / "blender_parallax.py"
    subprocess.run([sys.executable, str(script), str(tmp), str(SHARED), str(frames)],
                   check=True, capture_output=True, timeout=1800)  # fmt: skip
    truth = np.load(tmp / "truth.npz")
    images = ((k, cv2.imread(str(tmp / f"frame_{k:04d}.png"))) for k in range(frames))
    people = {
        k: PeopleInFrame(truth["boxes"][k : k + 1], truth["depths"][k : k + 1])
        for k in range(frames)
    }
    start = time.perf_counter()
    path = estimate_camera(images, people, float(truth["focal"]), (640, 360))
    seconds = time.perf_counter() - start
    err = angle_deg(np.einsum("kba,kbc->kac", truth["R"], path.rotations))
    got, want = path.positions[-1], truth["C"][-1]
    cos = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
    direction = np.degrees(np.arccos(min(cos, 1.0)))
    scale = np.linalg.norm(got) / np.linalg.norm(want)
    return (
        f"| parallax: Blender room, camera travels {np.linalg.norm(want):.2f} m and turns 13 deg, "
        f"{frames} frames, 640x360 | {err.max():.3f} | {err[-1]:.3f} | {direction:.2f} deg, "
        f"length x{scale:.3f} | - | {path.drift_deg:.3f} | {1000 * seconds / frames:.1f} |"
    )


def cost_row(video: Path, out: Path, label: str) -> str:
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.run import process_video

    settings = RunSettings(model="lite", camera="auto", overwrite=True)
    start = time.perf_counter()
    result = process_video(video, out, settings)
    wall = time.perf_counter() - start
    t = result.timings
    total = sum(t.get(k, 0.0) for k in TOP_STAGES)
    chose = next((w for w in result.warnings if w.startswith("camera: ")), "?").split(" (")[0]
    return (
        f"| {label} | {result.frames} | {wall:.1f} | {t['camera']:.2f} | "
        f"{1000 * t['camera'] / result.frames:.0f} | {100 * t['camera'] / total:.1f}% | "
        f"{100 * t['camera'] / max(total - t.get('load', 0.0), 1e-9):.1f}% | {chose} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300, help="frames of the synthetic pan")
    ap.add_argument("--no-blender", action="store_true", help="skip the Blender parallax scene")
    ap.add_argument("--no-run", action="store_true", help="skip the `mocap run --model lite` costs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mocap-bench-camera-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "pan").mkdir()
        rows = [pan_row(args.frames, tmp / "pan")]
        if not args.no_blender:
            (tmp / "room").mkdir()
            rows.append(parallax_row(tmp / "room"))
        cost = []
        if not args.no_run:
            clips = [
                (SHARED / "videos/walking_crowd_1080p.mp4", "walking crowd 1920x1080 (tripod)"),
                (tmp / "pan" / "pan.mp4", f"synthetic pan 960x540 ({args.frames} frames)"),
            ]
            cost = [cost_row(v, tmp / "runs", label) for v, label in clips]
    text = [
        "## Camera motion (`benchmarks/bench_camera.py`)",
        "",
        "Accuracy against exact ground truth (rotation errors: angle of R_true^T R_estimated per "
        "frame; *final* is the accumulated drift at the last frame). Estimated from the decoded "
        "clip, people masked by their boxes; translation only where there is parallax, scaled "
        "by the person-sized box's depth.",
        "",
        "| clip | max rotation error deg | final (drift) deg | translation error | people in the "
        "world | drift check deg | ms / frame |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    if cost:
        text += [
            "",
            "Cost inside `mocap run --model lite --camera auto` (default formats npz,bvh,fbx; "
            "the camera pass re-decodes the clip after tracking). *share* = camera seconds over "
            "the run's top-level stages (load, pass, camera, contacts, write, export, report); "
            "target <= 10%.",
            "",
            "| clip | frames | run wall s | camera s | camera ms / frame | share | share without model load | auto chose |",
            "|---|---|---|---|---|---|---|---|",
            *cost,
        ]
    load = os.getloadavg()[1]
    text += [
        "",
        f"Load average {load:.1f} on {os.cpu_count()} cores while measuring (a shared machine): "
        "absolute times are pessimistic; the shares compare stages of the same runs.",
    ]
    write_section("camera", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
