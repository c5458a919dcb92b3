"""HMR: backbone -> (optional upsampling) -> SMPL head, the network of every variant.

Two ways the head sees the image:

- **Dense (HMR2.0)**: the head receives the final, ``last_norm``-ed map of the backbone.
- **Multi-scale (deformable)**: the head receives a list of levels built from the tapped layers
  (default 16 and 32). Each tapped map first goes through a parameter-free LayerNorm over channels,
  the normalisation FeatUp's upsamplers are trained on (spec 6; only the final layer has a trained
  norm in ViTPose, and intermediate layers have very different scales). Then, per tapped layer in
  order, the native 16x12 map and the map upsampled by ``factor`` (JBU guided by the crop image for
  ``upsample="jbu"``, bilinear for ``upsample="bilinear"``); with ``upsample="none"`` (or factor 1)
  only the native maps. Default: [L16 x1, L16 x r, L32 x1, L32 x r]. A JBU stack always holds
  all four x2 stages and FeatUp's final fixup (one checkpoint layout for every r, and FeatUp
  checkpoints transplant whole); for r < 16 the stages beyond r and the fixup are not run.

The backbone may run in another precision than the rest (the predictor stores only its block
linears in bf16, the heavy part; a training run may cast the whole backbone): images are cast to
the backbone's dtype and its features to the head's.
"""

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mocap.model.vit import ViT

Upsample = Literal["none", "bilinear", "jbu"]


class _HeadResult(Protocol):
    rotmat: Tensor
    betas: Tensor
    cam: Tensor
    aux: dict[str, Tensor]


@dataclass
class HMROutput:
    """Network output for a batch of crops.

    Attributes:
        rotmat: (B, 24, 3, 3) SMPL joint rotations; joint 0 is the global orientation.
        betas: (B, 10) SMPL shape.
        cam: (B, 3) crop camera (s, tx, ty).
        aux: intermediate tensors for figures: the head's (``pose6d``, deformable
            ``sampling_locations`` / ``attention_weights`` / ``reference_points``) plus, for
            multi-scale heads, every level as ``feat_l{layer}_x{factor}`` (B, C, H, W).
    """

    rotmat: Tensor
    betas: Tensor
    cam: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Levels:
    """Which feature maps a multi-scale head receives (see the module docstring).

    Attributes:
        layers: 1-based backbone layers to tap, in level order.
        factor: upsampling factor r of the second map per layer (1 = native maps only).
        upsample: how the upsampled map is made.
    """

    layers: tuple[int, ...] = (16, 32)
    factor: int = 4
    upsample: Upsample = "jbu"

    @property
    def factors(self) -> tuple[int, ...]:
        """Factors of the maps per layer: (1,) or (1, r)."""
        return (1,) if self.upsample == "none" or self.factor == 1 else (1, self.factor)


class HMR(nn.Module):
    """Human mesh recovery network.

    Arguments:
        backbone: the ViT (its ``taps`` must include ``levels.layers`` for multi-scale heads).
        head: maps the features to SMPL parameters; called with the final map (dense) or with the
            list of levels (multi-scale); returns an object with rotmat, betas, cam, aux.
        upsamplers: for ``levels.upsample == "jbu"``: ``str(layer)`` -> JBU stack.
        levels: None for the dense HMR2.0 head, else the multi-scale level layout.
        freeze_backbone: keep the backbone frozen (no gradients, always in eval mode: no
            stochastic depth), as the paper trains the decoder on a frozen ViTPose-H.
    """

    config: Any = None  # the ModelConfig it was built from (set by mocap.model.build)

    def __init__(
        self,
        backbone: ViT,
        head: nn.Module,
        upsamplers: nn.ModuleDict | None = None,
        levels: Levels | None = None,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        if levels is not None:
            missing = set(levels.layers) - set(backbone.taps)
            if missing:
                raise ValueError(f"backbone does not tap layers {sorted(missing)}")
            needs_jbu = levels.upsample == "jbu" and levels.factor > 1
            if needs_jbu and set(upsamplers or {}) != {str(n) for n in levels.layers}:
                raise ValueError("upsample='jbu' needs one upsampler per tapped layer")
        self.backbone = backbone
        self.upsamplers = upsamplers
        self.head = head
        self.levels = levels
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "HMR":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, images: Tensor) -> HMROutput:
        """images: (B, 3, 256, 192) ImageNet-normalised RGB crops -> HMROutput."""
        head_dtype = next(self.head.parameters()).dtype
        backbone_dtype = self.backbone.pos_embed.dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            feats = self.backbone(images.to(backbone_dtype))
        if self.levels is None:
            out: _HeadResult = self.head(feats.final.to(head_dtype))
            aux = dict(out.aux)
        else:
            levels = self.build_levels(feats.taps, images.to(head_dtype))
            out = self.head(list(levels.values()))
            aux = {**levels, **out.aux}
        return HMROutput(rotmat=out.rotmat, betas=out.betas, cam=out.cam, aux=aux)

    def build_levels(self, taps: dict[int, Tensor], images: Tensor) -> dict[str, Tensor]:
        """Multi-scale head input, keyed ``feat_l{layer}_x{factor}`` in level order.

        Arguments:
            taps: raw tapped maps (B, C, 16, 12) by layer.
            images: (B, 3, 256, 192) crops in the head's dtype (JBU guidance).
        Returns:
            maps (B, C, 16*f, 12*f) in the head's dtype.
        """
        assert self.levels is not None
        head_dtype = images.dtype
        out: dict[str, Tensor] = {}
        for layer in self.levels.layers:
            x = taps[layer].to(head_dtype)
            x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2]).permute(0, 3, 1, 2)
            for factor in self.levels.factors:
                out[f"feat_l{layer}_x{factor}"] = self._upsample(layer, x, images, factor)
        return out

    def _upsample(self, layer: int, x: Tensor, images: Tensor, factor: int) -> Tensor:
        if factor == 1:
            return x
        assert self.levels is not None
        if self.levels.upsample == "bilinear":
            return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        assert self.upsamplers is not None
        maps = self.upsamplers[str(layer)](x, images, max_factor=factor)
        return maps[-1]
