"""Foot contacts and foot locking (mocap.contacts, mocap.foot_lock) on synthetic gait with known
contacts (tests/synthetic_gait.py: a walk with heel-toe roll and a jump, legs posed by IK, MoSh
upper body), after realistic estimator noise (slow root drift that makes planted feet slide about
18 mm/frame, slow leg-angle errors, per-frame jitter)."""

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt
from scipy.spatial.transform import Rotation
from synthetic_gait import Gait, add_estimator_noise, jump, to_motion, walk

from exporters import export_motion, joint_positions
from exporters.bvh import read_bvh
from exporters.rig import RigAnimation
from mocap.body.skeleton import smpl_skeleton
from mocap.body.smpl import load_body_model
from mocap.contacts import POINTS, detect_contacts, find_contacts, foot_metrics, lock_rigs
from mocap.foot_lock import BLEND_S, MAX_KNEE_DEG, lock_feet, spans
from mocap.ik import interior_angle
from mocap.motion import Motion

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def clips(shared_data: Path) -> dict[str, Gait]:
    return {"walk": walk(shared_data), "jump": jump(shared_data)}


def f1(found: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (found & truth).sum() / (found.sum() + truth.sum()))


def knees(pos: np.ndarray) -> np.ndarray:
    """(T,2) knee interior angles in degrees."""
    return np.degrees(
        np.stack([interior_angle(pos[:, 1 + s], pos[:, 4 + s], pos[:, 7 + s]) for s in (0, 1)], 1)
    )


def run_lock(gait: Gait, seed: int) -> tuple[RigAnimation, np.ndarray, object]:
    noisy = add_estimator_noise(gait.rig, seed=seed)
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    found = detect_contacts(joint_positions(noisy)[:, list(POINTS)], clear, noisy.fps)
    return noisy, found.flags, lock_feet(noisy, clear, found.flags, found.confidence)


def test_the_synthetic_truth_holds(clips: dict[str, Gait]):
    """By forward kinematics: points in contact stand still with their soles on the floor, the
    walk rolls heel to toe (ankle and toe contacts differ), the jump has a flight phase."""
    for gait in clips.values():
        pos = joint_positions(gait.rig)[:, list(POINTS)]
        clear = gait.skeleton.sole_clearance[list(POINTS)]
        still = gait.contacts[1:] & gait.contacts[:-1]
        assert np.linalg.norm(np.diff(pos, axis=0), axis=-1)[still].max() < 1e-6
        assert np.abs(pos[..., 1] - clear)[gait.contacts].max() < 1e-6
        assert (pos[..., 1] - clear).min() > -1e-6
        assert foot_metrics(pos, clear, gait.contacts).sliding_mm < 1e-3
    walking = clips["walk"].contacts
    assert (walking[:, 0] != walking[:, 2]).sum() > 30 and len(spans(walking[:, 0])) == 7
    assert (~clips["jump"].contacts.any(axis=1)).sum() >= 10


@pytest.mark.parametrize("name", ["walk", "jump"])
def test_contacts_are_found(clips: dict[str, Gait], name: str):
    gait = clips[name]
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    for seed in SEEDS:
        noisy = add_estimator_noise(gait.rig, seed=seed)
        found = detect_contacts(joint_positions(noisy)[:, list(POINTS)], clear, noisy.fps)
        assert f1(found.flags, gait.contacts) >= 0.9, seed
        assert all(f1(found.flags[:, p], gait.contacts[:, p]) >= 0.8 for p in range(4))


@pytest.mark.parametrize("name", ["walk", "jump"])
def test_locking_removes_sliding_and_keeps_feet_on_the_floor(clips: dict[str, Gait], name: str):
    gait = clips[name]
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    for seed in SEEDS:
        noisy, _, result = run_lock(gait, seed)
        before = foot_metrics(joint_positions(noisy)[:, list(POINTS)], clear, gait.contacts)
        after = foot_metrics(joint_positions(result.rig)[:, list(POINTS)], clear, gait.contacts)
        assert before.sliding_mm > 12.0  # the noise slides the feet as an estimate does
        assert after.sliding_mm < 5.0 and before.sliding_mm / after.sliding_mm >= 5.0, seed
        assert after.penetration_mm < 0.5 and after.floating_mm < before.floating_mm / 2


def test_frames_away_from_contacts_keep_their_motion(clips: dict[str, Gait]):
    """In the air (the jump's flight), beyond the blend windows, no joint moves by 1 cm or more."""
    gait = clips["jump"]
    far = distance_transform_edt(~gait.contacts.any(axis=1)) > round(BLEND_S * gait.rig.fps)
    assert far.sum() >= 4
    for seed in SEEDS:
        noisy, _, result = run_lock(gait, seed)
        moved = np.linalg.norm(joint_positions(result.rig) - joint_positions(noisy), axis=-1)
        assert moved[far].max() < 0.01, seed


@pytest.mark.parametrize("name", ["walk", "jump"])
def test_knees_never_snap_or_hyperextend(clips: dict[str, Gait], name: str):
    """The locking changes no knee angle by more than 10 degrees from one frame to the next (the
    walk's own swing flexes the knee by up to 10 degrees a frame; locking must not add a pop), and
    opens no knee beyond 175 degrees unless the estimate was straighter."""
    for seed in SEEDS:
        noisy, _, result = run_lock(clips[name], seed)
        k_in, k_out = knees(joint_positions(noisy)), knees(joint_positions(result.rig))
        assert np.abs(np.diff(k_out - k_in, axis=0)).max() <= 10.0, seed
        assert np.all(k_out <= np.maximum(MAX_KNEE_DEG, k_in) + 1e-6)


def test_planted_feet_stay_on_their_locks(clips: dict[str, Gait]):
    """Where a lock holds (most contact frames), the point does not move at all."""
    for seed in SEEDS:
        _, flags, result = run_lock(clips["walk"], seed)
        assert result.planted.sum() >= 0.85 * flags.sum()
        pos = joint_positions(result.rig)[:, list(POINTS)]
        for p in range(4):
            for a, b in spans(result.planted[:, p]):
                spread = np.linalg.norm(pos[a : b + 1, p] - pos[a, p], axis=-1)
                assert spread.max() < 0.004


def test_an_unreachable_lock_is_released_not_stretched(clips: dict[str, Gait]):
    """A left foot flagged as planted while the estimate lifts it 30 cm (standing on one leg):
    holding it on the floor would stretch the leg. It is released instead, smoothly, while the
    right foot stays planted."""
    gait = clips["jump"]
    rig = gait.rig
    frames = np.arange(5, 25)
    lifted = rig.local_rotations.copy()
    bend = np.deg2rad(60.0) * np.sin(np.pi * (frames - 5) / 19)[:, None] * [1.0, 0.0, 0.0]
    lifted[frames, 1] = lifted[frames, 1] @ Rotation.from_rotvec(-bend).as_matrix()  # hip flexes
    lifted[frames, 4] = lifted[frames, 4] @ Rotation.from_rotvec(2 * bend).as_matrix()  # knee bends
    raised = RigAnimation(rig.name, rig.joint_names, rig.parents, rig.rest_offsets,
                          rig.root_positions, lifted, rig.fps)  # fmt: skip
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    flags = np.zeros((rig.num_frames, 4), bool)
    flags[:28] = True  # wrongly: the left foot is in the air on frames 7-23
    result = lock_feet(raised, clear, flags, flags.astype(float))
    assert result.released[10:20, 0].min() > 0.9  # let go
    assert result.released[:28, 1].max() < 0.01  # the right foot is held
    k_in, k_out = knees(joint_positions(raised)), knees(joint_positions(result.rig))
    assert np.abs(np.diff(k_out - k_in, axis=0)).max() <= 10.0
    assert np.all(k_out <= np.maximum(MAX_KNEE_DEG, k_in) + 1e-6)


def test_short_tracks_and_a_missing_floor_are_left_alone_and_said_once(clips: dict[str, Gait]):
    rig = clips["walk"].rig
    skel = clips["walk"].skeleton
    short = [RigAnimation(f"person_{n}", rig.joint_names, rig.parents, rig.rest_offsets,
                          rig.root_positions[:n].copy(), rig.local_rotations[:n].copy(), rig.fps)
             for n in (1, 2)]  # fmt: skip
    rigs = list(short)
    result = lock_rigs(rigs, [skel, skel], [None, None], floor=0.0)
    assert all(a is b for a, b in zip(rigs, short, strict=True)) and not result.reports
    assert len(result.notes) == 2 and all(
        "too few to find foot contacts" in n for n in result.notes
    )
    rigs = [rig]
    result = lock_rigs(rigs, [skel], [None], floor=None)
    assert rigs[0] is rig and not result.reports
    assert result.notes == ["no floor was fitted: foot contacts not found, feet not locked"]


def test_export_of_a_two_frame_person_says_so_once(clips: dict[str, Gait], tmp_path: Path):
    rig = clips["walk"].rig
    short = RigAnimation("person_1", rig.joint_names, rig.parents, rig.rest_offsets,
                         rig.root_positions[:2].copy(), rig.local_rotations[:2].copy(), rig.fps)  # fmt: skip
    report = export_motion(to_motion([short, rig]), tmp_path, "npz")
    assert report.ok, report.summary()
    said = [n for n in report.notes if "too few to find foot contacts" in n]
    assert said == ["person_1 has 2 frame(s), too few to find foot contacts: feet not locked"]
    assert set(report.contacts) == {2}
    assert report.summary().count("too few to find foot contacts") == 1


def test_an_smpl_skeleton_walks_as_well(shared_data: Path, smpl_dir: Path):
    body = load_body_model(smpl_dir / "SMPL_NEUTRAL.pkl", required=True, extra_regressors=False)
    assert body is not None
    betas = np.load(shared_data / "spin_npz" / "test_mosh.npz")["shape"][0]
    sole = float(body.rest_vertices(betas)[:, 1].min())
    gait = walk(shared_data, skeleton=smpl_skeleton(body, betas, sole_height=sole))
    noisy, flags, result = run_lock(gait, 0)
    clear = gait.skeleton.sole_clearance[list(POINTS)]
    assert f1(flags, gait.contacts) >= 0.9
    before = foot_metrics(joint_positions(noisy)[:, list(POINTS)], clear, gait.contacts)
    after = foot_metrics(joint_positions(result.rig)[:, list(POINTS)], clear, gait.contacts)
    assert after.sliding_mm < 5.0 and before.sliding_mm / after.sliding_mm >= 5.0


def test_export_locks_every_native_format_and_reports(clips: dict[str, Gait], tmp_path: Path):
    """Through export_motion (camera-frame motion -> world -> contacts -> locking): BVH and npz
    carry the locked motion, the report the metrics; --foot-lock off leaves the feet sliding."""
    motion = to_motion([add_estimator_noise(clips["walk"].rig, seed=3)])
    report = export_motion(motion, tmp_path / "on", "npz,bvh")
    assert report.ok, report.summary()
    rep = report.contacts[1]
    assert rep.after is not None and rep.before.sliding_mm > 12 and rep.after.sliding_mm < 3
    assert 0.8 < rep.before.contact_share <= 1.0 and rep.after.penetration_mm < 0.5
    assert "sliding" in report.summary() and rep.spans()["left_ankle"][0][0] == 0
    with np.load(tmp_path / "on" / "person_1.npz") as z:
        locked = z["joint_positions"]
    clip = read_bvh(tmp_path / "on" / "person_1.bvh")
    bvh = clip.world_positions()[:, [clip.names.index(n) for n in clips["walk"].rig.joint_names]]
    assert np.abs(bvh - locked).max() < 1e-5
    step = np.linalg.norm(np.diff(locked[:, list(POINTS)], axis=0), axis=-1)
    assert step[rep.contacts[1:] & rep.contacts[:-1]].mean() < 0.003
    off = export_motion(motion, tmp_path / "off", "npz", foot_lock="off")
    assert off.contacts[1].after is None
    with np.load(tmp_path / "off" / "person_1.npz") as z:
        loose = z["joint_positions"]
    step = np.linalg.norm(np.diff(loose[:, list(POINTS)], axis=0), axis=-1)
    assert step[rep.contacts[1:] & rep.contacts[:-1]].mean() > 0.012


def test_contacts_go_into_motion_npz_and_are_reused(clips: dict[str, Gait], tmp_path: Path):
    motion = to_motion([add_estimator_noise(clips["walk"].rig, seed=4)])
    found, result = find_contacts(motion)
    flags = found.tracks[0].extras["contacts"]
    assert flags.shape == (len(motion.tracks[0]), 4) and flags.dtype == np.float32
    np.testing.assert_array_equal(flags > 0.5, result.reports[1].contacts)
    assert f1(flags > 0.5, clips["walk"].contacts) >= 0.9
    loaded = Motion.load(found.save(tmp_path / "motion.npz"))
    np.testing.assert_array_equal(loaded.tracks[0].extras["contacts"], flags)
    # the stored flags are what export uses (a model's own contacts, or edited ones)
    edited = flags.copy()
    edited[:, 0] = 0.0  # no left-heel contact at all
    track = loaded.tracks[0].replace(extras={"contacts": edited})
    report = export_motion(Motion([track], loaded.fps, (1920, 1080), 1500.0), tmp_path, "npz")
    np.testing.assert_array_equal(report.contacts[1].contacts, edited > 0.5)


def test_soles_are_kept_above_the_floor_without_contacts(clips: dict[str, Gait]):
    """No contact found (e.g. --foot-lock on a track whose feet were never still): the ground
    constraint alone lifts soles that an estimate sank below the floor (here 2 cm)."""
    rig = clips["walk"].rig
    sunk = RigAnimation(rig.name, rig.joint_names, rig.parents, rig.rest_offsets,
                        rig.root_positions - [0.0, 0.02, 0.0], rig.local_rotations, rig.fps)  # fmt: skip
    clear = clips["walk"].skeleton.sole_clearance[list(POINTS)]
    none = np.zeros((rig.num_frames, 4), bool)
    result = lock_feet(sunk, clear, none, none.astype(float))
    before = joint_positions(sunk)[:, list(POINTS)]
    after = joint_positions(result.rig)[:, list(POINTS)]
    assert (before[..., 1] - clear).min() < -0.019
    assert (after[..., 1] - clear).min() > -0.001
    assert foot_metrics(after, clear, none).penetration_mm < 0.1
    np.testing.assert_allclose(result.rig.root_positions, sunk.root_positions)  # legs only
