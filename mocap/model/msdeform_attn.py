"""Multi-scale deformable attention (Deformable-DETR, reference-spec section 7).

Each query, per head m, looks at P learned points on each of L feature levels around its reference
point and returns their attention-weighted sum of (projected) values: the attention weights are a
softmax over the L*P samples of a head, and sampling is bilinear with zeros outside the map
(``grid_sample`` with ``align_corners=False``).

Two implementations of the same function:

- :func:`ms_deform_attn_reference` is Deformable-DETR's pure-PyTorch core: ``value_proj`` is applied
  to every memory token, then ``grid_sample`` per level. Its cost grows with the map size (about
  160x from x1 to x16 maps per layer).
- :func:`ms_deform_attn_sample_project`, the default path, samples the *raw* level maps first and
  projects only the samples. Bilinear sampling is linear and ``value_proj`` is affine, so
  ``sample(W x + b) = W sample(x) + b * (sum of the in-bounds bilinear weights)``. The weighted
  gather is one ``embedding_bag`` per level over the channels-last map (a view for channels-last
  inputs: no copy of the memory), and the projection runs on B*Q*M vectors whatever the map size.

Per-level projections: when every level has the same channel count the module has one
``value_proj`` (Deformable-DETR's layout). Levels with different channel counts get one projection
each (``value_proj.{l}``), mapping C_l -> d_model. An optional per-level value bias (the head's
learned level embedding) is added to the projected values of its level.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_reference(
    value: Tensor, spatial_shapes: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Deformable-DETR's core, grid_sample based.

    Arguments:
        value: (N, S, M, D) projected values of all levels, flattened row-major and concatenated.
        spatial_shapes: (L, 2) integer (H_l, W_l) per level; S = sum H_l * W_l.
        sampling_locations: (N, Q, M, L, P, 2) normalised (x, y) in [0, 1] per level.
        attention_weights: (N, Q, M, L, P), normalised over L*P per head.
    Returns:
        (N, Q, M*D), head-major.
    """
    n, _, m, d = value.shape
    _, q, _, num_levels, p, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        v = value.split(sizes, dim=1)[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N*M, Q, P, 2)
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*M, D, Q, P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, q, num_levels * p)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, D, Q)
    return out.view(n, m * d, q).transpose(1, 2).contiguous()


def _bilinear_gather(
    level: Tensor, shape: tuple[int, int], locations: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor]:
    """Attention-weighted bilinear samples of one raw level.

    Arguments:
        level: (N*H*W, C) channels-last map, batch-major.
        shape: (H, W).
        locations: (N, Q, M, P, 2) normalised (x, y).
        weights: (N, Q, M, P) attention weights of this level.
    Returns:
        sums (N, Q, M, C) = sum_p weight * sample(level), and the total in-bounds bilinear weight
        (N, Q, M) that multiplies the projection bias.
    """
    h, w = shape
    n, q, m, p, _ = locations.shape
    x = locations[..., 0] * w - 0.5  # pixel coordinates, align_corners=False
    y = locations[..., 1] * h - 0.5
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    base = (torch.arange(n, device=level.device) * (h * w)).view(n, 1, 1, 1)
    index, coef = [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            index.append(base + yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))
            coef.append(wx * wy * inside)
    idx = torch.stack(index, dim=-1).view(n * q * m, p * 4)
    bilinear = torch.stack(coef, dim=-1)  # (N, Q, M, P, 4)
    per_sample = (bilinear * weights[..., None]).view(n * q * m, p * 4).to(level.dtype)
    sums = F.embedding_bag(idx, level, per_sample_weights=per_sample, mode="sum")
    return sums.view(n, q, m, -1), per_sample.view(n, q, m, p * 4).sum(-1)


def ms_deform_attn_sample_project(
    levels: Sequence[Tensor],
    sampling_locations: Tensor,
    attention_weights: Tensor,
    proj_weights: Sequence[Tensor],
    proj_biases: Sequence[Tensor],
) -> Tensor:
    """Sample the raw maps, then project only the samples (same result as the reference path).

    Arguments:
        levels: L maps (N, C_l, H_l, W_l); channels-last memory avoids a copy.
        sampling_locations: (N, Q, M, L, P, 2) normalised (x, y).
        attention_weights: (N, Q, M, L, P).
        proj_weights: per level (M*D, C_l) value projection (rows head-major).
        proj_biases: per level (M*D,) value bias (projection bias plus any level embedding).
    Returns:
        (N, Q, M*D), head-major.
    """
    n, q, m = sampling_locations.shape[:3]
    out: Tensor | None = None
    for lvl, x in enumerate(levels):
        _, c, h, w = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view when channels-last
        sums, mass = _bilinear_gather(
            flat, (h, w), sampling_locations[:, :, :, lvl], attention_weights[:, :, :, lvl]
        )
        weight = proj_weights[lvl].view(m, -1, c)  # (M, D, C_l)
        part = torch.einsum("nqmc,mdc->nqmd", sums, weight.to(sums.dtype))
        part = part + mass[..., None] * proj_biases[lvl].view(m, -1).to(sums.dtype)
        out = part if out is None else out + part
    assert out is not None
    return out.reshape(n, q, -1)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with Deformable-DETR's parameters and initialisation.

    Arguments:
        d_model: query and output width (divisible by ``n_heads``).
        n_levels: number of feature levels L.
        n_heads: attention heads M.
        n_points: sampling points per head and level P.
        level_dims: channels C_l of each level's input map (default: all d_model). Equal widths
            share one ``value_proj`` (Linear C -> d_model); different widths get one per level.
    """

    def __init__(
        self,
        d_model: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        level_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        dims = list(level_dims) if level_dims is not None else [d_model] * n_levels
        if len(dims) != n_levels:
            raise ValueError(f"{len(dims)} level_dims for {n_levels} levels")
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model,
            n_levels,
            n_heads,
            n_points,
        )
        self.level_dims = dims
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj: nn.Linear | nn.ModuleList = (
            nn.Linear(dims[0], d_model)
            if len(set(dims)) == 1
            else nn.ModuleList(nn.Linear(c, d_model) for c in dims)
        )
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring of directions (one per head), point i at distance i + 1."""
        nn.init.zeros_(self.sampling_offsets.weight)
        m, lv, p = self.n_heads, self.n_levels, self.n_points
        thetas = torch.arange(m, dtype=torch.float32) * (2.0 * math.pi / m)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.view(m, 1, 1, 2).repeat(1, lv, p, 1)
        grid = grid * torch.arange(1, p + 1, dtype=torch.float32).view(1, 1, p, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in self._value_projs() + [self.output_proj]:
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def _value_projs(self) -> list[nn.Linear]:
        if isinstance(self.value_proj, nn.Linear):
            return [self.value_proj] * self.n_levels
        return [mod for mod in self.value_proj.children() if isinstance(mod, nn.Linear)]

    def sampling(
        self, query: Tensor, reference_points: Tensor, shapes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Sampling locations and attention weights.

        Arguments:
            query: (N, Q, d_model) (content plus position).
            reference_points: (N, Q, 2) or (N, Q, L, 2) normalised (x, y).
            shapes: (L, 2) (H_l, W_l).
        Returns:
            locations (N, Q, M, L, P, 2), weights (N, Q, M, L, P) summing to 1 over (L, P).
        """
        n, q, _ = query.shape
        m, lv, p = self.n_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(query).view(n, q, m, lv, p, 2)
        logits = self.attention_weights(query).view(n, q, m, lv * p)
        weights = logits.softmax(-1).view(n, q, m, lv, p)
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None].expand(n, q, lv, 2)
        normaliser = shapes.flip(-1).to(query.dtype)  # (W_l, H_l)
        locations = (
            reference_points[:, :, None, :, None] + offsets / normaliser[None, None, None, :, None]
        )
        return locations, weights

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        levels: Sequence[Tensor],
        value_bias: Tensor | None = None,
        reference: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend from the queries to the levels.

        Arguments:
            query: (N, Q, d_model).
            reference_points: (N, Q, 2) or (N, Q, L, 2), normalised (x, y) in [0, 1].
            levels: L maps (N, C_l, H_l, W_l), raw (``value_proj`` is applied inside).
            value_bias: (L, d_model) added to each level's projected values, or None.
            reference: use :func:`ms_deform_attn_reference` (project every token) instead.
        Returns:
            output (N, Q, d_model), sampling locations (N, Q, M, L, P, 2), attention weights
            (N, Q, M, L, P).
        """
        if len(levels) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} levels, got {len(levels)}")
        shapes = torch.tensor([tuple(x.shape[-2:]) for x in levels], device=query.device)
        locations, weights = self.sampling(query, reference_points, shapes)
        projs = self._value_projs()
        biases = [
            proj.bias if value_bias is None else proj.bias + value_bias[lvl]
            for lvl, proj in enumerate(projs)
        ]
        if reference:
            n = query.shape[0]
            value = torch.cat(
                [
                    F.linear(x.flatten(2).transpose(1, 2), proj.weight, bias)
                    for x, proj, bias in zip(levels, projs, biases, strict=True)
                ],
                dim=1,
            ).view(n, -1, self.n_heads, self.d_model // self.n_heads)
            out = ms_deform_attn_reference(value, shapes, locations, weights)
        else:
            out = ms_deform_attn_sample_project(
                levels, locations, weights, [p.weight for p in projs], biases
            )
        return self.output_proj(out), locations, weights
