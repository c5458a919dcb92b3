"""Adaptive convolution of FeatUp's joint bilateral upsampler, in plain PyTorch.

Every output pixel has its own K x K filter, shared by all channels:

    out[b, c, h, w] = sum_{i, j} filters[b, h, w, i, j] * input[b, c, h + i, w + j]

FeatUp ships a CUDA kernel whose backward for the filters indexes the taps wrongly, and a per-element
C++ loop on CPU. Here the sum is a loop over the K*K taps, each an in-place multiply-accumulate of a
shifted *view* of the input with a per-pixel weight broadcast over the channels. Autograd therefore
gives exact gradients (it saves only views), and memory stays at one output-sized accumulator: the
naive ``unfold`` would materialise K*K shifted copies (about 12 GB for x16 of a 1280-channel 16x12
map in fp32). The work is done channels-last, where the per-pixel weight multiplies a contiguous
run of channels, and in bands of rows to bound the float32 copy made for half-precision inputs.
"""

import torch
from torch import Tensor

_BAND_ELEMENTS = 1 << 24  # accumulator elements per band of rows (64 MiB in float32)


def adaptive_conv(input: Tensor, filters: Tensor, band_rows: int | None = None) -> Tensor:
    """Per-pixel K x K filtering with one filter per output pixel shared across channels.

    Arguments:
        input: (B, C, H + K - 1, W + K - 1), already padded. Channels-last memory avoids a copy.
        filters: (B, H, W, K, K); tap (i, j) weights ``input[..., h + i, w + j]``.
        band_rows: output rows computed at a time (a memory knob; the result does not depend on it).

    Returns:
        (B, C, H, W) in the input's dtype, channels-last in memory; accumulated in float32 for
        half-precision inputs.
    """
    b, c, hp, wp = input.shape
    fb, h, w, k, k2 = filters.shape
    if fb != b or k != k2 or hp != h + k - 1 or wp != w + k - 1:
        raise ValueError(
            f"adaptive_conv: input {tuple(input.shape)} does not match filters {tuple(filters.shape)}"
        )
    acc_dtype = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    x = input.contiguous(memory_format=torch.channels_last)
    taps = filters.to(acc_dtype).permute(0, 3, 4, 1, 2).unsqueeze(3)  # (B, K, K, 1, H, W)
    if band_rows is None:
        band_rows = max(1, _BAND_ELEMENTS // max(1, b * c * w))
    bands = []
    for r0 in range(0, h, band_rows):
        r1 = min(h, r0 + band_rows)
        rows = x[:, :, r0 : r1 + k - 1].to(acc_dtype)  # a view unless the input is half precision
        acc = torch.zeros((b, c, r1 - r0, w), dtype=acc_dtype, device=input.device)
        acc = acc.contiguous(memory_format=torch.channels_last)
        for i in range(k):
            for j in range(k):
                acc.addcmul_(rows[:, :, i : i + r1 - r0, j : j + w], taps[:, i, j, :, r0:r1])
        bands.append(acc.to(input.dtype))
    out = bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)
    return out.contiguous(memory_format=torch.channels_last)


def adaptive_conv_reference(input: Tensor, filters: Tensor) -> Tensor:
    """Direct definition through ``unfold`` (K*K times the input's memory): for tests only.

    Arguments:
        input: (B, C, H + K - 1, W + K - 1).
        filters: (B, H, W, K, K).

    Returns:
        (B, C, H, W).
    """
    b, c, _, _ = input.shape
    _, h, w, k, _ = filters.shape
    patches = torch.nn.functional.unfold(input, kernel_size=k).view(b, c, k * k, h, w)  # tap i*K+j
    weights = filters.reshape(b, h, w, k * k).permute(0, 3, 1, 2)  # (B, K*K, H, W)
    return (patches * weights[:, None]).sum(dim=2)
