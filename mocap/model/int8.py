"""Dynamic int8 quantisation of linear layers for CPU inference (fbgemm / x86 kernels).

Weights are stored as int8 with one scale per output channel; each call quantises its input per
tensor on the fly, multiplies in int8 with int32 accumulation and returns float32: the ViT-H
backbone runs about 2x faster than in fp32 (docs/benchmarks.md, ``int8``). The rest of the
network (LayerNorms, attention softmax, the residual stream, the heads) stays float32.

Only on request (``--precision int8``): its accuracy has been measured on random weights only
(docs/benchmarks.md) and must be checked on trained weights before ``auto`` may choose it.
"""

import warnings

import torch
from torch import nn

from mocap.device import int8_engine
from mocap.errors import MocapError


def quantize_linears(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` inside ``module`` by its dynamic int8 version, in place.

    Arguments:
        module: float32 module on the CPU, in eval mode (its linears' inputs must be float32).
    Returns:
        ``module`` (the same object). Irreversible: keep a copy to run fp32 again.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    engine = int8_engine()
    if engine is None:
        raise MocapError("this PyTorch build has no int8 CPU kernels (x86/fbgemm); use fp32")
    if any(p.device.type != "cpu" for p in module.parameters()):
        raise MocapError("int8 runs on the CPU only; use --device cpu")
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated, but still the fast path
        warnings.simplefilter("ignore")
        quantize_dynamic(
            module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )
    return module


def is_quantized(module: nn.Module) -> bool:
    """True when ``module`` holds dynamic int8 linears."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return any(isinstance(m, DynamicLinear) for m in module.modules())
