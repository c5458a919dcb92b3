"""Deformable decoder head: shapes, IEF from the real SMPL mean params, gradients, fast == reference."""

import pytest
import torch

from mocap.errors import MocapError
from mocap.geometry import rot6d_to_rotmat
from mocap.model.deformable_head import build_deformable_head

LEVEL_SHAPES = [(16, 12), (64, 48), (16, 12), (64, 48)]


def _levels(dims, batch=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, h, w, generator=g, dtype=dtype).contiguous(
            memory_format=torch.channels_last
        )
        for c, (h, w) in zip(dims, LEVEL_SHAPES, strict=True)
    ]


@pytest.fixture(scope="module")
def mean_params_path(shared_data):
    return shared_data / "spin_npz" / "smpl_mean_params.npz"


def _tiny_head(mean_params, dims=(32, 32, 32, 32), **kw):
    torch.manual_seed(0)
    return build_deformable_head(
        d_model=32,
        level_dims=list(dims),
        num_layers=2,
        num_heads=2,
        num_points=2,
        ffn_dim=64,
        mean_params=mean_params,
        **kw,
    )


def test_shapes_finite_and_attention_normalised(mean_params_path) -> None:
    head = _tiny_head(mean_params_path).eval()
    out = head(_levels([32] * 4))
    assert out.rotmat.shape == (2, 24, 3, 3)
    assert out.betas.shape == (2, 10) and out.cam.shape == (2, 3)
    assert out.aux["sampling_locations"].shape == (2, 26, 2, 4, 2, 2)
    assert out.aux["attention_weights"].shape == (2, 26, 2, 4, 2)
    assert out.aux["reference_points"].shape == (2, 26, 2)
    for t in (out.rotmat, out.betas, out.cam, *out.aux.values()):
        assert torch.isfinite(t).all()
    sums = out.aux["attention_weights"].sum((-1, -2))
    torch.testing.assert_close(sums, torch.ones_like(sums))
    eye = torch.eye(3).expand(2, 24, 3, 3)
    # the SPIN mean pose is nearly degenerate in the columns convention: float32 round-off ~1e-5
    torch.testing.assert_close(out.rotmat @ out.rotmat.transpose(-1, -2), eye, atol=1e-4, rtol=0)
    assert torch.allclose(torch.linalg.det(out.rotmat), torch.ones(2, 24), atol=1e-4)
    ref = out.aux["reference_points"]
    assert ((ref > 0) & (ref < 1)).all()


def test_starts_near_the_real_smpl_mean(mean_params_path) -> None:
    import numpy as np

    head = _tiny_head(mean_params_path).eval()
    mean = np.load(mean_params_path)
    out = head(_levels([32] * 4))
    # decoders are initialised with gain 0.01: the first estimate is the mean plus a small delta
    torch.testing.assert_close(
        out.betas, torch.from_numpy(mean["shape"]).expand(2, 10), atol=0.05, rtol=0
    )
    torch.testing.assert_close(
        out.cam, torch.from_numpy(mean["cam"]).expand(2, 3), atol=0.05, rtol=0
    )
    assert not torch.equal(out.betas[0], torch.from_numpy(mean["shape"]))
    # and the pose starts at the true mean pose: the file's SPIN-layout 6D read SPIN's way
    # (a1 = x[0::2], a2 = x[1::2]), a proper rotation per joint with the root facing the camera
    spin6d = torch.from_numpy(mean["pose"]).float().reshape(24, 3, 2)
    expected = rot6d_to_rotmat(spin6d.transpose(1, 2).reshape(24, 6))
    torch.testing.assert_close(out.rotmat, expected.expand(2, 24, 3, 3), atol=0.05, rtol=0)
    torch.testing.assert_close(
        expected[0], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-5, rtol=0
    )


def test_gradients_reach_every_parameter(mean_params_path) -> None:
    head = _tiny_head(mean_params_path, dims=(32, 24, 32, 16), ief_iters=2).train()
    levels = [x.requires_grad_() for x in _levels([32, 24, 32, 16])]
    out = head(levels)
    loss = out.rotmat.square().sum() + out.betas.square().sum() + out.cam.square().sum()
    loss.backward()
    missing = [
        n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in levels)


def test_fast_path_matches_reference_in_float64(mean_params_path) -> None:
    head = _tiny_head(mean_params_path, dims=(32, 24, 32, 16)).double().eval()
    levels = _levels([32, 24, 32, 16], dtype=torch.float64)
    fast = head(levels)
    slow = head(levels, reference=True)
    for a, b in ((fast.rotmat, slow.rotmat), (fast.betas, slow.betas), (fast.cam, slow.cam)):
        assert (a - b).abs().max() / b.abs().max() < 1e-10


def test_state_dict_layout(mean_params_path) -> None:
    keys = set(_tiny_head(mean_params_path).state_dict())
    assert {
        "init_body_pose",
        "init_betas",
        "init_cam",
        "level_embed",
        "query_pos",
        "tgt_embed",
    } <= keys
    assert "layers.1.cross_attn.sampling_offsets.weight" in keys
    assert "layers.0.cross_attn.value_proj.weight" in keys  # equal widths: one shared projection
    mixed = set(_tiny_head(mean_params_path, dims=(32, 24, 32, 16)).state_dict())
    assert "layers.0.cross_attn.value_proj.1.weight" in mixed


def test_unreadable_mean_params_is_a_user_error(tmp_path) -> None:
    with pytest.raises(MocapError):
        _tiny_head(tmp_path / "missing.npz")


def test_neutral_stand_in_starts_upright_facing_the_camera() -> None:
    head = _tiny_head(None).eval()
    out = head(_levels([32] * 4))
    upright = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(out.rotmat[:, 0], upright.expand(2, 3, 3), atol=0.05, rtol=0)
    torch.testing.assert_close(
        out.rotmat[:, 1:], torch.eye(3).expand(2, 23, 3, 3), atol=0.05, rtol=0
    )
