"""A video to BVH and FBX files for Blender: one animated skeleton per person.

    python examples/video_to_blender.py                          # the walking-crowd demo clip
    python examples/video_to_blender.py dance.mp4 -o out --smpl SMPL_NEUTRAL.pkl --formats bvh,fbx,blend

Then in Blender: File > Import > FBX (or Motion Capture (.bvh)) and pick out/<clip>/person_<id>.fbx.
The same as `mocap run VIDEO -o OUT`, written with the Python API so it can be adapted.
"""

import argparse
import os
from pathlib import Path

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
        "video", nargs="?", default=str(DATA / "videos" / "walking_crowd_1080p.mp4")
    )
    parser.add_argument("-o", "--output", default="out/video_to_blender")
    parser.add_argument(
        "--checkpoint", help="model weights (default: trained featup-deformable, else HMR2.0)"
    )
    parser.add_argument("--detector", help="YOLO .pt file or model name (default: a COCO model)")
    parser.add_argument("--smpl", help="SMPL_NEUTRAL.pkl: shaped skeletons and skinned meshes")
    parser.add_argument("--formats", default="bvh,fbx", help="any of npz,bvh,fbx,blend,glb")
    parser.add_argument("--end", type=float, help="stop after this many seconds")
    args = parser.parse_args()

    settings = RunSettings(
        checkpoint=args.checkpoint,
        detector=args.detector,
        smpl=args.smpl,
        formats=args.formats.split(","),
        end=args.end,
        smooth="offline",  # zero-lag smoothing on SO(3): clean curves for animation
        overwrite=True,
    )
    result = process_video(args.video, args.output, settings, progress=True)
    print(f"{len(result.track_lengths)} people, {result.frames} frames -> {result.out_dir}")
    for path in result.files:
        if path.suffix in (".bvh", ".fbx", ".blend", ".glb"):
            print(f"  import into Blender: {path}")


if __name__ == "__main__":
    try:
        main()
    except MocapError as exc:  # a user-caused problem: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
