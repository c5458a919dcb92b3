"""Checkpoints: mocap safetensors round trips, HMR2.0 Lightning files, malicious pickles, init CLI."""

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mocap.errors import MocapError
from mocap.model import init_cmd
from mocap.model.build import VARIANTS, build_model, hmr2
from mocap.model.checkpoint import (
    is_mocap_checkpoint,
    load_checkpoint,
    load_hmr2_checkpoint,
    read_config,
    save_checkpoint,
)
from mocap.model.hmr import HMR
from mocap.model.predictor import Predictor

IMAGES = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(0))


class FakeCfgNode(dict):  # type: ignore[type-arg]
    """Stands in for the yacs CfgNode HMR2.0 pickles beside its weights."""

    def __init__(self, **items: object) -> None:
        super().__init__(**items)
        self.frozen = True


class Exploit:
    """Pickles as ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mocap_checkpoint_round_trip_is_bit_exact(tmp_path: Path, variant: str) -> None:
    torch.manual_seed(0)
    config = VARIANTS[variant]("tiny")
    model = build_model(config).eval()
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old contents")  # replaced atomically
    save_checkpoint(path, model, metadata={"step": "12"})
    assert os.listdir(tmp_path) == ["model.safetensors"] and is_mocap_checkpoint(path)
    assert read_config(path) == config
    loaded = load_checkpoint(path).eval()
    assert loaded.config == config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if variant != "featup-deformable":  # (JBU is slow on CPU; equal weights are the proof)
        with torch.no_grad():
            out, again = model(IMAGES), loaded(IMAGES)
        # Identical weights; kernels may still round differently depending on memory alignment.
        torch.testing.assert_close(out.rotmat, again.rotmat, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.cam, again.cam, rtol=0, atol=1e-6)
    # Frozen parts stay frozen after loading (trainable set unchanged).
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, p in loaded.named_parameters() if p.requires_grad
    ]


def test_mocap_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(MocapError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(MocapError, match="without a mocap model configuration"):
        load_checkpoint(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(MocapError, match="not a safetensors"):
        load_checkpoint(junk)


def _hmr2_lightning_file(path: Path, model: HMR, extra: object, zip_format: bool = True) -> None:
    """Write ``model`` in HMR2.0's Lightning layout, with the extras its real file carries."""
    state = {"backbone." + k: v for k, v in model.backbone.state_dict().items()}
    state |= {"smpl_head." + k: v for k, v in model.head.state_dict().items()}
    state["discriminator.D_conv1.weight"] = torch.randn(32, 9, 1, 1)
    state["smpl.betas"] = torch.zeros(1, 10)
    torch.save(
        {"epoch": 35, "global_step": 1_000_000, "state_dict": state, "hyper_parameters": extra},
        path,
        _use_new_zipfile_serialization=zip_format,
    )


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_hmr2_lightning_checkpoint_loads_strictly(tmp_path: Path, zip_format: bool) -> None:
    torch.manual_seed(0)
    model = build_model(hmr2("tiny")).eval()
    path = tmp_path / "epoch=35-step=1000000.ckpt"
    cfg = FakeCfgNode(MODEL=FakeCfgNode(IMAGE_SIZE=256), LR=1e-5)
    _hmr2_lightning_file(path, model, cfg, zip_format)
    with pytest.raises(pickle.UnpicklingError):  # the reason a restricted unpickler is needed
        torch.load(path, weights_only=True)
    loaded, report = load_hmr2_checkpoint(path, hmr2("tiny"))
    assert report.loaded == len(model.state_dict())
    assert sorted(report.ignored) == ["discriminator.D_conv1.weight", "smpl.betas"]
    assert any(name.endswith("FakeCfgNode") for name in report.placeholders)
    assert "discriminator.* (1)" in report.summary()
    with torch.no_grad():
        # Same weights; only kernel rounding (memory alignment) could differ.
        torch.testing.assert_close(loaded(IMAGES).rotmat, model(IMAGES).rotmat, rtol=0, atol=1e-6)
    # The predictor tells the formats apart by content, not by extension.
    # (routed to the HMR2.0 loader, whose default architecture is the full ViT-H model).
    assert not is_mocap_checkpoint(path)
    with pytest.raises(MocapError, match="does not match"):
        Predictor.from_checkpoint(path, device="cpu")


def test_hmr2_checkpoint_for_wrong_architecture_is_a_clear_error(tmp_path: Path) -> None:
    model = build_model(hmr2("tiny"))
    path = tmp_path / "hmr2.ckpt"
    _hmr2_lightning_file(path, model, {"lr": 1e-5})
    with pytest.raises(MocapError, match="does not match"):
        load_hmr2_checkpoint(path)  # the default expects the full ViT-H model
    with pytest.raises(MocapError, match="state_dict"):
        torch.save({"weights": {}}, tmp_path / "other.ckpt")
        load_hmr2_checkpoint(tmp_path / "other.ckpt", hmr2("tiny"))


def test_malicious_pickles_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = build_model(hmr2("tiny"))
    inside = tmp_path / "inside.ckpt"
    _hmr2_lightning_file(inside, model, {"callback": Exploit(marker)})
    loaded, report = load_hmr2_checkpoint(inside, hmr2("tiny"))
    assert "posix.system" in report.placeholders or "nt.system" in report.placeholders
    alone = tmp_path / "alone.ckpt"
    torch.save(Exploit(marker), alone)
    with pytest.raises(MocapError):
        load_hmr2_checkpoint(alone, hmr2("tiny"))
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"state_dict": Exploit(marker)}))
    with pytest.raises(MocapError):
        load_hmr2_checkpoint(raw, hmr2("tiny"))
    with pytest.raises(MocapError):
        Predictor.from_checkpoint(raw, device="cpu")
    assert not marker.exists()
    os.system(f"touch {marker}")  # the exploit itself works: the loader is what stopped it
    assert marker.exists()


def _init_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    init_cmd.add_arguments(parser)
    return parser.parse_args(argv)


def test_init_checkpoint_command(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOCAP_HOME", str(tmp_path / "home"))  # no cached mean parameters
    out = tmp_path / "tiny.safetensors"
    means = shared_data / "spin_npz" / "smpl_mean_params.npz"
    args = _init_args("hmr2", "--size", "tiny", "--mean-params", str(means), "-o", str(out))
    assert init_cmd.run(args) == 0
    model = load_checkpoint(out)
    assert model.config == hmr2("tiny")
    assert model.state_dict()["head.init_cam"].tolist() == [[pytest.approx(0.9), 0.0, 0.0]]
    same = tmp_path / "same.safetensors"
    init_cmd.run(_init_args("hmr2", "--size", "tiny", "--mean-params", str(means), "-o", str(same)))
    other = tmp_path / "other.safetensors"
    init_cmd.run(_init_args("hmr2", "--size", "tiny", "--seed", "1", "-o", str(other)))
    a, b, c = (load_checkpoint(p).state_dict() for p in (out, same, other))
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded
    assert not torch.equal(a["head.decpose.weight"], c["head.decpose.weight"])
    # Without mean parameters the estimate starts from the neutral stand-in (SPIN 6D layout, as the
    # real file): root turned 180 degrees about x (upright, facing the camera), other joints at rest.
    assert c["head.init_body_pose"][0, :12].tolist() == [1, 0, 0, -1, 0, 0, 1, 0, 0, 1, 0, 0]
    assert not torch.equal(a["head.init_body_pose"], c["head.init_body_pose"])
    with pytest.raises(MocapError, match="factor"):
        init_cmd.run(_init_args("hmr2", "--size", "tiny", "--factor", "4", "-o", str(out)))
    with pytest.raises(MocapError, match="does not exist"):
        init_cmd.run(_init_args("hmr2", "--size", "tiny", "-o", str(tmp_path / "no" / "x")))
