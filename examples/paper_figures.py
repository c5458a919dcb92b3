"""The paper's figures for the people in one photo: feature PCA (Fig. 3) and deformable-attention
sampling points (Fig. 4), one pair per detected person.

    python examples/paper_figures.py --checkpoint featup-deformable.safetensors
    python examples/paper_figures.py photo.jpg --checkpoint x8.safetensors -o figures --max-people 3

Detects the people with YOLO, then runs `mocap figures` on each person's box: the crop as the
predictor sees it, the native 16x12 ViTPose map next to the FeatUp-upsampled one (first three
principal components as RGB), and every sampling point of the last decoder layer coloured by its
attention weight. Use trained weights to see the paper's pictures; random ones only show the plumbing.
"""

import argparse
import os
from pathlib import Path

import cv2

from mocap.cli import main as mocap
from mocap.errors import MocapError
from mocap.pipeline.detect import DEFAULT_DETECTOR, PersonDetector

DATA = Path(
    os.environ.get("MOCAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", nargs="?", default=str(DATA / "images" / "coco_val2014_241.jpg"))
    parser.add_argument(
        "--checkpoint", required=True, help="a featup-deformable (or vitpose-deformable) checkpoint"
    )
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, help="YOLO .pt file or model name")
    parser.add_argument("--max-people", type=int, default=2, help="the largest N people")
    parser.add_argument("-o", "--output", default="out/paper_figures")
    args = parser.parse_args()

    image = cv2.imread(args.image)
    if image is None:
        raise SystemExit(f"cannot read {args.image}")
    people = PersonDetector(args.detector, conf=0.4, device="cpu").detect([image])[0]
    areas = (people.boxes[:, 2] - people.boxes[:, 0]) * (people.boxes[:, 3] - people.boxes[:, 1])
    for rank, i in enumerate(areas.argsort()[::-1][: args.max_people]):
        out = Path(args.output) / f"person_{rank}"
        out.mkdir(parents=True, exist_ok=True)
        box = [f"{v:.0f}" for v in people.boxes[i]]
        print(f"person {rank}: box {' '.join(box)}")
        code = mocap(
            ["figures", args.image, "--checkpoint", args.checkpoint, "--box", *box, "-o", str(out)]
        )
        if code != 0:  # `mocap figures` printed the files it wrote, or the error
            raise SystemExit(code)


if __name__ == "__main__":
    try:
        main()
    except MocapError as exc:  # a user-caused problem: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
