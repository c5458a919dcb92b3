"""Metric definitions: invariances and known values."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mocap.eval.metrics import H36M_TO_J14, accel_error, mpjpe, pa_mpjpe, protocol_errors


@pytest.fixture
def joints() -> np.ndarray:
    return np.random.default_rng(0).normal(scale=0.3, size=(5, 17, 3))


def test_pa_mpjpe_is_zero_for_a_similar_copy(joints):
    rot = Rotation.random(5, random_state=1).as_matrix()
    copy = 1.7 * joints @ rot.transpose(0, 2, 1) + np.array([0.3, -2.0, 5.0])
    np.testing.assert_allclose(pa_mpjpe(copy, joints), 0.0, atol=1e-9)
    assert (mpjpe(copy, joints) > 100).all()  # but the raw error is large


def test_known_offset_gives_known_mpjpe(joints):
    shifted = joints + np.array([0.003, 0.004, 0.0])  # 5 mm everywhere
    np.testing.assert_allclose(mpjpe(shifted, joints), 5.0)
    # The protocol aligns pelvises, so a global shift costs nothing there...
    np.testing.assert_allclose(protocol_errors(shifted, joints).mpjpe, 0.0, atol=1e-9)
    # ...while moving one LSP joint by 14 mm costs 14/14 = 1 mm.
    moved = joints.copy()
    moved[:, H36M_TO_J14[0], 0] += 0.014
    np.testing.assert_allclose(protocol_errors(moved, joints).mpjpe, 1.0)


def test_pve_uses_pelvis_alignment(joints):
    verts = np.random.default_rng(2).normal(size=(5, 30, 3))
    errs = protocol_errors(joints + 1.0, joints, verts + 1.0 + 0.002, verts)
    assert errs.pve is not None
    np.testing.assert_allclose(errs.pve, 2.0 * np.sqrt(3.0), rtol=1e-9)
    assert set(errs.summary()) == {"MPJPE", "PA-MPJPE", "PVE"}


def test_acceleration_error():
    t = np.arange(20, dtype=float)[:, None, None]
    gt = np.zeros((20, 3, 3))
    constant_velocity = gt + t * np.array([0.01, 0.0, -0.02])
    assert accel_error(constant_velocity, gt) == pytest.approx(0.0, abs=1e-9)
    accelerating = gt + 0.5 * 0.002 * t**2  # 2 mm/frame^2 on each axis
    assert accel_error(accelerating, gt) == pytest.approx(2.0 * np.sqrt(3.0))
    with pytest.raises(ValueError):
        accel_error(gt[:2], gt[:2])
