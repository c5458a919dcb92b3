"""Where and in what precision the networks run: one set of rules for every caller.

The predictor, the person detector, decoder training and `mocap run` all resolve ``--device`` and
``--precision`` here, so that they cannot disagree:

* device ``auto`` is ``cuda`` when a CUDA GPU is visible, else ``cpu`` (and ``cpu`` for int8,
  which only runs there); ``cpu``, ``cuda`` and ``cuda:N`` are taken as given once checked;
* precision ``auto`` is bf16 where the hardware multiplies it fast (bf16 GPUs; CPUs with AMX or
  AVX512-BF16), else fp32. It never picks int8: dynamic int8 quantisation is used only on request
  until it has been verified on trained weights;
* fp16 on a CPU is not a fast path: bf16 where the CPU has bf16 matrix units, else fp32, with a
  warning; bf16 on a CPU without them works but is slow, with a warning;
* int8 (dynamic int8 linears, fbgemm / x86) is CPU-only: asking for it on a GPU is an error.

torch is imported inside the functions: `mocap --help` and the settings stay light.
"""

import logging
from typing import TYPE_CHECKING

from mocap.errors import MocapError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")  # what the flags offer; "cuda:N" is also accepted
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
CONCRETE = PRECISIONS[1:]


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def int8_engine() -> str | None:
    """The quantised-kernel engine int8 uses on this CPU (``x86`` or ``fbgemm``), None if none."""
    import torch

    engines = torch.backends.quantized.supported_engines
    return next((e for e in ("x86", "fbgemm") if e in engines), None)


def resolve_device(device: str = "auto", precision: str = "auto") -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` for a ``--device`` value.

    Raises:
        MocapError: an unknown device, or a CUDA device that is not visible.
    """
    import torch

    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise MocapError(f"unknown device {device!r}; use one of {', '.join(DEVICES)} (or cuda:N)")
    if kind == "auto":
        return "cuda" if precision != "int8" and torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise MocapError(f"--device {device} was asked for but no CUDA GPU is visible; use cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise MocapError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
    return device


def resolve_precision(precision: str, device: str) -> str:
    """The precision that runs on ``device`` (a resolved device) for a ``--precision`` value.

    Raises:
        MocapError: an unknown precision, or int8 on a GPU.
    """
    if precision not in PRECISIONS:
        raise MocapError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    on_cpu = device.startswith("cpu")
    if precision == "auto":
        return "bf16" if (cpu_has_fast_bf16() if on_cpu else _cuda_has_bf16()) else "fp32"
    if precision == "int8":
        if not on_cpu:
            raise MocapError("int8 runs on the CPU only; use --device cpu, or bf16 on the GPU")
        if int8_engine() is None:
            raise MocapError("this PyTorch build has no int8 CPU kernels (x86/fbgemm); use fp32")
    elif on_cpu and precision == "fp16":
        fallback = "bf16" if cpu_has_fast_bf16() else "fp32"
        _warn_once(f"fp16 is not a fast path on CPU; using {fallback} instead")
        return fallback
    elif on_cpu and precision == "bf16" and not cpu_has_fast_bf16():
        _warn_once("this CPU has no bf16 matrix units (AMX / AVX512-BF16): bf16 will be slow")
    return precision


def torch_dtype(precision: str) -> "torch.dtype":
    """The floating type the weights are stored in for a resolved precision (int8: the float32
    activations around the quantised linears)."""
    import torch

    types = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    return types.get(precision, torch.float32)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning said once per process (`mocap run` resolves, then the predictor again)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _cuda_has_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_bf16_supported())
