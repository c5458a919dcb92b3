"""numpy unit quaternions against scipy's rotations and the torch versions in mocap.geometry."""

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from mocap.geometry import rotmat_to_quat
from mocap.quaternion import (
    matrix_to_quat,
    quat_conj,
    quat_exp,
    quat_log,
    quat_mul,
    quat_to_matrix,
    sign_continuous,
)


def _rotations(n: int, seed: int = 0) -> Rotation:
    return Rotation.random(n, random_state=seed)


def test_matrix_round_trip_and_convention_match_geometry() -> None:
    mats = _rotations(64).as_matrix().reshape(8, 8, 3, 3)
    q = matrix_to_quat(mats)
    assert q.shape == (8, 8, 4) and np.all(q[..., 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q), mats, atol=1e-12)
    ref = rotmat_to_quat(torch.from_numpy(mats)).numpy()
    ref *= np.where(ref[..., :1] < 0, -1.0, 1.0)  # same rotation, same hemisphere
    np.testing.assert_allclose(q, ref, atol=1e-9)


def test_product_conjugate_and_log_exp_are_the_rotation_group() -> None:
    a, b = _rotations(32, 1), _rotations(32, 2)
    qa, qb = matrix_to_quat(a.as_matrix()), matrix_to_quat(b.as_matrix())
    np.testing.assert_allclose(quat_to_matrix(quat_mul(qa, qb)), (a * b).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(quat_mul(qa, quat_conj(qa)), [[1.0, 0, 0, 0]] * 32, atol=1e-12)
    rotvec = quat_log(qa)
    np.testing.assert_allclose(rotvec, a.as_rotvec(), atol=1e-9)
    np.testing.assert_allclose(quat_to_matrix(quat_exp(rotvec)), a.as_matrix(), atol=1e-12)
    tiny = np.array([[1e-14, 0.0, 0.0], [0.0, 0.0, 0.0]])  # the series branch near the identity
    np.testing.assert_allclose(quat_log(quat_exp(tiny)), tiny, atol=1e-18)


def test_sign_continuous_keeps_rotations_and_removes_flips() -> None:
    q = matrix_to_quat(_rotations(50, 3).as_matrix())[:, None]  # (T,1,4)
    flipped = q * np.where(np.arange(50) % 3 == 0, -1.0, 1.0)[:, None, None]
    cont = sign_continuous(flipped)
    np.testing.assert_allclose(quat_to_matrix(cont), quat_to_matrix(q), atol=1e-12)
    assert np.all(np.sum(cont[1:] * cont[:-1], axis=-1) >= 0)
