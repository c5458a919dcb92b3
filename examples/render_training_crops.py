"""Render augmented training crops with their 2D joints, for a human to check the data pipeline.

    python examples/render_training_crops.py [--data NPZ[:IMGROOT]] [--out crops.png] [--seed 0]

Each row is one sample: the plain HMR2.0 crop, then augmented draws (scale, rotation, shift, flip,
colour). Joints are drawn with SPIN's left side in blue, right side in red, the rest in green; if the
pipeline is right they sit on the person's joints in every column, and left stays left after flips.
"""

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from mocap.errors import MocapError
from mocap.paths import atomic_path
from mocap.train import augment as aug
from mocap.train import data as D

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "spin_npz"
LEFT = {3, 4, 5, 9, 10, 11, 20, 22}
RIGHT = {0, 1, 2, 6, 7, 8, 21, 23}


def draw(sample: D.Sample) -> np.ndarray:
    """(256, 192, 3) BGR picture of a sample's crop with its joints."""
    assert sample.image is not None
    rgb = (sample.image.transpose(1, 2, 0) * aug.IMAGENET_STD + aug.IMAGENET_MEAN) * 255.0
    bgr = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8)[:, :, ::-1])
    xy = aug.normalized_to_pixels(sample.keypoints_2d[:, :2].astype(np.float64))
    for j, ((x, y), conf) in enumerate(zip(xy, sample.keypoints_2d[:, 2], strict=True)):
        if conf > 0:
            colour = (255, 80, 0) if j in LEFT else (0, 0, 255) if j in RIGHT else (0, 200, 0)
            cv2.circle(bgr, (round(x), round(y)), 3, colour, -1, cv2.LINE_AA)
    return bgr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=f"{SHARED}/test_h36m.npz:{SHARED}/images/h36m")
    parser.add_argument("--out", type=Path, default=Path("training_crops.png"))
    parser.add_argument("--draws", type=int, default=4, help="augmented columns per sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ann = D.load_annotations(D.parse_data_spec(args.data))
    rng = np.random.default_rng(args.seed)
    cfg = aug.AugmentConfig()
    rows = []
    for i in range(len(ann)):
        params = [aug.AugmentParams()] + [aug.sample_params(cfg, rng) for _ in range(args.draws)]
        rows.append(np.concatenate([draw(D.make_sample(ann, i, p, i)) for p in params], axis=1))
    tmp = atomic_path(args.out)
    cv2.imwrite(str(tmp), np.concatenate(rows, axis=0))
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({len(ann)} samples x {args.draws + 1} crops)")


if __name__ == "__main__":
    try:
        main()
    except MocapError as exc:  # a user-caused problem: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
