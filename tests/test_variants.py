"""Every model variant (tiny): shapes, finite outputs, rotations, gradients, levels, configs."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mocap.errors import MocapError
from mocap.model.build import (
    VARIANTS,
    ModelConfig,
    build_model,
    featup_deformable,
    model_config,
    vitpose_deformable,
)
from mocap.model.hmr import HMR

CASES = [
    ("hmr2", None),
    ("vitpose-deformable", 1),
    ("vitpose-deformable", 4),
    ("featup-deformable", 2),
]
# JBU costs seconds at high factors even tiny: x4 forward only, one crop (x16 is built, on the
# meta device, in test_full_variants_have_the_papers_numbers; MODEL-B's tests run JBU at x16).
FORWARD_CASES = [*CASES, ("featup-deformable", 4)]


@pytest.fixture(scope="module")
def means(shared_data: Path) -> Path:
    return shared_data / "spin_npz" / "smpl_mean_params.npz"


def _build(variant: str, factor: int | None, means: Path) -> HMR:
    torch.manual_seed(0)
    return build_model(model_config(variant, "tiny", factor), means)


@pytest.mark.parametrize("variant, factor", FORWARD_CASES)
def test_forward_shapes_rotations_and_levels(variant: str, factor: int | None, means: Path) -> None:
    model = _build(variant, factor, means).eval()
    batch = 1 if variant == "featup-deformable" else 2
    images = torch.randn(batch, 3, 256, 192)
    with torch.no_grad():
        out = model(images)
    assert out.rotmat.shape == (batch, 24, 3, 3) and out.betas.shape == (batch, 10)
    assert out.cam.shape == (batch, 3)
    for t in (out.rotmat, out.betas, out.cam):
        assert torch.isfinite(t).all()
    rot = out.rotmat.reshape(-1, 3, 3)
    eye = torch.eye(3).expand_as(rot)
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, eye, atol=1e-4, rtol=0)  # fp32
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(len(rot)), atol=1e-4, rtol=0)
    levels = [k for k in out.aux if k.startswith("feat_")]
    if variant == "hmr2":
        assert levels == []
        return
    factors = [1] if factor == 1 else [1, factor]
    assert levels == [f"feat_l{n}_x{f}" for n in (1, 2) for f in factors]  # tiny taps layers 1, 2
    for name in levels:
        f = int(name.split("_x")[1])
        assert out.aux[name].shape == (batch, 32, 16 * f, 12 * f)
    # Tapped maps pass through a parameter-free LayerNorm over channels.
    native = out.aux["feat_l1_x1"]
    torch.testing.assert_close(native.mean(1), torch.zeros(batch, 16, 12), atol=1e-5, rtol=0)
    var = native.var(1, unbiased=False)
    torch.testing.assert_close(var, torch.ones(batch, 16, 12), atol=1e-3, rtol=0)


def test_bilinear_levels_are_interpolated_native_maps(means: Path) -> None:
    model = _build("vitpose-deformable", 4, means).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 192))
    want = F.interpolate(
        out.aux["feat_l2_x1"], scale_factor=4, mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(out.aux["feat_l2_x4"], want)


def test_featup_guidance_changes_upsampled_maps_only(means: Path) -> None:
    model = _build("featup-deformable", 2, means).eval()
    images = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        taps = model.backbone(images).taps
        a = model.build_levels(taps, images)
        b = model.build_levels(taps, images.flip(-1))  # same features, other guidance image
    assert torch.equal(a["feat_l1_x1"], b["feat_l1_x1"])
    assert not torch.allclose(a["feat_l1_x2"], b["feat_l1_x2"])


def _unused_jbu_part(name: str, factor: int | None) -> bool:
    """JBU stages beyond x r, and FeatUp's final fixup below x16, are kept (checkpoint layout is
    the same for every r) but take no part in the forward pass."""
    if not name.startswith("upsamplers.") or factor is None:
        return False
    part = name.split(".")[2]
    used = {f"up{k}" for k in range(1, factor.bit_length())}
    return part not in used and not (part == "fixup_proj" and factor == 16)


@pytest.mark.parametrize("variant, factor", CASES)
def test_gradients_reach_every_trainable_parameter(
    variant: str, factor: int | None, means: Path
) -> None:
    model = _build(variant, factor, means).train()
    frozen = model.config.freeze_backbone
    assert model.backbone.training is not frozen  # a frozen backbone stays in eval mode
    out = model(torch.randn(2, 3, 256, 192))
    loss = out.rotmat.square().sum() + out.betas.square().sum() + out.cam.square().sum()
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [n for n, _ in trainable if _unused_jbu_part(n, factor)]
    if variant == "featup-deformable":  # x2: really unused (not merely zero), gradient None
        assert model.get_parameter("upsamplers.1.up4.range_temp").grad is None
        assert model.get_parameter("upsamplers.2.fixup_proj.1.weight").grad is None
    backbone = list(model.backbone.parameters())
    if frozen:
        assert all(not p.requires_grad and p.grad is None for p in backbone)
    else:
        assert all(p.grad is not None for p in backbone)


@pytest.mark.parametrize("variant, factor", CASES)
def test_int8_predictor_quantises_the_backbone_only(
    variant: str, factor: int | None, means: Path, shared_data: Path
) -> None:
    import copy

    import cv2
    import numpy as np

    from mocap.model.int8 import is_quantized
    from mocap.model.predictor import Predictor

    image = cv2.imread(str(shared_data / "images" / "coco_val2014_192.jpg"))
    boxes = np.array([[264.0, 177.0, 384.0, 421.0], [430.0, 227.0, 523.0, 475.0]])
    model = _build(variant, factor, means)
    ref = Predictor(copy.deepcopy(model), device="cpu").predict(image, boxes)
    int8 = Predictor(model, device="cpu", precision="int8")
    assert int8.precision == "int8" and int8.device.type == "cpu"
    assert is_quantized(int8.model.backbone) and not is_quantized(int8.model.head)
    out = int8.predict(image, boxes)
    rot = np.concatenate([out.global_orient[:, None], out.body_pose], 1)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-4)
    assert 0 < np.abs(out.body_pose - ref.body_pose).max() < 1e-2  # random tiny weights
    np.testing.assert_allclose(out.transl, ref.transl, rtol=1e-2)


@pytest.mark.parametrize("size", ["tiny", "full"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_configs_round_trip_through_json(variant: str, size: str) -> None:
    factors = [None] if variant == "hmr2" else [4, 8, 16]
    for factor in factors:
        config = model_config(variant, size, factor)
        assert ModelConfig.from_json(config.to_json()) == config


def test_full_variants_have_the_papers_numbers() -> None:
    default = featup_deformable().levels
    assert default is not None and default.factor == 4 and default.upsample == "jbu"
    with torch.device("meta"):
        model = build_model(featup_deformable("full", 16))
    assert model.backbone.taps == (16, 32) and len(model.backbone.blocks) == 32
    assert set(model.upsamplers or {}) == {"16", "32"}
    assert model.config.freeze_backbone
    assert sum(p.numel() for p in model.backbone.parameters()) == 630_912_000
    native = vitpose_deformable("full", 1)
    assert native.levels is not None and native.levels.factors == (1,)


def test_bad_choices_are_user_errors() -> None:
    with pytest.raises(MocapError, match="unknown model variant"):
        model_config("hmr3")
    with pytest.raises(MocapError, match="size"):
        model_config("hmr2", "huge")
    with pytest.raises(MocapError, match="factor 3"):
        model_config("featup-deformable", "tiny", 3)
    with pytest.raises(MocapError, match="factor"):
        model_config("featup-deformable", "tiny", 1)  # no JBU at x1: that is vitpose-deformable
    with pytest.raises(MocapError, match="unreadable"):
        ModelConfig.from_json('{"version": 99}')
