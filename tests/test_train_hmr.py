"""Decoder training: losses, schedule, feature cache, overfitting, exact resume, CLI."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mocap.body.smpl import BodyModel, load_body_model
from mocap.cli import main as mocap_main
from mocap.errors import MocapError
from mocap.geometry import axis_angle_to_rotmat
from mocap.model.build import build_model, model_config
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


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models are latency-bound: on a shared 2-core machine one thread is ~10x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_rotmats(b: int, scale: float, seed: int) -> torch.Tensor:
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
        # The crop is stored as uint8 (JBU guidance only): within half a grey level.
        np.testing.assert_allclose(sample.image, plain.image, rtol=0, atol=0.51 / 255 / 0.224)
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


@pytest.mark.parametrize("variant", ["hmr2", "vitpose-deformable", "featup-deformable"])
def test_decoding_cached_features_equals_the_full_forward(variant: str) -> None:
    """Training from the cache runs exactly the second half of HMR.forward."""
    torch.manual_seed(0)
    model = build_model(model_config(variant, "tiny")).eval()
    images = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        full = model(images)
        feats = FC.backbone_features(model, images)
        cached = {k: FC.from_bf16_bits(FC.to_bf16_bits(v)).float() for k, v in feats.items()}
        split = FC.decode_features(model, feats, images)
        from_cache = FC.decode_features(model, cached, images)
    for name in ("rotmat", "betas", "cam"):
        torch.testing.assert_close(getattr(split, name), getattr(full, name), rtol=0, atol=1e-6)
        # bf16 storage moves the output a little, not a lot.
        torch.testing.assert_close(
            getattr(from_cache, name), getattr(full, name), rtol=0, atol=0.05
        )


def write_consistent_h36m(shared_data: Path, out: Path, body: BodyModel) -> str:
    """The 4 real H36M samples (images, boxes, SMPL pose/shape) with 2D/3D joints re-derived from
    the SMPL parameters through the test body, so every loss term can reach zero: the real joints
    belong to the real SMPL body, which the synthetic test body only resembles."""
    root = shared_data / "spin_npz"
    d = dict(np.load(root / "test_h36m.npz", allow_pickle=False))
    rot = axis_angle_to_rotmat(torch.from_numpy(d["pose"]).float().reshape(-1, 24, 3))
    with torch.no_grad():
        posed = body(rot[:, :1], rot[:, 1:], torch.from_numpy(d["shape"]).float())
        kp, valid = L.spin_keypoints(posed.joints, posed.vertices)
    xyz = kp.double().numpy() + (d["S"][:, 14:15, :3] - kp[:, 14:15].double().numpy())
    uv = 1145.0 * xyz[..., :2] / xyz[..., 2:] + np.array([512.0, 515.0])  # H36M camera (fitted)
    conf = np.broadcast_to(valid.double().numpy(), xyz.shape[:2])[..., None]
    d["S"], d["part"] = np.concatenate([xyz, conf], -1), np.concatenate([uv, conf], -1)
    np.savez(out, **d)
    return f"{out}:{root}/images/h36m"


STEPS = 100


@pytest.fixture(scope="module")
def train_inputs(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, body: BodyModel
) -> dict:
    tmp = tmp_path_factory.mktemp("train_inputs")
    return {
        "data": [write_consistent_h36m(shared_data, tmp / "h36m.npz", body)],
        # the deformable head re-encodes the file's SPIN 6D layout itself (spin_pose_to_columns)
        "mean_params": str(shared_data / "spin_npz" / "smpl_mean_params.npz"),
    }


def tiny_config(
    out: Path, train_inputs: dict, smpl_dir: Path, **overrides: object
) -> H.TrainConfig:
    """Tiny deformable decoder on the 4 H36M samples, trained from a feature cache."""
    base = dict(
        out=str(out / "run"), variant="vitpose-deformable", size="tiny", smpl=str(smpl_dir / "SMPL_NEUTRAL.pkl"),
        batch_size=4, lr=5e-3, warmup_steps=5, precision="fp32", log_every=1, augment=False,
        feature_cache=str(out / "cache"), num_workers=0, **train_inputs,
    )  # fmt: skip
    return H.TrainConfig(**{**base, **overrides})  # type: ignore[arg-type]


def test_overfitting_drives_every_loss_term_down_10x(
    tmp_path: Path, train_inputs: dict, smpl_dir: Path
) -> None:
    # Dropout off (it sets a noise floor), and the SMPL term at the vertex weight (paper: 1): the
    # synthetic body's limbs are tubes, so twisting a bone barely moves a vertex and only the SMPL
    # term fixes twist.
    cfg = tiny_config(tmp_path, train_inputs, smpl_dir, steps=STEPS, checkpoint_every=STEPS, dropout=0.0,
                      loss_weights=L.LossWeights(smpl=60.0))  # fmt: skip
    history = H.train(cfg)
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    terms = ("smpl", "keypoints_2d", "keypoints_3d", "vertices")
    drop = {
        t: np.mean([h[t] for h in history[:3]]) / np.mean([h[t] for h in history[-5:]])
        for t in terms
    }
    assert min(drop.values()) >= 10.0, drop
    run = Path(cfg.out)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1)) and lines[-1][
        "total"
    ] == history[-1]["total"]
    assert H.TrainConfig.from_json((run / "config.json").read_text()) == cfg
    assert list((run / "tb").iterdir()), "TensorBoard events missing"
    from mocap.model.checkpoint import (
        load_checkpoint,
    )  # the checkpoint is a normal mocap model file

    model = load_checkpoint(run / "checkpoints" / f"step_{STEPS:07d}.safetensors")
    assert model.config.variant == "vitpose-deformable"


def test_resume_reproduces_the_uninterrupted_run(
    tmp_path: Path, train_inputs: dict, smpl_dir: Path
) -> None:
    """With dropout on, so the RNG state matters too."""
    steps, resume_at = 8, 5
    cfg = tiny_config(tmp_path, train_inputs, smpl_dir, steps=steps, checkpoint_every=resume_at)
    history = H.train(cfg)

    def resume(name: str, rng: torch.Tensor | None = None) -> tuple[Path, list[dict[str, float]]]:
        # The disk as a run killed between step `resume_at` and the end would have left it.
        run = tmp_path / name
        shutil.copytree(cfg.out, run)
        for f in (run / "checkpoints").glob(f"step_{steps:07d}.*"):
            f.unlink()
        stem = f"step_{resume_at:07d}"
        (run / "latest.json").write_text(json.dumps({"step": resume_at, "model": f"{stem}.safetensors",
                                                     "state": f"{stem}.state.pt"}))  # fmt: skip
        if rng is not None:
            state = torch.load(run / "checkpoints" / f"{stem}.state.pt", weights_only=True)
            torch.save({**state, "torch_rng": rng}, run / "checkpoints" / f"{stem}.state.pt")
        return run, H.train(H.TrainConfig(**{**vars(cfg), "out": str(run)}), resume=True)

    def losses(h: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in h.items() if k != "steps_per_s"}

    run, resumed = resume("resumed")
    assert [h["step"] for h in resumed] == list(range(resume_at + 1, steps + 1))
    assert [losses(h) for h in resumed] == [losses(h) for h in history[resume_at:]]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, steps + 1))
    state = torch.load(run / "checkpoints" / f"step_{steps:07d}.state.pt", weights_only=True)
    assert state["step"] == steps and state["samples_seen"] == steps * cfg.batch_size
    # With another RNG state (dropout masks) the continuation differs: the check above has teeth.
    _, other = resume("other_rng", torch.Generator().manual_seed(123).get_state())
    assert losses(other[0]) != losses(history[resume_at])
    # Starting over in a used run folder is refused rather than overwriting it.
    with pytest.raises(MocapError, match="--resume"):
        H.train(H.TrainConfig(**{**vars(cfg), "out": str(run)}))


def test_cli(
    tmp_path: Path, h36m_spec: str, smpl_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mocap_main(["train"]) == 1
    assert "mocap train hmr" in capsys.readouterr().err
    args = ["train", "hmr", "--data", h36m_spec, "--out", str(tmp_path / "run"), "--variant", "hmr2",
            "--size", "tiny", "--smpl", str(smpl_dir), "--steps", "2", "--batch-size", "2", "--workers", "0",
            "--log-every", "1", "--precision", "bf16"]  # fmt: skip
    assert mocap_main([*args, "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert mocap_main(args) == 0
    assert "step 2: loss" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["augment"] is True and cfg["batch_size"] == 2
    assert (tmp_path / "run" / "checkpoints" / "step_0000002.safetensors").is_file()
    assert mocap_main(["train", "hmr", "--data", "missing.npz", "--out", str(tmp_path / "x"), "--size", "tiny",
                       "--smpl", str(smpl_dir)]) == 1  # fmt: skip
    assert "does not exist" in capsys.readouterr().err


def test_cli_featup_dispatch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mocap.train.cli as train_cli

    monkeypatch.setattr(train_cli, "FEATUP_MODULE", "mocap.train.no_such_module")
    assert mocap_main(["train", "featup"]) == 1
    assert "FeatUp pretraining is not available" in capsys.readouterr().err
