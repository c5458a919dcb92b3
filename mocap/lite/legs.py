"""Legs that land on the image: BlazePose's leg landmarks lifted onto their 2D viewing rays.

BlazePose's 2D landmarks are far more accurate than its metric "world" landmarks, whose depth is
a guess from one image: a leg swinging towards or away from the camera comes out too straight,
and a planted foot, still in the image, moves over the floor in 3D (the walker nearest the camera
in the walking-crowd clip). Once the body is placed in the camera frame (:mod:`mocap.lite.fit`),
each leg is rebuilt down the chain hip -> knee -> ankle -> heel and toe: a landmark seen with
confidence is put on its viewing ray at its bone's length from its (already rebuilt) parent, the
nearer to the estimate's own depth of the two points that satisfy both (Taylor's 1999 lifting
with known bone lengths, its depth ambiguity resolved by the 3D estimate); where the ray passes
too far from the parent, on the bone's line closest to the ray. An unconfident landmark keeps its
offset from its parent. The rebuilt landmarks then go through the same IK again.
"""

import numpy as np

from mocap.lite.landmarks import L

MIN_VISIBILITY = 0.5  # a landmark seen less confidently keeps the 3D estimate
# per side: (parent, child) links in order down the leg
CHAINS = tuple(
    ((L[f"{s}_hip"], L[f"{s}_knee"]), (L[f"{s}_knee"], L[f"{s}_ankle"]),
     (L[f"{s}_ankle"], L[f"{s}_heel"]), (L[f"{s}_ankle"], L[f"{s}_foot_index"]))
    for s in ("left", "right")
)  # fmt: skip


def viewing_rays(keypoints: np.ndarray, image_size: tuple[int, int], focal: float) -> np.ndarray:
    """(...,3) unit camera-frame directions through pixels (...,2) (x right, y down, z forward)."""
    w, h = image_size
    d = np.concatenate(
        [(keypoints - [w / 2.0, h / 2.0]) / focal, np.ones(keypoints.shape[:-1] + (1,))], axis=-1
    )
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def onto_ray(parent: np.ndarray, estimate: np.ndarray, ray: np.ndarray) -> np.ndarray:
    """(T,3) points on ``ray`` (T,3, unit, from the camera) at the distance of ``estimate`` from
    ``parent``; of the two, the one nearer ``estimate`` along the ray. Where no point of the ray
    is that far from the parent, the point at that distance towards the ray's nearest point."""
    length = np.linalg.norm(estimate - parent, axis=-1)
    along = (ray * parent).sum(-1)
    disc = along**2 - (parent * parent).sum(-1) + length**2
    root = np.sqrt(np.maximum(disc, 0.0))
    depth = (ray * estimate).sum(-1)
    s = np.where(
        np.abs(along + root - depth) < np.abs(along - root - depth), along + root, along - root
    )
    on_ray = s[:, None] * ray
    nearest = along[:, None] * ray - parent
    towards = parent + length[:, None] * nearest / np.maximum(
        np.linalg.norm(nearest, axis=-1, keepdims=True), 1e-9
    )
    return np.where((disc >= 0.0)[:, None], on_ray, towards)


def lift_legs(
    posed: np.ndarray, keypoints: np.ndarray, image_size: tuple[int, int], focal: float
) -> np.ndarray:
    """(T,33,3) camera-frame landmarks ``posed`` with the legs' rebuilt on the image (see the
    module docstring). ``keypoints``: (T,33,3) pixels and visibility."""
    out = posed.copy()
    rays = viewing_rays(keypoints[..., :2], image_size, focal)
    seen = keypoints[..., 2] >= MIN_VISIBILITY
    for chain in CHAINS:
        for parent, child in chain:
            offset = posed[:, child] - posed[:, parent]
            keep = out[:, parent] + offset  # the estimate, carried by the rebuilt parent
            lifted = onto_ray(out[:, parent], keep, rays[:, child])
            out[:, child] = np.where(seen[:, child, None], lifted, keep)
    return out
