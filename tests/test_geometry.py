"""Rotations, cameras and Procrustes: proper rotations, round trips, exact alignments."""

import math

import numpy as np
import pytest
import torch

from mocap import geometry as g


def _random_rotmats(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    return g.quat_to_rotmat(q)


def _assert_proper(rot: torch.Tensor, atol: float = 1e-6) -> None:
    eye = torch.eye(3, dtype=rot.dtype).expand_as(rot)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), eye, atol=atol, rtol=0)
    torch.testing.assert_close(
        torch.linalg.det(rot), torch.ones(rot.shape[:-2], dtype=rot.dtype), atol=atol, rtol=0
    )


def test_rot6d_gives_proper_rotations_and_round_trips() -> None:
    x = torch.randn(64, 24, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rot = g.rot6d_to_rotmat(x)
    assert rot.shape == (64, 24, 3, 3)
    _assert_proper(rot, atol=1e-10)
    # The first column is the normalised a1 (HMR2.0: columns, not rows).
    torch.testing.assert_close(rot[..., :, 0], x[..., :3] / x[..., :3].norm(dim=-1, keepdim=True))
    # rotmat -> 6D -> rotmat is the identity on rotations.
    torch.testing.assert_close(g.rot6d_to_rotmat(g.rotmat_to_rot6d(rot)), rot)


def test_rot6d_matches_hmr2_identity_layout() -> None:
    # HMR2.0's mean pose stores the identity as (1, 0, 0, 0, 1, 0) per joint.
    ident = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(g.rot6d_to_rotmat(ident), torch.eye(3))
    # a1 along y, a2 along x: columns (y, x, y cross x = -z).
    rot = g.rot6d_to_rotmat(torch.tensor([0.0, 2.0, 0.0, 3.0, 0.0, 0.0]))
    expected = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    torch.testing.assert_close(rot, expected)


def test_axis_angle_round_trip_including_small_and_near_pi_angles() -> None:
    gen = torch.Generator().manual_seed(2)
    axis = torch.nn.functional.normalize(
        torch.randn(200, 3, generator=gen, dtype=torch.float64), dim=-1
    )
    angle = torch.cat(
        (
            torch.rand(100, generator=gen, dtype=torch.float64) * math.pi * 0.999,
            torch.full((50,), 1e-7, dtype=torch.float64),
            math.pi - torch.rand(50, generator=gen, dtype=torch.float64) * 1e-4,
        )
    )
    aa = axis * angle[:, None]
    rot = g.axis_angle_to_rotmat(aa)
    _assert_proper(rot, atol=1e-12)
    back = g.rotmat_to_axis_angle(rot)
    torch.testing.assert_close(g.axis_angle_to_rotmat(back), rot, atol=1e-9, rtol=0)
    torch.testing.assert_close(back[:150], aa[:150], atol=1e-6, rtol=0)


def test_axis_angle_known_value_and_gradient_at_zero() -> None:
    rot = g.axis_angle_to_rotmat(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(rot @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
    aa = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    g.axis_angle_to_rotmat(aa).sum().backward()
    assert aa.grad is not None and torch.isfinite(aa.grad).all()


def test_quaternion_round_trip_and_convention() -> None:
    rot = _random_rotmats(500)
    q = g.rotmat_to_quat(rot)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(g.quat_to_rotmat(q), rot, atol=1e-12, rtol=0)
    # w first: 90 degrees about z.
    q90 = g.rotmat_to_quat(g.axis_angle_to_rotmat(torch.tensor([0.0, 0.0, math.pi / 2])))
    s = math.sqrt(0.5)
    torch.testing.assert_close(q90, torch.tensor([s, 0.0, 0.0, s]))


def test_slerp_endpoints_midpoint_and_shorter_arc() -> None:
    q0 = g.rotmat_to_quat(torch.eye(3, dtype=torch.float64))
    q1 = g.rotmat_to_quat(
        g.axis_angle_to_rotmat(torch.tensor([0.0, 1.2, 0.0], dtype=torch.float64))
    )
    torch.testing.assert_close(g.quat_slerp(q0, q1, 0.0), q0)
    torch.testing.assert_close(g.quat_slerp(q0, q1, 1.0), q1)
    mid = g.quat_to_axis_angle(g.quat_slerp(q0, q1, 0.5))
    torch.testing.assert_close(mid, torch.tensor([0.0, 0.6, 0.0], dtype=torch.float64))
    # -q1 is the same rotation: the result must not take the long way round.
    torch.testing.assert_close(
        g.quat_to_rotmat(g.quat_slerp(q0, -q1, 0.25)), g.quat_to_rotmat(g.quat_slerp(q0, q1, 0.25))
    )
    # Batched t and nearly identical quaternions stay unit and finite.
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    out = g.quat_slerp(q0.expand(5, 4), (q0 + 1e-9).expand(5, 4), t)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5, dtype=torch.float64))


def test_cam_crop_to_full_matches_hmr2_formula() -> None:
    cam = torch.tensor([[0.8, 0.05, -0.1]])
    center, size = torch.tensor([[700.0, 300.0]]), torch.tensor([400.0])
    image = torch.tensor([[1920.0, 1080.0]])
    t = g.cam_crop_to_full(cam, center, size, image)
    f = 5000.0 / 256.0 * 1920.0
    bs = 400.0 * 0.8 + 1e-9
    expected = torch.tensor([[2 * (700 - 960) / bs + 0.05, 2 * (300 - 540) / bs - 0.1, 2 * f / bs]])
    torch.testing.assert_close(t, expected)
    # The focal length is overridable and only changes depth.
    t2 = g.cam_crop_to_full(cam, center, size, image, focal_length=1000.0)
    torch.testing.assert_close(t2[:, :2], t[:, :2])
    torch.testing.assert_close(t2[:, 2], torch.tensor([2000.0 / bs]))


def test_full_camera_reprojects_crop_projection() -> None:
    """A point seen through the crop camera lands on the same pixel through the full camera."""
    cam = torch.tensor([[0.9, 0.02, 0.03]], dtype=torch.float64)
    center = torch.tensor([[500.0, 400.0]], dtype=torch.float64)
    size = torch.tensor([300.0], dtype=torch.float64)
    image = torch.tensor([[1280.0, 720.0]], dtype=torch.float64)
    pts = torch.tensor([[[0.1, -0.3, 0.05], [-0.2, 0.4, 0.0]]], dtype=torch.float64)
    crop_t = g.crop_camera_translation(cam)
    uv_crop = g.perspective_projection(pts, crop_t, 5000.0 / 256.0)  # in [-0.5, 0.5] crop units
    focal = g.default_focal_length(image)
    full_t = g.cam_crop_to_full(cam, center, size, image)
    uv_full = g.perspective_projection(pts, full_t, focal, principal_point=image / 2)
    # Weak perspective: exact only for points at the root depth, close for a body-sized spread.
    expected = center[:, None, :] + uv_crop * size
    torch.testing.assert_close(uv_full, expected, atol=0.5, rtol=0)


def test_perspective_projection_values() -> None:
    pts = torch.tensor([[[1.0, 2.0, 4.0]]])
    uv = g.perspective_projection(
        pts,
        torch.tensor([[0.0, 0.0, 1.0]]),
        torch.tensor([[100.0, 200.0]]),
        torch.tensor([[5.0, 6.0]]),
    )
    torch.testing.assert_close(uv, torch.tensor([[[25.0, 86.0]]]))
    rot = g.axis_angle_to_rotmat(torch.tensor([[0.0, 0.0, math.pi]]))
    uv_rot = g.perspective_projection(pts, torch.tensor([[0.0, 0.0, 1.0]]), 10.0, rotation=rot)
    torch.testing.assert_close(uv_rot, torch.tensor([[[-2.0, -4.0]]]))


def test_procrustes_recovers_similarity_exactly() -> None:
    gen = torch.Generator().manual_seed(3)
    src = torch.randn(4, 24, 3, generator=gen, dtype=torch.float64)
    rot = _random_rotmats(4, seed=4)
    scale = torch.tensor([0.5, 1.0, 2.0, 3.3], dtype=torch.float64)
    trans = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    dst = scale[:, None, None] * src @ rot.transpose(1, 2) + trans[:, None]
    s, r, t = g.procrustes_params(src, dst)
    torch.testing.assert_close(s, scale)
    torch.testing.assert_close(r, rot)
    torch.testing.assert_close(t, trans)
    torch.testing.assert_close(g.procrustes_align(src, dst), dst)
    np.testing.assert_allclose(
        g.procrustes_align_np(src.numpy(), dst.numpy()), dst.numpy(), atol=1e-10
    )
    np.testing.assert_allclose(
        g.procrustes_align_np(src[0].numpy(), dst[0].numpy()), dst[0].numpy(), atol=1e-10
    )


def test_procrustes_never_reflects_and_reduces_error() -> None:
    gen = torch.Generator().manual_seed(5)
    src = torch.randn(2, 30, 3, generator=gen, dtype=torch.float64)
    mirrored = src * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    _, r, _ = g.procrustes_params(src, mirrored)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(2, dtype=torch.float64))
    noisy = src + 0.05 * torch.randn(src.shape, generator=gen, dtype=torch.float64)
    aligned = g.procrustes_align(src, noisy)
    assert (aligned - noisy).norm(dim=-1).mean() <= (src - noisy).norm(dim=-1).mean()


@pytest.mark.parametrize(
    ("fn", "dim"),
    [(g.rot6d_to_rotmat, 6), (g.axis_angle_to_rotmat, 3), (g.quat_to_rotmat, 4)],
)
def test_rotation_conversions_pass_gradcheck(fn, dim: int) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(8, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(),))
