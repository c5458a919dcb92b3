"""Datasets in the SPIN/HMR npz layout, weighted mixing, deterministic subsets and sampling.

An npz holds per sample ``imgname``, ``center`` (2), ``scale`` (box side / 200), ``part`` (J x 3
pixels + confidence) and optionally ``S`` (J x 4, metres, camera frame, + confidence), ``pose`` (72
axis-angle SMPL) and ``shape`` (10). J is SPIN's 24 joints or the 17-joint Human3.6M layout (mmpose
"body3d" files, MPI-INF-3DHP test); 17-joint files are mapped into the 24-joint layout with the
missing joints at confidence 0, so every dataset mixes with every other.

Sampling is a pure function of ``(seed, step)``: batch ``t`` is drawn from its own generator, and
each sample carries its own augmentation seed. Resuming is "start at step t", and DDP ranks take
contiguous slices of the same global batch, so results do not depend on the number of processes or
data-loader workers.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from mocap.errors import MocapError
from mocap.npz import open_npz
from mocap.train import augment as aug

NUM_KEYPOINTS = 24
# Index in SPIN's 24-joint layout of each joint of the Human3.6M 17-joint layout.
SPIN24_FROM_H36M17: tuple[int, ...] = (14, 2, 1, 0, 3, 4, 5, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6)
SPIN24_PELVIS = 14


@dataclass(frozen=True)
class DataSpec:
    """One ``--data NPZ[:IMGROOT[:WEIGHT]]`` argument."""

    npz: Path
    image_root: Path
    weight: float = 1.0


def parse_data_spec(text: str) -> DataSpec:
    """Parse ``NPZ[:IMGROOT[:WEIGHT]]``; the image root defaults to the npz's folder."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise MocapError(
            f"--data {text!r} is not NPZ[:IMGROOT[:WEIGHT]]; write e.g. 3dpw.npz:imgs:0.3"
        )
    npz = Path(parts[0])
    root = Path(parts[1]) if len(parts) > 1 and parts[1] else npz.parent
    try:
        weight = float(parts[2]) if len(parts) > 2 and parts[2] else 1.0
    except ValueError:
        raise MocapError(f"--data {text!r}: weight {parts[2]!r} is not a number") from None
    if not weight > 0:
        raise MocapError(f"--data {text!r}: the weight must be positive")
    return DataSpec(npz, root, weight)


@dataclass
class Annotations:
    """Labels of one npz, in SPIN's 24-joint layout (source-image pixels).

    Attributes:
        image_paths: N resolved image files.
        center: (N, 2) box centres, pixels.  box_size: (N,) widened box sizes, pixels.
        keypoints_2d: (N, 24, 3) pixels + confidence.  joints_3d: (N, 24, 4) metres + confidence.
        pose: (N, 72) axis-angle.  betas: (N, 10).  has_smpl, has_3d: (N,) 0/1 float32.
    """

    image_paths: list[Path]
    center: np.ndarray
    box_size: np.ndarray
    keypoints_2d: np.ndarray
    joints_3d: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    has_smpl: np.ndarray
    has_3d: np.ndarray

    def __len__(self) -> int:
        return len(self.image_paths)


def _to_spin24(joints: np.ndarray, name: str, npz: Path) -> np.ndarray:
    """(N, J, C) with J in {24, 17} -> (N, 24, C), unmapped joints zero (confidence 0)."""
    if joints.shape[1] == NUM_KEYPOINTS:
        return joints.astype(np.float32)
    if joints.shape[1] == len(SPIN24_FROM_H36M17):
        out = np.zeros((joints.shape[0], NUM_KEYPOINTS, joints.shape[2]), np.float32)
        out[:, list(SPIN24_FROM_H36M17)] = joints
        return out
    raise MocapError(f"{npz}: '{name}' has {joints.shape[1]} joints; use SPIN's 24 or H36M's 17")


def _resolve_images(names: np.ndarray, root: Path, npz: Path) -> list[Path]:
    """``imgname`` relative to ``root``; names that are bare file names are looked up under it."""
    paths = [root / str(n) for n in names]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        by_name: dict[str, Path] = {}
        for p in root.rglob("*"):
            by_name.setdefault(p.name, p)
        for i in missing:
            found = by_name.get(Path(str(names[i])).name)
            if found is None:
                raise MocapError(
                    f"{npz}: image {names[i]!r} not found under {root}; give the image root as NPZ:IMGROOT"
                )
            paths[i] = found
    return paths


def load_annotations(spec: DataSpec) -> Annotations:
    """Read one SPIN-layout npz (no pickles) and resolve its images."""
    if not spec.npz.is_file():
        raise MocapError(f"dataset file {spec.npz} does not exist; check the --data path")
    try:
        with open_npz(spec.npz) as data:
            fields = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise MocapError(f"{spec.npz} is not a readable npz without pickles ({exc})") from None
    for key in ("imgname", "center", "scale", "part"):
        if key not in fields:
            raise MocapError(f"{spec.npz} lacks '{key}'; it must follow the SPIN npz layout")
    n = len(fields["imgname"])
    kp2d = _to_spin24(fields["part"], "part", spec.npz)
    if "S" in fields:
        joints_3d, has_3d = _to_spin24(fields["S"], "S", spec.npz), np.ones(n, np.float32)
    else:
        joints_3d, has_3d = np.zeros((n, NUM_KEYPOINTS, 4), np.float32), np.zeros(n, np.float32)
    if "pose" in fields and "shape" in fields:
        pose, betas = fields["pose"].astype(np.float32), fields["shape"].astype(np.float32)
        has_smpl = fields.get("has_smpl", np.ones(n)).astype(np.float32)
    else:
        pose, betas, has_smpl = (
            np.zeros((n, 72), np.float32),
            np.zeros((n, 10), np.float32),
            np.zeros(n, np.float32),
        )
    scale = fields["scale"].reshape(n, -1).max(axis=1)
    return Annotations(
        image_paths=_resolve_images(fields["imgname"], spec.image_root, spec.npz),
        center=fields["center"].reshape(n, 2).astype(np.float64),
        box_size=np.array([aug.box_size_from_scale(float(s)) for s in scale]),
        keypoints_2d=kp2d,
        joints_3d=joints_3d,
        pose=pose,
        betas=betas,
        has_smpl=has_smpl,
        has_3d=has_3d,
    )


def subset_indices(n: int, fraction: float) -> np.ndarray:
    """The deterministic ``fraction`` of ``range(n)`` used by ``--subset`` (fixed permutation, sorted)."""
    if not 0.0 < fraction <= 1.0:
        raise MocapError(f"--subset {fraction} must be in (0, 1]; the paper's setting is 0.2")
    keep = max(1, math.ceil(fraction * n))
    return np.sort(np.random.default_rng(20240517).permutation(n)[:keep])


@dataclass
class Sample:
    """One training example in crop space (numpy).

    Attributes:
        image: (3, 256, 192) float32 normalised crop, or None when features come from a cache.
        keypoints_2d: (24, 3) normalised crop coordinates (kp/256 - 0.5) + confidence.
        joints_3d: (24, 4) camera-frame metres + confidence.  pose: (72,) axis-angle.  betas: (10,).
        has_smpl, has_3d: 0/1.  index: global sample index (for the feature cache).
        features: cached backbone maps {name: (C, 16, 12) uint16 bfloat16 bits}, or None.
    """

    image: np.ndarray | None
    keypoints_2d: np.ndarray
    joints_3d: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    has_smpl: float
    has_3d: float
    index: int
    features: dict[str, np.ndarray] | None = None


def make_sample(
    ann: Annotations, i: int, params: aug.AugmentParams, index: int, load_image: bool = True
) -> Sample:
    """Crop and augment sample ``i`` of ``ann`` with ``params`` (image optional)."""
    matrix = aug.crop_matrix(ann.center[i], float(ann.box_size[i]), params)
    kp = ann.keypoints_2d[i].copy()
    kp[:, :2] = aug.pixels_to_normalized(aug.transform_points(kp[:, :2].astype(np.float64), matrix))
    j3d = ann.joints_3d[i].copy()
    rz = aug.rotation_z(params.rot_deg)
    j3d[:, :3] = j3d[:, :3] @ rz.T
    pose = aug.rotate_global_orient(ann.pose[i], params.rot_deg)
    image = None
    if load_image:
        src = cv2.imread(str(ann.image_paths[i]), cv2.IMREAD_COLOR)
        if src is None:
            raise MocapError(
                f"cannot read image {ann.image_paths[i]}; check the file or the image root"
            )
        if params.scale == 1.0 and params.rot_deg == 0.0 and params.shift == (0.0, 0.0):
            # no geometric augmentation: exactly the inference crop (4D-Humans' procedure)
            from mocap.model.crop import CROP_WIDTH, PATCH_LEFT, _warp, box_to_crop

            side = float(ann.box_size[i]) * 3 / 4  # the SPIN square box, before widening
            cx, cy = (float(v) for v in ann.center[i])
            box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
            center, size = box_to_crop(box)  # the inference crop's own (float32) arithmetic
            patch = _warp(src, center, size)
            bgr = patch[:, PATCH_LEFT : PATCH_LEFT + CROP_WIDTH].astype(np.float32)
        else:
            bgr = aug.warp_crop(src, matrix, float(ann.box_size[i]) * params.scale)
        image = aug.normalize_image(aug.apply_color(bgr[:, :, ::-1], params.color))
    sample = Sample(image, kp.astype(np.float32), j3d.astype(np.float32), pose.astype(np.float32),
                    ann.betas[i].copy(), float(ann.has_smpl[i]), float(ann.has_3d[i]), index)  # fmt: skip
    return flip_sample(sample) if params.flip else sample


def flip_sample(sample: Sample) -> Sample:
    """Mirror a sample (image (3, H, W)); applying it twice gives the input back exactly."""
    image = None if sample.image is None else np.ascontiguousarray(sample.image[..., ::-1])
    return Sample(image, aug.flip_keypoints_2d(sample.keypoints_2d), aug.flip_joints_3d(sample.joints_3d),
                  aug.flip_smpl_pose(sample.pose), sample.betas, sample.has_smpl, sample.has_3d, sample.index)  # fmt: skip


class MixedDataset(torch.utils.data.Dataset[Sample]):
    """Several annotation sets behind one global index; items are keyed by ``(index, aug_seed)``."""

    def __init__(
        self, datasets: list[Annotations], augment: aug.AugmentConfig, load_images: bool = True
    ):
        self.datasets = datasets
        self.augment = augment
        self.load_images = load_images
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in datasets])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (dataset, local index)."""
        d = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return d, index - int(self.offsets[d])

    def __getitem__(self, key: tuple[int, int]) -> Sample:  # type: ignore[override]
        index, seed = key
        d, i = self.locate(index)
        params = aug.sample_params(self.augment, np.random.default_rng(seed))
        return make_sample(self.datasets[d], i, params, index, self.load_images)


class MixtureBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Infinite weighted sampling; batch ``t`` depends only on ``(seed, t)``.

    Each global batch picks datasets by weight, then a sample uniformly inside the dataset's
    ``pools`` (its subset). This rank yields its contiguous slice of every global batch.

    Arguments:
        pools: per dataset, the global indices it may draw from.
        weights: per dataset mixing weight (normalised here).
        batch_size: global batch size (a multiple of ``world_size``).
        start_step: first batch to yield (resume).
    """

    def __init__(self, pools: list[np.ndarray], weights: list[float], batch_size: int, seed: int,
                 start_step: int = 0, rank: int = 0, world_size: int = 1):  # fmt: skip
        if batch_size % world_size:
            raise MocapError(
                f"--batch-size {batch_size} must be a multiple of the {world_size} processes"
            )
        self.pools, self.batch_size, self.seed = pools, batch_size, seed
        w = np.asarray(weights, dtype=np.float64)
        self.probs = w / w.sum()
        self.step, self.rank, self.world_size = start_step, rank, world_size

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """(index, augmentation seed) of every sample of global batch ``step``."""
        rng = np.random.default_rng([self.seed, step])
        which = rng.choice(len(self.pools), size=self.batch_size, p=self.probs)
        picks = rng.random(self.batch_size)
        seeds = rng.integers(0, 2**62, size=self.batch_size)
        out = []
        for d, u, s in zip(which, picks, seeds, strict=True):
            pool = self.pools[d]
            out.append((int(pool[min(int(u * len(pool)), len(pool) - 1)]), int(s)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_rank = self.batch_size // self.world_size
        while True:
            batch = self.global_batch(self.step)
            self.step += 1
            yield batch[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return 2**62


@dataclass
class Batch:
    """Collated samples (torch). Shapes as in :class:`Sample` with a leading batch dim B.

    ``rotmat`` (B, 24, 3, 3) is the ground-truth pose as rotation matrices; ``index`` (B,) long;
    ``features`` {name: (B, C, 16, 12) bfloat16} when training from a feature cache.
    """

    images: torch.Tensor | None
    keypoints_2d: torch.Tensor
    joints_3d: torch.Tensor
    rotmat: torch.Tensor
    betas: torch.Tensor
    has_smpl: torch.Tensor
    has_3d: torch.Tensor
    index: torch.Tensor
    features: dict[str, torch.Tensor] | None = None

    def to(self, device: torch.device | str) -> "Batch":
        """Move every tensor to ``device``."""
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        feats = (
            None if self.features is None else {k: v.to(device) for k, v in self.features.items()}
        )
        return Batch(**{**vars(self), **moved, "features": feats})


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a :class:`Batch` (axis-angle pose -> rotation matrices)."""
    pose = np.stack([s.pose for s in samples]).reshape(-1, 3)
    rotmat = (
        Rotation.from_rotvec(pose.astype(np.float64)).as_matrix().reshape(len(samples), 24, 3, 3)
    )
    images = None
    if samples[0].image is not None:
        images = torch.from_numpy(np.stack([s.image for s in samples if s.image is not None]))
    return Batch(
        images=images,
        keypoints_2d=torch.from_numpy(np.stack([s.keypoints_2d for s in samples])),
        joints_3d=torch.from_numpy(np.stack([s.joints_3d for s in samples])),
        rotmat=torch.from_numpy(rotmat.astype(np.float32)),
        betas=torch.from_numpy(np.stack([s.betas for s in samples]).astype(np.float32)),
        has_smpl=torch.tensor([s.has_smpl for s in samples], dtype=torch.float32),
        has_3d=torch.tensor([s.has_3d for s in samples], dtype=torch.float32),
        index=torch.tensor([s.index for s in samples], dtype=torch.long),
        features=_stack_features(samples),
    )


def _stack_features(samples: list[Sample]) -> dict[str, torch.Tensor] | None:
    """Cached uint16 bfloat16 bits -> {name: (B, C, h, w) bfloat16}."""
    first = samples[0].features
    if first is None:
        return None
    out = {}
    for name in first:
        bits = np.stack([s.features[name] for s in samples if s.features is not None])
        out[name] = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
    return out


def build_pools(dataset: MixedDataset, fraction: float) -> list[np.ndarray]:
    """Per dataset, the global indices of its ``--subset`` fraction."""
    return [
        subset_indices(len(d), fraction) + int(dataset.offsets[k])
        for k, d in enumerate(dataset.datasets)
    ]
