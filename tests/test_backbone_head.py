"""ViTPose backbone and HMR2.0 head: numerics against written-out references, key layouts, IEF."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mocap.geometry import rot6d_to_rotmat
from mocap.model.hmr2_head import HMR2Head, build_hmr2_head, load_mean_params
from mocap.model.vit import ViT, build_vit


def _reference_vit(sd: dict[str, Tensor], images: Tensor, heads: int, taps: tuple[int, ...]):
    """ViTPose forward from spec 1 with attention written out (matmul, softmax, matmul)."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], 16, 2)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:] + sd["pos_embed"][:, :1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    out = {}
    for i in range(depth):
        p = f"blocks.{i}."

        def ln(t: Tensor, name: str, p: str = p) -> Tensor:
            return F.layer_norm(t, (c,), sd[p + name + ".weight"], sd[p + name + ".bias"], 1e-6)

        qkv = F.linear(ln(x, "norm1"), sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) * (c // heads) ** -0.5).softmax(-1)
        a = (attn @ v).transpose(1, 2).reshape(b, h * w, c)
        x = x + F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.linear(ln(x, "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
        y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))  # exact GELU
        x = x + F.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        if i + 1 in taps:
            out[i + 1] = x.transpose(1, 2).reshape(b, c, h, w)
    final = F.layer_norm(x, (c,), sd["last_norm.weight"], sd["last_norm.bias"], 1e-6)
    return out, final.transpose(1, 2).reshape(b, c, h, w)


def test_vit_matches_written_out_reference() -> None:
    torch.manual_seed(0)
    vit = build_vit(dim=48, depth=3, num_heads=3, drop_path=0.3, taps=(1, 3)).double().eval()
    for p in vit.parameters():  # non-trivial norms and biases
        p.data.add_(0.05 * torch.randn_like(p))
    images = torch.randn(2, 3, 256, 192, dtype=torch.float64)
    feats = vit(images)
    taps, final = _reference_vit(vit.state_dict(), images, heads=3, taps=(1, 3))
    assert feats.final.shape == (2, 48, 16, 12) and set(feats.taps) == {1, 3}
    torch.testing.assert_close(feats.final, final, rtol=1e-10, atol=1e-10)
    for layer in (1, 3):
        torch.testing.assert_close(feats.taps[layer], taps[layer], rtol=1e-10, atol=1e-10)


def test_bf16_linears_keep_an_fp32_residual_stream() -> None:
    torch.manual_seed(0)
    vit = build_vit(dim=64, depth=3, num_heads=4, taps=(2,)).eval()
    images = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        ref = vit(images)
        vit.set_matmul_dtype(torch.bfloat16)
        out = vit(images)
    assert vit.get_parameter("blocks.2.attn.qkv.weight").dtype == torch.bfloat16
    assert vit.pos_embed.dtype == torch.float32 and out.final.dtype == torch.float32
    assert out.taps[2].dtype == torch.float32
    err = (out.final - ref.final).norm() / ref.final.norm()
    assert 0 < err < 2e-2  # bf16 rounding, nothing worse


def test_patch_padding_two_shifts_patch_boundaries() -> None:
    vit = build_vit(dim=8, depth=1, num_heads=1, taps=())
    base = torch.zeros(1, 3, 256, 192)
    bumped = base.clone()
    bumped[0, :, 14, 20] = 1.0  # row 14 belongs to patch row 1, which covers rows [14, 30)
    diff = (vit.patch_embed(bumped) - vit.patch_embed(base)).abs().sum(1)[0]
    assert diff.shape == (16, 12)
    assert diff[1, 1] > 0 and diff[0].abs().sum() == 0 and diff[2:].abs().sum() == 0


def test_drop_path_rates_and_modes() -> None:
    vit = build_vit(dim=16, depth=5, num_heads=2, drop_path=0.4, taps=(5,))
    rates = [blk.drop_path.prob for blk in vit.blocks]  # type: ignore[union-attr]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    x = torch.randn(2, 3, 256, 192)
    vit.eval()
    torch.testing.assert_close(vit(x).final, vit(x).final)
    vit.train()
    torch.manual_seed(0)
    outs = [vit(x).final for _ in range(3)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])  # branches dropped at random


def test_vit_h_keys_and_shapes_are_hmr2s() -> None:
    with torch.device("meta"):
        vit = build_vit()  # ViTPose-H
    sd = vit.state_dict()
    expected = {"pos_embed": (1, 193, 1280), "patch_embed.proj.weight": (1280, 3, 16, 16)}
    expected |= {"patch_embed.proj.bias": (1280,), "last_norm.weight": (1280,)}
    expected |= {"last_norm.bias": (1280,)}
    for i in range(32):
        p = f"blocks.{i}."
        for name, shape in {
            "norm1": (1280,),
            "attn.qkv": (3840, 1280),
            "attn.proj": (1280, 1280),
            "norm2": (1280,),
            "mlp.fc1": (5120, 1280),
            "mlp.fc2": (1280, 5120),
        }.items():
            expected[p + name + ".weight"] = shape
            expected[p + name + ".bias"] = (shape[0],)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert sum(v.numel() for v in sd.values()) == 630_912_000  # "632M" in the notes, rounded


def test_vit_rejects_other_input_sizes() -> None:
    vit = build_vit(dim=8, depth=1, num_heads=1, taps=())
    with pytest.raises(ValueError, match="256x192"):
        vit(torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match="1..1"):
        ViT(8, 1, 1, taps=(2,))


def _reference_head(sd: dict[str, Tensor], feats: Tensor, heads: int) -> Tensor:
    """HMR2.0 head forward from spec 2, written out; returns pose 6D (B, 144)."""
    ctx = feats.flatten(2).transpose(1, 2)
    b = ctx.shape[0]
    x = sd["transformer.to_token_embedding.bias"].expand(b, 1, -1) + sd["transformer.pos_embedding"]
    dim = x.shape[-1]

    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
        a = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1) @ v
        return a.transpose(1, 2).reshape(b, -1, a.shape[1] * a.shape[-1])

    n = len({k.split(".")[3] for k in sd if k.startswith("transformer.transformer.layers.")})
    for i in range(n):
        p = f"transformer.transformer.layers.{i}."

        def ln(t: Tensor, j: int, p: str = p) -> Tensor:
            return F.layer_norm(t, (dim,), sd[f"{p}{j}.norm.weight"], sd[f"{p}{j}.norm.bias"])

        q, k, v = F.linear(ln(x, 0), sd[p + "0.fn.to_qkv.weight"]).chunk(3, -1)
        x = x + F.linear(
            attend(q, k, v), sd[p + "0.fn.to_out.0.weight"], sd[p + "0.fn.to_out.0.bias"]
        )
        q = F.linear(ln(x, 1), sd[p + "1.fn.to_q.weight"])
        k, v = F.linear(ctx, sd[p + "1.fn.to_kv.weight"]).chunk(2, -1)
        x = x + F.linear(
            attend(q, k, v), sd[p + "1.fn.to_out.0.weight"], sd[p + "1.fn.to_out.0.bias"]
        )
        y = F.gelu(F.linear(ln(x, 2), sd[p + "2.fn.net.0.weight"], sd[p + "2.fn.net.0.bias"]))
        x = x + F.linear(y, sd[p + "2.fn.net.3.weight"], sd[p + "2.fn.net.3.bias"])
    return F.linear(x[:, 0], sd["decpose.weight"], sd["decpose.bias"]) + sd["init_body_pose"]


def test_hmr2_head_matches_written_out_reference(shared_data: Path) -> None:
    torch.manual_seed(0)
    means = shared_data / "spin_npz" / "smpl_mean_params.npz"
    head = build_hmr2_head(24, 32, 2, 2, 16, 40, mean_params=means).double()
    for p in head.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    feats = torch.randn(3, 24, 16, 12, dtype=torch.float64)
    out = head(feats)
    want = _reference_head(head.state_dict(), feats, heads=2)
    torch.testing.assert_close(out.aux["pose6d"], want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.rotmat, rot6d_to_rotmat(want.view(3, 24, 6)))
    assert out.betas.shape == (3, 10) and out.cam.shape == (3, 3)


def test_hmr2_head_starts_from_mean_params(shared_data: Path) -> None:
    means = load_mean_params(shared_data / "spin_npz" / "smpl_mean_params.npz")
    head: HMR2Head = build_hmr2_head(24, 32, 1, 2, 16, 40, mean_params=means)
    for layer in (head.decpose, head.decshape, head.deccam):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    out = head(torch.randn(2, 24, 16, 12))
    pose = torch.from_numpy(means["pose"]).view(24, 6)
    torch.testing.assert_close(out.rotmat[1], rot6d_to_rotmat(pose))
    torch.testing.assert_close(out.betas[0], torch.from_numpy(means["shape"]))
    torch.testing.assert_close(out.cam[0], torch.tensor([0.9, 0.0, 0.0]))
    rot = out.rotmat.reshape(-1, 3, 3)  # proper rotations, columns orthonormal
    torch.testing.assert_close(
        rot.transpose(1, 2) @ rot, torch.eye(3).expand_as(rot), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(len(rot)), atol=1e-5, rtol=0)


def test_hmr2_head_keys_are_hmr2s() -> None:
    with torch.device("meta"):
        head = build_hmr2_head()  # HMR2.0's numbers
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    p = "transformer.transformer.layers."
    assert shapes["transformer.to_token_embedding.weight"] == (1024, 1)
    assert shapes["transformer.pos_embedding"] == (1, 1, 1024)
    assert shapes[p + "0.0.fn.to_qkv.weight"] == (1536, 1024)
    assert shapes[p + "5.1.fn.to_kv.weight"] == (1024, 1280)
    assert shapes[p + "5.1.fn.to_q.weight"] == (512, 1024)
    assert shapes[p + "3.2.fn.net.0.weight"] == (1024, 1024)
    assert shapes[p + "3.2.fn.net.3.bias"] == (1024,)
    assert shapes["decpose.weight"] == (144, 1024)
    assert shapes["init_body_pose"] == (1, 144) and shapes["init_cam"] == (1, 3)
    assert not any(k.startswith(p + "6.") for k in shapes)  # six layers
    per_layer = {k[len(p) + 2 :] for k in shapes if k.startswith(p + "0.")}
    assert per_layer == {
        "0.norm.weight", "0.norm.bias", "0.fn.to_qkv.weight", "0.fn.to_out.0.weight",
        "0.fn.to_out.0.bias", "1.norm.weight", "1.norm.bias", "1.fn.to_q.weight",
        "1.fn.to_kv.weight", "1.fn.to_out.0.weight", "1.fn.to_out.0.bias", "2.norm.weight",
        "2.norm.bias", "2.fn.net.0.weight", "2.fn.net.0.bias", "2.fn.net.3.weight",
        "2.fn.net.3.bias",
    }  # fmt: skip
    assert "transformer.transformer.norm.weight" not in shapes  # no final norm
