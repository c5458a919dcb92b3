"""Fuzz targets over mocap's readers of untrusted files: motion.npz, --config YAML, checkpoints.

Each target takes bytes and either returns (a clean :class:`~mocap.errors.MocapError`, or a
valid object that passed its checks) or raises something else, which is a bug. Used by the
coverage-guided fuzzer (``tests/fuzz/fuzz_readers.py``) and by the property tests
(``tests/test_hostile_fuzz.py``).
"""

import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mocap.errors import MocapError

_DIR = Path(tempfile.mkdtemp(prefix="mocap-fuzz-"))


def _file(data: bytes, name: str) -> Path:
    path = _DIR / f"{os.getpid()}-{name}"
    path.write_bytes(data)
    return path


def motion_file(data: bytes) -> None:
    """``Motion.load`` on arbitrary bytes; a loaded motion has only sound tracks and a usable
    world (finite roots and camera)."""
    from mocap.motion import Motion
    from mocap.motion_check import track_problem
    from mocap.world import build_world

    try:
        motion = Motion.load(_file(data, "motion.npz"))
    except MocapError:
        return
    assert math.isfinite(motion.fps) and motion.fps > 0
    assert len({t.track_id for t in motion.tracks}) == len(motion.tracks)
    for track in motion.tracks:
        assert track_problem(track) is None, track_problem(track)
    if motion.tracks and sum(len(t) for t in motion.tracks) < 2000:
        try:
            world = build_world(motion)
        except MocapError:
            return
        assert np.isfinite(world.world.offset).all()
        for rig in world.rigs:
            assert np.isfinite(rig.root_positions).all()


def config_file(data: bytes) -> None:
    """``--config`` YAML through the same path as the CLI: load_config, RunSettings, validate."""
    from mocap.pipeline.config import RunSettings, load_config, validate

    try:
        values = load_config(_file(data, "config.yaml"))
        settings = RunSettings(**values)
        validate(settings)
    except MocapError:
        return
    assert isinstance(settings.stride, int) and settings.stride >= 1
    assert isinstance(settings.preview, bool) and isinstance(settings.per_person, bool)
    assert all(isinstance(f, str) for f in settings.formats)


def checkpoint_config(data: bytes) -> None:
    """The embedded model configuration (JSON text): validated configs build (on the meta
    device, so nothing is allocated) without any other error."""
    import torch

    from mocap.model.build import build_model
    from mocap.model.checkpoint_config import parse_model_config

    text = data.decode("utf-8", errors="replace")
    try:
        config = parse_model_config(text, "fuzz")
    except MocapError:
        return
    with torch.device("meta"):
        build_model(config)


def checkpoint_file(data: bytes) -> None:
    """``read_config`` on arbitrary bytes as a safetensors checkpoint."""
    from mocap.model.checkpoint import read_config

    try:
        read_config(_file(data, "model.safetensors"))
    except MocapError:
        return


TARGETS: dict[str, Callable[[bytes], None]] = {
    "motion": motion_file,
    "config": config_file,
    "checkpoint_config": checkpoint_config,
    "checkpoint": checkpoint_file,
}
NAMES = tuple(TARGETS)


def strict(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``target`` with numpy's RuntimeWarnings (overflow, invalid value) raised as errors: a
    reader must refuse such values before computing with them, not print raw warnings."""

    def run(data: bytes) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            target(data)

    return run


TARGETS = {name: strict(target) for name, target in TARGETS.items()}


def one_input(data: bytes) -> None:
    """All targets behind one entry point: the first byte chooses, the rest is the input."""
    if not data:
        return
    TARGETS[NAMES[data[0] % len(NAMES)]](data[1:])
