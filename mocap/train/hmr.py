"""Decoder training: frozen ViTPose (and frozen FeatUp upsamplers), trainable SMPL head.

One :class:`TrainConfig` (saved as ``RUN_DIR/config.json``) drives :func:`train`. Each step draws a
global batch that depends only on ``(seed, step)`` (see :mod:`mocap.train.data`), so

* ``--resume`` restores the model, AdamW, the warm-up + cosine schedule, the gradient scaler, torch's
  RNG and the step (= data position) and continues with exactly the losses of an uninterrupted run;
* under torchrun every rank takes a slice of the same global batch and the decoder's gradients are
  averaged by DistributedDataParallel; the losses are linear in the samples
  (:mod:`mocap.train.losses`), so the update equals the single-process one. Only rank 0 logs and
  writes checkpoints.

Run folder: ``config.json``, ``metrics.jsonl`` (one line per logged step), ``tb/`` (TensorBoard),
``checkpoints/step_XXXXXXX.safetensors`` (mocap model checkpoint) + ``step_XXXXXXX.state.pt``
(optimizer, scheduler, scaler, RNG, step; loaded with ``weights_only=True``), ``latest.json``.
"""

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mocap.body.smpl import BodyModel, load_body_model
from mocap.errors import MocapError
from mocap.model.hmr import HMR
from mocap.paths import atomic_path
from mocap.train import augment as aug
from mocap.train import data as D
from mocap.train import feature_cache as FC
from mocap.train import losses as L

GT_MEMO_SAMPLES = 4096


@dataclass
class TrainConfig:
    """Everything a training run depends on (read at the entry point, saved in the run folder)."""

    out: str
    data: list[str]
    variant: str = "featup-deformable"
    size: str = "full"
    factor: int | None = None
    init: str | None = None
    mean_params: str | None = None
    dropout: float | None = None
    smpl: str | None = None
    steps: int = 100_000
    batch_size: int = 48
    lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.01
    clip_grad: float = 1.0
    precision: str = "bf16"
    checkpoint_every: int = 5000
    log_every: int = 20
    seed: int = 0
    subset: float = 1.0
    augment: bool = True
    feature_cache: str | None = None
    num_workers: int = 2
    device: str = "auto"
    loss_weights: L.LossWeights = field(default_factory=L.LossWeights)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        raw["loss_weights"] = L.LossWeights(**raw.get("loss_weights", {}))
        return cls(**raw)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---- the model, seen from training: frozen features -> trainable decoder --------------------
def build_model(cfg: "TrainConfig") -> HMR:
    """A fresh ``variant``/``size``/``factor`` model, or the one stored in checkpoint ``init``."""
    if cfg.init:
        from mocap.model.checkpoint import load_checkpoint

        return load_checkpoint(Path(cfg.init))
    from mocap.model.build import build_model as build
    from mocap.model.build import model_config

    mean_params = cfg.mean_params
    if mean_params is None and default_mean_params().is_file():
        mean_params = str(default_mean_params())
    model = build(model_config(cfg.variant, cfg.size, cfg.factor), mean_params)
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    return model


def set_dropout(model: nn.Module, p: float) -> None:
    """Override every dropout rate of the model (decoder ablations; 0 for overfitting checks)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d):
            m.p = p
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = p


def default_mean_params() -> Path:
    """Where `mocap weights` puts HMR2.0's smpl_mean_params.npz (used when --mean-params is not given)."""
    from mocap.weights import path_for

    return path_for("smpl-mean-params")


def save_model(model: HMR, path: Path) -> None:
    """mocap safetensors checkpoint (architecture embedded), written atomically."""
    from mocap.model.checkpoint import save_checkpoint

    save_checkpoint(path, model)


def load_weights(model: nn.Module, path: Path) -> None:
    """Restore every tensor of ``model`` from a mocap safetensors checkpoint."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)


def load_body(path: str | None, device: str) -> BodyModel:
    body = load_body_model(path, required=True)
    assert body is not None
    return body.to(device)


class TrainStep(nn.Module):
    """The part of the model DDP sees: frozen features (or cached ones) -> trainable decoder.

    ``forward(images (B, 3, 256, 192), features {name: (B, C, 16, 12)} | None)`` returns
    ``(rotmat (B, 24, 3, 3), betas (B, 10), cam (B, 3))``.
    """

    def __init__(self, model: HMR):
        super().__init__()
        self.model = model

    def forward(
        self, images: Tensor, features: dict[str, Tensor] | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        if features is None:
            with torch.no_grad():
                features = FC.backbone_features(self.model, images)
        out = FC.decode_features(self.model, features, images)
        return out.rotmat, out.betas, out.cam


@dataclass
class StepResult:
    """Loss terms (floats) and gradient norm of one optimisation step."""

    terms: dict[str, float]
    grad_norm: float


class Trainer:
    """Owns the model, body model, optimizer, schedule and data stream of one process.

    Arguments:
        cfg: the run's configuration.
        model: HMR model (backbone and upsampler are frozen here).
        body: SMPL body model (predicted and ground-truth vertices and joints).
        dataset / pools / weights: the sample source (see :func:`build_dataset`).
        regressor: optional (K, 6890) regressor of SPIN joints 0..K-1 (HMR2.0's ``SMPL_to_J19``).
        rank / world_size: DDP position (world_size 1: no process group needed).
    """

    def __init__(self, cfg: TrainConfig, model: HMR, body: BodyModel, dataset: D.MixedDataset,
                 pools: list, weights: list[float], regressor: Tensor | None = None,
                 rank: int = 0, world_size: int = 1, device: str = "cpu"):  # fmt: skip
        self.cfg, self.rank, self.world_size, self.device = (
            cfg,
            rank,
            world_size,
            torch.device(device),
        )
        self.body, self.regressor = body, regressor
        FC.freeze_frozen_parts(model)
        self.model = model.to(self.device)
        self.step_module: nn.Module = TrainStep(self.model)
        if world_size > 1:
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise MocapError(f"variant {cfg.variant!r} has no trainable decoder parameters")
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        )
        self.precision = resolve_precision(cfg.precision, str(self.device))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.dataset, self.pools, self.weights = dataset, pools, weights
        self.step = 0
        # Without augmentation the ground-truth mesh of a sample never changes: posing SMPL once per
        # sample instead of once per step saves a third of a cached-feature step.
        self._gt_vertices: dict[int, Tensor] = {}

    # ---- one step ---------------------------------------------------------------------------
    def forward_backward(self, batch: D.Batch) -> L.LossTerms:
        """Losses of this rank's slice and their gradients (DDP-averaged over ranks)."""
        batch = batch.to(self.device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        assert batch.images is not None
        with torch.autocast(
            self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
        ):
            rotmat, betas, cam = self.step_module(batch.images, batch.features)
        rotmat, betas, cam = rotmat.float(), betas.float(), cam.float()
        pred = self.body(rotmat[:, :1], rotmat[:, 1:], betas)
        pred_verts = pred.vertices
        keypoints, valid = L.spin_keypoints(pred.joints, pred_verts, self.regressor)
        gt_verts = self.ground_truth_vertices(batch)
        target = L.LossTargets(batch.rotmat, batch.betas, gt_verts, batch.keypoints_2d, batch.joints_3d,
                               batch.has_smpl, batch.has_3d)  # fmt: skip
        terms = L.hmr_losses(
            rotmat, betas, cam, keypoints, valid, pred_verts, target, self.cfg.loss_weights
        )
        self.scaler.scale(terms.total).backward()
        return terms

    @torch.no_grad()
    def ground_truth_vertices(self, batch: D.Batch) -> Tensor:
        """(B, 6890, 3) SMPL vertices of the ground-truth pose (memoised when not augmenting)."""
        rotmat, betas = batch.rotmat, batch.betas
        if self.cfg.augment:
            return self.body(rotmat[:, :1], rotmat[:, 1:], betas).vertices
        keys = batch.index.tolist()
        if len(self._gt_vertices) + len(keys) > GT_MEMO_SAMPLES:
            self._gt_vertices.clear()
        for k, i in enumerate(keys):
            if i not in self._gt_vertices:
                # One sample at a time: the memo then holds the same bits whatever batch it came in.
                rot = rotmat[k : k + 1]
                self._gt_vertices[i] = self.body(rot[:, :1], rot[:, 1:], betas[k : k + 1]).vertices[
                    0
                ]
        return torch.stack([self._gt_vertices[i] for i in keys])

    def train_step(self, batch: D.Batch) -> StepResult:
        """One optimisation step: backward, unscale, clip, AdamW, schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.forward_backward(batch)
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        floats = terms.as_floats()
        if (
            self.world_size > 1
        ):  # log the global batch's losses (mean of equal shards), not rank 0's
            values = torch.tensor(list(floats.values()), dtype=torch.float64, device=self.device)
            dist.all_reduce(values)
            floats = dict(zip(floats, (values / self.world_size).tolist(), strict=True))
        return StepResult(floats, float(norm))

    # ---- data ------------------------------------------------------------------------------
    def batches(self) -> Iterator[D.Batch]:
        """This rank's slices of the global batches, starting at the current step."""
        sampler = D.MixtureBatchSampler(self.pools, self.weights, self.cfg.batch_size, self.cfg.seed,
                                        self.step, self.rank, self.world_size)  # fmt: skip
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=D.collate,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            # Its own generator: creating the loader must not draw from the global RNG (dropout),
            # or a resumed run would see a shifted random stream.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        return iter(loader)

    # ---- checkpoints -----------------------------------------------------------------------
    def save(self, run_dir: Path) -> Path:
        """Write model + training state for the current step (rank 0 only); returns the model path."""
        ckpt_dir = run_dir / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        stem = ckpt_dir / f"step_{self.step:07d}"
        model_path = stem.with_suffix(".safetensors")
        save_model(self.model, model_path)
        state = {
            "step": self.step,
            "samples_seen": self.step * self.cfg.batch_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        state_path = stem.with_suffix(".state.pt")
        tmp = atomic_path(state_path)
        torch.save(state, tmp)
        os.replace(tmp, state_path)
        _write_json(
            run_dir / "latest.json",
            {"step": self.step, "model": model_path.name, "state": state_path.name},
        )
        return model_path

    def load(self, run_dir: Path) -> None:
        """Restore the latest checkpoint of ``run_dir``."""
        latest = run_dir / "latest.json"
        if not latest.is_file():
            raise MocapError(
                f"nothing to resume in {run_dir} (no latest.json); drop --resume to start fresh"
            )
        info = json.loads(latest.read_text())
        ckpt_dir = run_dir / "checkpoints"
        load_weights(self.model, ckpt_dir / info["model"])
        state = torch.load(ckpt_dir / info["state"], map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])


def _write_json(path: Path, obj: object) -> None:
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class MetricsLog:
    """metrics.jsonl + TensorBoard scalars (rank 0). On resume, lines after the resume step are dropped."""

    def __init__(self, run_dir: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / "metrics.jsonl"
        kept = []
        if self.path.exists():
            kept = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln and json.loads(ln)["step"] <= resume_step
            ]
        _write_text(self.path, "".join(ln + "\n" for ln in kept))
        self.writer = SummaryWriter(
            str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        for k, v in scalars.items():
            self.writer.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        self.writer.close()


def _write_text(path: Path, text: str) -> None:
    tmp = atomic_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def build_dataset(
    cfg: TrainConfig, model: HMR, device: str
) -> tuple[D.MixedDataset, list, list[float]]:
    """Datasets from ``cfg.data`` (images, or the feature cache, built on first use)."""
    specs = [D.parse_data_spec(s) for s in cfg.data]
    anns = [D.load_annotations(s) for s in specs]
    augment = aug.AugmentConfig(enabled=cfg.augment)
    dataset: D.MixedDataset = D.MixedDataset(anns, augment)
    if cfg.feature_cache:
        root = Path(cfg.feature_cache)
        backbone = model.backbone
        fingerprint = FC.backbone_fingerprint(backbone)
        records = FC.dataset_records(specs, anns)
        if not (root / "index.json").exists():
            FC.freeze_frozen_parts(model)
            model.to(device)
            FC.write_feature_cache(root, dataset, lambda x: FC.backbone_features(model, x),
                                   fingerprint, records, device=device, progress=True)  # fmt: skip
        cache = FC.FeatureCache(root)
        cache.check(fingerprint, records)
        dataset = FC.CachedDataset(anns, cache)
    return dataset, D.build_pools(dataset, cfg.subset), [s.weight for s in specs]


def resolve_device(name: str) -> str:
    """``auto`` -> cuda when visible, else cpu (:func:`mocap.device.resolve_device`)."""
    from mocap.device import resolve_device as resolve

    return resolve(name)


def resolve_precision(name: str, device: str) -> str:
    """The autocast precision on ``device`` (:func:`mocap.device.resolve_precision`; training has
    no int8)."""
    from mocap.device import resolve_precision as resolve

    if name == "int8":
        raise MocapError("training runs in fp32, bf16 or fp16; int8 is for inference only")
    return resolve(name, device)


def train(cfg: TrainConfig, resume: bool = False) -> list[dict[str, float]]:
    """Run (or resume) training; returns the logged scalars of this process's run (rank 0)."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(cfg.device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    run_dir = Path(cfg.out)
    if not resume and (run_dir / "latest.json").exists():
        raise MocapError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    body = load_body(cfg.smpl, device)
    regressor = body.j19  # SMPL_to_J19 next to the SMPL file: SPIN joints 0-18 from vertices
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    if world_size > 1:
        dist.barrier()
    # Rank 0 first: it builds the feature cache when missing, the others then open it.
    for turn in (0, 1):
        if (rank == 0) == (turn == 0):
            dataset, pools, weights = build_dataset(cfg, model, device)
        if world_size > 1:
            dist.barrier()
    trainer = Trainer(cfg, model, body, dataset, pools, weights,
                      None if regressor is None else regressor.to(device), rank, world_size, device)  # fmt: skip
    if resume:
        trainer.load(run_dir)
    log = MetricsLog(run_dir, trainer.step) if rank == 0 else None
    if rank == 0:
        _write_text(run_dir / "config.json", cfg.to_json())
    history: list[dict[str, float]] = []
    batches = trainer.batches()
    tick = time.perf_counter()
    while trainer.step < cfg.steps:
        result = trainer.train_step(next(batches))
        step = trainer.step
        if step % cfg.log_every == 0 or step == cfg.steps:
            lr = float(trainer.scheduler.get_last_lr()[0])
            now = time.perf_counter()
            scalars = {**result.terms, "grad_norm": result.grad_norm, "lr": lr,
                       "steps_per_s": cfg.log_every / max(now - tick, 1e-9)}  # fmt: skip
            tick = now
            history.append({"step": step, **scalars})
            if log is not None:
                log.log(step, scalars)
        if rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            trainer.save(run_dir)
    if log is not None:
        log.close()
    return history
