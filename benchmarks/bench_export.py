"""Export and smoothing speed: seconds per 1,000 frames for each format, and per 1,000 frames x 24 joints.

Run: ``.venv/bin/python benchmarks/bench_export.py [--frames 1000] [--repeats 3] [--no-blender]``.
Writes the ``export`` section of docs/benchmarks.md.

The clip is synthetic but realistic in size: a 24-joint SMPL rig with smoothly varying rotations and
root motion (per-frame noise added for the smoothing runs). Native formats (BVH, npz) and smoothing
run in this process (median of ``--repeats``); FBX / .blend / GLB go through ``exporters.blender``
(one child process; the times exclude Blender's start-up, which is reported separately), with and
without a skinned 6,890-vertex mesh (the synthetic SMPL-format body of the test suite).
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests")]

from _report import write_section  # noqa: E402

from exporters import write_rig_npz  # noqa: E402
from exporters.bvh import write_bvh  # noqa: E402
from exporters.rig import RigAnimation, RigMesh, smpl_pose_dirs  # noqa: E402
from mocap.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS  # noqa: E402
from mocap.body.skeleton import builtin_skeleton  # noqa: E402
from mocap.smoothing import smooth_offline, smooth_oneeuro  # noqa: E402


def synthetic_rig(frames: int, fps: float = 30.0, seed: int = 0) -> RigAnimation:
    """A rig whose joints swing smoothly (a few Hz at most) while the root walks forward."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps
    amp = rng.uniform(0.2, 0.8, (24, 3))
    freq = rng.uniform(0.3, 2.0, (24, 3))
    rotvec = amp * np.sin(2 * np.pi * freq * t[:, None, None] + rng.uniform(0, 6, (24, 3)))
    rot = Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix().reshape(frames, 24, 3, 3)
    root = np.stack([0.3 * np.sin(t), 0.9 + 0.02 * np.sin(6 * t), 1.2 * t], axis=1)
    skel = builtin_skeleton()
    return RigAnimation("bench", SMPL_JOINT_NAMES, SMPL_PARENTS, skel.offsets(), root, rot, fps)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def smpl_mesh(tmp: Path) -> RigMesh | None:
    """The synthetic SMPL-format body's rest mesh, or None when the test helper is unavailable."""
    try:
        from synthetic_smpl import write_synthetic_smpl

        from mocap.body.smpl import load_body_model
    except ImportError:
        return None
    body = load_body_model(str(write_synthetic_smpl(tmp)), required=True)
    assert body is not None
    return RigMesh(
        body.rest_vertices(np.zeros(10)),
        np.asarray(body.faces, np.int64),
        body.lbs_weights,
        pose_dirs=smpl_pose_dirs(body),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-blender", action="store_true", help="skip FBX / .blend / GLB")
    args = parser.parse_args()
    n, per = args.frames, 1000.0 / args.frames
    rig = synthetic_rig(n)
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="mocap-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        rows.append(
            ("BVH (native)", median_time(lambda: write_bvh(rig, tmp / "a.bvh"), args.repeats))
        )
        rows.append(
            ("npz (native)", median_time(lambda: write_rig_npz(rig, tmp / "a.npz"), args.repeats))
        )
        if not args.no_blender:
            from exporters.blender import benchmark_blender_export

            start = time.perf_counter()
            secs = benchmark_blender_export(rig)
            wall = time.perf_counter() - start
            for fmt in ("fbx", "blend", "glb"):
                rows.append((f"{fmt.upper()} via Blender, armature only", secs[fmt]))
            rows.append(("Blender scene build (armature + keys)", secs["scene"]))
            startup = wall - sum(secs.values())
            mesh = smpl_mesh(tmp)
            if mesh is not None:
                rig.mesh = mesh
                secs = benchmark_blender_export(rig, pose_correctives=False)
                for fmt in ("fbx", "blend", "glb"):
                    rows.append((f"{fmt.upper()} via Blender, skinned SMPL mesh", secs[fmt]))
                secs = benchmark_blender_export(rig)
                for fmt in ("fbx", "blend", "glb"):
                    label = f"{fmt.upper()} via Blender, SMPL mesh + 207 pose correctives"
                    rows.append((label, secs[fmt]))
                rows.append(("Blender scene build with mesh", secs["scene"]))
                rig.mesh = None

    noisy = rig.local_rotations @ Rotation.from_rotvec(
        np.random.default_rng(1).normal(0, 0.05, (n * 24, 3))
    ).as_matrix().reshape(n, 24, 3, 3)
    times = np.arange(n) / rig.fps
    smooth_rows = [
        ("offline, strength 1", lambda: smooth_offline(noisy, rig.root_positions, times, 1.0)),
        ("offline, strength 2", lambda: smooth_offline(noisy, rig.root_positions, times, 2.0)),
        (
            "One-Euro (frame by frame)",
            lambda: smooth_oneeuro(noisy, rig.root_positions, times, 1.0),
        ),
    ]
    smooth_secs = [(name, median_time(fn, args.repeats)) for name, fn in smooth_rows]

    lines = [
        f"Export of one person, {n} frames at 30 fps, 24 joints; seconds per 1,000 frames "
        f"(median of {args.repeats} for native formats; Blender formats timed inside the child process).",
        "",
        "| format | s / 1,000 frames |",
        "|---|---|",
    ]
    lines += [f"| {name} | {sec * per:.3f} |" for name, sec in rows]
    if not args.no_blender:
        lines += [
            "",
            f"Blender child start-up and data transfer (once per export call): {startup:.2f} s.",
        ]
    lines += [
        "",
        "Smoothing on SO(3) (rotations of 24 joints + root translation), seconds per 1,000 frames x 24 joints:",
        "",
        "| mode | s / 1,000 frames |",
        "|---|---|",
    ]
    lines += [f"| {name} | {sec * per:.3f} |" for name, sec in smooth_secs]
    markdown = "\n".join(lines)
    print(markdown)
    write_section("export", markdown)


if __name__ == "__main__":
    main()
