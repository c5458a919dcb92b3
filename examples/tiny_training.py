"""A tiny training run end to end: train a small featup-deformable decoder for a few steps on the
Human3.6M samples in ../shared/data, then turn a video into motion with the checkpoint it wrote.

    python examples/tiny_training.py --smpl SMPL_NEUTRAL.pkl
    python examples/tiny_training.py --smpl SMPL_NEUTRAL.pkl --steps 200 --size full   # a real start

The numbers of a few steps are meaningless; the point is the workflow: `mocap train hmr` writes
``RUN/checkpoints/step_*.safetensors`` (architecture embedded), which `mocap run --checkpoint` uses.
"""

import argparse
import os
from pathlib import Path

from mocap.cli import main as mocap
from mocap.errors import MocapError
from mocap.pipeline.config import RunSettings
from mocap.pipeline.run import process_video

DATA = Path(
    os.environ.get("MOCAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smpl", required=True, help="SMPL_NEUTRAL.pkl (training poses the ground-truth body)"
    )
    parser.add_argument(
        "--data",
        default=f"{DATA / 'spin_npz' / 'test_h36m.npz'}:{DATA / 'spin_npz' / 'images' / 'h36m'}",
    )
    parser.add_argument("--video", default=str(DATA / "videos" / "posetrack_5frames_mpeg4.mp4"))
    parser.add_argument("--detector", help="YOLO .pt file or model name (default: a COCO model)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("-o", "--output", default="out/tiny_training")
    args = parser.parse_args()

    run_dir = Path(args.output) / "run"
    resume = ["--resume"] if run_dir.exists() else []  # a second call continues the same run
    code = mocap([
        "train", "hmr", "--variant", "featup-deformable", "--size", args.size, "--data", args.data,
        "--smpl", args.smpl, "--steps", str(args.steps), "--batch-size", "4", "--checkpoint-every",
        str(args.steps), "--log-every", "1", "--workers", "0", "--device", "cpu", "--precision", "fp32",
        "--out", str(run_dir), *resume,
    ])  # fmt: skip
    if code != 0:
        raise SystemExit(code)
    checkpoint = sorted((run_dir / "checkpoints").glob("step_*.safetensors"))[-1]
    print(f"trained checkpoint: {checkpoint}")

    settings = RunSettings(
        checkpoint=str(checkpoint),
        detector=args.detector,
        smpl=args.smpl,
        formats=["bvh"],
        end=0.1,
        overwrite=True,
    )
    result = process_video(args.video, Path(args.output) / "motion", settings)
    print(f"{len(result.track_lengths)} people, {result.frames} frames -> {result.out_dir}")


if __name__ == "__main__":
    try:
        main()
    except MocapError as exc:  # a user-caused problem: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
