"""Person detector with the real YOLOv8 people weights on real COCO photos and video frames."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from mocap.errors import MocapError
from mocap.pipeline.detect import (
    DEFAULT_DETECTOR,
    Detections,
    PersonDetector,
    person_classes,
    resolve_weights,
)
from mocap.pipeline.video import open_video
from trackers import box_iou


@pytest.fixture(scope="module")
def detector(yolo_weights: Path) -> PersonDetector:
    return PersonDetector(yolo_weights, conf=0.25, device="cpu")


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, np.ndarray]:
    """COCO photo number -> BGR image."""
    paths = sorted((shared_data / "images").glob("coco_val2014_*.jpg"))
    return {p.stem.rsplit("_", 1)[1]: cv2.imread(str(p)) for p in paths}


@pytest.fixture(scope="module")
def photo_detections(
    detector: PersonDetector, photos: dict[str, np.ndarray]
) -> dict[str, Detections]:
    """One batched call over all six photos."""
    return dict(zip(photos, detector.detect(list(photos.values())), strict=True))


@pytest.fixture(scope="module")
def street(shared_data: Path) -> list[np.ndarray]:
    return [f.image for f in open_video(shared_data / "videos" / "street_5frames_540p.mp4")]


@pytest.fixture(scope="module")
def street_detections(detector: PersonDetector, street: list[np.ndarray]) -> list[Detections]:
    """One batched call over the five street frames (same size: same letterbox as alone)."""
    return detector.detect(street)


def confident(det: Detections, conf: float = 0.4) -> np.ndarray:
    return det.boxes[det.scores >= conf]


def test_people_only_detector_counts_every_class(detector: PersonDetector) -> None:
    assert detector.names == {0: "Normal", 1: "Fall"}
    assert detector.classes == [0, 1]


def test_detections_are_well_formed(
    photo_detections: dict[str, Detections], photos: dict[str, np.ndarray]
) -> None:
    for key, det in photo_detections.items():
        height, width = photos[key].shape[:2]
        assert len(det) >= 1, f"nobody found in photo {key}"
        assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4)
        assert det.scores.dtype == np.float32 and det.classes.dtype == np.int64
        assert np.all(np.diff(det.scores) <= 0), "sorted by decreasing score"
        assert np.all(det.scores >= 0.25)
        assert np.all(det.boxes[:, 2] > det.boxes[:, 0]) and np.all(
            det.boxes[:, 3] > det.boxes[:, 1]
        )
        assert np.all(det.boxes >= -1) and np.all(det.boxes[:, [0, 2]] <= width + 1)
        assert np.all(det.boxes[:, [1, 3]] <= height + 1)
        assert set(det.classes.tolist()) <= {0, 1}


def test_sensible_boxes_on_known_photos(
    photo_detections: dict[str, Detections], photos: dict[str, np.ndarray]
) -> None:
    # 294: one man filling the left of a kitchen photo.
    man = confident(photo_detections["294"])
    assert len(man) == 1
    area = (man[0, 2] - man[0, 0]) * (man[0, 3] - man[0, 1])
    assert area > 0.3 * photos["294"].shape[0] * photos["294"].shape[1]
    assert (man[0, 0] + man[0, 2]) / 2 < photos["294"].shape[1] / 2
    # 338: two people standing at the far end of a kitchen, on its right half.
    pair = confident(photo_detections["338"])
    width = photos["338"].shape[1]
    assert len(pair) == 2
    assert np.all((pair[:, 0] + pair[:, 2]) / 2 > width / 2)
    assert np.all(pair[:, 3] - pair[:, 1] > 1.5 * (pair[:, 2] - pair[:, 0])), "upright people"
    # 328: three cadets side by side on a bench: left, middle, right.
    cadets = confident(photo_detections["328"])
    assert len(cadets) == 3
    centres = np.sort((cadets[:, 0] + cadets[:, 2]) / 2) / photos["328"].shape[1]
    assert centres[0] < 0.33 and 0.33 < centres[1] < 0.67 and centres[2] > 0.5
    # 257: a street scene with many small people.
    assert len(photo_detections["257"]) >= 6


def test_one_box_per_person_across_classes(photo_detections: dict[str, Detections]) -> None:
    """Normal and Fall are both people: NMS across classes leaves no duplicate boxes."""
    for det in photo_detections.values():
        iou = box_iou(det.boxes, det.boxes)
        np.fill_diagonal(iou, 0)
        assert iou.max(initial=0) < 0.7


def test_conf_filter(
    yolo_weights: Path, street: list[np.ndarray], street_detections: list[Detections]
) -> None:
    strict = PersonDetector(yolo_weights, conf=0.5, device="cpu")
    [det] = strict.detect([street[0]])
    loose = street_detections[0]
    keep = loose.scores >= 0.5
    assert 0 < len(det) == int(keep.sum()) < len(loose)
    np.testing.assert_allclose(det.boxes, loose.boxes[keep], atol=0.5)
    np.testing.assert_allclose(det.scores, loose.scores[keep], atol=1e-3)


def test_min_size_filter(
    yolo_weights: Path, street: list[np.ndarray], street_detections: list[Detections]
) -> None:
    big_only = PersonDetector(yolo_weights, conf=0.25, min_size=100, device="cpu")
    [det] = big_only.detect([street[0]])
    loose = street_detections[0]
    sides = np.maximum(loose.boxes[:, 2] - loose.boxes[:, 0], loose.boxes[:, 3] - loose.boxes[:, 1])
    keep = sides >= 100
    assert 0 < len(det) == int(keep.sum()) < len(loose)
    np.testing.assert_allclose(det.boxes, loose.boxes[keep], atol=0.5)


def test_class_override(yolo_weights: Path, photos: dict[str, np.ndarray]) -> None:
    only_normal = PersonDetector(yolo_weights, conf=0.25, classes=["normal"], device="cpu")
    assert only_normal.classes == [0]
    [det] = only_normal.detect([photos["192"]])
    assert len(det) >= 1 and set(det.classes.tolist()) == {0}


def test_person_classes_rules() -> None:
    coco = {0: "person", 1: "bicycle", 2: "car"}
    assert person_classes(coco, None) == [0]
    assert person_classes({0: "Normal", 1: "Fall"}, None) == [0, 1]
    assert person_classes(coco, [2, "person"]) == [0, 2]
    assert person_classes(coco, ["1"]) == [1]
    with pytest.raises(MocapError, match="no class 'dog'.*0=person"):
        person_classes(coco, ["dog"])
    with pytest.raises(MocapError, match="no class 7"):
        person_classes(coco, [7])


def test_batched_equals_single(
    detector: PersonDetector, street: list[np.ndarray], street_detections: list[Detections]
) -> None:
    """A frame detected alone gives exactly what it got inside a batch of same-size frames."""
    [single] = detector.detect([street[2]])
    np.testing.assert_allclose(single.boxes, street_detections[2].boxes, atol=0.5)
    np.testing.assert_allclose(single.scores, street_detections[2].scores, atol=1e-3)
    assert detector.detect([]) == []


def test_people_in_every_video_frame(street_detections: list[Detections]) -> None:
    for det in street_detections:
        assert len(confident(det)) >= 3
        heights = det.boxes[:, 3] - det.boxes[:, 1]
        assert np.all(heights < 540)
        # The largest person (near the camera) is found in every frame with high confidence.
        sides = np.maximum(det.boxes[:, 2] - det.boxes[:, 0], heights)
        assert sides.max() > 300 and det.scores[sides.argmax()] > 0.6


def test_weights_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path / "home"))
    with pytest.raises(MocapError, match="not found"):
        PersonDetector(tmp_path / "missing.pt")
    with pytest.raises(MocapError, match="neither a file nor an Ultralytics model name"):
        PersonDetector("my-detector.pt")
    not_a_model = tmp_path / "weights.pt"
    not_a_model.write_text("not a checkpoint")
    with pytest.raises(MocapError, match="cannot load detector"):
        PersonDetector(not_a_model)

    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("Environment may be offline")

    monkeypatch.setattr("ultralytics.utils.downloads.attempt_download_asset", offline)
    with pytest.raises(MocapError, match=f"could not download detector {DEFAULT_DETECTOR}"):
        PersonDetector()


def test_cached_name_resolves_without_download(
    yolo_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path))
    cached = tmp_path / "detectors" / "yolov8s.pt"
    cached.parent.mkdir()
    cached.write_bytes(yolo_weights.read_bytes())
    assert resolve_weights("yolov8s.pt") == cached
