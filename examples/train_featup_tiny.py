"""Pretrain FeatUp JBU upsamplers on the COCO photos in ../shared/data, then look at the features.

    python examples/train_featup_tiny.py                       # tiny random ViT, CPU, a minute
    python examples/train_featup_tiny.py --steps 40 --factor 8 -o out/featup
    python examples/train_featup_tiny.py --backbone hmr2.ckpt --images coco/train2017 --steps 2000

Runs ``mocap train featup`` (a second call continues the same run), exports a featup-deformable
checkpoint for ``mocap train hmr --init``, and writes ``features.png``: per photo, the crop, the
last tapped layer at its native 16x12 and after the trained JBU stack, both coloured by the same
3-component PCA (FeatUp's figure). With the tiny random backbone the features mean little; the point
is the workflow and that the upsampled map follows the image's edges.
"""

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from mocap.cli import main as mocap
from mocap.errors import MocapError
from mocap.model.checkpoint import load_checkpoint
from mocap.model.crop import IMAGENET_MEAN, IMAGENET_STD
from mocap.paths import atomic_output
from mocap.train.featup_data import ImageCrops, list_images
from mocap.train.featup_trainer import channel_norm

DATA = Path(
    os.environ.get("MOCAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def pca_colours(maps: list[np.ndarray]) -> list[np.ndarray]:
    """(C, H, W) maps -> (H, W, 3) uint8 images on one shared 3-component PCA basis."""
    flat = np.concatenate([m.reshape(m.shape[0], -1).T for m in maps])
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    proj = (flat - mean) @ vt[:3].T
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    out, start = [], 0
    for m in maps:
        n = m.shape[1] * m.shape[2]
        rgb = np.clip((proj[start : start + n] - lo) / (hi - lo + 1e-8), 0, 1)
        out.append((rgb.reshape(m.shape[1], m.shape[2], 3) * 255).astype(np.uint8))
        start += n
    return out


def draw_features(checkpoint: Path, images: Path, out: Path, count: int = 3) -> None:
    """Crop | native map (nearest) | JBU-upsampled map, one row per photo."""
    model = load_checkpoint(checkpoint).eval()
    assert model.levels is not None and model.upsamplers is not None
    layer = model.levels.layers[-1]
    dataset = ImageCrops(list_images(images)[:count])
    crops = torch.stack([torch.from_numpy(dataset[(i, 0)]) for i in range(len(dataset))])
    with torch.no_grad():
        lr = channel_norm(model.backbone(crops).taps[layer])
        hr = model.upsamplers[str(layer)](lr, crops, max_factor=model.levels.factor)[-1]
    size = (192, 256)
    rows = []
    for k in range(len(crops)):
        rgb = crops[k].permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN
        photo = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)[:, :, ::-1]
        low, high = pca_colours([lr[k].numpy(), hr[k].numpy()])
        low = cv2.resize(low, size, interpolation=cv2.INTER_NEAREST)[:, :, ::-1]
        high = cv2.resize(high, size, interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
        rows.append(np.concatenate([photo, low, high], axis=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        cv2.imwrite(str(tmp), np.concatenate(rows, axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default=str(DATA / "images"), help="folder of photos")
    parser.add_argument("--backbone", help="mocap or HMR2.0 checkpoint (default: tiny random ViT)")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--factor", type=int, choices=(2, 4, 8, 16), default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--jitters", type=int, default=2, help="views per step (paper: 5)")
    parser.add_argument("-o", "--output", default="out/train_featup_tiny")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a tiny model's many small ops run faster single-threaded

    out = Path(args.output)
    run_dir, model_path = out / "run", out / f"featup_x{args.factor}.safetensors"
    resume = ["--resume"] if (run_dir / "latest.json").exists() else []
    backbone = ["--backbone", args.backbone] if args.backbone else ["--size", args.size]
    code = mocap([
        "train", "featup", "--images", args.images, *backbone, "--factor", str(args.factor),
        "--out", str(run_dir), "--steps", str(args.steps), "--batch-size", "2",
        "--jitters", str(args.jitters), "--log-every", "1", "--checkpoint-every", str(args.steps),
        "--workers", "0", "--export-model", str(model_path), *resume,
    ])  # fmt: skip
    if code != 0:
        raise SystemExit(code)
    losses = [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    print("loss per step:", " ".join(f"{x:.3f}" for x in losses))
    figure = out / "features.png"
    draw_features(model_path, Path(args.images), figure)
    print(f"wrote {figure} (crop | native 16x12 map | x{args.factor} JBU map) and {model_path}")


if __name__ == "__main__":
    try:
        main()
    except MocapError as exc:  # a user-caused problem: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
