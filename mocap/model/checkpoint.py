"""Checkpoints: mocap's own safetensors format, and HMR2.0's Lightning ``.ckpt``, both loaded safely.

**mocap format**: a safetensors file whose tensors are the model's ``state_dict`` and whose metadata
holds ``format = "mocap"`` and ``config`` = the :class:`~mocap.model.build.ModelConfig` as JSON, so
the file alone rebuilds its model. Saving goes to a temporary name and is renamed into place;
reloading is bit-exact.

**HMR2.0 checkpoint**: a Lightning ``.ckpt`` with the weights under ``['state_dict']`` prefixed
``backbone.`` and ``smpl_head.``; other keys (``discriminator.*``, ``smpl.*``) are ignored and
reported. The file also pickles non-tensor hyper-parameters (a yacs ``CfgNode`` ...), which
``torch.load(weights_only=True)`` refuses. It is then read through a restricted unpickler that only
materialises tensors, containers and plain values and turns every other class into an inert
placeholder: a malicious pickle (``__reduce__`` -> ``os.system``) never runs code.
"""

import logging
import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mocap.errors import MocapError
from mocap.model.build import ModelConfig, build_model, hmr2
from mocap.model.checkpoint_config import parse_model_config
from mocap.model.hmr import HMR
from mocap.paths import atomic_output

log = logging.getLogger(__name__)
FORMAT = "mocap"
HMR2_PREFIXES = {"backbone.": "backbone.", "smpl_head.": "head."}


# ----------------------------------------------------------------------------- mocap format


def save_checkpoint(
    path: str | Path,
    model: HMR,
    config: ModelConfig | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``model`` (weights + its ``ModelConfig``) to ``path`` atomically.

    Arguments:
        config: defaults to ``model.config`` (set by ``build_model`` and the loaders).
        metadata: extra string entries stored beside the configuration (e.g. training step).
    """
    config = config or model.config
    if config is None:
        raise ValueError("the model has no ModelConfig; pass config=")
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {**(metadata or {}), "format": FORMAT, "config": config.to_json()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_config(path: str | Path) -> ModelConfig:
    """The ``ModelConfig`` embedded in a mocap checkpoint (reads only the header), validated
    (:func:`~mocap.model.checkpoint_config.parse_model_config`) before anything is built."""
    path = Path(path)
    return parse_model_config(_read_metadata(path)["config"], path)


def load_checkpoint(path: str | Path) -> HMR:
    """Rebuild the model stored in a mocap checkpoint (weights loaded with strict key matching)."""
    path = Path(path)
    config = read_config(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MocapError(f"{path} has unreadable weights ({str(exc)[:120]}); re-create it") from exc
    return _build_loaded(config, state, path)


def _read_metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise MocapError(f"checkpoint {path} does not exist; check the path or run `mocap weights`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise MocapError(
            f"{path} is not a safetensors checkpoint ({exc}); pass a mocap file"
        ) from exc
    if meta.get("format") != FORMAT or "config" not in meta:
        raise MocapError(
            f"{path} is a safetensors file without a mocap model configuration; "
            "write it with `mocap init-checkpoint` or mocap training"
        )
    return meta


def _build_loaded(config: ModelConfig, state: dict[str, torch.Tensor], path: Path) -> HMR:
    """Build ``config`` around the tensors of ``state`` (strict keys and shapes).

    The model is first built on the meta device, so the random initialisation of 600M parameters
    is skipped; the loaded tensors are assigned in place of the empty ones.
    """
    with torch.device("meta"):
        model = build_model(config)
    _load_strict(model, state, path, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = build_model(config)  # some non-persistent buffer: build for real
        _load_strict(model, state, path)
    return model


def _names(keys: list[str], shown: int = 3) -> str:
    """``len(keys)`` and the first few of them, each shortened: a summary, never the whole list."""
    names = ", ".join(k if len(k) <= 60 else k[:57] + "..." for k in keys[:shown])
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{len(keys)} ({names}{more})"


def key_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """One summarised line of the tensors ``state`` lacks, has in excess or has in another shape
    or kind than ``model`` expects; None when they match."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        k
        for k, v in expected.items()
        if k in state
        and (
            tuple(state[k].shape) != tuple(v.shape)
            or state[k].is_floating_point() != v.is_floating_point()
        )
    ]
    parts = [
        f"{what} {_names(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong))
        if keys
    ]
    return "; ".join(parts) or None


def _load_strict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, assign: bool = False
) -> None:
    mismatch = key_mismatch(model, state)
    if mismatch is None:
        try:
            model.load_state_dict(state, strict=True, assign=assign)
            return
        except RuntimeError as exc:
            mismatch = str(exc).strip().splitlines()[-1][:200]
    raise MocapError(
        f"{path} does not match its architecture (tensors {mismatch}); "
        "the file is damaged or was written by an incompatible version"
    )


def is_mocap_checkpoint(path: str | Path) -> bool:
    """True when ``path`` starts like a safetensors file (8-byte header length, then ``{``)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


# ----------------------------------------------------------------------------- HMR2.0 checkpoint


@dataclass
class LoadReport:
    """What a foreign checkpoint contributed.

    Attributes:
        loaded: number of tensors loaded into the model.
        ignored: checkpoint keys that belong to nothing in the model (discriminator, SMPL ...).
        placeholders: classes the restricted unpickler replaced by inert objects.
    """

    loaded: int
    ignored: list[str] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts, and ignored keys grouped by their first component."""
        groups: dict[str, int] = {}
        for key in self.ignored:
            groups[key.split(".")[0]] = groups.get(key.split(".")[0], 0) + 1
        ignored = ", ".join(f"{k}.* ({n})" for k, n in sorted(groups.items())) or "none"
        return f"loaded {self.loaded} tensors; ignored {ignored}"


def load_hmr2_checkpoint(
    path: str | Path, config: ModelConfig | None = None
) -> tuple[HMR, LoadReport]:
    """HMR2.0 Lightning checkpoint -> the ``hmr2`` model, strict on backbone and head keys.

    Arguments:
        config: the architecture the weights belong to; default ``hmr2("full")`` (the public
            checkpoint). Head counts are not recoverable from tensor shapes, hence a config.
    Returns:
        the model (eval mode) and what was loaded, ignored and replaced.
    """
    path = Path(path)
    config = config or hmr2("full")
    checkpoint, placeholders = read_torch_pickle(path)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise MocapError(f"{path} has no ['state_dict'] of tensors; pass an HMR2.0 .ckpt file")
    model_state: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        prefix = next((p for p in HMR2_PREFIXES if str(key).startswith(p)), None)
        if prefix is None or not isinstance(value, torch.Tensor):
            ignored.append(str(key))
            continue
        model_state[HMR2_PREFIXES[prefix] + key[len(prefix) :]] = value
    model = _build_loaded(config, model_state, path)
    report = LoadReport(len(model_state), ignored, placeholders)
    log.info("HMR2.0 checkpoint %s: %s", path, report.summary())
    return model.eval(), report


def read_torch_pickle(path: Path) -> tuple[Any, list[str]]:
    """``torch.load`` without ever running pickled code.

    Tries ``weights_only=True`` first; when that refuses a class, reads the file again with the
    restricted unpickler. Returns the object and the names of the classes replaced by placeholders.
    """
    if not path.is_file():
        raise MocapError(f"checkpoint {path} does not exist; check the path or run `mocap weights`")
    # Memory-map zip checkpoints: HMR2.0's also holds optimizer moments (twice the weights) that
    # are never used, and a refused first attempt then costs no reading.
    mmap = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "pickle protocol 4 detected" etc.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap), []
    except pickle.UnpicklingError:
        pass  # non-tensor objects inside: fall back to the restricted unpickler
    except Exception as exc:
        raise MocapError(f"{path} is not a readable PyTorch checkpoint ({exc})") from exc
    replaced: list[str] = []
    module = _restricted_pickle_module(replaced)
    try:
        obj = torch.load(
            path, map_location="cpu", pickle_module=module, weights_only=False, mmap=mmap
        )
    except Exception as exc:
        raise MocapError(f"{path} is not a readable PyTorch checkpoint ({exc})") from exc
    return obj, replaced


class _Inert(dict):  # type: ignore[type-arg]
    """Stand-in for a class outside the allow-list: records what it was given, does nothing.

    A dict so that pickled mappings (yacs CfgNode, argparse namespaces) keep their items; accepts
    any constructor arguments, ``__setstate__``, appends and item assignment.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.setdefault("_items", []).append(item)

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` without backward hooks or metadata."""
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, *_: Any) -> torch.Tensor:
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "slice"): slice,
}


def _restricted_pickle_module(replaced: list[str]) -> types.ModuleType:
    """A ``pickle``-like module for ``torch.load`` whose unpickler runs no foreign code."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            allowed = _ALLOWED.get((module, name))
            if allowed is not None:
                return allowed
            if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
            qualname = f"{module}.{name}"
            replaced.append(qualname)
            return type(name, (_Inert,), {"qualname": qualname})

    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    module = types.ModuleType("mocap_restricted_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    return module


def load_any_checkpoint(path: str | Path) -> tuple[HMR, LoadReport | None]:
    """A mocap checkpoint or an HMR2.0 ``.ckpt``, told apart by content (not by extension)."""
    path = Path(path)
    if not path.is_file():
        raise MocapError(f"checkpoint {path} does not exist; check the path or run `mocap weights`")
    if is_mocap_checkpoint(path):
        return load_checkpoint(path).eval(), None
    return load_hmr2_checkpoint(path)
