"""The model configuration embedded in a checkpoint, checked before anything is built.

A checkpoint is a file from elsewhere: its JSON configuration decides how large a network mocap
builds, so it is validated first (:func:`parse_model_config`):

1. structure: a JSON object of the current format version, with exactly the fields of
   :class:`~mocap.model.build.ModelConfig` and its parts (read from the dataclasses, so a field
   added there is checked too), each of its annotated type (``1e9`` is not an int, ``"2"`` is
   not a depth);
2. ranges: every size positive and below a sane bound (:data:`LIMITS`; a size without an entry
   gets :data:`DEFAULT_INT_LIMIT`), head counts dividing widths, taps inside the backbone, and an
   estimated parameter count below :data:`MAX_PARAMS`;
3. the variant: a known one, with the head, levels, upsampling and factor its preset builder
   accepts (:func:`mocap.model.build.model_config`).

Every problem is one :class:`~mocap.errors.MocapError` line that names the field.
"""

import dataclasses
import json
import math
import types
import typing
from typing import Any

from mocap.errors import MocapError
from mocap.model.build import CONFIG_VERSION, SIZES, VARIANTS, ModelConfig, model_config

# (low, high) per field, by dotted path; sizes of ViTPose-H and the paper's heads fit with room
LIMITS: dict[str, tuple[float, float]] = {
    "vit.dim": (1, 4096),
    "vit.depth": (1, 64),
    "vit.num_heads": (1, 64),
    "vit.mlp_ratio": (0.01, 16.0),
    "vit.drop_path": (0.0, 1.0),
    "dense_head.dim": (1, 4096),
    "dense_head.depth": (1, 32),
    "dense_head.heads": (1, 64),
    "dense_head.dim_head": (1, 512),
    "dense_head.mlp_dim": (1, 16384),
    "deformable_head.d_model": (1, 4096),
    "deformable_head.num_layers": (1, 32),
    "deformable_head.num_heads": (1, 64),
    "deformable_head.num_points": (1, 64),
    "deformable_head.ffn_dim": (1, 16384),
    "levels.factor": (1, 16),
    "jbu_key_dim": (1, 1024),
}
DEFAULT_INT_LIMIT = (0, 1 << 16)
DEFAULT_FLOAT_LIMIT = (0.0, 1e6)
MAX_PARAMS = 3e9  # about 12 GB in float32: four times ViTPose-H
MAX_ITEMS = 64  # entries of a list field (taps, layers)


def _bad(source: object, what: str) -> MocapError:
    return MocapError(
        f"{source}: the embedded model configuration is invalid ({what}); re-create the "
        "checkpoint with this version of mocap"
    )


def _union_args(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    return typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)


def _check_value(value: Any, hint: Any, where: str, source: object) -> None:
    """Raise unless JSON ``value`` has annotated type ``hint`` (recursing into dataclasses)."""
    options = _union_args(hint)
    if value is None:
        if type(None) not in options:
            raise _bad(source, f"{where} is missing (null)")
        return
    options = tuple(o for o in options if o is not type(None))
    hint = options[0] if len(options) == 1 else hint
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        _check_fields(value, hint, where, source)
    elif hint is bool:
        if not isinstance(value, bool):
            raise _bad(source, f"{where} must be true or false, not {value!r:.40}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(source, f"{where} must be an integer, not {value!r:.40}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(source, f"{where} must be a number, not {value!r:.40}")
        if not math.isfinite(value):
            raise _bad(source, f"{where} must be finite, not {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            raise _bad(source, f"{where} must be a string, not {value!r:.40}")
    elif origin is typing.Literal:
        if value not in typing.get_args(hint) or not isinstance(value, str):
            choices = ", ".join(map(str, typing.get_args(hint)))
            raise _bad(source, f"{where} must be one of {choices}, not {value!r:.40}")
    elif origin is tuple:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_ITEMS:
            raise _bad(source, f"{where} must be a list of 1 to {MAX_ITEMS} entries")
        item = typing.get_args(hint)[0]
        for k, v in enumerate(value):
            _check_value(v, item, f"{where}[{k}]", source)
    else:
        raise _bad(source, f"{where} has a type this version cannot check ({hint})")


def _check_fields(value: Any, cls: Any, where: str, source: object) -> None:
    """``value`` is a JSON object with exactly the fields of dataclass ``cls``, each well typed."""
    if not isinstance(value, dict):
        raise _bad(source, f"{where or 'the configuration'} must be an object")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise _bad(
            source, f"unknown field(s) {', '.join(map(str, unknown))[:80]} in {where or 'it'}"
        )
    for name, f in known.items():
        path = f"{where}.{name}" if where else name
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in value:
            if no_default:
                raise _bad(source, f"{path} is missing")
            continue
        _check_value(value[name], hints[name], path, source)


def _check_numbers(obj: Any, where: str, source: object) -> None:
    """Every int / float field of the (checked) config within its bound from :data:`LIMITS`."""
    for f in dataclasses.fields(obj):
        value, path = getattr(obj, f.name), f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            _check_numbers(value, path, source)
            continue
        items = value if isinstance(value, tuple) else (value,)
        for v in items:
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            default = DEFAULT_INT_LIMIT if isinstance(v, int) else DEFAULT_FLOAT_LIMIT
            lo, hi = LIMITS.get(path, default)
            if not lo <= v <= hi:
                raise _bad(source, f"{path} is {v:g}, expected {lo:g} to {hi:g}")


def _estimated_params(c: ModelConfig) -> float:
    """Rough parameter count (attention + MLP weights) of the network ``c`` describes."""
    v = c.vit
    total = v.depth * (4 + 2 * v.mlp_ratio) * v.dim**2
    if c.dense_head is not None:
        h = c.dense_head
        inner = h.heads * h.dim_head
        total += h.depth * (4 * h.dim * inner + 2 * v.dim * inner + 2 * h.dim * h.mlp_dim)
    if c.deformable_head is not None:
        d = c.deformable_head
        total += (
            d.num_layers * (6 * d.d_model**2 + 2 * d.d_model * d.ffn_dim) + 8 * v.dim * d.d_model
        )
    if c.levels is not None and c.levels.upsample == "jbu":
        total += len(c.levels.layers) * 4 * (v.dim * c.jbu_key_dim + c.jbu_key_dim**2 * 9)
    return float(total)


def _check_shape(c: ModelConfig, source: object) -> None:
    """Head counts, taps and levels that fit together, the variant's own rules, the size."""
    v = c.vit
    if v.dim % v.num_heads:
        raise _bad(source, f"vit.dim {v.dim} is not divisible by vit.num_heads {v.num_heads}")
    if len(set(v.taps)) != len(v.taps) or not all(1 <= t <= v.depth for t in v.taps):
        raise _bad(source, f"vit.taps {list(v.taps)} must be distinct layers 1 to {v.depth}")
    if c.variant not in VARIANTS:
        raise _bad(source, f"unknown variant {c.variant!r}; known: {', '.join(VARIANTS)}")
    if c.size not in SIZES:
        raise _bad(source, f"unknown size {c.size!r}; known: {', '.join(SIZES)}")
    dense = c.variant == "hmr2"
    if dense != (c.dense_head is not None) or dense == (c.deformable_head is not None):
        raise _bad(
            source, f"{c.variant} needs exactly its own head ({'dense' if dense else 'deformable'})"
        )
    if dense != (c.levels is None):
        raise _bad(source, f"levels must be {'absent' if dense else 'given'} for {c.variant}")
    if c.deformable_head is not None and c.levels is not None:
        d, levels = c.deformable_head, c.levels
        if d.d_model % d.num_heads:
            raise _bad(source, "deformable_head.d_model is not divisible by its num_heads")
        if not set(levels.layers) <= set(v.taps) or len(set(levels.layers)) != len(levels.layers):
            raise _bad(source, f"levels.layers {list(levels.layers)} must be distinct vit.taps")
        try:  # the factors and upsampling the variant's preset builder accepts
            preset = model_config(c.variant, c.size, levels.factor)
        except MocapError as exc:
            raise _bad(source, str(exc).split(";")[0]) from None
        if preset.levels is not None and preset.levels.upsample != levels.upsample:
            raise _bad(
                source,
                f"{c.variant} upsamples with {preset.levels.upsample}, not {levels.upsample}",
            )
    params = _estimated_params(c)
    if params > MAX_PARAMS:
        raise _bad(source, f"about {params:.2g} parameters, more than the {MAX_PARAMS:.0e} allowed")


def parse_model_config(text: str, source: object = "checkpoint") -> ModelConfig:
    """The :class:`ModelConfig` in JSON ``text`` (a checkpoint's ``config`` metadata), validated.

    Raises:
        MocapError: one line naming ``source`` and the first field that is wrong.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _bad(source, f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(data, dict):
        raise _bad(source, "not a JSON object")
    if data.get("version") != CONFIG_VERSION or isinstance(data.get("version"), bool):
        raise _bad(source, f"format version {data.get('version')!r:.20}, expected {CONFIG_VERSION}")
    body = {k: v for k, v in data.items() if k != "version"}
    _check_fields(body, ModelConfig, "", source)
    config = ModelConfig.from_json(text)
    _check_numbers(config, "", source)
    _check_shape(config, source)
    return config
