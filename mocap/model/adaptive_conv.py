"""Adaptive convolution of FeatUp's joint bilateral upsampler, in plain PyTorch.

Every output pixel has its own K x K filter, shared by all channels:

    out[b, c, h, w] = sum_{i, j} filters[b, h, w, i, j] * input[b, c, h + i, w + j]

FeatUp ships a CUDA kernel whose backward for the filters indexes the taps wrongly, and a per-element
C++ loop on CPU. The naive ``unfold`` would materialise K*K shifted copies of the input (about 12 GB
for x16 of a 1280-channel 16x12 map in fp32).

:func:`adaptive_conv` treats every output pixel as a weighted bag of K*K input pixels and runs one
``embedding_bag(mode="sum", per_sample_weights=filters)`` over the channels-last input: a single
fused gather-multiply-accumulate that reads each channel vector where it is needed and writes the
output once, with exact autograd for both the input and the filters. Its only extra memory is the
(B*H*W, K*K) int32 index table (10 MB for a 256x192 output), whatever the channel count. On the
team's 2-core CPU this is about 4x faster than looping over the taps with broadcast multiply-adds
(each of which streams the whole output through memory), and it takes bf16 directly.

:func:`adaptive_conv_reference` is the direct per-tap sum, kept for tests.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def _neighbour_index(
    b: int, h: int, w: int, k: int, wp: int, hp: int, device: torch.device
) -> Tensor:
    """(B*H*W, K*K) int32 row indices into the flattened (B*Hp*Wp) padded input, tap = i*K + j."""
    rows = torch.arange(h, device=device, dtype=torch.int32).view(1, h, 1, 1, 1)
    cols = torch.arange(w, device=device, dtype=torch.int32).view(1, 1, w, 1, 1)
    di = torch.arange(k, device=device, dtype=torch.int32).view(1, 1, 1, k, 1)
    dj = torch.arange(k, device=device, dtype=torch.int32).view(1, 1, 1, 1, k)
    batch = torch.arange(b, device=device, dtype=torch.int32).view(b, 1, 1, 1, 1) * (hp * wp)
    return (batch + (rows + di) * wp + (cols + dj)).view(b * h * w, k * k)


def adaptive_conv(input: Tensor, filters: Tensor) -> Tensor:
    """Per-pixel K x K filtering with one filter per output pixel shared across channels.

    Arguments:
        input: (B, C, H + K - 1, W + K - 1), already padded. Channels-last memory avoids a copy.
        filters: (B, H, W, K, K); tap (i, j) weights ``input[..., h + i, w + j]``.

    Returns:
        (B, C, H, W) in the input's dtype, channels-last in memory.
    """
    b, c, hp, wp = input.shape
    fb, h, w, k, k2 = filters.shape
    if fb != b or k != k2 or hp != h + k - 1 or wp != w + k - 1:
        raise ValueError(
            f"adaptive_conv: input {tuple(input.shape)} does not match filters {tuple(filters.shape)}"
        )
    table = input.permute(0, 2, 3, 1).reshape(b * hp * wp, c)  # a view when channels-last
    index = _neighbour_index(b, h, w, k, wp, hp, input.device)
    weights = filters.reshape(b * h * w, k * k).to(input.dtype)
    out = F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def adaptive_conv_reference(input: Tensor, filters: Tensor) -> Tensor:
    """Direct per-tap definition: ``sum_ij filters[..., i, j] * shifted input`` (for tests).

    Arguments:
        input: (B, C, H + K - 1, W + K - 1).
        filters: (B, H, W, K, K).

    Returns:
        (B, C, H, W).
    """
    _, h, w, k, _ = filters.shape
    out = torch.zeros_like(input[:, :, :h, :w])
    for i in range(k):
        for j in range(k):
            out = out + filters[:, None, :, :, i, j] * input[:, :, i : i + h, j : j + w]
    return out
