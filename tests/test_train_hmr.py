"""Decoder training: losses, schedule, feature cache, overfitting, exact resume, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mocap.body.smpl import BodyModel, load_body_model
from mocap.errors import MocapError
from mocap.model.vit import build_vit
from mocap.train import augment as aug
from mocap.train import data as D
from mocap.train import feature_cache as FC
from mocap.train import hmr as H
from mocap.train import losses as L


@pytest.fixture(scope="module")
def body(smpl_dir: Path) -> BodyModel:
    model = load_body_model(smpl_dir / "SMPL_NEUTRAL.pkl", required=True)
    assert model is not None
    return model


@pytest.fixture(scope="module")
def h36m_spec(shared_data: Path) -> str:
    root = shared_data / "spin_npz"
    return f"{root}/test_h36m.npz:{root}/images/h36m"


def _random_rotmats(b: int, scale: float, seed: int) -> torch.Tensor:
    from mocap.geometry import axis_angle_to_rotmat

    aa = torch.randn(b, 24, 3, generator=torch.Generator().manual_seed(seed)) * scale
    return axis_angle_to_rotmat(aa)


def _targets_from_body(
    body: BodyModel, rotmat: torch.Tensor, betas: torch.Tensor, cam: torch.Tensor
) -> L.LossTargets:
    out = body(rotmat[:, :1], rotmat[:, 1:], betas)
    kp, valid = L.spin_keypoints(out.joints, out.vertices)
    uv = L.project_to_crop(kp, cam)
    b = rotmat.shape[0]
    conf = valid.expand(b, 24)[..., None]
    cam_t = torch.stack([cam[:, 1], cam[:, 2], 2 * 5000 / (256 * cam[:, 0])], -1)
    return L.LossTargets(
        rotmat=rotmat, betas=betas, vertices=out.vertices,
        keypoints_2d=torch.cat([uv, conf], -1), joints_3d=torch.cat([kp + cam_t[:, None], conf], -1),
        has_smpl=torch.ones(b), has_3d=torch.ones(b),
    )  # fmt: skip


def test_losses_vanish_at_ground_truth_and_are_linear_in_samples(body: BodyModel) -> None:
    b = 6
    rotmat, betas = (
        _random_rotmats(b, 0.3, 0),
        torch.randn(b, 10, generator=torch.Generator().manual_seed(1)),
    )
    cam = torch.tensor([[0.9, 0.02, -0.05]]).repeat(b, 1)
    target = _targets_from_body(body, rotmat, betas, cam)
    w = L.LossWeights()

    def losses(
        rot: torch.Tensor, bet: torch.Tensor, c: torch.Tensor, t: L.LossTargets
    ) -> L.LossTerms:
        out = body(rot[:, :1], rot[:, 1:], bet)
        kp, valid = L.spin_keypoints(out.joints, out.vertices)
        return L.hmr_losses(rot, bet, c, kp, valid, out.vertices, t, w)

    exact = losses(rotmat, betas, cam, target).as_floats()
    assert all(v < 1e-9 for v in exact.values()), exact
    wrong = losses(_random_rotmats(b, 0.3, 7), betas + 0.5, cam * 1.1, target)
    assert min(wrong.as_floats().values()) > 1e-4
    # Missing SMPL ground truth switches the SMPL and vertex terms off, not the joint terms.
    target.has_smpl = torch.zeros(b)
    off = losses(_random_rotmats(b, 0.3, 7), betas + 0.5, cam * 1.1, target)
    assert off.smpl == 0 and off.vertices == 0 and off.keypoints_3d == wrong.keypoints_3d
    # Equal halves average to the whole batch: what DDP's gradient averaging relies on.
    target.has_smpl = torch.tensor([1.0, 0, 1, 1, 0, 1])
    pred = (_random_rotmats(b, 0.3, 7), betas + 0.5, cam * 1.1)
    full = losses(*pred, target).total

    def half(sl: slice) -> torch.Tensor:
        t = L.LossTargets(*(None if v is None else v[sl] for v in vars(target).values()))
        return losses(pred[0][sl], pred[1][sl], pred[2][sl], t).total

    torch.testing.assert_close((half(slice(0, 3)) + half(slice(3, 6))) / 2, full)


def test_regressor_replaces_the_first_spin_joints(body: BodyModel) -> None:
    out = body(
        _random_rotmats(2, 0.2, 3)[:, :1], _random_rotmats(2, 0.2, 3)[:, 1:], torch.zeros(2, 10)
    )
    reg = torch.zeros(19, 6890)
    reg[:, 0] = 1.0
    kp, valid = L.spin_keypoints(out.joints, out.vertices, reg)
    assert valid.sum() == 19 + 0  # joints 19..23 (face) have no SMPL joint
    torch.testing.assert_close(kp[:, :19], out.vertices[:, :1].expand(2, 19, 3))


def test_lr_schedule_warms_up_then_decays() -> None:
    f = [H.lr_factor(s, warmup=10, total=110, min_ratio=0.01) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert (
        f[60] == pytest.approx(0.505)
        and f[110] == pytest.approx(0.01)
        and f[119] == pytest.approx(0.01)
    )


def test_feature_cache_round_trip(tmp_path: Path, h36m_spec: str, shared_data: Path) -> None:
    root = shared_data / "spin_npz"
    specs = [
        D.parse_data_spec(h36m_spec),
        D.DataSpec(root / "test_3dhp_test.npz", root / "images" / "mpi_inf_3dhp"),
    ]
    anns = [D.load_annotations(s) for s in specs]
    dataset = D.MixedDataset(anns, aug.AugmentConfig())
    torch.manual_seed(0)
    vit = build_vit(dim=32, depth=2, num_heads=2, drop_path=0.0, taps=(1, 2)).eval()

    def feats(x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = vit(x)
        return {"final": f.final, **{f"tap{k}": v for k, v in f.taps.items()}}

    fp, records = FC.backbone_fingerprint(vit), FC.dataset_records(specs, anns)
    index = FC.write_feature_cache(
        tmp_path / "cache", dataset, feats, fp, records, batch_size=4, shard_size=4
    )
    assert index.num_samples == 6 and index.maps == {
        "final": [32, 16, 12],
        "tap1": [32, 16, 12],
        "tap2": [32, 16, 12],
    }
    assert sorted(p.name for p in (tmp_path / "cache").glob("final_*.npy")) == [
        "final_00000.npy",
        "final_00001.npy",
    ]
    cache = FC.FeatureCache(tmp_path / "cache")
    cached = FC.CachedDataset(anns, cache)
    for g in (0, 5):
        d, i = dataset.locate(g)
        plain = D.make_sample(anns[d], i, aug.AugmentParams(), g)
        sample = cached[(g, 123)]
        assert sample.image is not None and plain.image is not None and sample.features is not None
        np.testing.assert_allclose(sample.image, plain.image, atol=1e-5)  # crop stored losslessly
        np.testing.assert_array_equal(sample.keypoints_2d, plain.keypoints_2d)
        with torch.no_grad():
            live = feats(torch.from_numpy(plain.image)[None])
        for name, bits in sample.features.items():
            got = FC.from_bf16_bits(bits).float()
            torch.testing.assert_close(
                got, live[name][0].to(torch.bfloat16).float(), atol=0, rtol=0
            )
    batch = D.collate([cached[(g, 0)] for g in range(6)])
    assert batch.features is not None and batch.features["tap1"].shape == (6, 32, 16, 12)
    assert batch.features["tap1"].dtype == torch.bfloat16
    cache.check(fp, records)
    with pytest.raises(MocapError, match="other backbone"):
        cache.check("0" * 32, records)
    with pytest.raises(MocapError, match="other --data"):
        cache.check(fp, records[:1])
