"""motion.npz round trip and its failure modes."""

import numpy as np
import pytest

from mocap.errors import MocapError
from mocap.motion import TRACK_FIELDS, Motion, Track, track_field_names


def _track(track_id: int, n: int, rng: np.random.Generator) -> Track:
    from scipy.spatial.transform import Rotation

    rot = Rotation.random(n * 24, random_state=int(rng.integers(1 << 31))).as_matrix()
    rot = rot.reshape(n, 24, 3, 3)
    return Track(
        track_id=track_id,
        frames=np.arange(3, 3 + n),
        times=np.arange(3, 3 + n) / 30.0,
        global_orient=rot[:, 0],
        body_pose=rot[:, 1:],
        betas=rng.normal(size=(n, 10)),
        cam_crop=rng.normal(size=(n, 3)),
        transl=rng.normal(size=(n, 3)),
        boxes=rng.uniform(0, 500, size=(n, 4)),
        scores=rng.uniform(size=n),
    )


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    motion = Motion(
        [_track(1, 7, rng), _track(4, 3, rng)], 29.97, (1920, 1080), 37500.0, "clip.mp4"
    )
    path = motion.save(tmp_path / "motion.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motion.npz"]  # no temporary left behind
    back = Motion.load(path)
    assert (back.fps, back.image_size, back.focal_length, back.source) == (
        29.97,
        (1920, 1080),
        37500.0,
        "clip.mp4",
    )
    assert [t.track_id for t in back.tracks] == [1, 4]
    for a, b in zip(motion.tracks, back.tracks, strict=True):
        for name in TRACK_FIELDS:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert set(track_field_names()) == set(TRACK_FIELDS)


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(MocapError, match="not found"):
        Motion.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(MocapError, match="not a mocap motion file"):
        Motion.load(tmp_path / "other.npz")


def test_load_rejects_empty_truncated_and_foreign_bytes(tmp_path):
    rng = np.random.default_rng(1)
    real = Motion([_track(1, 40, rng)], 30.0, (64, 48), 100.0).save(tmp_path / "motion.npz")
    cases = {
        "empty.npz": b"",
        "truncated.npz": real.read_bytes()[: real.stat().st_size // 2],
        "text.npz": b"just some notes, renamed",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MocapError, match="not a readable mocap motion file"):
            Motion.load(tmp_path / name)


def test_unwritable_destination_is_a_clear_error(tmp_path):
    # A regular file where the output folder should be: fails even for root, unlike chmod.
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    with pytest.raises(MocapError, match="cannot write"):
        Motion([], 30.0, (10, 10), 100.0).save(blocker / "motion.npz")
