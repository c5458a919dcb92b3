"""Render the paper's figures for one person crop: feature PCA (Fig. 3) and sampling points (Fig. 4).

``mocap figures IMAGE --checkpoint MODEL.safetensors [--box X1 Y1 X2 Y2] [-o DIR]`` crops the person
as the predictor does, runs a deformable-head checkpoint and writes

- ``<image>_features.png``: the crop, the native 16x12 backbone map and the upsampled map of the same
  layer, each shown as its first three principal components (fitted jointly on both maps, so the
  colours are comparable) mapped to RGB;
- ``<image>_sampling.png``: the crop with every sampling point of the last decoder layer (all
  queries, heads, levels and points) coloured by its attention weight (viridis, relative to the
  largest), and the queries' reference points as white crosses.

Where the points land: a location x in [0, 1] on a level of width W_l is cell coordinate
``x W_l - 0.5`` (``align_corners=False``). A native ViTPose cell i covers crop pixels
[16 i - 2, 16 i + 14) (patch embedding padding 2), so native-level points are drawn 2 pixels up and
left of where a plain rescale would put them; upsampled maps are aligned with the crop pixels.
"""

import argparse
import contextlib
import os
from pathlib import Path

import numpy as np

from mocap.errors import MocapError
from mocap.paths import atomic_path

PATCH_PADDING_PX = 2.0  # ViTPose patch embedding padding: native cells start 2 px up/left
CROP_HEIGHT, CROP_WIDTH = 256, 192
_MAX_FIT_PIXELS = 20_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mocap figures``."""
    parser.add_argument("image", type=Path, help="photo (or video frame) containing the person")
    parser.add_argument("--checkpoint", type=Path, required=True, help="deformable-head checkpoint")
    parser.add_argument(
        "--box",
        type=float,
        nargs=4,
        metavar=("X1", "Y1", "X2", "Y2"),
        help="person box in pixels (default: the whole image)",
    )
    parser.add_argument("--layer", type=int, help="backbone layer for the PCA (default: last tap)")
    parser.add_argument("--scale", type=int, default=2, help="magnification of the output images")
    parser.add_argument("-o", "--out", type=Path, default=Path("."), help="output folder")


def run(args: argparse.Namespace) -> int:
    """Crop, run the model once, write the figures that the model supports."""
    import cv2
    import torch

    from mocap.model.checkpoint import load_checkpoint
    from mocap.model.crop import crop_person

    image = cv2.imread(str(args.image), cv2.IMREAD_COLOR) if args.image.is_file() else None
    if image is None:
        raise MocapError(f"cannot read image {args.image}; pass a JPEG or PNG file")
    h, w = image.shape[:2]
    box = np.array(args.box if args.box is not None else (0, 0, w, h), np.float64)
    crop = crop_person(image, box)
    model = load_checkpoint(args.checkpoint).eval()
    with torch.no_grad():
        aux = model(torch.from_numpy(crop.image)[None]).aux
    rgb = denormalise(crop.image)
    written = []
    maps = {k: v[0].float() for k, v in aux.items() if k.startswith("feat_l")}
    layers = sorted({int(k.split("_")[1][1:]) for k in maps})
    layer = args.layer if args.layer is not None else (layers[-1] if layers else None)
    prefix = f"feat_l{layer}_x"
    factors = sorted(int(k[len(prefix) :]) for k in maps if k.startswith(prefix))
    if len(factors) > 1 and factors[0] == 1:
        low, high = maps[f"{prefix}1"].numpy(), maps[f"{prefix}{factors[-1]}"].numpy()
        fig = feature_pca_figure(rgb, low, high)
        written.append(write_png(args.out / f"{args.image.stem}_features.png", fig, args.scale))
    if "sampling_locations" in aux:
        levels = [tuple(v.shape[-2:]) for k, v in aux.items() if k.startswith("feat_l")]
        fig = sampling_points_figure(
            rgb,
            aux["sampling_locations"][0].float().numpy(),
            aux["attention_weights"][0].float().numpy(),
            level_shifts(levels),
            aux["reference_points"][0].float().numpy(),
            scale=args.scale,
        )
        written.append(write_png(args.out / f"{args.image.stem}_sampling.png", fig, 1))
    if not written:
        raise MocapError(
            f"{args.checkpoint} has no multi-scale deformable head (or no tapped layer {layer}); "
            "figures need a featup-deformable or vitpose-deformable checkpoint"
        )
    for path in written:
        print(path)
    return 0


def denormalise(image: np.ndarray) -> np.ndarray:
    """(3, H, W) ImageNet-normalised RGB float -> (H, W, 3) uint8 RGB."""
    from mocap.model.crop import IMAGENET_MEAN, IMAGENET_STD

    rgb = image.transpose(1, 2, 0) * (255.0 * IMAGENET_STD) + 255.0 * IMAGENET_MEAN
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def joint_pca(maps: list[np.ndarray], components: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Project feature maps onto principal components fitted jointly on all of them.

    Arguments:
        maps: feature maps (C, H_i, W_i) with the same C.
        components: number of components kept.
    Returns:
        per map (H_i, W_i, components) float32 in [0, 1]: each component scaled by its 1st and
        99th percentile over all maps, signs fixed so that the largest loading is positive.
    """
    pixels = [m.reshape(m.shape[0], -1).T.astype(np.float64) for m in maps]  # (N_i, C)
    rng = np.random.default_rng(seed)
    # fit on at most _MAX_FIT_PIXELS pixels, the same share from every map
    share = _MAX_FIT_PIXELS // len(pixels)
    fit = np.concatenate(
        [p if len(p) <= share else p[rng.choice(len(p), share, replace=False)] for p in pixels]
    )
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    basis = vt[:components]  # (k, C)
    basis *= np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(1)])[:, None]
    projected = [(p - mean) @ basis.T for p in pixels]
    everything = np.concatenate(projected)
    lo, hi = np.percentile(everything, 1, axis=0), np.percentile(everything, 99, axis=0)
    scaled = [np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0, 1) for p in projected]
    return [
        s.reshape(m.shape[1], m.shape[2], components).astype(np.float32)
        for s, m in zip(scaled, maps, strict=True)
    ]


def feature_pca_figure(crop_rgb: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Fig. 3: [crop | backbone PCA | upsampled PCA], each panel the crop's size.

    Arguments:
        crop_rgb: (H, W, 3) uint8.
        low: (C, h, w) backbone map; high: (C, H', W') upsampled map of the same layer.
    Returns:
        (H, 3 W, 3) uint8 RGB. Low-resolution panels are enlarged with nearest-neighbour so
        their cells stay visible.
    """
    import cv2

    h, w = crop_rgb.shape[:2]
    panels = [crop_rgb]
    for pca in joint_pca([low, high]):
        rgb = (pca * 255).round().astype(np.uint8)
        panels.append(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_NEAREST))
    return np.concatenate(panels, axis=1)


def level_shifts(
    level_shapes: list[tuple[int, int]], crop_height: int = CROP_HEIGHT
) -> list[float]:
    """Pixel offset per level: -2 for native ViTPose maps (16 px cells), 0 for upsampled maps."""
    return [-PATCH_PADDING_PX if h * 16 == crop_height else 0.0 for h, _ in level_shapes]


def locations_to_pixels(
    locations: np.ndarray, shifts: list[float], size: tuple[int, int]
) -> np.ndarray:
    """Normalised sampling locations -> crop pixel centres.

    Arguments:
        locations: (..., L, P, 2) normalised (x, y) per level.
        shifts: per-level offset in pixels (see :func:`level_shifts`).
        size: crop (H, W).
    Returns:
        (..., L, P, 2) pixel coordinates (x, y), pixel centres at integers.
    """
    h, w = size
    scale = np.array([w, h], np.float64)
    offsets = np.asarray(shifts, np.float64).reshape(-1, 1, 1)
    return locations * scale - 0.5 + offsets


def sampling_points_figure(
    crop_rgb: np.ndarray,
    sampling_locations: np.ndarray,
    attention_weights: np.ndarray,
    shifts: list[float],
    reference_points: np.ndarray | None = None,
    scale: int = 2,
    queries: list[int] | None = None,
) -> np.ndarray:
    """Fig. 4: sampling points of the last decoder layer over the crop, coloured by weight.

    Arguments:
        crop_rgb: (H, W, 3) uint8.
        sampling_locations: (Q, M, L, P, 2) normalised (x, y).
        attention_weights: (Q, M, L, P).
        shifts: per-level pixel offsets (:func:`level_shifts`).
        reference_points: (Q, 2) normalised, drawn as white crosses when given.
        scale: magnification of the output.
        queries: subset of query indices to draw (default all).
    Returns:
        (scale H, scale W, 3) uint8 RGB.
    """
    import cv2

    h, w = crop_rgb.shape[:2]
    keep = list(range(sampling_locations.shape[0])) if queries is None else queries
    pixels = locations_to_pixels(sampling_locations[keep], shifts, (h, w)).reshape(-1, 2)
    weights = attention_weights[keep].reshape(-1)
    canvas = cv2.resize(crop_rgb, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR)
    canvas = (canvas.astype(np.float32) * 0.6).astype(np.uint8)  # dim the photo under the points
    level = np.clip(weights / max(float(weights.max()), 1e-12), 0, 1)
    colours = cv2.applyColorMap((level * 255).astype(np.uint8)[:, None], cv2.COLORMAP_VIRIDIS)
    colours = colours[:, 0, ::-1]  # BGR -> RGB
    radius = max(1, scale)
    for idx in np.argsort(weights):  # strongest on top
        x, y = (pixels[idx] + 0.5) * scale - 0.5
        if -radius <= x < w * scale + radius and -radius <= y < h * scale + radius:
            colour = tuple(int(c) for c in colours[idx])
            cv2.circle(canvas, (round(x), round(y)), radius, colour, -1, lineType=cv2.LINE_AA)
    if reference_points is not None:
        for x, y in reference_points[keep] * np.array([w, h]) * scale:
            cv2.drawMarker(
                canvas, (round(x), round(y)), (255, 255, 255), cv2.MARKER_CROSS, 4 * scale
            )
    return canvas


def write_png(path: Path, image_rgb: np.ndarray, scale: int = 1) -> Path:
    """Write (H, W, 3) uint8 RGB as PNG (enlarged ``scale`` x, nearest) via a temporary name."""
    import cv2

    if scale > 1:
        image_rgb = np.repeat(np.repeat(image_rgb, scale, axis=0), scale, axis=1)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image_rgb[:, :, ::-1]))
    if not ok:
        raise MocapError(f"could not encode {path.name} as PNG; check the image size")
    tmp = atomic_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        raise MocapError(
            f"cannot write {path} ({exc.strerror}); choose a writable -o folder"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path
