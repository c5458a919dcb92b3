"""Property tests (hypothesis) over the readers of untrusted input: whatever the input, the result
is a clean MocapError or a valid object, never another exception (issue 17, "fuzzing that stays").

The targets are those of the coverage-guided fuzzer (``tests/fuzz/targets.py``); here they get
structured inputs: valid files with one part replaced by something hostile.
"""

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import targets  # noqa: E402

from mocap.errors import MocapError  # noqa: E402
from mocap.model.build import model_config  # noqa: E402
from mocap.motion import TRACK_FIELDS, Motion, Track  # noqa: E402
from mocap.pipeline.config import RunSettings  # noqa: E402

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
NUMBERS = st.sampled_from([0.0, -0.0, 1.0, -1.0, 5.0, 1e30, -1e30, np.nan, np.inf, -np.inf, 1e-30])


def _track(track_id: int, n: int) -> Track:
    rot = np.tile(np.eye(3), (n, 24, 1, 1))
    return Track(track_id, np.arange(n), np.arange(n) / 30.0, rot[:, 0], rot[:, 1:],
                 np.zeros((n, 10)), np.zeros((n, 3)), np.tile([0.0, 0.3, 4.0], (n, 1)),
                 np.zeros((n, 4)), np.ones(n))  # fmt: skip


def _npz(arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _valid_arrays(people: int, frames: int) -> dict[str, np.ndarray]:
    motion = Motion([_track(i + 1, frames) for i in range(people)], 30.0, (64, 48), 80.0)
    path = motion.save(Path(targets._DIR) / "valid.npz")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


arrays_st = st.one_of(
    st.builds(
        lambda shape, v: np.full(shape, v),
        st.lists(st.integers(0, 4), max_size=4).map(tuple),
        NUMBERS,
    ),
    st.builds(
        lambda shape: np.zeros(shape, np.int64), st.lists(st.integers(0, 30), max_size=5).map(tuple)
    ),
    st.just(np.array("text")),
    st.just(np.array([True, False])),
    st.just(np.array([1, 1, 2])),
)


@FAST
@given(
    people=st.integers(1, 3),
    frames=st.integers(1, 5),
    edits=st.lists(
        st.tuples(
            st.sampled_from(
                ["track_ids", "fps", "image_size", "focal_length", "source"]
                + [f"t1_{n}" for n in TRACK_FIELDS]
                + ["t2_transl", "t1_x_extra", "x_clip"]
            ),
            st.one_of(st.none(), arrays_st),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_motion_reader_hostile_arrays(people: int, frames: int, edits: list[Any]) -> None:
    arrays = _valid_arrays(people, frames)
    for key, value in edits:
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    targets.TARGETS["motion"](_npz(arrays))


@FAST
@given(st.binary(max_size=2048))
def test_motion_reader_raw_bytes(data: bytes) -> None:
    targets.TARGETS["motion"](data)


@FAST
@given(st.integers(0, 19000), st.binary(min_size=1, max_size=64))
def test_motion_reader_damaged_valid_file(pos: int, junk: bytes) -> None:
    data = bytearray((Path(__file__).parent / "fuzz/corpus/motion/two_people.npz").read_bytes())
    pos = pos % len(data)
    data[pos : pos + len(junk)] = junk
    targets.TARGETS["motion"](bytes(data))


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(),
              st.text(max_size=12), st.sampled_from(["bvh,fbx", "no", "abc", "0", "-5", "1e30"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)  # fmt: skip
setting_names = st.sampled_from([*RunSettings().to_dict(), "combined", "det-conf", "junk"])


@FAST
@given(st.dictionaries(setting_names, yaml_values, max_size=5))
def test_config_loader_hostile_values(values: dict[str, Any]) -> None:
    targets.TARGETS["config"](yaml.safe_dump(values).encode())


@FAST
@given(st.text(max_size=200))
def test_config_loader_raw_text(text: str) -> None:
    targets.TARGETS["config"](text.encode())


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**10), 10**10),
              st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)  # fmt: skip


def _leaves(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _leaves(v, (*prefix, k))] + [prefix]
    if isinstance(data, list):
        return [p for k, v in enumerate(data) for p in _leaves(v, (*prefix, k))] + [prefix]
    return [prefix]


@FAST
@given(
    variant=st.sampled_from(["featup-deformable", "vitpose-deformable", "hmr2"]),
    pick=st.integers(0, 10_000),
    value=st.one_of(json_values, st.integers(-5, 70), st.sampled_from([1e9, -5, 3, 10_000, 1e6])),
)
def test_checkpoint_config_validator(variant: str, pick: int, value: Any) -> None:
    data = json.loads(model_config(variant, "tiny").to_json())
    paths = [p for p in _leaves(data) if p]
    path = paths[pick % len(paths)]
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    targets.TARGETS["checkpoint_config"](json.dumps(data).encode())


@FAST
@given(json_values)
def test_checkpoint_config_arbitrary_json(value: Any) -> None:
    targets.TARGETS["checkpoint_config"](json.dumps(value).encode())


@FAST
@given(st.binary(max_size=600))
def test_checkpoint_header_bytes(data: bytes) -> None:
    head = (Path(__file__).parent / "fuzz/corpus/checkpoint/tiny_header.safetensors").read_bytes()
    targets.TARGETS["checkpoint"](head[: len(data) % len(head)] + data)


def _npy_with_a_zip_behind(tmp_path: Path, name: str) -> Path:
    """A file numpy reads as a .npy array (its first bytes) that zipfile also calls a zip (a
    real .npz appended): the fuzzer's crash of Motion.load (``with`` on an ndarray)."""
    head, tail = io.BytesIO(), io.BytesIO()
    np.save(head, np.arange(6))
    np.savez(tail, pose=np.zeros(144), shape=np.zeros(10), cam=np.zeros(3))
    path = tmp_path / name
    path.write_bytes(head.getvalue() + tail.getvalue())
    return path


def test_a_npy_named_npz_is_a_clean_error_in_every_npz_reader(tmp_path: Path) -> None:
    from mocap.body.smpl_file import load_regressor, load_smpl_file
    from mocap.model.hmr2_head import load_mean_params
    from mocap.train.data import DataSpec, load_annotations

    path = _npy_with_a_zip_behind(tmp_path, "motion.npz")
    assert np.load(path).shape == (6,)  # what numpy makes of it
    readers = [
        Motion.load,
        load_mean_params,
        load_smpl_file,
        load_regressor,
        lambda p: load_annotations(DataSpec(p, tmp_path)),
    ]
    for read in readers:
        with pytest.raises(MocapError):
            read(path)
