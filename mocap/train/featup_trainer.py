"""One step of FeatUp pretraining: frozen backbone, multi-view objective, NAdam, checkpoints.

:func:`build_objective` gives one :class:`~mocap.train.downsampler.LayerObjective` (JBU stack,
attention downsampler, learned scale) per tapped layer; :class:`FeatUpTrainer` computes the
multi-view reconstruction + CRF losses of a batch of crops (views, projections and CRF pixels
depend only on ``(seed, step)``), steps NAdam, and saves/restores the run's checkpoints. The loop,
configuration and CLI are in :mod:`mocap.train.featup`.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mocap.errors import MocapError
from mocap.paths import atomic_output
from mocap.train.featup_export import FORMAT, UPSAMPLERS_FILE, model_size, save_upsamplers

if TYPE_CHECKING:  # torch is imported inside functions: `mocap --help` must stay instant
    from torch import Tensor, nn

    from mocap.model.hmr import HMR
    from mocap.train.downsampler import LayerObjective
    from mocap.train.featup import FeatUpConfig


def build_objective(model: "HMR", cfg: "FeatUpConfig") -> "nn.ModuleDict":
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


class FeatUpTrainer:
    """Frozen backbone, trainable objective (stacks, downsamplers, scale nets), NAdam, step count.

    Arguments:
        cfg: the run's configuration.
        backbone: the ViT (frozen here; its taps include every layer of ``objective``).
        objective: from :func:`build_objective`.
        device: torch device name.
    """

    def __init__(self, cfg: "FeatUpConfig", backbone: "nn.Module", objective: "nn.ModuleDict",
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
