"""JBU adaptive convolution and FeatUp stack: values, gradients, memory, key layout, transplant."""

import argparse
import contextlib
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from mocap.errors import MocapError
from mocap.model.adaptive_conv import adaptive_conv, adaptive_conv_reference
from mocap.model.featup import JBULearnedRange, JBUStack, load_featup_checkpoint


def _per_tap(input: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """The definition, one output pixel at a time (independent of both implementations)."""
    b, c, _, _ = input.shape
    _, h, w, k, _ = filters.shape
    out = torch.zeros(b, c, h, w, dtype=input.dtype)
    for y in range(h):
        for x in range(w):
            patch = input[:, :, y : y + k, x : x + k]  # (B, C, K, K)
            out[:, :, y, x] = (patch * filters[:, None, y, x]).sum((-1, -2))
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_adaptive_conv_matches_per_tap_values_and_gradients(channels_last: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9 + 6, 5 + 6, generator=g, dtype=torch.float64, requires_grad=True)
    f = torch.randn(2, 9, 5, 7, 7, generator=g, dtype=torch.float64, requires_grad=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = adaptive_conv(x.contiguous(memory_format=fmt), f)
    ref = _per_tap(x, f)
    assert out.shape == (2, 3, 9, 5)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(adaptive_conv_reference(x, f), ref, rtol=1e-12, atol=1e-12)
    seed = torch.randn(out.shape, generator=g, dtype=torch.float64)
    gx, gf = torch.autograd.grad((out * seed).sum(), (x, f))
    rx, rf = torch.autograd.grad((ref * seed).sum(), (x, f))
    torch.testing.assert_close(gx, rx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gf, rf, rtol=1e-12, atol=1e-12)


def test_adaptive_conv_gradcheck() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 4 + 2, 3 + 2, generator=g, dtype=torch.float64, requires_grad=True)
    f = torch.randn(1, 4, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(adaptive_conv, (x, f))


def test_adaptive_conv_bf16_is_accurate() -> None:
    """bf16 in and out, but no bf16 rounding of the 49 partial sums (that would err ~2e-3 here)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 8 + 6, 8 + 6, generator=g)
    f = torch.rand(1, 8, 8, 7, 7, generator=g) / 49
    out = adaptive_conv(x.bfloat16(), f.bfloat16())
    ref = adaptive_conv_reference(x.bfloat16().double(), f.bfloat16().double())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-3)


def test_adaptive_conv_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="does not match"):
        adaptive_conv(torch.zeros(1, 2, 10, 11), torch.zeros(1, 4, 4, 7, 7))


def test_adaptive_conv_memory_stays_near_the_output_size() -> None:
    """x16 of a 256-channel 16x12 map: the unfold would need ~2.4 GB, the tap loop ~0.1 GB."""
    code = textwrap.dedent(
        """
        import resource, torch
        from mocap.model.adaptive_conv import adaptive_conv
        torch.set_num_threads(1)
        x = torch.randn(1, 256, 256 + 6, 192 + 6).contiguous(memory_format=torch.channels_last)
        f = torch.rand(1, 256, 192, 7, 7)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with torch.no_grad():
            out = adaptive_conv(x, f)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    grown = int(result.stdout.strip())
    output_bytes = 256 * 256 * 192 * 4
    assert grown < 3 * output_bytes, f"peak grew by {grown / 2**20:.0f} MiB"


def _stage_reference(stage: JBULearnedRange, source: torch.Tensor, guidance: torch.Tensor):
    """FeatUp's formulation with explicit unfolds (fine at test sizes)."""
    b, _, h, w = guidance.shape
    d = stage.diameter
    keys = stage.range_proj(guidance)
    nb = F.unfold(F.pad(keys, [3] * 4, mode="reflect"), d).view(b, keys.shape[1], d * d, h, w)
    logits = stage.range_temp.exp().clamp(1e-4, 1e4) * torch.einsum("bcphw,bchw->bphw", nb, keys)
    r = torch.linspace(-1, 1, d, dtype=source.dtype)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    spatial = torch.exp(-(xx**2 + yy**2) / (2 * stage.sigma_spatial**2)).reshape(1, -1, 1, 1)
    k = logits.softmax(1) * spatial
    k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
    k = k + 0.1 * stage.fixup_proj(torch.cat([k, guidance], 1))
    hr = F.pad(
        F.interpolate(source, (h, w), mode="bicubic", align_corners=False), [3] * 4, mode="reflect"
    )
    return adaptive_conv_reference(hr, k.permute(0, 2, 3, 1).reshape(b, h, w, d, d))


def test_jbu_stage_matches_featup_formulation() -> None:
    torch.manual_seed(0)
    stage = JBULearnedRange(3, key_dim=8).double().eval()
    with torch.no_grad():
        stage.range_temp.fill_(0.7)
        stage.sigma_spatial.fill_(0.6)
    source = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    guidance = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(stage(source, guidance), _stage_reference(stage, source, guidance))


def test_jbu_stage_is_channel_independent_and_constant_preserving() -> None:
    torch.manual_seed(0)
    stage = JBULearnedRange(3, key_dim=8).double().eval()
    source = torch.randn(1, 4, 5, 4, dtype=torch.float64)
    guidance = torch.randn(1, 3, 10, 8, dtype=torch.float64)
    full = stage(source, guidance)
    torch.testing.assert_close(full[:, 2:3], stage(source[:, 2:3], guidance))
    nn_fix = stage.fixup_proj[3]
    torch.nn.init.zeros_(nn_fix.weight)
    torch.nn.init.zeros_(nn_fix.bias)  # without the fixup the kernel is normalised: constants stay
    flat = stage(torch.full((1, 2, 5, 4), 3.0, dtype=torch.float64), guidance)
    torch.testing.assert_close(flat, torch.full_like(flat, 3.0))


def test_jbu_stack_shapes_keys_and_gradients(shared_data) -> None:
    import cv2

    torch.manual_seed(0)
    image = cv2.imread(str(shared_data / "images" / "coco_val2014_192.jpg"))
    crop = cv2.resize(image, (48, 64), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()
    guidance = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    stack = JBUStack(dim=6, key_dim=8)
    source = torch.randn(1, 6, 4, 3, requires_grad=True)
    maps = stack(source, guidance, max_factor=16)
    assert [tuple(m.shape) for m in maps] == [(1, 6, 8 * 2**i, 6 * 2**i) for i in range(4)]
    assert all(torch.isfinite(m).all() for m in maps)
    assert len(stack(source, guidance, max_factor=4)) == 2
    maps[-1].square().mean().backward()
    missing = [
        n for n, p in stack.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []
    expected = {
        "range_temp",
        "sigma_spatial",
        "range_proj.0.weight",
        "range_proj.3.bias",
        "fixup_proj.0.weight",
        "fixup_proj.3.bias",
    }
    keys = set(stack.state_dict())
    assert {f"up{k}.{name}" for k in range(1, 5) for name in expected} <= keys
    assert {"fixup_proj.1.weight", "fixup_proj.1.bias"} <= keys
    with pytest.raises(ValueError):
        stack(source, guidance, max_factor=3)


def test_transplant_from_a_featup_lightning_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    trained = JBUStack(dim=16, key_dim=8)
    state = {f"upsampler.{k}": v for k, v in trained.state_dict().items()}
    state["downsampler.kernel_conv.weight"] = torch.zeros(1)
    path = tmp_path / "vit_jbu_stack_cocostuff.ckpt"
    # Lightning files pickle hyper-parameter objects: the loader must read them without running code.
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-3)}, path)

    wider = JBUStack(dim=24, key_dim=8)
    report = load_featup_checkpoint(wider, path)
    for k in range(1, 5):
        torch.testing.assert_close(
            wider.get_submodule(f"up{k}").state_dict(), trained.get_submodule(f"up{k}").state_dict()
        )
    assert set(report.skipped) == {"fixup_proj.1.weight", "fixup_proj.1.bias"}
    assert "downsampler.kernel_conv.weight" in report.ignored

    same = JBUStack(dim=16, key_dim=8)
    assert load_featup_checkpoint(same, path).skipped == {}
    torch.testing.assert_close(same.state_dict(), trained.state_dict())

    torch.save({"state_dict": {"model.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(MocapError, match="upsampler"):
        load_featup_checkpoint(same, tmp_path / "other.ckpt")
    with pytest.raises(MocapError, match="key width"):
        load_featup_checkpoint(JBUStack(dim=16, key_dim=4), path)


def test_transplant_refuses_code_in_the_pickle(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"upsampler.up1.range_temp": torch.zeros(())}, "x": Evil()}, path)
    with contextlib.suppress(MocapError):  # refusing is fine; running the code is not
        load_featup_checkpoint(JBUStack(dim=4), path)
    assert not marker.exists()
