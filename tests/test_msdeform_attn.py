"""Multi-scale deformable attention: fast sample-then-project path against Deformable-DETR's core."""

import math

import pytest
import torch

from mocap.model.msdeform_attn import (
    MSDeformAttn,
    ms_deform_attn_reference,
    ms_deform_attn_sample_project,
)

SHAPES = [(6, 5), (3, 4), (12, 10)]


def _levels(dims, batch=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = [
        torch.randn(batch, c, h, w, generator=g, dtype=dtype)
        for c, (h, w) in zip(dims, SHAPES, strict=False)
    ]
    # the head passes channels-last maps; the fast path must also accept plain ones
    return [maps[0].contiguous(memory_format=torch.channels_last), *maps[1:]]


def _module(dims, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    attn = MSDeformAttn(d_model=16, n_levels=len(dims), n_heads=4, n_points=3, level_dims=dims)
    with torch.no_grad():  # move away from the init so offsets and weights are non-trivial
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
        for p in attn.value_proj.parameters():
            p.normal_(0, 0.3)
    return attn.to(dtype)


@pytest.mark.parametrize("dims", [[16, 16, 16], [8, 16, 12]])
def test_fast_path_matches_reference_in_float64(dims) -> None:
    attn = _module(dims)
    levels = _levels(dims)
    query = torch.randn(2, 7, 16, dtype=torch.float64)
    # reference points include some near and beyond the borders: zeros-outside must agree
    ref_points = torch.rand(2, 7, 2, dtype=torch.float64) * 1.4 - 0.2
    bias = torch.randn(len(dims), 16, dtype=torch.float64)
    fast, loc, w = attn(query, ref_points, levels, value_bias=bias)
    slow, loc2, w2 = attn(query, ref_points, levels, value_bias=bias, reference=True)
    assert fast.shape == (2, 7, 16)
    assert ((loc < 0) | (loc > 1)).any(), "test should exercise out-of-map samples"
    rel = (fast - slow).abs().max() / slow.abs().max()
    assert rel < 1e-10
    torch.testing.assert_close(w.sum((-1, -2)), torch.ones(2, 7, 4, dtype=torch.float64))


def test_core_functions_agree_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    n, q, m, p, c, d = 1, 2, 2, 2, 3, 2
    shapes = [(3, 4), (2, 3)]
    levels = [
        torch.randn(n, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
        for h, w in shapes
    ]
    loc = (
        torch.rand(n, q, m, 2, p, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    ).requires_grad_()
    attw = torch.rand(n, q, m, 2, p, generator=g, dtype=torch.float64).requires_grad_()
    wts = [
        torch.randn(m * d, c, generator=g, dtype=torch.float64, requires_grad=True) for _ in shapes
    ]
    bs = [torch.randn(m * d, generator=g, dtype=torch.float64, requires_grad=True) for _ in shapes]

    def reference(l0, l1, loc, attw, w0, w1, b0, b1):
        value = torch.cat(
            [
                torch.nn.functional.linear(x.flatten(2).transpose(1, 2), w, b)
                for x, w, b in ((l0, w0, b0), (l1, w1, b1))
            ],
            1,
        ).view(n, -1, m, d)
        return ms_deform_attn_reference(value, torch.tensor(shapes), loc, attw)

    def fast(l0, l1, loc, attw, w0, w1, b0, b1):
        return ms_deform_attn_sample_project([l0, l1], loc, attw, [w0, w1], [b0, b1])

    inputs = (*levels, loc, attw, *wts, *bs)
    torch.testing.assert_close(fast(*inputs), reference(*inputs), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fast, inputs)
    assert torch.autograd.gradcheck(reference, inputs)


def test_gradients_of_fast_path_match_reference() -> None:
    attn = _module([16, 16, 16])
    levels = [x.requires_grad_() for x in _levels([16, 16, 16])]
    query = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    ref_points = torch.rand(2, 5, 2, dtype=torch.float64)
    grads = []
    for reference in (False, True):
        out, _, _ = attn(query, ref_points, levels, reference=reference)
        params = [query, *levels, *attn.parameters()]
        grads.append(torch.autograd.grad(out.square().sum(), params))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_initialisation_matches_deformable_detr() -> None:
    attn = MSDeformAttn(d_model=32, n_levels=4, n_heads=8, n_points=4)
    assert attn.sampling_offsets.weight.abs().sum() == 0
    assert (
        attn.attention_weights.weight.abs().sum() == 0
        and attn.attention_weights.bias.abs().sum() == 0
    )
    bias = attn.sampling_offsets.bias.view(8, 4, 4, 2)
    for head in range(8):
        theta = 2 * math.pi * head / 8
        direction = torch.tensor([math.cos(theta), math.sin(theta)])
        direction = direction / direction.abs().max()
        for point in range(4):
            for level in range(4):
                torch.testing.assert_close(bias[head, level, point], direction * (point + 1))
    assert attn.value_proj.bias.abs().sum() == 0 and attn.output_proj.bias.abs().sum() == 0
    bound = math.sqrt(6 / (32 + 32))
    assert attn.output_proj.weight.abs().max() <= bound
    assert attn.output_proj.weight.std() > bound / 3  # Xavier-uniform, not zeros
    # uniform attention at init
    levels = [torch.randn(1, 32, 4, 4) for _ in range(4)]
    _, loc, w = attn(torch.randn(1, 3, 32), torch.full((1, 3, 2), 0.5), levels)
    torch.testing.assert_close(w, torch.full_like(w, 1 / 16))
    # offsets are in units of each level's cells: head 0 point 0 is one cell to the right
    torch.testing.assert_close(loc[0, 0, 0, 0, 0], torch.tensor([0.5 + 1 / 4, 0.5]))


def test_bf16_fast_path_close_to_float64_reference() -> None:
    attn = _module([16, 16, 16])
    levels = _levels([16, 16, 16])
    query = torch.randn(2, 5, 16, dtype=torch.float64)
    ref_points = torch.rand(2, 5, 2, dtype=torch.float64)
    exact, _, _ = attn(query, ref_points, levels, reference=True)
    low, _, _ = attn.bfloat16()(
        query.bfloat16(), ref_points.bfloat16(), [x.bfloat16() for x in levels]
    )
    assert low.dtype == torch.bfloat16
    assert ((low.double() - exact).abs().max() / exact.abs().max()) < 0.05


def test_rejects_wrong_number_of_levels() -> None:
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=1)
    with pytest.raises(ValueError, match="levels"):
        attn(torch.zeros(1, 1, 8), torch.zeros(1, 1, 2), [torch.zeros(1, 8, 2, 2)])
