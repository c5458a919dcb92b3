"""HMR2.0's SMPL head: one token cross-attending to the dense backbone map (the paper's baseline).

Numerics and key names follow reference-spec section 2 so that HMR2.0's ``smpl_head.*`` weights load
with ``strict=True``: a single zero input token embedded by ``Linear(1 -> dim)`` plus a learned
position embedding, ``depth`` pre-norm layers of (self-attention, cross-attention to the flattened
backbone map, feed-forward), no final norm, then one round of iterative error feedback (IEF) from
the SMPL mean parameters: ``pose = decpose(t) + init_body_pose`` (24 x 6D, joint 0 = global
orientation), ``betas = decshape(t) + init_betas``, ``cam = deccam(t) + init_cam``.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mocap.errors import MocapError
from mocap.geometry import rot6d_to_rotmat
from mocap.npz import open_npz

NUM_JOINTS = 24
MeanParams = dict[str, np.ndarray]


@dataclass
class HeadOutput:
    """SMPL parameters predicted by a head.

    Attributes:
        rotmat: (B, 24, 3, 3) joint rotations; joint 0 is the global orientation.
        betas: (B, 10) shape coefficients.
        cam: (B, 3) weak-perspective crop camera (s, tx, ty).
        aux: intermediate tensors (for figures and losses), keyed by name.
    """

    rotmat: Tensor
    betas: Tensor
    cam: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


def neutral_mean_params() -> MeanParams:
    """Stand-in for ``smpl_mean_params.npz``: an upright body facing the camera (root rotated 180
    degrees about x, as in the real file), other joints at rest, zero betas, cam (0.9, 0, 0).

    Stored in the file's SPIN 6D layout (see :func:`spin_pose_to_columns`). Only used to initialise
    a model when the real file is not at hand; loading any checkpoint overwrites these buffers.
    """
    pose = np.tile(np.array([1, 0, 0, 1, 0, 0], dtype=np.float32), NUM_JOINTS)
    pose[:6] = (1, 0, 0, -1, 0, 0)  # first two columns of diag(1, -1, -1), row-major (3, 2)
    return {
        "pose": pose,
        "shape": np.zeros(10, np.float32),
        "cam": np.array([0.9, 0.0, 0.0], np.float32),
    }


def load_mean_params(source: str | Path | MeanParams | None) -> MeanParams:
    """SMPL mean parameters from ``smpl_mean_params.npz`` (a path), a dict, or neutral when None.

    Returns a dict with float32 ``pose`` (144,), ``shape`` (10,), ``cam`` (3,).
    """
    if source is None:
        return neutral_mean_params()
    try:
        if isinstance(source, dict):
            data = source
        else:
            with open_npz(source) as npz:
                data = {k: npz[k] for k in npz.files}
        out = {k: np.asarray(data[k], np.float32).reshape(-1) for k in ("pose", "shape", "cam")}
    except (OSError, KeyError, ValueError) as exc:
        raise MocapError(
            f"SMPL mean parameters {source!r} are unreadable ({exc}); pass smpl_mean_params.npz"
        ) from exc
    if [v.size for v in out.values()] != [NUM_JOINTS * 6, 10, 3]:
        raise MocapError("SMPL mean parameters need pose (144), shape (10), cam (3)")
    return out


def spin_pose_to_columns(pose: np.ndarray) -> np.ndarray:
    """Re-encode a 6D pose from SPIN's interleaved layout into HMR2.0's contiguous one.

    ``smpl_mean_params.npz`` was written for SPIN, whose 6D reads each joint as a (3, 2) matrix
    (columns a1 = x[0::2], a2 = x[1::2]); HMR2.0 reads a1 = x[0:3], a2 = x[3:6] from the same file,
    which makes its starting pose degenerate (a1 = -a2 at the root). HMR2.0's head keeps that for
    checkpoint compatibility; heads trained by mocap start from the true mean pose.

    Arguments:
        pose: (24 * 6,) or (24, 6) SPIN-layout 6D.
    Returns:
        (24 * 6,) float32 in the contiguous layout of :func:`mocap.geometry.rot6d_to_rotmat`.
    """
    x = np.asarray(pose, np.float32).reshape(-1, 3, 2)
    return np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention: fused bias-free to_qkv, q | k | v chunks, head-major."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(0.0))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, dim) -> (B, N, dim)."""
        q, k, v = (_split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Queries from the tokens, keys and values (chunk 0 = k, chunk 1 = v) from the context."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: (B, N, dim), context: (B, S, context_dim) -> (B, N, dim)."""
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(context).chunk(2, dim=-1))
        q = _split_heads(self.to_q(x), self.heads)
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class FeedForward(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout (keys net.0, net.3)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(hidden, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    """LayerNorm (eps 1e-5) on the tokens only, then the wrapped module."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor, *context: Tensor) -> Tensor:
        return self.fn(self.norm(x), *context)


class CrossAttnTransformer(nn.Module):
    """``depth`` pre-norm residual layers [self-attn, cross-attn, feed-forward]; no final norm."""

    def __init__(
        self, dim: int, context_dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, SelfAttention(dim, heads, dim_head)),
                    PreNorm(dim, CrossAttention(dim, context_dim, heads, dim_head)),
                    PreNorm(dim, FeedForward(dim, mlp_dim)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        for layer in self.layers:
            assert isinstance(layer, nn.ModuleList)
            self_attn, cross_attn, ff = layer[0], layer[1], layer[2]
            x = x + self_attn(x)
            x = x + cross_attn(x, context)
            x = x + ff(x)
        return x


class TokenDecoder(nn.Module):
    """Embeds the constant zero token, adds its position embedding and runs the transformer."""

    def __init__(self, dim: int, transformer: CrossAttnTransformer) -> None:
        super().__init__()
        self.to_token_embedding = nn.Linear(1, dim)
        # It multiplies the constant zero token: only the bias matters, the weight gets no gradient.
        self.to_token_embedding.weight.requires_grad_(False)
        self.pos_embedding = nn.Parameter(torch.randn(1, 1, dim))
        self.transformer = transformer

    def forward(self, context: Tensor) -> Tensor:
        """context: (B, S, C) -> token (B, dim)."""
        token = context.new_zeros(context.shape[0], 1, 1)
        x = self.to_token_embedding(token) + self.pos_embedding
        return self.transformer(x, context)[:, 0]


class HMR2Head(nn.Module):
    """Dense cross-attention SMPL head with one IEF round from the mean parameters.

    Arguments:
        transformer: the finished token decoder (``transformer.*`` keys).
        dim: token width.
        mean_params: ``pose`` (144,), ``shape`` (10,), ``cam`` (3,) initial estimates (buffers).
    """

    def __init__(self, transformer: TokenDecoder, dim: int, mean_params: MeanParams) -> None:
        super().__init__()
        self.transformer = transformer
        self.decpose = nn.Linear(dim, NUM_JOINTS * 6)
        self.decshape = nn.Linear(dim, 10)
        self.deccam = nn.Linear(dim, 3)
        for layer in (self.decpose, self.decshape, self.deccam):
            # Small readouts so that the first prediction stays near the mean (as HMR2.0).
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)
        self.register_buffer("init_body_pose", torch.from_numpy(mean_params["pose"])[None].clone())
        self.register_buffer("init_betas", torch.from_numpy(mean_params["shape"])[None].clone())
        self.register_buffer("init_cam", torch.from_numpy(mean_params["cam"])[None].clone())

    def forward(self, features: Tensor) -> HeadOutput:
        """features: (B, C, h, w) backbone map (post last_norm) -> HeadOutput."""
        context = features.flatten(2).transpose(1, 2)
        token = self.transformer(context)
        pose6d = self.decpose(token) + self.init_body_pose
        betas = self.decshape(token) + self.init_betas
        cam = self.deccam(token) + self.init_cam
        rotmat = rot6d_to_rotmat(pose6d.view(-1, NUM_JOINTS, 6))
        return HeadOutput(rotmat=rotmat, betas=betas, cam=cam, aux={"pose6d": pose6d})


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, heads*d) -> (B, heads, N, d)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, d) -> (B, N, heads*d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def build_hmr2_head(
    context_dim: int = 1280,
    dim: int = 1024,
    depth: int = 6,
    heads: int = 8,
    dim_head: int = 64,
    mlp_dim: int = 1024,
    mean_params: str | Path | MeanParams | None = None,
) -> HMR2Head:
    """HMR2.0 head; the defaults are HMR2.0's (``mean_params`` None: neutral stand-in)."""
    transformer = CrossAttnTransformer(dim, context_dim, depth, heads, dim_head, mlp_dim)
    return HMR2Head(TokenDecoder(dim, transformer), dim, load_mean_params(mean_params))
