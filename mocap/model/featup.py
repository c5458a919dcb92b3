"""FeatUp's joint bilateral upsampler (JBU) stack: 16x12 backbone maps -> x2, x4, x8, x16 maps.

Each stage doubles the resolution of a feature map, guided by the image pooled to the target size
(reference-spec section 6): the source is bicubically upsampled, then every output pixel is a
learned, image-dependent 7x7 weighted average of its neighbours (:func:`adaptive_conv`). The
weights are a range kernel (softmax of key similarities computed from the guidance pixels) times a
Gaussian spatial kernel, renormalised, plus a small learned correction (``fixup_proj``). Nothing in
a stage depends on the feature width, which is why FeatUp stages trained on any backbone can be
transplanted into a stack for ViTPose-H (:func:`load_featup_checkpoint`).

Stack output and the final ``fixup_proj``: FeatUp's stack returns ``s16 + 0.1 * fixup_proj(s16)``
(a width-specific 1x1 conv). :meth:`JBUStack.forward` returns every intermediate map up to
``max_factor``; the fixup is applied to the x16 map only, as in FeatUp, and the x2/x4/x8 maps are
the raw stage outputs. A stack run with ``max_factor < 16`` therefore never uses ``fixup_proj``.
Cost: at x16 the fixup is a C x C 1x1 conv over 49,152 pixels (80 GMAC per 1280-d map, about
two thirds of the ViT-H backbone). It is affine per pixel, so a consumer that only samples the map
(the deformable head) could fold it into that level's value projection instead.

Alignment: the stages treat the source and the guidance as covering the same pixels (bicubic with
``align_corners=False``), as FeatUp does. ViTPose's patch embedding (padding 2) centres patch (i, j)
2 pixels above/left of where that assumes; the upsampled maps inherit that 2-pixel shift (kept, so
FeatUp-trained stages see what they were trained on; training on top of the maps absorbs it).
:mod:`mocap.model.figures` draws native-level points at the true patch positions.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mocap.errors import MocapError
from mocap.model.adaptive_conv import adaptive_conv

log = logging.getLogger(__name__)

FACTORS = (2, 4, 8, 16)


def pointwise(layers: nn.Sequential, x: Tensor) -> Tensor:
    """Run a Sequential of 1x1 convolutions and pointwise modules on a (B, C, H, W) map.

    The 1x1 convolutions run as ``linear`` over the channels-last view (a GEMM): PyTorch's CPU
    convolution takes a slow generic path for these shapes. Weights keep their Conv2d layout and
    keys. Returns a channels-last (B, C', H, W) map.
    """
    for layer in layers:
        if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1):
            weight = layer.weight.flatten(1)
            x = F.linear(x.permute(0, 2, 3, 1), weight, layer.bias).permute(0, 3, 1, 2)
        else:
            x = layer(x)
    return x


class JBULearnedRange(nn.Module):
    """One 2x joint bilateral upsampling stage.

    Arguments:
        guidance_dim: channels of the guidance image (3).
        key_dim: width of the range-kernel keys.
        radius: kernel radius; the kernel is (2 radius + 1)^2 taps.
    """

    def __init__(self, guidance_dim: int = 3, key_dim: int = 32, radius: int = 3) -> None:
        super().__init__()
        self.radius = radius
        self.diameter = 2 * radius + 1
        taps = self.diameter**2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1),
            nn.GELU(),
            nn.Dropout2d(0.1),
            nn.Conv2d(key_dim, key_dim, 1),
        )
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(guidance_dim + taps, taps, 1),
            nn.GELU(),
            nn.Dropout2d(0.1),
            nn.Conv2d(taps, taps, 1),
        )

    def range_kernel(self, guidance: Tensor) -> Tensor:
        """Softmax over the taps of temperature-scaled key similarity to the centre pixel.

        Arguments:
            guidance: (B, G, H, W).
        Returns:
            (B, D*D, H, W); tap p = D * dy + dx.
        """
        keys = pointwise(self.range_proj, guidance)  # (B, key_dim, H, W)
        _, _, h, w = keys.shape
        padded = F.pad(keys, [self.radius] * 4, mode="reflect")
        temp = self.range_temp.exp().clamp(1e-4, 1e4)
        # One tap at a time: never holds the (B, key_dim, D*D, H, W) unfold.
        logits = [
            (padded[:, :, dy : dy + h, dx : dx + w] * keys).sum(1)
            for dy in range(self.diameter)
            for dx in range(self.diameter)
        ]
        return torch.softmax(temp * torch.stack(logits, dim=1), dim=1)

    def spatial_kernel(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Gaussian over the tap grid linspace(-1, 1, D)^2 -> (1, D*D, 1, 1)."""
        r = torch.linspace(-1.0, 1.0, self.diameter, device=device, dtype=dtype)
        dist2 = r[:, None].square() + r[None, :].square()  # (dy, dx)
        kernel = torch.exp(-dist2 / (2 * self.sigma_spatial.to(dtype).square()))
        return kernel.reshape(1, -1, 1, 1)

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        """Upsample ``source`` to the guidance's resolution.

        Arguments:
            source: (B, C, h, w) features.
            guidance: (B, G, H, W) image at the target resolution.
        Returns:
            (B, C, H, W), channels-last in memory.
        """
        b, _, h, w = guidance.shape
        kernel = self.range_kernel(guidance) * self.spatial_kernel(guidance.device, guidance.dtype)
        kernel = kernel / kernel.sum(1, keepdim=True).clamp(min=1e-7)
        kernel = kernel + 0.1 * pointwise(self.fixup_proj, torch.cat([kernel, guidance], dim=1))
        filters = kernel.permute(0, 2, 3, 1).reshape(b, h, w, self.diameter, self.diameter)
        hr = F.interpolate(source, (h, w), mode="bicubic", align_corners=False)
        hr = F.pad(hr, [self.radius] * 4, mode="reflect")
        return adaptive_conv(hr, filters.to(source.dtype))


class JBUStack(nn.Module):
    """Four JBU stages (x2 each) and FeatUp's final width-specific fixup.

    Arguments:
        dim: feature channels C (1280 for ViTPose-H).
        key_dim: range-kernel key width of every stage.
        radius: kernel radius of every stage.
    """

    def __init__(self, dim: int, key_dim: int = 32, radius: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.up1 = JBULearnedRange(3, key_dim, radius)
        self.up2 = JBULearnedRange(3, key_dim, radius)
        self.up3 = JBULearnedRange(3, key_dim, radius)
        self.up4 = JBULearnedRange(3, key_dim, radius)
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(dim, dim, 1))

    def forward(self, source: Tensor, guidance: Tensor, max_factor: int = 16) -> list[Tensor]:
        """Upsampled maps x2, x4, ... up to ``max_factor``.

        Arguments:
            source: (B, C, h, w) features (FeatUp trains on channel-LayerNormed maps).
            guidance: (B, 3, H, W) image; each stage uses it average-pooled to its output size.
            max_factor: 2, 4, 8 or 16; stages beyond it are not computed.
        Returns:
            [(B, C, 2h, 2w), (B, C, 4h, 4w), ...], len = log2(max_factor), channels-last memory;
            the x16 map (only) includes ``0.1 * fixup_proj(x) + x``.
        """
        if max_factor not in FACTORS:
            raise ValueError(f"max_factor must be one of {FACTORS}, got {max_factor}")
        stages = (self.up1, self.up2, self.up3, self.up4)[: FACTORS.index(max_factor) + 1]
        guidance = guidance.to(source.dtype)
        maps: list[Tensor] = []
        x = source
        for stage in stages:
            h, w = x.shape[-2:]
            x = stage(x, F.adaptive_avg_pool2d(guidance, (2 * h, 2 * w)))
            maps.append(x)
        if max_factor == 16:
            maps[-1] = x + 0.1 * pointwise(self.fixup_proj, x)
        return maps


@dataclass
class TransplantReport:
    """What :func:`load_featup_checkpoint` did.

    Attributes:
        loaded: keys copied into the stack.
        skipped: stack keys left at their initial values, with the reason.
        ignored: checkpoint keys that are not part of a JBU stack.
    """

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        skipped = "; ".join(f"{k} ({why})" for k, why in self.skipped.items()) or "nothing"
        return f"{len(self.loaded)} tensors loaded, skipped {skipped}, {len(self.ignored)} ignored"


def load_featup_checkpoint(stack: JBUStack, path: str | Path) -> TransplantReport:
    """Copy a FeatUp JBU checkpoint's ``upsampler.*`` weights into ``stack``.

    The four stages are channel-free and always load; ``fixup_proj.1`` only when the checkpoint
    was trained for the same width (it is skipped, and reported, otherwise). The file is read
    with ``torch.load(weights_only=True)``, falling back to a restricted unpickler that never runs
    pickled code (Lightning checkpoints carry hyper-parameter objects).

    Raises:
        MocapError: unreadable file, no ``upsampler.*`` weights, or stage shapes that differ.
    """
    from mocap.model.checkpoint import read_torch_pickle  # late: checkpoint imports the builders

    path = Path(path)
    obj, _ = read_torch_pickle(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise MocapError(f"{path} holds no state_dict; pass a FeatUp JBU checkpoint (*.ckpt)")
    prefix = "upsampler."
    source = {k[len(prefix) :]: v for k, v in state.items() if str(k).startswith(prefix)}
    if not source:
        raise MocapError(f"{path} has no 'upsampler.*' weights; pass a FeatUp JBU stack checkpoint")
    report = TransplantReport(ignored=[str(k) for k in state if not str(k).startswith(prefix)])
    target = stack.state_dict()
    new_state = {}
    for key, value in target.items():
        if key not in source:
            report.skipped[key] = "not in the checkpoint"
            continue
        incoming = source[key]
        if tuple(incoming.shape) != tuple(value.shape):
            if key.startswith("fixup_proj."):
                report.skipped[key] = f"width {incoming.shape[0]} != {value.shape[0]}"
                continue
            raise MocapError(
                f"{path}: {key} has shape {tuple(incoming.shape)}, expected {tuple(value.shape)}; "
                "it is not a JBU stack with radius/key width matching this model"
            )
        new_state[key] = incoming.to(value.dtype)
        report.loaded.append(key)
    report.ignored += [prefix + k for k in source if k not in target]
    stack.load_state_dict(new_state, strict=False)
    log.info("FeatUp checkpoint %s: %s", path, report.summary())
    return report
