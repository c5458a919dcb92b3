"""Foot locking: sliding before and after, on the shared clips (embedded model) and synthetic gait.

    .venv/bin/python benchmarks/bench_footlock.py [--plot /tmp/team/shots/footlock.png] [--reuse]

1. Real motion: ``mocap run CLIP --model lite --formats npz`` on every clip of
   ../shared/data/videos (``--reuse``: the motion.npz already in --out); per track, contacts
   found again from the motion as saved: the share of frames with a foot in contact,
   foot sliding (mm/frame over the contact frames, WHAM/GVHMR's definition), ground penetration
   and floating during contact (mm), before and after locking, and the frames on which a lock had
   to be let go. (There is no ground truth for these clips: the contacts are the detected ones.)
2. Synthetic gait with known contacts (tests/synthetic_gait.py: walk with heel-toe roll, and a
   jump; estimator noise seeds 0-4): contact F1 against the truth, sliding over the true stance
   frames before and after.
3. Seconds per 1,000 frames of contact detection and locking (one person, 60-stride walk).
The plot shows, for the real track with the most contact frames and for a synthetic walk, the
foot points' displacement per frame before (grey) and after locking, contact frames shaded, and
the ankles' paths seen from above.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

from _report import write_section  # noqa: E402


def run_clips(out: Path, reuse: bool) -> list[dict]:
    """Run the embedded model on every clip (or reuse its motion.npz); per-track contact rows,
    found again from the saved motion (stored contacts dropped) with this code."""
    from dataclasses import replace

    from mocap.contacts import find_contacts
    from mocap.motion import Motion

    rows = []
    for video in sorted(VIDEOS.glob("*.mp4")):
        folder = out / video.stem
        if not (reuse and (folder / "motion.npz").is_file()):
            cmd = [str(REPO / ".venv" / "bin" / "mocap"), "run", str(video), "-o", str(out),
                   "--model", "lite", "--formats", "npz", "--no-report", "--overwrite", "-q"]  # fmt: skip
            subprocess.run(cmd, check=True)
        motion = Motion.load(folder / "motion.npz")
        bare = [
            t.replace(extras={k: v for k, v in t.extras.items() if k != "contacts"})
            for t in motion.tracks
        ]
        _, found = find_contacts(replace(motion, tracks=bare))
        for track in bare:
            if track.track_id in found.reports:
                report = found.reports[track.track_id]
                rows.append({"clip": video.stem, "fps": motion.fps, "id": track.track_id,
                             "frames": len(track), "contacts": report.to_dict(), "motion": folder})  # fmt: skip
    return rows


def synthetic() -> tuple[list[str], dict]:
    from synthetic_gait import add_estimator_noise, jump, walk

    from exporters import joint_positions
    from mocap.contacts import POINTS, detect_contacts, foot_metrics
    from mocap.foot_lock import lock_feet

    lines, keep = [], {}
    for name, gait in (("walk", walk(VIDEOS.parents[0])), ("jump", jump(VIDEOS.parents[0]))):
        clear = gait.skeleton.sole_clearance[list(POINTS)]
        f1s, before, after = [], [], []
        for seed in range(5):
            noisy = add_estimator_noise(gait.rig, seed=seed)
            pts = joint_positions(noisy)[:, list(POINTS)]
            found = detect_contacts(pts, clear, noisy.fps)
            locked = lock_feet(noisy, clear, found.flags, found.confidence)
            tp = (found.flags & gait.contacts).sum()
            f1s.append(2 * tp / (found.flags.sum() + gait.contacts.sum()))
            before.append(foot_metrics(pts, clear, gait.contacts).sliding_mm)
            out = joint_positions(locked.rig)[:, list(POINTS)]
            after.append(foot_metrics(out, clear, gait.contacts).sliding_mm)
            if seed == 0:
                keep[name] = (pts, out, gait.contacts)
        lines.append(f"| {name} ({gait.rig.num_frames} frames) | {np.mean(f1s):.3f} (min {np.min(f1s):.3f}) "
                     f"| {np.mean(before):.1f} | {np.mean(after):.2f} (max {np.max(after):.2f}) "
                     f"| {np.mean(before) / np.mean(after):.0f}x |")  # fmt: skip
    return lines, keep


def timing() -> float:
    from synthetic_gait import add_estimator_noise, walk

    from exporters import joint_positions
    from mocap.contacts import POINTS, detect_contacts
    from mocap.foot_lock import lock_feet

    gait = walk(VIDEOS.parents[0], strides=60)
    noisy = add_estimator_noise(gait.rig, seed=0)
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    start = time.perf_counter()
    found = detect_contacts(joint_positions(noisy)[:, list(POINTS)], clear, noisy.fps)
    lock_feet(noisy, clear, found.flags, found.confidence)
    return (time.perf_counter() - start) * 1000.0 / noisy.num_frames  # s per 1,000 frames


def real_track(out: Path, rows: list[dict]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """World foot points before and after locking of the real track with most contact frames."""
    from dataclasses import replace

    from exporters import joint_positions
    from mocap.contacts import POINTS, lock_world
    from mocap.motion import Motion
    from mocap.world import build_world

    best = max(rows, key=lambda r: r["frames"] * r["contacts"]["before"]["contact_share"])
    motion = Motion.load(best["motion"] / "motion.npz")
    bare = [
        t.replace(extras={k: v for k, v in t.extras.items() if k != "contacts"})
        for t in motion.tracks
    ]
    motion = replace(motion, tracks=bare)
    built = build_world(motion, None)
    names = [r.name for r in built.rigs]
    i = names.index(f"person_{best['id']}")
    before = joint_positions(built.rigs[i])[:, list(POINTS)]
    result = lock_world(built, motion)
    after = joint_positions(built.rigs[i])[:, list(POINTS)]
    return f"{best['clip']} person {best['id']}", before, after, result.reports[best["id"]].contacts


def plot(path: Path, panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(panels), 3, figsize=(16, 4.0 * len(panels)), width_ratios=(1.6, 1.6, 1), squeeze=False
    )
    for row, (title, before, after, flags) in zip(axes, panels, strict=True):
        frames = np.arange(1, len(before))
        for side, ax in enumerate(row[:2]):
            for p, color, label in ((side, "tab:blue", "ankle"), (side + 2, "tab:red", "toe")):
                step_b = 1000 * np.linalg.norm(np.diff(before[:, p], axis=0), axis=-1)
                step_a = 1000 * np.linalg.norm(np.diff(after[:, p], axis=0), axis=-1)
                ax.plot(frames, step_b, color=color, alpha=0.35, lw=0.9, ls="--",
                        label=f"{label} before")  # fmt: skip
                ax.plot(frames, step_a, color=color, lw=1.5, label=f"{label} after")
                ax.fill_between(np.arange(len(flags)), 0 if p < 2 else 0.5, 0.5 if p < 2 else 1,
                                where=flags[:, p], transform=ax.get_xaxis_transform(), color=color,
                                alpha=0.10, step="mid", lw=0)  # fmt: skip
            ax.set_ylim(0, 40)
            ax.set_xlabel("frame")
            ax.set_ylabel("displacement, mm/frame")
            foot = ("left", "right")[side]
            ax.set_title(f"{title}: {foot} foot (shaded: ankle / toe in contact)", fontsize=10)
            ax.legend(loc="upper right", fontsize=7, ncol=2)
        top = row[2]
        for p, color in ((0, "tab:green"), (1, "tab:purple")):
            top.plot(before[:, p, 0], -before[:, p, 2], color=color, alpha=0.35, lw=0.9, ls="--")
            top.plot(after[:, p, 0], -after[:, p, 2], color=color, lw=1.4)
            top.scatter(after[flags[:, p], p, 0], -after[flags[:, p], p, 2], s=5, color=color)
        top.set_aspect("equal", adjustable="datalim")
        top.set_title("ankles from above, m (left green, right purple; dots: contact)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_footlock"))
    parser.add_argument("--plot", type=Path, default=Path("/tmp/team/shots/footlock.png"))
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs in --out")
    args = parser.parse_args()
    rows = run_clips(args.out, args.reuse)
    synth, keep = synthetic()
    secs = timing()
    lines = [
        "## Foot locking (`benchmarks/bench_footlock.py`)",
        "",
        "Real clips through the embedded model (`mocap run CLIP --model lite`), per track: the share of "
        "frames with a foot in contact, foot sliding over the contact frames (mean displacement of the "
        "ankles and toes, mm/frame, WHAM/GVHMR's definition), mean ground penetration of the lowest sole "
        "(mm, all frames) and floating during contact (mm), before -> after locking; frames on which a "
        "lock had to be let go; *depth*: the mean change of the distance to the person that their "
        'planted feet asked for (`mocap/ground_depth.py`; "before" is the motion before it). '
        "Contacts are the detected ones (no ground truth here).",
        "",
        "| clip | fps | track | frames | in contact | sliding mm/frame | penetration mm | floating mm "
        "| let go | depth |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["contacts"]
        b, a = c["before"], c["after"] or c["before"]
        lines.append(
            f"| {r['clip']} | {r['fps']:g} | {r['id']} | {r['frames']} | {100 * b['contact_share']:.0f} % "
            f"| {b['sliding_mm_per_frame']:.1f} -> {a['sliding_mm_per_frame']:.1f} "
            f"| {b['penetration_mm']:.1f} -> {a['penetration_mm']:.1f} "
            f"| {b['floating_mm']:.1f} -> {a['floating_mm']:.1f} | {c['released_frames']} "
            f"| {100 * c.get('depth_change', 0.0):.1f}% |"
        )
    lines += [
        "",
        "Synthetic gait with known contacts (`tests/synthetic_gait.py`, estimator noise seeds 0-4: slow "
        "root drift, leg-angle errors, jitter), 30 fps; sliding over the true stance frames:",
        "",
        "| clip | contact F1 | sliding before | sliding after | reduction |",
        "|---|---|---|---|---|",
        *synth,
        "",
        f"Detection and locking: {secs:.2f} s per 1,000 frames and person (numpy, one core).",
    ]
    write_section("footlock", "\n".join(lines))
    print("\n".join(lines))
    walk_b, walk_a, walk_c = keep["walk"]
    plot(
        args.plot, [real_track(args.out, rows), ("synthetic walk, seed 0", walk_b, walk_a, walk_c)]
    )
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
