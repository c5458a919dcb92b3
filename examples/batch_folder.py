"""Convert a folder of clips with one loaded model; finished clips are skipped on the next run.

    python examples/batch_folder.py                       # the three demo videos
    python examples/batch_folder.py shoot/ -o out --formats bvh

The same as `mocap batch FOLDER -o OUT`, with the Python API: load the detector and model once
(``build_engines``), then ``process_video`` per clip; a clip that fails is reported and the rest go on.
"""

import argparse
import os
from pathlib import Path

from mocap.errors import MocapError
from mocap.pipeline.batch_cmd import collect_clips, output_names
from mocap.pipeline.config import RunSettings
from mocap.pipeline.run import is_done, process_video
from mocap.pipeline.run_cmd import build_engines

DATA = Path(
    os.environ.get("MOCAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", default=str(DATA / "videos"))
    parser.add_argument("-o", "--output", default="out/batch_folder")
    parser.add_argument(
        "--checkpoint", help="model weights (default: trained featup-deformable, else HMR2.0)"
    )
    parser.add_argument("--detector", help="YOLO .pt file or model name (default: a COCO model)")
    parser.add_argument("--formats", default="npz,bvh")
    parser.add_argument("--end", type=float, help="only the first seconds of each clip")
    args = parser.parse_args()

    settings = RunSettings(
        checkpoint=args.checkpoint,
        detector=args.detector,
        formats=args.formats.split(","),
        end=args.end,
    )
    clips, missing, _ = collect_clips([args.folder])
    out = Path(args.output)
    engines = None
    for clip, name in zip(clips, output_names(clips), strict=True):
        if is_done(out / name):
            print(f"{name}: already done")
            continue
        engines = engines or build_engines(settings)  # loaded once, on the first clip that needs it
        try:
            result = process_video(clip, out, settings, engines, name=name)
        except MocapError as exc:
            print(f"{name}: failed: {exc}")
            continue
        print(
            f"{name}: {len(result.track_lengths)} people, {result.frames} frames -> {result.out_dir}"
        )
    for m in missing:
        print(f"{m.name}: failed: {m.error}")


if __name__ == "__main__":
    try:
        main()
    except MocapError as exc:  # a user-caused problem: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
