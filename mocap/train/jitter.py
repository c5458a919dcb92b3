"""Multi-view jitter of FeatUp's training objective: reflect pad, zoom, crop, flip.

A :class:`Jitter` is one random view. The same object is applied to the crop image and to any
pixel-aligned map of the same size (the upsampled features): it only moves pixels, identically for
every channel, so ``jitter(f(image)) == f(jitter(image))`` for any per-pixel linear ``f``. Numbers
from FeatUp (reference-spec section 6): reflect padding 20, zoom U[1, 2) with probability 0.5
(bilinear), a random crop of the original size out of the padded, zoomed map, horizontal flip with
probability 0.5.

Geometry, for an output pixel (u, v) = (column, row) of an H x W map (pixel centres at integers):

1. flip: column u' = W - 1 - u if ``flip`` else u;
2. crop: pixel (u' + left, v + top) of the zoomed map (size ``zoomed`` = (H', W'));
3. zoom (bilinear, ``align_corners=False``): padded coordinate (q + 0.5) * (P / Q) - 0.5 per axis,
   with P the padded and Q the zoomed size;
4. pad: original coordinate = padded coordinate - ``pad`` (outside [0, W) it is mirrored).

:meth:`Jitter.source_pixels` returns exactly that map, so tests and figures can check alignment.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_PAD = 20
MAX_ZOOM = 2.0


@dataclass(frozen=True)
class Jitter:
    """One random view of an H x W map.

    Attributes:
        pad: reflect padding on every side (pixels).
        zoomed: (H', W') size of the padded map after zooming; equal to the padded size when the
            view is not zoomed.
        top / left: crop offset inside the zoomed map.
        flip: mirror the crop horizontally.
    """

    pad: int
    zoomed: tuple[int, int]
    top: int
    left: int
    flip: bool

    def apply(self, x: Tensor) -> Tensor:
        """The view of ``x``.

        Zoom-then-crop is computed as one bilinear sampling of the kept window only (same weights
        as ``F.interpolate`` of the whole padded map followed by the crop, a quarter of the memory
        at zoom 2: it matters for 1280-channel 256x192 maps).

        Arguments:
            x: (B, C, H, W) image or pixel-aligned map, any C.
        Returns:
            (B, C, H, W).
        """
        b, _, h, w = x.shape
        out = F.pad(x, [self.pad] * 4, mode="reflect") if self.pad else x
        padded = out.shape[-2:]
        if tuple(padded) != self.zoomed:
            axes = []
            for n, start, size, zoomed in zip(
                (h, w), (self.top, self.left), padded, self.zoomed, strict=True
            ):
                src = (
                    torch.arange(start, start + n, device=x.device, dtype=torch.float64) + 0.5
                ) * (size / zoomed) - 0.5
                axes.append((2 * src + 1) / size - 1)  # grid_sample's align_corners=False units
            gy, gx = torch.meshgrid(axes[0], axes[1], indexing="ij")
            grid = torch.stack([gx, gy], dim=-1).to(x.dtype).expand(b, h, w, 2)
            out = F.grid_sample(
                out, grid, mode="bilinear", padding_mode="border", align_corners=False
            )
        else:
            out = out[..., self.top : self.top + h, self.left : self.left + w]
        if tuple(out.shape[-2:]) != (h, w):
            raise ValueError(f"jitter {self} does not fit a {h}x{w} map")
        return out.flip(-1) if self.flip else out

    def source_pixels(self, height: int, width: int) -> Tensor:
        """Where each output pixel comes from, before mirroring at the borders.

        Returns:
            (H, W, 2) float64 (x, y) coordinates in the original map; values outside
            [0, W) x [0, H) fall in the reflect padding (mirrored about pixel 0 / W-1 / H-1).
        """
        rows = torch.arange(height, dtype=torch.float64)
        cols = torch.arange(width, dtype=torch.float64)
        if self.flip:
            cols = (width - 1) - cols
        padded = (height + 2 * self.pad, width + 2 * self.pad)
        y = (rows + self.top + 0.5) * (padded[0] / self.zoomed[0]) - 0.5 - self.pad
        x = (cols + self.left + 0.5) * (padded[1] / self.zoomed[1]) - 0.5 - self.pad
        return torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)


def sample_jitter(
    height: int,
    width: int,
    generator: torch.Generator,
    max_pad: int = MAX_PAD,
    max_zoom: float = MAX_ZOOM,
    p_zoom: float = 0.5,
    p_flip: float = 0.5,
) -> Jitter:
    """Draw one view of an ``height`` x ``width`` map (FeatUp's distribution).

    Arguments:
        generator: CPU generator: the views of a step depend only on its state.
        max_pad: reflect padding (FeatUp: 20); must be smaller than both sides.
        max_zoom: zoom is U[1, max_zoom) when applied.
        p_zoom / p_flip: probabilities of zooming / flipping.
    """
    if not 0 <= max_pad < min(height, width):
        raise ValueError(f"padding {max_pad} must be smaller than the {height}x{width} map")

    def uniform() -> float:
        return float(torch.rand((), generator=generator))

    flip = uniform() < p_flip
    zoom = 1.0 + uniform() * (max_zoom - 1.0) if uniform() < p_zoom else 1.0
    padded_h, padded_w = height + 2 * max_pad, width + 2 * max_pad
    zoomed = (int(padded_h * zoom), int(padded_w * zoom))
    top = int(torch.randint(0, zoomed[0] - height + 1, (), generator=generator))
    left = int(torch.randint(0, zoomed[1] - width + 1, (), generator=generator))
    return Jitter(pad=max_pad, zoomed=zoomed, top=top, left=left, flip=flip)
