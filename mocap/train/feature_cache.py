"""Frozen-backbone feature cache: run ViTPose once per training crop, train the decoder many times.

Layout of a cache folder::

    index.json              version, maps {name: [C, H, W]}, shard size, sample count, datasets,
                            backbone fingerprint
    crop_00000.npy          (n, 256, 192, 3) uint8 RGB crops (JBU guidance; the un-augmented crop)
    final_00000.npy         (n, C, 16, 12) uint16 = bfloat16 bits of the backbone's last_norm output
    tap16_00000.npy ...     same for each tapped layer (raw block outputs)

Shards are plain ``.npy`` files opened with ``mmap_mode="r"``, so the cache can be far larger than
memory and many data-loader workers share the page cache. Features are stored as bfloat16 (the
precision the backbone runs at under autocast), halving the disk size of fp32.

Only the un-augmented crop is cached: scale, rotation, translation and colour change what the
backbone sees and flip is not an exact symmetry of its features, so **no augmentation** is applied
when training from the cache. The cache is for fast decoder iterations and ablations; train with
augmentation (images) for the final numbers.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mocap.errors import MocapError
from mocap.model.hmr import HMR, HMROutput
from mocap.train import augment as aug
from mocap.train import data as D

VERSION = 1
CROP = "crop"


# ---- the frozen / trainable split of the model ---------------------------------------------
def freeze_frozen_parts(model: HMR) -> None:
    """Backbone and upsamplers: no gradients, eval mode (no drop-path / dropout); the head trains."""
    model.train()
    for part in (model.backbone, getattr(model, "upsamplers", None)):
        if isinstance(part, nn.Module):
            part.requires_grad_(False)
            part.eval()


def backbone_features(model: HMR, images: Tensor) -> dict[str, Tensor]:
    """(B, 3, 256, 192) -> {"final": (B, C, 16, 12), "tap16": ..., "tap32": ...} from the frozen ViT."""
    feats = model.backbone(images)
    return {"final": feats.final, **{f"tap{k}": v for k, v in feats.taps.items()}}


def decode_features(model: HMR, features: dict[str, Tensor], images: Tensor) -> HMROutput:
    """Backbone maps (+ the crop, JBU guidance) -> HMROutput; the second half of ``HMR.forward``."""
    dtype = next(model.head.parameters()).dtype
    if model.levels is None:
        return model.head(features["final"].to(dtype))
    taps = {int(k[3:]): v for k, v in features.items() if k.startswith("tap")}
    with torch.no_grad():  # frozen upsamplers
        levels = model.build_levels(taps, images.to(dtype))
    return model.head(list(levels.values()))


@dataclass
class CacheIndex:
    """Contents of ``index.json``."""

    num_samples: int
    shard_size: int
    maps: dict[str, list[int]]
    datasets: list[dict[str, str | int]]
    fingerprint: str
    version: int = VERSION
    dtype: str = "bfloat16-as-uint16"
    notes: str = field(default="un-augmented crops; no augmentation when training from this cache")


def to_bf16_bits(x: Tensor) -> np.ndarray:
    """Any float tensor -> numpy uint16 holding its bfloat16 bit patterns (same shape)."""
    return x.detach().to(torch.bfloat16).cpu().view(torch.int16).numpy().view(np.uint16)


def from_bf16_bits(a: np.ndarray) -> Tensor:
    """Inverse of :func:`to_bf16_bits`: uint16 array -> bfloat16 tensor."""
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)


def backbone_fingerprint(backbone: nn.Module) -> str:
    """Hash of the backbone's parameters and buffers, to refuse a cache built by other weights."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dataset_records(
    specs: list[D.DataSpec], datasets: list[D.Annotations]
) -> list[dict[str, str | int]]:
    """What the cache was built from (checked when it is opened for training)."""
    return [
        {"npz": str(s.npz.resolve()), "image_root": str(s.image_root.resolve()), "samples": len(a)}
        for s, a in zip(specs, datasets, strict=True)
    ]


FeatureFn = Callable[[Tensor], dict[str, Tensor]]


@torch.no_grad()
def write_feature_cache(
    out_dir: Path,
    dataset: D.MixedDataset,
    features: FeatureFn,
    fingerprint: str,
    records: list[dict[str, str | int]],
    batch_size: int = 16,
    shard_size: int = 4096,
    device: str = "cpu",
    progress: bool = False,
) -> CacheIndex:
    """Run ``features`` over every un-augmented crop of ``dataset`` and write the cache folder.

    Arguments:
        out_dir: cache folder (must not exist; written under a temporary name, then renamed).
        dataset: samples to cache; its augmentation is ignored (identity parameters).
        features: images (B, 3, 256, 192) -> {name: (B, C, h, w)} (e.g. ``final``, ``tap16``).
        fingerprint: :func:`backbone_fingerprint` of the backbone behind ``features``.
        records: :func:`dataset_records` of the data specs.
    """
    from tqdm import tqdm

    n = len(dataset)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: dict[str, np.memmap] = {}
    maps: dict[str, list[int]] = {}
    try:
        for start in tqdm(range(0, n, batch_size), disable=not progress, desc="feature cache"):
            stop = min(start + batch_size, n)
            samples = [
                D.make_sample(dataset.datasets[d], i, aug.AugmentParams(), g)
                for g in range(start, stop)
                for d, i in [dataset.locate(g)]
            ]
            images = torch.from_numpy(np.stack([s.image for s in samples if s.image is not None]))
            out = {k: to_bf16_bits(v) for k, v in features(images.to(device)).items()}
            rgb = images.numpy().transpose(0, 2, 3, 1) * aug.IMAGENET_STD + aug.IMAGENET_MEAN
            out[CROP] = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
            for g in range(start, stop):
                shard, row = divmod(g, shard_size)
                for name, arr in out.items():
                    key = f"{name}_{shard:05d}"
                    if key not in shards:
                        rows = min(shard_size, n - shard * shard_size)
                        maps.setdefault(name, list(arr.shape[1:]))
                        path = tmp / f"{key}.npy"
                        shards[key] = np.lib.format.open_memmap(
                            path, "w+", arr.dtype, (rows, *arr.shape[1:])
                        )
                    shards[key][row] = arr[g - start]
        for m in shards.values():
            m.flush()
        shards.clear()
        index = CacheIndex(
            n, shard_size, {k: v for k, v in maps.items() if k != CROP}, records, fingerprint
        )
        (tmp / "index.json").write_text(json.dumps(asdict(index), indent=1))
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


class FeatureCache:
    """Read side: memory-mapped shards of a cache folder."""

    def __init__(self, root: Path):
        path = root / "index.json"
        if not path.is_file():
            raise MocapError(
                f"{root} is not a feature cache (no index.json); build it with --feature-cache"
            )
        raw = json.loads(path.read_text())
        if raw.get("version") != VERSION:
            raise MocapError(
                f"feature cache {root} has version {raw.get('version')}; delete it and rebuild"
            )
        self.root = root
        self.index = CacheIndex(**raw)
        self._shards: dict[str, np.ndarray] = {}

    def _shard(self, name: str, shard: int) -> np.ndarray:
        key = f"{name}_{shard:05d}"
        if key not in self._shards:
            self._shards[key] = np.load(self.root / f"{key}.npy", mmap_mode="r", allow_pickle=False)
        return self._shards[key]

    def get(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Sample ``index`` -> (crop (256, 192, 3) uint8 RGB, {name: (C, h, w) uint16 bf16 bits})."""
        shard, row = divmod(index, self.index.shard_size)
        feats = {name: np.array(self._shard(name, shard)[row]) for name in self.index.maps}
        return np.array(self._shard(CROP, shard)[row]), feats

    def check(self, fingerprint: str, records: list[dict[str, str | int]]) -> None:
        """Refuse a cache built from other weights or other data."""
        if self.index.fingerprint != fingerprint:
            raise MocapError(
                f"feature cache {self.root} was built with other backbone weights; delete it or pass another folder"
            )
        if self.index.datasets != records:
            raise MocapError(
                f"feature cache {self.root} was built from other --data; delete it or pass the same --data"
            )

    def __getstate__(self) -> dict[str, object]:
        # Memory maps are reopened in each data-loader worker.
        return {**self.__dict__, "_shards": {}}


class CachedDataset(D.MixedDataset):
    """:class:`~mocap.train.data.MixedDataset` whose images and features come from a cache."""

    def __init__(self, datasets: list[D.Annotations], cache: FeatureCache):
        super().__init__(datasets, aug.AugmentConfig(enabled=False), load_images=False)
        if cache.index.num_samples != len(self):
            raise MocapError(
                f"feature cache {cache.root} holds {cache.index.num_samples} samples, data has {len(self)}"
            )
        self.cache = cache

    def __getitem__(self, key: tuple[int, int]) -> D.Sample:  # type: ignore[override]
        index, _seed = key  # no augmentation: the seed is unused
        d, i = self.locate(index)
        sample = D.make_sample(self.datasets[d], i, aug.AugmentParams(), index, load_image=False)
        crop, feats = self.cache.get(index)
        sample.image = aug.normalize_image(crop)
        sample.features = feats
        return sample
