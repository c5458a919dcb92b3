"""FeatUp JBU pretraining: downsampler on the ViT grid, jitter alignment, learning, resume, export.

Everything runs a tiny random ViT on the real COCO photos in ../shared/data/images. Torch runs
single-threaded here: the many small ops of a tiny model are slower with two threads on a shared CPU.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from mocap.cli import main
from mocap.errors import MocapError
from mocap.model.build import build_model, featup_deformable
from mocap.model.checkpoint import load_checkpoint, save_checkpoint
from mocap.model.featup import JBUStack
from mocap.model.vit import PatchEmbed
from mocap.train.downsampler import (
    AttentionDownsampler,
    LayerObjective,
    crf_loss,
    gaussian_blur,
    random_projection,
)
from mocap.train.featup import FeatUpConfig, load_base_model, train
from mocap.train.featup_data import ImageCrops, list_images
from mocap.train.featup_export import export_model, inject_upsamplers
from mocap.train.featup_trainer import FeatUpTrainer, build_objective
from mocap.train.jitter import Jitter, sample_jitter


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def crops(shared_data: Path) -> torch.Tensor:
    """The six COCO photos as (6, 3, 256, 192) normalised crops."""
    dataset = ImageCrops(list_images(shared_data / "images"))
    return torch.stack([torch.from_numpy(dataset[(i, 0)]) for i in range(len(dataset))])


def tiny_config(tmp_path: Path, shared_data: Path, **changes: object) -> FeatUpConfig:
    settings: dict = dict(out=str(tmp_path / "run"), images=str(shared_data / "images"),
                          size="tiny", factor=4, batch_size=2, jitters=1, precision="fp32",
                          num_workers=0, device="cpu", log_every=1, crf_samples=200)  # fmt: skip
    settings.update(changes)
    return FeatUpConfig(**settings)


# ---- downsampler -----------------------------------------------------------------------------
def test_downsampler_lands_on_the_vit_grid_and_keeps_constants() -> None:
    torch.manual_seed(0)
    down = AttentionDownsampler(8)
    assert down(torch.randn(2, 8, 256, 192)).shape == (2, 8, 16, 12)
    constant = torch.arange(8.0).view(1, 8, 1, 1).expand(2, 8, 256, 192) - 3.0
    for mode in (down.train(), down.eval()):  # dropout reweights pixels, never the sum of weights
        out = mode(constant)
        torch.testing.assert_close(out, constant[:, :, :16, :12], atol=1e-5, rtol=0)


def test_downsampler_windows_are_the_vit_patches() -> None:
    """Uniform attention without blur = mean over the pixels the ViT's padded patch embedding reads."""
    torch.manual_seed(0)
    down = AttentionDownsampler(3, blur=False)
    with torch.no_grad():
        down.w.zero_()
        down.b.zero_()
    embed = PatchEmbed(3)
    with torch.no_grad():  # per-channel mean over the patch (zeros where the conv pads)
        embed.proj.weight.zero_()
        embed.proj.bias.zero_()  # type: ignore[union-attr]
        for c in range(3):
            embed.proj.weight[c, c] = 1.0 / 256
    x = torch.rand(1, 3, 256, 192)
    out, ref = down.eval()(x), embed(x)
    assert out.shape == ref.shape == (1, 3, 16, 12)
    torch.testing.assert_close(out[:, :, 1:, 1:], ref[:, :, 1:, 1:])  # full windows: identical
    # First row/column: the 2 padded lines are left out of the average, not counted as zeros.
    torch.testing.assert_close(out[0, :, 0, 0], x[0, :, :14, :14].mean((1, 2)))
    # One patch lit: pixels [16i-2, 16i+14) x [16j-2, 16j+14) -> exactly cell (i, j).
    lit = torch.zeros(1, 3, 256, 192)
    lit[..., 16 * 5 - 2 : 16 * 5 + 14, 16 * 7 - 2 : 16 * 7 + 14] = 1.0
    expected = torch.zeros(1, 3, 16, 12)
    expected[..., 5, 7] = 1.0
    torch.testing.assert_close(down(lit), expected)


def test_blur_and_crf_behave() -> None:
    x = torch.rand(1, 2, 40, 30)
    blurred = gaussian_blur(x)
    assert blurred.std() < x.std() and torch.allclose(blurred.mean(), x.mean(), atol=0.02)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 64, 48)
    flat = torch.ones(2, 5, 64, 48)
    noisy = flat + torch.randn(2, 5, 64, 48)
    assert float(crf_loss(image, flat, 100, gen)) == 0.0
    assert float(crf_loss(image, noisy, 100, gen)) > 0.1


@pytest.mark.parametrize("factor", [4, 8, 16])
def test_layer_objective_trains_exactly_the_stages_of_its_factor(
    factor: int, crops: torch.Tensor
) -> None:
    torch.manual_seed(0)
    part = LayerObjective(JBUStack(4, key_dim=4), dim=4, factor=factor)
    lr = torch.randn(1, 4, 16, 12)
    hr = part.upsample(lr, crops[:1])
    assert hr.shape == (1, 4, 256, 192)  # x4 / x8 resized to the crop, x16 already there
    proj = random_projection(4, 3, torch.Generator().manual_seed(0))
    part.reconstruction(hr.flip(-1), torch.randn(1, 4, 16, 12), proj).backward()
    stages = {"up1": 2, "up2": 4, "up3": 8, "up4": 16}
    for name, param in part.stack.named_parameters():
        needed = stages.get(name.split(".")[0], 16) <= factor  # fixup_proj: x16 only
        assert (param.grad is not None and bool(param.grad.abs().sum() > 0)) == needed, name


# ---- jitter ----------------------------------------------------------------------------------
def views(n: int) -> list[Jitter]:
    gen = torch.Generator().manual_seed(3)
    sampled = [sample_jitter(256, 192, gen) for _ in range(n)]
    fixed = [Jitter(20, (471, 349), 100, 57, True), Jitter(20, (296, 232), 0, 40, False)]
    return fixed + sampled


def test_jitter_keeps_image_and_pixel_aligned_map_aligned(crops: torch.Tensor) -> None:
    image = crops[:2]
    torch.manual_seed(0)
    mix = torch.randn(16, 3)  # a pixel-aligned 16-channel map: any per-pixel linear function
    features = torch.einsum("dc,bchw->bdhw", mix, image)
    for jitter in views(6):
        view = jitter.apply(image)
        assert view.shape == image.shape
        torch.testing.assert_close(
            jitter.apply(features), torch.einsum("dc,bchw->bdhw", mix, view), atol=1e-4, rtol=1e-4
        )


def zoom_then_crop(jitter: Jitter, x: torch.Tensor) -> torch.Tensor:
    """Reference: FeatUp's literal order (pad, zoom the whole map, crop, flip)."""
    h, w = x.shape[-2:]
    out = F.pad(x, [jitter.pad] * 4, mode="reflect")
    out = F.interpolate(out, size=jitter.zoomed, mode="bilinear", align_corners=False)
    out = out[..., jitter.top : jitter.top + h, jitter.left : jitter.left + w]
    return out.flip(-1) if jitter.flip else out


def test_jitter_samples_only_the_kept_window_exactly() -> None:
    x = torch.randn(2, 4, 256, 192, dtype=torch.float64)
    for jitter in views(6):
        torch.testing.assert_close(jitter.apply(x), zoom_then_crop(jitter, x), atol=1e-10, rtol=0)


def test_jitter_geometry_matches_its_pixel_map() -> None:
    ys, xs = torch.meshgrid(torch.arange(256.0), torch.arange(192.0), indexing="ij")
    coords = torch.stack([xs, ys])[None].double()  # channel 0: x, channel 1: y
    flips, zooms = set(), []
    for jitter in views(12):
        moved = jitter.apply(coords)[0].permute(1, 2, 0)  # (H, W, 2): where each pixel came from
        source = jitter.source_pixels(256, 192)
        inside = (source >= 0).all(-1) & (source[..., 0] <= 191) & (source[..., 1] <= 255)
        assert inside.float().mean() > 0.5
        torch.testing.assert_close(moved[inside], source[inside], atol=1e-6, rtol=0)
        flips.add(jitter.flip)
        zooms.append((jitter.zoomed[0]) / (256 + 40))
    assert flips == {True, False} and min(zooms) == 1.0 and 1.0 < max(zooms) < 2.0


# ---- training --------------------------------------------------------------------------------
def test_pretraining_on_coco_photos_lowers_the_loss(
    tmp_path: Path, shared_data: Path, crops: torch.Tensor
) -> None:
    # lr 1e-2 and no initial clipping (paper: 1e-3, clip for 10 steps) so a dozen steps show it.
    cfg = tiny_config(tmp_path, shared_data, lr=1e-2, clip_steps=0, steps=12,
                      checkpoint_every=100)  # fmt: skip
    torch.manual_seed(0)
    model = load_base_model(cfg)
    trainer = FeatUpTrainer(cfg, model.backbone, build_objective(model, cfg), "cpu")
    before = trainer.evaluate(crops[:2])
    history = train(cfg)
    losses = [h["loss"] for h in history]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    # Same crops, same views and projections, no dropout: the trained stacks reconstruct better.
    trained = FeatUpTrainer(cfg, model.backbone, build_objective(model, cfg), "cpu")
    trained.load(Path(cfg.out))
    after = trained.evaluate(crops[:2])
    assert after["loss"] < before["loss"] - 0.05
    lines = (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 13))
    assert {"rec_l1", "rec_l2", "crf_l1", "crf_l2", "grad_norm"} <= set(json.loads(lines[0]))


def test_resume_continues_exactly_and_exports_a_model(tmp_path: Path, shared_data: Path) -> None:
    def cli(out: Path, steps: int, *extra: str) -> int:
        return main(["train", "featup", "--images", str(shared_data / "images"), "--size", "tiny",
                     "--factor", "4", "--out", str(out), "--steps", str(steps), "--batch-size", "1",
                     "--jitters", "2", "--log-every", "1", "--checkpoint-every", "1", "--workers",
                     "0", "--device", "cpu", "--precision", "fp32", *extra])  # fmt: skip

    def metrics(out: Path) -> list[dict]:
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cli(straight, 2) == 0
    assert cli(split, 1) == 0
    assert cli(split, 2) == 1  # the run folder exists: refuse to overwrite without --resume
    assert cli(split, 2, "--resume", "--factor", "8") == 1  # resuming with other settings
    exported = tmp_path / "model.safetensors"
    assert cli(split, 2, "--resume", "--export-model", str(exported)) == 0
    assert len(metrics(straight)) == 2
    drop = ("steps_per_s",)
    assert [{k: v for k, v in m.items() if k not in drop} for m in metrics(split)] == [
        {k: v for k, v in m.items() if k not in drop} for m in metrics(straight)
    ]
    a, b = (
        load_file(str(straight / "upsamplers.safetensors")),
        load_file(str(split / "upsamplers.safetensors")),
    )
    assert set(a) == set(b) and all(k.startswith(("upsamplers.1.", "upsamplers.2.")) for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)

    model = load_checkpoint(exported)
    state = model.state_dict()
    assert all(torch.equal(state[k], a[k]) for k in a)
    out = model.eval()(torch.zeros(1, 3, 256, 192))
    assert out.rotmat.shape == (1, 24, 3, 3)
    assert (split / "checkpoints" / "step_0000002.state.pt").is_file()


def test_inject_refuses_untrained_stages_and_foreign_files(
    tmp_path: Path, shared_data: Path
) -> None:
    cfg = tiny_config(tmp_path, shared_data, steps=1, factor=4)
    model = load_base_model(cfg)
    trainer = FeatUpTrainer(cfg, model.backbone, build_objective(model, cfg), "cpu")
    run = tmp_path / "run"
    trainer.save(run)
    x4 = build_model(featup_deformable("tiny", 4))
    assert x4.upsamplers is not None
    assert sorted(inject_upsamplers(x4, run / "upsamplers.safetensors")) == sorted(
        f"{n}.{k}" for n, s in x4.upsamplers.items() for k in s.state_dict()
    )
    with pytest.raises(MocapError, match="--factor 16"):
        inject_upsamplers(
            build_model(featup_deformable("tiny", 16)), run / "upsamplers.safetensors"
        )
    save_checkpoint(tmp_path / "model.safetensors", x4)
    # --backbone: a featup-deformable checkpoint's own upsamplers are the starting point.
    objective = build_objective(
        load_base_model(
            tiny_config(tmp_path, shared_data, backbone=str(tmp_path / "model.safetensors"))
        ),
        cfg,
    )
    for layer, stack in x4.upsamplers.items():
        start = objective.get_submodule(f"{layer}.stack").state_dict()
        assert all(torch.equal(v, start[k]) for k, v in stack.state_dict().items())
    with pytest.raises(MocapError, match="not a FeatUp pretraining output"):
        export_model(model, tmp_path / "model.safetensors", 4, tmp_path / "exported.safetensors")
    with pytest.raises(MocapError, match="not a folder"):
        list_images(tmp_path / "nothing")
    assert main(["train", "featup", "--images", str(tmp_path), "--size", "tiny", "--out",
                 str(tmp_path / "r2")]) == 1  # fmt: skip  # no photos in the folder


def test_example_script_trains_exports_and_draws(tmp_path: Path, shared_data: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "MOCAP_HOME": str(tmp_path / "home"),
           "MOCAP_SHARED_DATA": str(shared_data)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(repo / "examples" / "train_featup_tiny.py"), "--steps", "1",
         "--jitters", "1", "-o", "out"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figure = cv2.imread(str(tmp_path / "out" / "features.png"))
    assert figure is not None and figure.shape == (3 * 256, 3 * 192, 3)
    levels = load_checkpoint(tmp_path / "out" / "featup_x4.safetensors").levels
    assert levels is not None and levels.factor == 4
