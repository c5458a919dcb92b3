"""The low-resolution side of FeatUp's multi-view objective, for the 16x12 ViTPose grid.

FeatUp learns an upsampler by asking that a *downsampled* jittered high-resolution map reproduce
the backbone's features of the jittered image (reference-spec section 6). This module holds what
that comparison needs:

- :class:`AttentionDownsampler`: a learned model of how the ViT pools pixels into one token.
  FeatUp's version assumes a square input whose windows tile it exactly. ViTPose's patch embedding
  has padding 2, so patch (i, j) covers pixels [16i - 2, 16i + 14) x [16j - 2, 16j + 14) of the
  256x192 crop: the map is shifted by 2 pixels (top/left) before a kernel-16, stride-16 unfold,
  which lands on the 16x12 grid; the 2 padded rows/columns of the first windows are outside the
  image and are masked out of the attention softmax (so a constant map stays that constant).
- :func:`random_projection` / :func:`project`: FeatUp compares 30-d random projections of the
  features, a fresh projection per view.
- :class:`ScaleNet` and :func:`gaussian_nll`: the Gaussian likelihood with a learned per-pixel scale.
- :func:`crf_loss`: the CRF smoothness term on the high-resolution map.
- :class:`LayerObjective`: one layer's JBU stack, downsampler and scale net together.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PATCH = 16
PATCH_PADDING = 2


def gaussian_blur(x: Tensor, kernel_size: int = 5, sigma: float = 1.0) -> Tensor:
    """Separable Gaussian blur of every channel, reflect borders.

    Arguments:
        x: (B, C, H, W).
    Returns:
        (B, C, H, W).
    """
    r = kernel_size // 2
    taps = torch.arange(kernel_size, dtype=torch.float64) - r
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.dtype).to(x.device)
    c = x.shape[1]
    out = F.pad(x, [r, r, r, r], mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, kernel_size, 1).expand(c, 1, -1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, 1, kernel_size).expand(c, 1, -1, -1), groups=c)


class AttentionDownsampler(nn.Module):
    """Attention pooling of a full-resolution map onto the ViT's patch grid.

    Each output cell is a softmax-weighted sum of the (blurred) pixels its patch covers. The
    weight of pixel p of a window is ``softmax_p(logit(x_p) * w[p] + b[p])`` with a per-pixel
    logit ``Linear(C -> 1)`` (after Dropout 0.2) and a learned per-position scale ``w`` and bias
    ``b`` (patch x patch).

    Arguments:
        dim: channels C.
        patch: ViT patch size (window and stride).
        padding: the ViT patch embedding's padding: window (i, j) starts at (patch i - padding,
            patch j - padding).
        blur: Gaussian-blur (5, sigma 1) the map first, as FeatUp does.
    """

    def __init__(
        self, dim: int, patch: int = PATCH, padding: int = PATCH_PADDING, blur: bool = True
    ) -> None:
        super().__init__()
        self.patch, self.padding, self.blur = patch, padding, blur
        self.attention = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, 1))
        self.w = nn.Parameter(torch.ones(patch, patch) + 0.01 * torch.randn(patch, patch))
        self.b = nn.Parameter(0.01 * torch.randn(patch, patch))

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Output grid of an ``height`` x ``width`` map (16x12 for 256x192)."""
        return tuple(  # type: ignore[return-value]
            (n + self.padding - self.patch) // self.patch + 1 for n in (height, width)
        )

    def forward(self, hr: Tensor) -> Tensor:
        """Pool a pixel-aligned map onto the patch grid.

        Arguments:
            hr: (B, C, H, W) map aligned with the crop's pixels (256x192 for ViTPose).
        Returns:
            (B, C, h, w) with (h, w) = :meth:`grid` (16x12 for 256x192).
        """
        b, c, height, width = hr.shape
        gh, gw = self.grid(height, width)
        k, shift = self.patch, [self.padding, 0, self.padding, 0]  # left, right, top, bottom
        x = gaussian_blur(hr) if self.blur else hr
        logits = self.attention(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, 1, H, W)
        inside = F.pad(x.new_ones(1, 1, height, width), shift)
        inside = F.unfold(inside, k, stride=k)  # (1, k*k, L)
        patches = F.unfold(F.pad(x, shift), k, stride=k).view(b, c, k * k, gh * gw)
        scores = F.unfold(F.pad(logits, shift), k, stride=k)  # (B, k*k, L)
        scores = scores * self.w.reshape(1, -1, 1) + self.b.reshape(1, -1, 1)
        attn = torch.softmax(scores.masked_fill(inside == 0, -math.inf), dim=1)
        return torch.einsum("bcpl,bpl->bcl", patches, attn).view(b, c, gh, gw)


def random_projection(dim: int, out_dim: int, generator: torch.Generator) -> Tensor:
    """(dim, out_dim) Gaussian matrix with unit-norm columns (drawn on the CPU generator)."""
    proj = torch.randn(dim, out_dim, generator=generator)
    return proj / proj.norm(dim=0, keepdim=True)


def project(x: Tensor, proj: Tensor) -> Tensor:
    """Channel projection: (B, C, H, W), (C, D) -> (B, D, H, W)."""
    return torch.einsum("bchw,cd->bdhw", x, proj.to(x.dtype))


class ScaleNet(nn.Module):
    """Per-pixel likelihood scale s = max(exp(conv1x1(x) + 0.1), 1e-4) from the target features.

    Arguments:
        dim: channels C of the low-resolution features.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Conv2d(dim, 1, 1)
        with torch.no_grad():
            for param in self.net.parameters():
                param.mul_(0.1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, 1, h, w) scale."""
        return torch.exp(self.net(x) + 0.1).clamp(min=1e-4)


def gaussian_nll(pred: Tensor, target: Tensor, scale: Tensor) -> Tensor:
    """mean((pred - target)^2 / (2 s^2) + log s): FeatUp's reconstruction loss.

    Arguments:
        pred / target: (B, D, h, w).
        scale: (B, 1, h, w), broadcast over D.
    """
    return ((pred - target).square() / (2 * scale.square()) + scale.log()).mean()


def crf_loss(image: Tensor, feats: Tensor, samples: int, generator: torch.Generator) -> Tensor:
    """FeatUp's CRF smoothness: similar-looking nearby pixels should have similar features.

    On ``samples`` random pixels (the same for every image of the batch) the pairwise kernel is
    ``10 exp(-d_xy^2 / 0.2 - d_rgb^2 / 0.3) + 3 exp(-d_xy^2 / 0.01)`` and the loss the mean of
    ``|f_i - f_j|^2 * kernel``. Coordinates are divided by the longer side (isotropic, in [0, 1]);
    colours are the normalised image values the network sees.

    Arguments:
        image: (B, 3, H, W) guidance, aligned with ``feats``.
        feats: (B, D, H, W) high-resolution (projected) features.
    """
    b, _, h, w = feats.shape
    index = torch.randint(0, h * w, (samples,), generator=generator).to(feats.device)
    xy = torch.stack([index % w, index // w], dim=1).to(feats.dtype) / max(h, w)  # (N, 2)
    d_xy = torch.cdist(xy[None], xy[None]).square()  # (1, N, N)
    colours = image.flatten(2)[:, :, index].transpose(1, 2).to(feats.dtype)  # (B, N, 3)
    d_rgb = torch.cdist(colours, colours).square()
    kernel = 10 * torch.exp(-d_xy / 0.2 - d_rgb / 0.3) + 3 * torch.exp(-d_xy / 0.01)
    f = feats.flatten(2)[:, :, index].transpose(1, 2)  # (B, N, D)
    sq = f.square().sum(-1)
    d_feat = (sq[:, :, None] + sq[:, None] - 2 * f @ f.transpose(1, 2)).clamp(min=0)  # (B, N, N)
    return (d_feat * kernel).mean()


class LayerObjective(nn.Module):
    """Everything FeatUp trains for one backbone layer, and its per-view losses.

    Arguments:
        stack: the JBU upsampler being pretrained (``forward(source, guidance, max_factor)``).
        dim: channels C of the layer.
        factor: upsampling factor used (2, 4, 8, 16); below 16 the map is resized bilinearly
            to the crop size before the downsampler, as in the paper.
    """

    def __init__(self, stack: nn.Module, dim: int, factor: int) -> None:
        super().__init__()
        self.stack, self.factor = stack, factor
        self.down = AttentionDownsampler(dim)
        self.scale = ScaleNet(dim)

    def upsample(self, lr: Tensor, image: Tensor) -> Tensor:
        """JBU x ``factor`` then bilinear to the crop size: (B, C, h, w) -> (B, C, H, W)."""
        hr = self.stack(lr, image, max_factor=self.factor)[-1]
        if hr.shape[-2:] != image.shape[-2:]:
            hr = F.interpolate(hr, image.shape[-2:], mode="bilinear", align_corners=False)
        return hr

    def reconstruction(self, hr_view: Tensor, lr_view: Tensor, proj: Tensor) -> Tensor:
        """Gaussian NLL between the pooled view of the upsampled map and the view's features.

        Arguments:
            hr_view: (B, C, H, W) jittered upsampled map.
            lr_view: (B, C, h, w) normalised backbone features of the jittered crop.
            proj: (C, D) random projection.
        """
        pred = project(self.down(hr_view), proj)
        return gaussian_nll(pred, project(lr_view, proj), self.scale(lr_view))
