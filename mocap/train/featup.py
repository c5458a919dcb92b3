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
from mocap.train.featup_export import (
    FORMAT,
    UPSAMPLERS_FILE,
    export_model,
    model_size,
    save_upsamplers,
)

if TYPE_CHECKING:  # torch is imported inside functions: `mocap --help` must stay instant
    from torch import Tensor, nn

    from mocap.model.hmr import HMR
    from mocap.train.downsampler import LayerObjective

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


def build_objective(model: "HMR", cfg: FeatUpConfig) -> "nn.ModuleDict":
    """Layer -> :class:`~mocap.train.downsampler.LayerObjective` for every tapped layer.

    Stacks start from the model's own upsamplers when it has them, else fresh; ``cfg.init_featup``
    then transplants a public FeatUp checkpoint's stages into every stack.
    """
    import copy

    from torch import nn

    from mocap.model.build import featup_deformable
    from mocap.model.featup import JBUStack, load_featup_checkpoint
    from mocap.train.downsampler import LayerObjective

    layers = model.levels.layers if model.levels is not None else model.backbone.taps
    if not layers:
        raise MocapError(
            "the backbone taps no layers; use a ViTPose checkpoint from mocap or HMR2.0"
        )
    dim = model.backbone.dim
    key_dim = featup_deformable(model_size(model)).jbu_key_dim
    parts = nn.ModuleDict()
    for layer in layers:
        own = model.upsamplers[str(layer)] if model.upsamplers is not None else None
        stack = copy.deepcopy(own) if isinstance(own, JBUStack) else JBUStack(dim, key_dim)
        if cfg.init_featup:
            load_featup_checkpoint(stack, cfg.init_featup)
        parts[str(layer)] = LayerObjective(stack, dim, cfg.factor)
    return parts


def channel_norm(x: "Tensor") -> "Tensor":
    """LayerNorm over channels without affine: (B, C, h, w) -> (B, C, h, w)."""
    import torch.nn.functional as F

    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2]).permute(0, 3, 1, 2)


# ---- training ----------------------------------------------------------------------------------
class FeatUpTrainer:
    """Frozen backbone, trainable objective (stacks, downsamplers, scale nets), NAdam, step count.

    Arguments:
        cfg: the run's configuration.
        backbone: the ViT (frozen here; its taps include every layer of ``objective``).
        objective: from :func:`build_objective`.
        device: torch device name.
    """

    def __init__(self, cfg: FeatUpConfig, backbone: "nn.Module", objective: "nn.ModuleDict",
                 device: str) -> None:  # fmt: skip
        import torch

        self.cfg, self.device = cfg, torch.device(device)
        self.backbone = backbone.to(self.device).eval().requires_grad_(False)
        self.objective = objective.to(self.device).train()
        self.params = [p for p in objective.parameters() if p.requires_grad]
        self.optimizer = torch.optim.NAdam(self.params, lr=cfg.lr)
        self.step = 0

    def features(self, images: "Tensor") -> dict[str, "Tensor"]:
        """(B, 3, 256, 192) -> {layer: (B, C, 16, 12)} channel-normalised, float32, no grad."""
        import torch

        bf16 = self.cfg.precision == "bf16"
        with torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
            taps = self.backbone(images).taps
        return {k: channel_norm(taps[int(k)].float()) for k in self.objective}

    def layer_objectives(self) -> list[tuple[str, "LayerObjective"]]:
        """(layer, objective) pairs in level order."""
        from mocap.train.downsampler import LayerObjective

        return [(k, v) for k, v in self.objective.items() if isinstance(v, LayerObjective)]

    def losses(self, images: "Tensor", step: int, backward: bool) -> dict[str, float]:
        """The objective of step ``step``'s views on a batch of crops (B, 3, 256, 192).

        The views, projections and CRF pixels depend only on ``(seed, step)``. With ``backward``
        each view's loss is back-propagated at once (accumulated gradients, bounded memory).

        Returns:
            ``rec_l{layer}`` (summed over views, each / ``jitters``), ``crf_l{layer}`` (first
            view, weighted) and their sum ``loss``.
        """
        import torch

        from mocap.train.downsampler import crf_loss, project, random_projection
        from mocap.train.jitter import sample_jitter

        cfg = self.cfg
        images = images.to(self.device)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        lr = self.features(images)
        height, width = images.shape[-2:]
        scalars: dict[str, float] = {}
        for view in range(cfg.jitters):
            jitter = sample_jitter(height, width, gen, cfg.max_pad, cfg.max_zoom)
            lr_jit = self.features(jitter.apply(images))
            dim = next(iter(lr.values())).shape[1]
            proj = random_projection(dim, cfg.projection_dim, gen).to(self.device)
            loss = images.new_zeros(())
            for layer, part in self.layer_objectives():
                hr = part.upsample(lr[layer], images)
                rec = part.reconstruction(jitter.apply(hr), lr_jit[layer], proj)
                terms = {f"rec_l{layer}": rec / cfg.jitters}
                if view == 0 and cfg.crf_weight > 0:
                    crf = crf_loss(images, project(hr, proj), cfg.crf_samples, gen)
                    terms[f"crf_l{layer}"] = cfg.crf_weight * crf
                for name, value in terms.items():
                    loss = loss + value
                    scalars[name] = scalars.get(name, 0.0) + float(value.detach())
            if backward:
                loss.backward()
        return {"loss": sum(scalars.values()), **scalars}

    def train_step(self, images: "Tensor") -> dict[str, float]:
        """One NAdam step on a batch of crops (B, 3, 256, 192); returns its scalars."""
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        scalars = self.losses(images, self.step, backward=True)
        max_norm = self.cfg.clip_grad if self.step < self.cfg.clip_steps else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        self.step += 1
        return {**scalars, "grad_norm": float(norm)}

    def evaluate(self, images: "Tensor", step: int = 0) -> dict[str, float]:
        """:meth:`losses` without dropout or gradients (a fixed yardstick across training)."""
        import torch

        self.objective.eval()
        try:
            with torch.no_grad():
                return self.losses(images, step, backward=False)
        finally:
            self.objective.train()

    # ---- checkpoints -----------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        first = self.layer_objectives()[0][1].stack
        return {"format": FORMAT, "factor": str(self.cfg.factor), "step": str(self.step),
                "layers": ",".join(self.objective), "dim": str(first.dim)}  # fmt: skip

    def save(self, run_dir: Path) -> Path:
        """Stacks (safetensors) + training state for the current step; returns the stacks' path."""
        import torch

        ckpt_dir = run_dir / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        stem = ckpt_dir / f"step_{self.step:07d}"
        stacks = stem.with_suffix(".safetensors")
        save_upsamplers(stacks, self.objective, self.metadata())
        save_upsamplers(run_dir / UPSAMPLERS_FILE, self.objective, self.metadata())
        state = {"step": self.step, "objective": self.objective.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state()}  # fmt: skip
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        state_path = stem.with_suffix(".state.pt")
        with atomic_output(state_path) as tmp:
            torch.save(state, tmp)
        latest = {"step": self.step, "upsamplers": stacks.name, "state": state_path.name}
        with atomic_output(run_dir / "latest.json") as tmp:
            tmp.write_text(json.dumps(latest))
        return stacks

    def load(self, run_dir: Path) -> None:
        """Restore the latest checkpoint of ``run_dir`` (MocapError when there is none)."""
        import torch

        latest = run_dir / "latest.json"
        if not latest.is_file():
            raise MocapError(f"nothing to resume in {run_dir} (no latest.json); drop --resume")
        info = json.loads(latest.read_text())
        path = run_dir / "checkpoints" / info["state"]
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step = int(state["step"])


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
