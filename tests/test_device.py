"""One device / precision resolver (mocap.device) behind the predictor, detector, training and
`mocap run`; the int8 path of the backbone."""

import logging

import pytest
import torch

import mocap.device as D
from mocap.errors import MocapError
from mocap.model.vit import build_vit

NO_GPU = not torch.cuda.is_available()


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "_warned", set())  # warnings are said once per process


def test_auto_device_and_precision_rules() -> None:
    gpu = torch.cuda.is_available()
    assert D.resolve_device("auto") == ("cuda" if gpu else "cpu")
    assert D.resolve_device("auto", "int8") == "cpu"  # int8 exists on the CPU only
    assert D.resolve_device("cpu") == "cpu"
    fast = "bf16" if D.cpu_has_fast_bf16() else "fp32"
    assert D.resolve_precision("auto", "cpu") == fast  # never int8
    assert D.resolve_precision("int8", "cpu") == "int8"
    assert D.resolve_precision("fp32", "cpu") == "fp32"
    assert D.torch_dtype("int8") == torch.float32 and D.torch_dtype("bf16") == torch.bfloat16


def test_bad_values_are_one_line_errors() -> None:
    for bad in ("gpu", "cuda:x", "cpu:1", ""):
        with pytest.raises(MocapError, match="unknown device"):
            D.resolve_device(bad)
    with pytest.raises(MocapError, match="unknown precision"):
        D.resolve_precision("int4", "cpu")
    with pytest.raises(MocapError, match="CPU only"):
        D.resolve_precision("int8", "cuda")
    if NO_GPU:
        for name in ("cuda", "cuda:0"):
            with pytest.raises(MocapError, match="no CUDA GPU"):
                D.resolve_device(name)


def test_cpu_fallbacks_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mocap.device"):
        first = D.resolve_precision("fp16", "cpu")
        second = D.resolve_precision("fp16", "cpu")
    assert first == second == ("bf16" if D.cpu_has_fast_bf16() else "fp32")
    assert caplog.text.count("fp16 is not a fast path") == 1


def test_every_caller_uses_the_same_rules() -> None:
    from mocap.pipeline import detect, run_cmd
    from mocap.train import hmr

    for device in ("auto", "cpu"):
        want = D.resolve_device(device)
        assert run_cmd.auto_device(device) == want
        assert hmr.resolve_device(device) == want
        assert detect.resolve_device(device) == ("cuda:0" if want == "cuda" else want)
    for precision in D.PRECISIONS:
        assert run_cmd.auto_precision(precision, "cpu") == D.resolve_precision(precision, "cpu")
    with pytest.raises(MocapError, match="inference only"):
        hmr.resolve_precision("int8", "cpu")
    with pytest.raises(MocapError, match="unknown device"):
        detect.resolve_device("gpu")


def test_int8_backbone_runs_its_attention_on_quantised_linears() -> None:
    from mocap.model.int8 import is_quantized

    torch.manual_seed(0)
    vit = build_vit(dim=64, depth=2, num_heads=4, taps=(1,)).eval()
    images = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        ref = vit(images)
        vit.quantize_int8()
        out = vit(images)
    assert is_quantized(vit) and not isinstance(vit.blocks[0].attn.qkv, torch.nn.Linear)
    assert vit.patch_embed.proj.weight.dtype == torch.float32  # only the block linears change
    assert out.final.dtype == torch.float32 and out.taps[1].shape == ref.taps[1].shape
    err = (out.final - ref.final).norm() / ref.final.norm()
    assert 0 < err < 5e-2  # int8 rounding, nothing worse
