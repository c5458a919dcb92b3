"""Model variants: the paper's rows as plain functions returning a ``ModelConfig``, and one builder.

| variant | backbone | upsampling | head |
|---|---|---|---|
| ``hmr2`` | ViTPose-H, fine-tuned | none | HMR2.0 dense cross-attention (final map) |
| ``vitpose-deformable`` | ViTPose-H, frozen | bilinear x r (r = 1: native maps only) | deformable |
| ``featup-deformable`` | ViTPose-H, frozen | FeatUp JBU x r (default 4; 2, 8, 16) | deformable |

The deformable head sees layers 16 and 32, each at native 16x12 and at x r (see ``mocap.model.hmr``).
``vitpose-deformable`` defaults to r = 4 too, the paper's FeatUp-vs-bilinear comparison at equal
resolution. Every variant has ``size="tiny"`` (a few thousand parameters; what the tests run).

A ``ModelConfig`` holds every architecture number and round-trips through JSON: it is what a
mocap checkpoint embeds, so a file alone rebuilds its model even if the presets here change.
"""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from mocap.errors import MocapError
from mocap.model.deformable_head import build_deformable_head
from mocap.model.featup import JBUStack
from mocap.model.hmr import HMR, Levels
from mocap.model.hmr2_head import MeanParams, build_hmr2_head, load_mean_params
from mocap.model.vit import build_vit

Size = Literal["full", "tiny"]
SIZES = ("full", "tiny")
CONFIG_VERSION = 1


@dataclass(frozen=True)
class ViTConfig:
    """ViT backbone numbers (see ``mocap.model.vit.ViT``)."""

    dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    drop_path: float = 0.55
    taps: tuple[int, ...] = (16, 32)


@dataclass(frozen=True)
class DenseHeadConfig:
    """HMR2.0 head numbers (see ``mocap.model.hmr2_head.build_hmr2_head``)."""

    dim: int = 1024
    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024


@dataclass(frozen=True)
class DeformableHeadConfig:
    """Deformable decoder numbers (see ``mocap.model.deformable_head``)."""

    d_model: int = 1280
    num_layers: int = 6
    num_heads: int = 8
    num_points: int = 8
    ffn_dim: int = 1024


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model.

    Attributes:
        variant: ``hmr2``, ``vitpose-deformable`` or ``featup-deformable``.
        size: ``full`` or ``tiny`` (informational once the numbers below are set).
        vit: backbone numbers.
        dense_head: HMR2.0 head numbers (``hmr2`` only).
        deformable_head: deformable head numbers (deformable variants only).
        levels: multi-scale layout (deformable variants only).
        jbu_key_dim: JBU range-kernel key width (``featup-deformable``).
        freeze_backbone: backbone frozen during training.
    """

    variant: str
    size: str
    vit: ViTConfig
    dense_head: DenseHeadConfig | None = None
    deformable_head: DeformableHeadConfig | None = None
    levels: Levels | None = None
    jbu_key_dim: int = 32
    freeze_backbone: bool = False

    def to_json(self) -> str:
        """JSON text (with a format version) that :meth:`from_json` reads back to an equal config."""
        return json.dumps({"version": CONFIG_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Inverse of :meth:`to_json`; MocapError when the text is not a model configuration."""
        try:
            data: dict[str, Any] = json.loads(text)
            if data.pop("version", None) != CONFIG_VERSION:
                raise ValueError("unknown configuration version")
            vit = data.pop("vit")
            dense = data.pop("dense_head")
            deform = data.pop("deformable_head")
            levels = data.pop("levels")
            return cls(
                vit=ViTConfig(**{**vit, "taps": tuple(vit["taps"])}),
                dense_head=DenseHeadConfig(**dense) if dense else None,
                deformable_head=DeformableHeadConfig(**deform) if deform else None,
                levels=Levels(**{**levels, "layers": tuple(levels["layers"])}) if levels else None,
                **data,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise MocapError(
                f"the embedded model configuration is unreadable ({exc}); "
                "re-create the checkpoint with this version of mocap"
            ) from exc


def _vit(size: str, taps: tuple[int, int] | None = None) -> ViTConfig:
    if size == "full":  # ViTPose-H
        return ViTConfig(dim=1280, depth=32, num_heads=16, drop_path=0.55, taps=taps or (16, 32))
    return ViTConfig(dim=32, depth=2, num_heads=2, drop_path=0.1, taps=taps or (1, 2))


def _deformable_head(size: str) -> DeformableHeadConfig:
    if size == "full":
        return DeformableHeadConfig(d_model=1280, num_layers=6, num_heads=8, num_points=8)
    return DeformableHeadConfig(d_model=32, num_layers=2, num_heads=2, num_points=2, ffn_dim=64)


def _check(size: str, factor: int, allowed: tuple[int, ...], variant: str) -> None:
    if size not in SIZES:
        raise MocapError(f"unknown model size {size!r}; use one of {', '.join(SIZES)}")
    if factor not in allowed:
        raise MocapError(
            f"{variant} does not support upsampling factor {factor}; use one of {allowed}"
        )


def hmr2(size: str = "full") -> ModelConfig:
    """HMR2.0: ViTPose-H fine-tuned with the dense cross-attention head (the baseline)."""
    _check(size, 1, (1,), "hmr2")
    head = DenseHeadConfig() if size == "full" else DenseHeadConfig(32, 2, 2, 16, 64)
    return ModelConfig("hmr2", size, _vit(size), dense_head=head, freeze_backbone=False)


def vitpose_deformable(size: str = "full", factor: int = 4) -> ModelConfig:
    """Frozen ViTPose-H, layers 16 and 32 at x1 and bilinear x r, deformable decoder."""
    _check(size, factor, (1, 2, 4, 8, 16), "vitpose-deformable")
    vit = _vit(size)
    levels = Levels(layers=vit.taps, factor=factor, upsample="none" if factor == 1 else "bilinear")
    return ModelConfig(
        "vitpose-deformable",
        size,
        vit,
        deformable_head=_deformable_head(size),
        levels=levels,
        freeze_backbone=True,
    )


def featup_deformable(size: str = "full", factor: int = 4) -> ModelConfig:
    """Frozen ViTPose-H, layers 16 and 32 at x1 and FeatUp JBU x r, deformable decoder (the paper)."""
    _check(size, factor, (2, 4, 8, 16), "featup-deformable")
    vit = _vit(size)
    return ModelConfig(
        "featup-deformable",
        size,
        vit,
        deformable_head=_deformable_head(size),
        levels=Levels(layers=vit.taps, factor=factor, upsample="jbu"),
        jbu_key_dim=32 if size == "full" else 8,
        freeze_backbone=True,
    )


VARIANTS: dict[str, Callable[..., ModelConfig]] = {
    "hmr2": hmr2,
    "vitpose-deformable": vitpose_deformable,
    "featup-deformable": featup_deformable,
}


def model_config(variant: str, size: str = "full", factor: int | None = None) -> ModelConfig:
    """The preset of ``variant`` (``factor`` only for deformable variants; default 4)."""
    if variant not in VARIANTS:
        raise MocapError(f"unknown model variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if variant == "hmr2":
        if factor not in (None, 1):
            raise MocapError("hmr2 has no upsampling factor; leave --factor out")
        return hmr2(size)
    return VARIANTS[variant](size, 4 if factor is None else factor)


def build_model(config: ModelConfig, mean_params: str | Path | MeanParams | None = None) -> HMR:
    """Build the network described by ``config``, randomly initialised.

    ``mean_params`` (``smpl_mean_params.npz`` path or dict) initialises the IEF starting point;
    None uses a neutral stand-in (identity rotations), fine when weights are loaded afterwards.
    """
    v = config.vit
    backbone = build_vit(v.dim, v.depth, v.num_heads, v.mlp_ratio, v.drop_path, v.taps)
    means = load_mean_params(mean_params)
    if config.dense_head is not None:
        h = config.dense_head
        head: nn.Module = build_hmr2_head(
            v.dim, h.dim, h.depth, h.heads, h.dim_head, h.mlp_dim, means
        )
        model = HMR(backbone, head, freeze_backbone=config.freeze_backbone)
    elif config.deformable_head is not None and config.levels is not None:
        d, levels = config.deformable_head, config.levels
        num_levels = len(levels.layers) * len(levels.factors)
        head = build_deformable_head(
            d_model=d.d_model,
            level_dims=[v.dim] * num_levels,
            num_layers=d.num_layers,
            num_heads=d.num_heads,
            num_points=d.num_points,
            ffn_dim=d.ffn_dim,
            mean_params=means,
        )
        upsamplers = None
        if levels.upsample == "jbu" and levels.factor > 1:
            upsamplers = nn.ModuleDict(
                {str(n): JBUStack(v.dim, key_dim=config.jbu_key_dim) for n in levels.layers}
            )
        model = HMR(backbone, head, upsamplers, levels, freeze_backbone=config.freeze_backbone)
    else:
        raise MocapError(f"model configuration {config.variant!r} has no head; re-create it")
    model.config = config
    return model
