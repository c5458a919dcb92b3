"""The upsamplers file of FeatUp pretraining and featup-deformable models made from it.

``upsamplers.safetensors`` holds the JBU stacks as ``upsamplers.<layer>.*`` tensors (the keys of a
featup-deformable model) with metadata ``format=mocap-featup``, ``factor``, ``step``, ``layers``,
``dim``. :func:`inject_upsamplers` loads it into a model; :func:`export_model` writes a whole
featup-deformable checkpoint (backbone + trained upsamplers + head) for ``mocap train hmr --init``.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from mocap.errors import MocapError
from mocap.paths import atomic_output

if TYPE_CHECKING:
    from torch import nn

    from mocap.model.hmr import HMR

FORMAT = "mocap-featup"
UPSAMPLERS_FILE = "upsamplers.safetensors"


def model_size(model: "HMR") -> str:
    """The size (``tiny``/``full``) of the variant ``model`` was built as."""
    return str(getattr(model.config, "size", "full"))


def save_upsamplers(path: Path, objective: "nn.ModuleDict", metadata: dict[str, str]) -> None:
    """Write the JBU stacks as ``upsamplers.<layer>.*`` tensors (a featup-deformable model's keys)."""
    from safetensors.torch import save_file

    tensors = {
        f"upsamplers.{layer}.{k}": v.detach().cpu().contiguous()
        for layer, part in objective.items()
        for k, v in part.get_submodule("stack").state_dict().items()
    }
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def inject_upsamplers(model: "HMR", path: str | Path) -> list[str]:
    """Load an upsamplers file (:func:`save_upsamplers`) into a featup-deformable ``model``.

    Returns:
        the keys loaded (every key of ``model.upsamplers``: strict).
    Raises:
        MocapError: not an upsamplers file, a model without JBU upsamplers, other layers/widths,
            or stacks trained for a smaller factor than the model uses (untrained stages).
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:
        raise MocapError(
            f"{path} is not a safetensors file ({exc}); pass upsamplers.safetensors"
        ) from exc
    if meta.get("format") != FORMAT:
        raise MocapError(f"{path} is not a FeatUp pretraining output; pass RUN/{UPSAMPLERS_FILE}")
    if model.upsamplers is None or model.levels is None:
        raise MocapError("the model has no JBU upsamplers; use a featup-deformable checkpoint")
    if int(meta["factor"]) < model.levels.factor:
        raise MocapError(f"{path} was trained for x{meta['factor']} but the model upsamples "
                         f"x{model.levels.factor}; pretrain with --factor {model.levels.factor}")  # fmt: skip
    state = {k[len("upsamplers.") :]: v for k, v in tensors.items() if k.startswith("upsamplers.")}
    try:
        model.upsamplers.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MocapError(f"{path} does not fit this model's upsamplers ({str(exc).splitlines()[1:2]}); "
                         "pretrain on the same backbone") from exc  # fmt: skip
    return sorted(state)


def export_model(base: "HMR", upsamplers: Path, factor: int, out: Path,
                 mean_params: str | None = None) -> "HMR":  # fmt: skip
    """A featup-deformable x ``factor`` checkpoint with ``base``'s backbone and trained upsamplers.

    ``base`` is kept whole (head included) when it already is featup-deformable x ``factor``;
    otherwise a fresh model of its size gets its backbone (head initialised from ``mean_params``).
    """
    from mocap.model.build import build_model, featup_deformable
    from mocap.model.checkpoint import save_checkpoint

    config = base.config
    if config is None or config.variant != "featup-deformable" or config.levels.factor != factor:
        config = featup_deformable(model_size(base), factor)
        model = build_model(config, mean_params)
        model.backbone.load_state_dict(base.backbone.state_dict())
    else:
        model = base
    inject_upsamplers(model, upsamplers)
    save_checkpoint(out, model, config, metadata={"featup_pretraining": str(upsamplers)})
    return model
