"""Depth from planted feet (mocap.ground_depth): synthetic walks and a jump with a known truth, seen
by a camera with a per-frame depth error, and the real walking-crowd clip through `mocap run`."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from synthetic_gait import Gait, jump, walk

from exporters import joint_positions
from mocap.contacts import foot_metrics
from mocap.foot_lock import POINTS
from mocap.ground_depth import ground_depth, lifted_points

HIGH = np.array([0.0, 4.0, 9.0])  # a camera 4 m up, 9 m from the walk's start (pitched down)
LEVEL = np.array([0.0, 1.2, 5.0])  # a camera at hip height


@pytest.fixture(scope="module")
def clips(shared_data: Path) -> dict[str, Gait]:
    return {"walk": walk(shared_data), "jump": jump(shared_data)}


def depth_error(gait: Gait, camera: np.ndarray, seed: int, std: float = 0.03) -> np.ndarray:
    """(T,) a slow relative error of the distance (``std``), as monocular depth has."""
    rng = np.random.default_rng(seed)
    slow = gaussian_filter1d(rng.normal(size=gait.rig.num_frames), 0.3 * gait.rig.fps)
    return slow / slow.std() * std


def along_sight(gait: Gait, camera: np.ndarray, error: np.ndarray):
    """The rig moved along its root's viewing ray by ``error`` of the distance, per frame."""
    sight = gait.rig.root_positions - camera
    return replace(gait.rig, root_positions=gait.rig.root_positions + error[:, None] * sight)


def distance(rig, camera: np.ndarray) -> np.ndarray:
    return np.linalg.norm(rig.root_positions - camera, axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_feet_set_the_depth_seen_from_above(clips: dict[str, Gait], seed: int):
    gait = clips["walk"]
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    truth = distance(gait.rig, HIGH)
    noisy = along_sight(gait, HIGH, depth_error(gait, HIGH, seed))
    fixed, fix = ground_depth(noisy, clear, HIGH)
    before = np.abs(distance(noisy, HIGH) / truth - 1.0)
    after = np.abs(distance(fixed, HIGH) / truth - 1.0)
    assert np.median(after) < np.median(before) / 4, (np.median(before), np.median(after))
    # plants are found where the truth has contacts, and nowhere else
    assert (fix.planted & ~gait.contacts).mean() < 0.05
    assert (fix.planted & gait.contacts).sum() > 0.5 * gait.contacts.sum()
    # the true contacts slide over the floor before, and hardly after
    points = [joint_positions(r)[:, list(POINTS)] for r in (noisy, fixed)]
    slide = [foot_metrics(p, clear, gait.contacts).sliding_mm for p in points]
    assert slide[1] < slide[0] / 3, slide


def test_the_person_stays_where_they_were_in_the_image(clips: dict[str, Gait]):
    """The body moves along the root's ray: the root's direction from the camera is unchanged,
    and every joint's moves only as the image of the body grows or shrinks with the distance."""
    gait = clips["walk"]
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    noisy = along_sight(gait, HIGH, depth_error(gait, HIGH, 5))
    fixed, fix = ground_depth(noisy, clear, HIGH)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    roots = [unit(r.root_positions - HIGH) for r in (noisy, fixed)]
    assert np.abs(roots[1] - roots[0]).max() < 1e-9
    rays = [unit(joint_positions(r) - HIGH) for r in (noisy, fixed)]
    moved = np.linalg.norm(rays[1] - rays[0], axis=-1)  # (T,J) angle, radians
    off_root = np.linalg.norm(rays[0] - roots[0][:, None], axis=-1)  # the joint's image offset
    change = np.abs(fix.change)[:, None] / (1.0 + fix.change[:, None])
    assert np.all(moved <= 1.1 * change * off_root + 1e-9)


def test_a_jump_keeps_its_flight(clips: dict[str, Gait]):
    gait = clips["jump"]
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    fixed, fix = ground_depth(gait.rig, clear, HIGH)
    assert np.abs(fix.change).max() < 0.005  # the truth is on the floor: (almost) nothing to fix
    airborne = ~gait.contacts.any(axis=1)
    assert airborne.sum() >= 10 and not fix.planted[airborne].any()
    lowest = [
        (joint_positions(r)[:, list(POINTS), 1] - clear).min(axis=1) for r in (gait.rig, fixed)
    ]
    assert np.abs(lowest[1] - lowest[0])[airborne].max() < 0.01  # the flight height is kept


def test_a_camera_at_hip_height_barely_changes_the_depth(clips: dict[str, Gait]):
    """From hip height a 2 cm error of a sole is a ~7% error of the distance: the estimate's own
    depth is trusted more, and the result is never worse than it."""
    gait = clips["walk"]
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    truth = distance(gait.rig, LEVEL)
    error = depth_error(gait, LEVEL, 3)
    noisy = along_sight(gait, LEVEL, error)
    fixed, fix = ground_depth(noisy, clear, LEVEL)
    assert np.abs(fix.change).max() < np.abs(error).max()
    before = np.abs(distance(noisy, LEVEL) / truth - 1.0)
    after = np.abs(distance(fixed, LEVEL) / truth - 1.0)
    assert np.median(after) <= np.median(before)


def test_nothing_measurable_gives_none(clips: dict[str, Gait]):
    gait = clips["walk"]
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    below = np.array([0.0, -0.5, 5.0])  # a camera under the floor: no foot ray meets it
    assert lifted_points(joint_positions(gait.rig)[:, list(POINTS)], clear, below, 0.0) is None
    assert ground_depth(gait.rig, clear, below) is None
    short = replace(gait.rig, root_positions=gait.rig.root_positions[:2])
    short = replace(short, local_rotations=gait.rig.local_rotations[:2])
    assert ground_depth(short, clear, HIGH) is None


def test_the_nearest_walker_of_the_real_clip_gets_planted_feet(shared_data: Path, tmp_path: Path):
    """walking_crowd through `mocap run --model lite`: the walker nearest the camera, whose feet
    were never found planted before, has contacts, and every walker's locked feet hold."""
    from mocap.cli import main

    video = shared_data / "videos" / "walking_crowd_1080p.mp4"
    code = main(["run", str(video), "-o", str(tmp_path), "--model", "lite", "--formats", "npz"])
    assert code == 0
    run = json.loads((tmp_path / "walking_crowd_1080p" / "run.json").read_text())
    reports = [track["contacts"] for track in run["tracks"]]
    assert len(reports) == 3
    for report in reports:
        assert report["depth_change"] > 0.0
        assert report["before"]["contact_share"] >= 0.3
        assert report["after"]["sliding_mm_per_frame"] < 5.0
