"""Pretrain FeatUp JBU upsamplers for the frozen ViTPose layers (``mocap train featup``).

    mocap train featup --images coco/train2017 --subset 0.2 --backbone hmr2.ckpt --factor 4 \\
        --out runs/featup_x4 --steps 2000 --export-model runs/featup_x4/model.safetensors

FeatUp's multi-view consistency objective (reference-spec section 6), one JBU stack per tapped layer
(16 and 32 for ViTPose-H): the frozen backbone's maps are LayerNormed over channels (no affine, as
:class:`~mocap.model.hmr.HMR` does before its upsamplers) and upsampled x ``factor`` guided by the
crop; for x2/x4/x8 the map is then resized bilinearly to the full 256x192, as the paper does. Per
step, ``jitters`` random views (:mod:`mocap.train.jitter`) of the crop go through the backbone; the
same view of the upsampled map is pooled onto the 16x12 grid by an attention downsampler, and a
fresh 30-d random projection of both is compared with a Gaussian likelihood whose scale is learned
(:mod:`mocap.train.downsampler`); the first view adds the CRF term. Gradients of the views are
accumulated; NAdam; the gradient norm is clipped to 1e-4 for the first 10 steps.

Data (:mod:`mocap.train.featup_data`): every image of ``--images`` (recursively; ``--subset`` keeps a
fixed fraction, the paper used 20% of COCO) becomes one 256x192 crop through HMR2.0's own crop
(:func:`mocap.model.crop.crop_person`, the preprocessing the upsamplers see at inference): ``--crop
center`` (default) takes the largest 3:4 window in the middle of the image, ``--crop whole`` the
whole image with black borders. Batch ``t`` depends only on ``(seed, t)``, and so do the views,
projections and CRF pixels of step ``t``.

Run folder: ``config.json``, ``metrics.jsonl``, ``tb/``, ``checkpoints/step_XXXXXXX.safetensors``
(the JBU stacks as ``upsamplers.<layer>.*``: the keys of a featup-deformable model) +
``step_XXXXXXX.state.pt`` (downsamplers, scale nets, NAdam, RNG, step; read with
``weights_only=True``), ``latest.json``, and ``upsamplers.safetensors`` (the last stacks).
:mod:`mocap.train.featup_export` puts such a file into a featup-deformable model
(``inject_upsamplers``); ``--export-model`` writes a whole featup-deformable checkpoint (backbone +
trained upsamplers + head) for ``mocap train hmr --init``.
"""

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mocap.errors import MocapError
from mocap.paths import atomic_output
from mocap.train.featup_data import CROPS, ImageCrops, list_images
from mocap.train.featup_export import UPSAMPLERS_FILE, export_model
from mocap.train.featup_trainer import FeatUpTrainer, build_objective

if TYPE_CHECKING:  # torch is imported inside functions: `mocap --help` must stay instant
    from mocap.model.hmr import HMR

log = logging.getLogger(__name__)
FACTORS = (2, 4, 8, 16)


@dataclass
class FeatUpConfig:
    """Everything a pretraining run depends on (saved as ``RUN/config.json``)."""

    out: str
    images: str
    backbone: str | None = None
    size: str = "full"
    factor: int = 4
    init_featup: str | None = None
    steps: int = 2000
    batch_size: int = 4
    jitters: int = 5
    lr: float = 1e-3
    projection_dim: int = 30
    crf_weight: float = 0.001
    crf_samples: int = 1000
    max_pad: int = 20
    max_zoom: float = 2.0
    clip_grad: float = 1e-4
    clip_steps: int = 10
    subset: float = 1.0
    crop: str = "center"
    precision: str = "bf16"
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"


# ---- model parts -----------------------------------------------------------------------------
def load_base_model(cfg: FeatUpConfig) -> "HMR":
    """The model whose backbone is pretrained on: ``cfg.backbone`` (mocap or HMR2.0 checkpoint) or
    a random featup-deformable model of ``cfg.size`` (tests, smoke runs)."""
    if cfg.backbone:
        from mocap.model.checkpoint import load_any_checkpoint

        model, _ = load_any_checkpoint(cfg.backbone)
        return model
    import torch

    from mocap.model.build import build_model, featup_deformable

    torch.manual_seed(cfg.seed)
    return build_model(featup_deformable(cfg.size, cfg.factor))


# ---- the loop ------------------------------------------------------------------------------------
def train(cfg: FeatUpConfig, resume: bool = False) -> list[dict[str, float]]:
    """Run (or resume) pretraining; returns the logged scalars of this call."""
    import torch

    from mocap.train import data as D
    from mocap.train.hmr import MetricsLog, resolve_device

    run_dir = Path(cfg.out)
    if not resume and (run_dir / "latest.json").exists():
        raise MocapError(f"{run_dir} already holds a run; pass --resume or choose another --out")
    if resume and (run_dir / "config.json").is_file():
        started = json.loads((run_dir / "config.json").read_text())
        for key in ("backbone", "size", "factor", "seed", "batch_size"):
            if started.get(key) != getattr(cfg, key):
                flag = "--" + key.replace("_", "-")
                raise MocapError(f"{run_dir} was started with {flag} {started.get(key)}; "
                                 f"resume with the same {flag} (got {getattr(cfg, key)})")  # fmt: skip
    paths = list_images(cfg.images)
    dataset = ImageCrops(paths, cfg.crop)
    pool = D.subset_indices(len(dataset), cfg.subset)
    device = resolve_device(cfg.device)
    model = load_base_model(cfg)
    trainer = FeatUpTrainer(cfg, model.backbone, build_objective(model, cfg), device)
    del model
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        trainer.load(run_dir)
    else:
        torch.manual_seed(cfg.seed)
    with atomic_output(run_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(asdict(cfg), indent=1))
    sampler = D.MixtureBatchSampler([pool], [1.0], cfg.batch_size, cfg.seed, trainer.step)
    loader: Any = torch.utils.data.DataLoader(  # ImageCrops: map-style, torch-free module
        cast(Any, dataset),
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        generator=torch.Generator(),  # leave the global RNG (dropout; restored on resume) alone
    )
    metrics = MetricsLog(run_dir, trainer.step)
    history: list[dict[str, float]] = []
    tick, batches = time.perf_counter(), iter(loader)
    try:
        while trainer.step < cfg.steps:
            scalars = trainer.train_step(next(batches))
            step = trainer.step
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                scalars["steps_per_s"] = cfg.log_every / max(now - tick, 1e-9)
                tick = now
                history.append({"step": step, **scalars})
                metrics.log(step, scalars)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                trainer.save(run_dir)
    finally:
        metrics.close()
    return history


# ---- CLI -----------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``mocap train featup``."""
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("--images", required=True, help="folder of photos (searched recursively)")
    p.add_argument("--out", required=True, help="run folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--backbone", metavar="CKPT", help="mocap or HMR2.0 checkpoint (frozen ViT)")
    which.add_argument("--size", choices=("tiny", "full"), default="full",
                       help="random backbone of this size instead (smoke tests)")  # fmt: skip
    p.add_argument("--factor", type=int, choices=FACTORS, default=4, help="upsampling factor")
    p.add_argument(
        "--init-featup", metavar="CKPT", help="start from a public FeatUp JBU checkpoint"
    )
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--jitters", type=int, default=5, help="views per step (gradients accumulated)")
    p.add_argument("--lr", type=float, default=1e-3, help="NAdam learning rate")
    p.add_argument("--crf-weight", type=float, default=0.001)
    p.add_argument(
        "--subset", type=float, default=1.0, help="fixed fraction of the images (paper: 0.2)"
    )
    p.add_argument(
        "--crop", choices=CROPS, default="center", help="centre 3:4 window or whole image"
    )
    p.add_argument(
        "--precision", choices=("bf16", "fp32"), default="bf16", help="of the frozen backbone"
    )
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data-loader processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--export-model", metavar="OUT", help="then write a featup-deformable checkpoint"
    )
    p.add_argument("--mean-params", help="smpl_mean_params.npz for the exported model's head")


def config_from_args(args: argparse.Namespace) -> FeatUpConfig:
    """Validate the flat CLI settings into a :class:`FeatUpConfig`."""
    for name in ("steps", "batch_size", "jitters", "checkpoint_every", "log_every"):
        if getattr(args, name) < 1:
            raise MocapError(f"--{name.replace('_', '-')} must be at least 1")
    for flag, value in (("--backbone", args.backbone), ("--init-featup", args.init_featup)):
        if value and not Path(value).is_file():
            raise MocapError(f"{flag} {value} does not exist; check the path")
    return FeatUpConfig(
        out=args.out, images=args.images, backbone=args.backbone, size=args.size,
        factor=args.factor, init_featup=args.init_featup, steps=args.steps,
        batch_size=args.batch_size, jitters=args.jitters, lr=args.lr, crf_weight=args.crf_weight,
        subset=args.subset, crop=args.crop, precision=args.precision,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, seed=args.seed,
        num_workers=args.workers, device=args.device,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mocap train featup``."""
    cfg = config_from_args(args)
    history = train(cfg, resume=args.resume)
    run_dir = Path(cfg.out)
    if history:
        print(
            f"step {int(history[-1]['step'])}: loss {history[-1]['loss']:.4g}; run folder {run_dir}"
        )
    if args.export_model:
        out = Path(args.export_model)
        export_model(
            load_base_model(cfg), run_dir / UPSAMPLERS_FILE, cfg.factor, out, args.mean_params
        )
        print(f"wrote {out} (featup-deformable x{cfg.factor}; train its decoder with --init)")
    return 0
