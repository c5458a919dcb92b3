"""Locked feet and root motion survive BVH and FBX: files written by export_motion from a noisy
synthetic walk (tests/synthetic_gait.py), re-imported into a fresh Blender
(``exporters.blender.read_with_blender``, Blender's own BVH and FBX importers)."""

from pathlib import Path

import numpy as np
import pytest
from synthetic_gait import add_estimator_noise, to_motion, walk

from exporters import export_motion
from exporters.blender import YUP_TO_ZUP, read_with_blender
from mocap.contacts import POINT_NAMES, FootLockReport
from mocap.foot_lock import POINTS, spans

MODES = ("world", "in-place", "root-bone")
MM = 1e-3


@pytest.fixture(scope="module")
def written(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    motion = to_motion([add_estimator_noise(walk(shared_data, strides=2).rig, seed=7)])
    out = {}
    for mode in MODES:
        folder = tmp_path_factory.mktemp(mode)
        report = export_motion(motion, folder, "npz,bvh,fbx", root_motion=mode)
        assert report.ok, report.summary()
        with np.load(folder / "person_1.npz") as z:
            npz = {k: z[k] for k in z.files}
        out[mode] = (folder, report.contacts[1], npz)
    return out


def imported(path: Path, names: list[str]) -> np.ndarray:
    """(T,J,3) joint positions in the file as Blender imports it, back in the Y-up world."""
    scene = read_with_blender(path)
    (arm,) = scene.armatures
    assert len(arm.frames) == len(set(arm.frames.tolist()))
    return arm.joint_positions[:, [arm.bone_names.index(n) for n in names]] @ YUP_TO_ZUP


@pytest.mark.parametrize("fmt", ["bvh", "fbx"])
def test_planted_feet_stay_on_their_locks(written: dict[str, tuple], fmt: str):
    folder, report, npz = written["world"]
    assert isinstance(report, FootLockReport) and report.planted is not None
    assert report.planted.sum() >= 0.85 * report.contacts.sum()  # few locks had to be let go
    names = [str(n) for n in npz["joint_names"]]
    got = imported(folder / f"person_1.{fmt}", names)
    assert np.abs(got - npz["joint_positions"]).max() < MM  # the file holds the locked motion
    feet = got[:, list(POINTS)]
    checked = 0
    for p, name in enumerate(POINT_NAMES):
        for a, b in spans(report.planted[:, p]):
            lock = npz["joint_positions"][a : b + 1, POINTS[p]].mean(axis=0)
            off = np.linalg.norm(feet[a : b + 1, p] - lock, axis=-1)
            assert off.max() < 5 * MM, (name, a, b)
            checked += b - a + 1
    assert checked > 200


@pytest.mark.parametrize("fmt", ["bvh", "fbx"])
def test_in_place_hips_do_not_move_horizontally(written: dict[str, tuple], fmt: str):
    folder, _, npz = written["in-place"]
    world = written["world"][2]["joint_positions"]
    got = imported(folder / f"person_1.{fmt}", [str(n) for n in npz["joint_names"]])
    hips = got[:, 0]
    assert np.ptp(hips[:, [0, 2]], axis=0).max() < 0.1 * MM
    assert np.abs(hips[:, 1] - world[:, 0, 1]).max() < MM  # height and bob kept
    assert np.abs((got - hips[:, None]) - (world - world[:, :1])).max() < MM


@pytest.mark.parametrize("fmt", ["bvh", "fbx"])
def test_root_bone_track_is_the_horizontal_trajectory(written: dict[str, tuple], fmt: str):
    folder, _, npz = written["root-bone"]
    world = written["world"][2]["joint_positions"]
    names = [str(n) for n in npz["joint_names"]]
    assert names[0] == "root"
    got = imported(folder / f"person_1.{fmt}", names)
    root = got[:, 0]
    assert np.abs(root[:, [0, 2]] - world[:, 0, [0, 2]]).max() < 0.1 * MM
    assert np.ptp(world[:, 0, [0, 2]], axis=0).max() > 1.0 and np.abs(root[:, 1]).max() < 0.1 * MM
    assert np.abs(got[:, 1:] - world).max() < MM  # the hips and everything below as in the world
