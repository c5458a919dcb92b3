"""The one model interface: a model with non-finite outputs gives missed detections, not a crash."""

import numpy as np
import pytest
import torch

from mocap.errors import MocapError
from mocap.model.build import build_model, model_config
from mocap.model.estimator import HMREstimator, finite_rows
from mocap.model.predictor import Predictor


@pytest.fixture(scope="module")
def nan_estimator() -> HMREstimator:
    model = build_model(model_config("hmr2", "tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return HMREstimator(Predictor(model, device="cpu", precision="fp32"), "nan hmr2 (tiny)")


def test_non_finite_outputs_are_invalid_rows(shared_data, nan_estimator):
    import cv2

    image = cv2.imread(str(shared_data / "images" / "coco_val2014_192.jpg"))
    items = [nan_estimator.prepare(image, np.array([10.0, 10.0, 200.0, 300.0]), 1)] * 3
    est = nan_estimator.estimate(items, (image.shape[1], image.shape[0]), 1000.0)
    assert est.valid.tolist() == [False, False, False]
    assert not finite_rows(est.params).any()


def test_a_nan_model_run_ends_in_one_clear_error(shared_data, yolo_weights, tmp_path, caplog):
    from mocap.pipeline.config import RunSettings
    from mocap.pipeline.detect import PersonDetector
    from mocap.pipeline.run import Engines, process_video

    model = build_model(model_config("hmr2", "tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    estimator = HMREstimator(Predictor(model, device="cpu", precision="fp32"), "nan")
    detector = PersonDetector(str(yolo_weights), conf=0.1, device="cpu")
    engines = Engines(detector, estimator, None, "nan", {}, "built-in skeleton")
    settings = RunSettings(end=0.2, formats=["npz"], report=False, min_track_length=1)
    video = shared_data / "videos" / "walking_crowd_1080p.mp4"
    with caplog.at_level("WARNING", logger="mocap"), pytest.raises(MocapError, match="no body"):
        process_video(video, tmp_path, settings, engines=engines)
    skipped = [r for r in caplog.records if "found no body" in r.getMessage()]
    assert len(skipped) >= 3  # one line per detected person
    assert not any(p.name.startswith(".walking") for p in tmp_path.iterdir())  # no staging left
