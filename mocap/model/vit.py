"""ViTPose-H backbone exactly as HMR2.0 runs it, returning the feature maps of chosen layers.

Numerics follow the reference (../shared/docs/reference-spec.md, section 1): a 16x16 patch
embedding with **padding 2** (patch (i, j) covers pixels [16i-2, 16i+14)), a position embedding
whose unused cls slot is added to every patch, pre-norm blocks with LayerNorm eps 1e-6, exact GELU,
one fused qkv projection (rows q | k | v, head-major) and a trained ``last_norm`` on the final map.
There is no cls token and no position-embedding interpolation: the input must be 256x192.

``state_dict`` keys are HMR2.0's ``backbone.*`` keys without the prefix, so an HMR2.0 checkpoint or
a ViTPose ``state_dict`` loads with ``strict=True``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_SIZE = (256, 192)
PATCH_SIZE = 16
PATCH_PADDING = 2


@dataclass
class ViTFeatures:
    """Backbone output.

    Attributes:
        taps: 1-based layer index -> raw block output (B, C, 16, 12), before any normalisation
            (only the final layer has a trained norm; callers normalise taps as they need).
        final: the last layer after ``last_norm`` (B, C, 16, 12): what the HMR2.0 head consumes.
    """

    taps: dict[int, Tensor]
    final: Tensor


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, prob: float) -> None:
        super().__init__()
        self.prob = prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.prob == 0.0:
            return x
        keep = 1.0 - self.prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """Conv patchify with HMR2.0's padding 2: (B, 3, 256, 192) -> (B, C, 16, 12)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH_SIZE, stride=PATCH_SIZE, padding=PATCH_PADDING)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (q | k | v rows, head-major).

    ``input_dtype``: what the linears take (set by :meth:`ViT.set_matmul_dtype`); None = the
    stream's own type (fp32 weights, or dynamic int8 linears, which take float32).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.input_dtype: torch.dtype | None = None

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        b, n, c = x.shape
        qkv = (
            self.qkv(_cast(x, self.input_dtype))
            .view(b, n, 3, self.num_heads, c // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        # SDPA's default scale is head_dim^-0.5, the reference's scale.
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (``input_dtype`` as in :class:`Attention`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.input_dtype: torch.dtype | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(_cast(x, self.input_dtype))))


def _cast(x: Tensor, dtype: torch.dtype | None) -> Tensor:
    return x if dtype is None else x.to(dtype)


class Block(nn.Module):
    """Pre-norm transformer block: x += DropPath(Attn(LN x)); x += DropPath(MLP(LN x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        # With bf16/fp16 linears (ViT.set_matmul_dtype) the branches come back in that type and
        # the residual sum is promoted to the stream's fp32; int8 linears return fp32.
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """ViTPose backbone for 256x192 crops.

    Arguments:
        dim: token width (1280 for ViT-H).
        depth: number of blocks (32 for ViT-H).
        num_heads: attention heads (16 for ViT-H; head dim 80).
        mlp_ratio: MLP hidden width / dim.
        drop_path: maximum stochastic-depth rate; block i uses linspace(0, drop_path, depth)[i].
        taps: 1-based layer indices whose raw outputs are returned (``ViTFeatures.taps``).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        taps: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        if any(not 1 <= t <= depth for t in taps):
            raise ValueError(f"tapped layers {taps} must lie in 1..{depth}")
        self.dim = dim
        self.taps = tuple(taps)
        self.grid = (IMAGE_SIZE[0] // PATCH_SIZE, IMAGE_SIZE[1] // PATCH_SIZE)
        self.patch_embed = PatchEmbed(dim)
        # One unused cls slot + one entry per patch; the cls slot is added to every patch.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, dim))
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linspace(0, p, depth)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, r) for r in rates)
        self.last_norm = nn.LayerNorm(dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_matmul_dtype(self, dtype: torch.dtype) -> "ViT":
        """Store the block linears (99% of the FLOPs) in ``dtype`` for inference.

        The residual stream, LayerNorms, position embedding and patch embedding keep their type
        (fp32), as under autocast, but without casting 600M weights on every call. Returns self.
        """
        for block in self.blocks:
            for module in block.modules():
                if isinstance(module, nn.Linear):
                    module.to(dtype)
            for part in block.modules():
                if isinstance(part, Attention | Mlp):
                    part.input_dtype = None if dtype == torch.float32 else dtype
        return self

    def quantize_int8(self) -> "ViT":
        """Dynamic int8 block linears (CPU; :mod:`mocap.model.int8`), in place. Returns self.

        The float32 stream feeds them directly; the patch embedding, norms and position
        embedding stay float32. Irreversible.
        """
        from mocap.model.int8 import quantize_linears

        self.set_matmul_dtype(torch.float32)
        for block in self.blocks:
            quantize_linears(block)
        return self

    def forward(self, images: Tensor) -> ViTFeatures:
        """images: (B, 3, 256, 192) normalised crops -> ViTFeatures with (B, C, 16, 12) maps."""
        if tuple(images.shape[-2:]) != IMAGE_SIZE:
            raise ValueError(f"ViT expects 256x192 crops, got {tuple(images.shape[-2:])}")
        x = self.patch_embed(images.to(self.pos_embed.dtype))
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        taps: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i in self.taps:
                taps[i] = _to_map(x, h, w)
        return ViTFeatures(taps=taps, final=_to_map(self.last_norm(x), h, w))


def _to_map(tokens: Tensor, h: int, w: int) -> Tensor:
    """(B, h*w, C) tokens -> (B, C, h, w) map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def build_vit(
    dim: int = 1280,
    depth: int = 32,
    num_heads: int = 16,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.55,
    taps: tuple[int, ...] = (16, 32),
) -> ViT:
    """ViTPose backbone; the defaults are ViTPose-H as trained in HMR2.0."""
    return ViT(dim, depth, num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, taps=taps)
