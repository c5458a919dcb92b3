"""The paper's SMPL head: 26 learned queries decoded by multi-scale deformable attention.

Queries: 24 joint tokens (joint 0 = global orientation), 1 shape token, 1 camera token, each with a
learned content embedding and a learned position embedding (``query_pos``). A query's reference
point is ``sigmoid(Linear(query_pos))``, normalised (x, y) over the crop, shared by all levels and
all layers (no box refinement: there are no boxes).

Decoder layer (Deformable-DETR, post-norm; reference-spec section 7): self-attention among the 26
tokens (q = k = tgt + query_pos) -> add & norm; deformable cross-attention to the L feature levels
(query tgt + query_pos, M heads x P points per level) -> add & norm; FFN d -> ffn_dim -> d (ReLU)
-> add & norm; dropout 0.1.

Levels: the maps the head receives (by default layer-16 and layer-32 ViT maps, each native and
upsampled, see ``mocap.model.hmr``). There is no encoder, so the learned level embedding cannot be
added to a memory position encoding as in Deformable-DETR; it is added to each level's projected
values instead (a learned per-level bias, free in the sample-then-project path).

Readout and iterative error feedback (IEF), as HMR2.0 but per token: the joint tokens give 6D
rotations through one shared ``decpose`` (d -> 6), the shape token 10 betas (``decshape``), the
camera token (s, tx, ty) (``deccam``); predictions are *added* to the current estimate, which starts
at the SMPL mean parameters. The estimate is fed back into the queries: each round adds
``pose_embed(6D of joint j)`` to joint token j, ``shape_embed(betas)`` to the shape token and
``cam_embed(cam)`` to the camera token before decoding. With the default single round the feedback
only sees the mean parameters; more rounds (``ief_iters``) re-run the decoder from the refined
estimate.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mocap.geometry import rot6d_to_rotmat
from mocap.model.hmr2_head import (
    HeadOutput,
    MeanParams,
    load_mean_params,
    spin_pose_to_columns,
)
from mocap.model.msdeform_attn import MSDeformAttn

NUM_JOINTS = 24
NUM_QUERIES = NUM_JOINTS + 2  # joints, shape, camera
SHAPE_TOKEN, CAM_TOKEN = NUM_JOINTS, NUM_JOINTS + 1


class DeformableDecoderLayer(nn.Module):
    """Post-norm self-attention -> deformable cross-attention -> FFN.

    Arguments:
        self_attn: attention among the queries (batch_first).
        cross_attn: deformable attention to the levels.
        d_model: token width.
        ffn_dim: hidden width of the FFN.
        dropout: dropout after each sub-layer and inside the FFN.
    """

    def __init__(
        self,
        self_attn: nn.MultiheadAttention,
        cross_attn: MSDeformAttn,
        d_model: int,
        ffn_dim: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        levels: Sequence[Tensor],
        level_embed: Tensor | None = None,
        reference: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One decoder layer.

        Arguments:
            tgt: (B, Q, d) query content.
            query_pos: (B, Q, d) query position embedding.
            reference_points: (B, Q, 2) normalised (x, y).
            levels: L maps (B, C_l, H_l, W_l).
            level_embed: (L, d) added to each level's values, or None.
            reference: run the reference (project-every-token) deformable attention.
        Returns:
            tgt (B, Q, d), sampling locations (B, Q, M, L, P, 2), attention weights (B, Q, M, L, P).
        """
        q = k = tgt + query_pos
        attended = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attended))
        attended, locations, weights = self.cross_attn(
            tgt + query_pos, reference_points, levels, level_embed, reference=reference
        )
        tgt = self.norm2(tgt + self.dropout(attended))
        hidden = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        tgt = self.norm3(tgt + self.dropout(hidden))
        return tgt, locations, weights


def build_decoder_layer(
    d_model: int,
    level_dims: Sequence[int],
    num_heads: int = 8,
    num_points: int = 8,
    ffn_dim: int = 1024,
    dropout: float = 0.1,
) -> DeformableDecoderLayer:
    """One decoder layer attending to ``len(level_dims)`` levels of the given channel counts."""
    self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
    cross_attn = MSDeformAttn(d_model, len(level_dims), num_heads, num_points, level_dims)
    return DeformableDecoderLayer(self_attn, cross_attn, d_model, ffn_dim, dropout)


class DeformableHead(nn.Module):
    """26-query deformable decoder with IEF from the SMPL mean parameters.

    Arguments:
        layers: decoder layers (all with the same width and number of levels).
        d_model: token width.
        num_levels: number of feature levels the layers attend to.
        mean_params: SMPL mean parameters (``pose`` 144 = 24 x 6D, ``shape`` 10, ``cam`` 3).
        ief_iters: rounds of iterative error feedback.
    """

    def __init__(
        self,
        layers: Sequence[DeformableDecoderLayer],
        d_model: int,
        num_levels: int,
        mean_params: MeanParams,
        ief_iters: int = 1,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.ief_iters = ief_iters
        self.tgt_embed = nn.Parameter(torch.randn(NUM_QUERIES, d_model))
        self.query_pos = nn.Parameter(torch.randn(NUM_QUERIES, d_model))
        self.level_embed = nn.Parameter(torch.randn(num_levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)
        self.pose_embed = nn.Linear(6, d_model)
        self.shape_embed = nn.Linear(10, d_model)
        self.cam_embed = nn.Linear(3, d_model)
        self.decpose = nn.Linear(d_model, 6)
        self.decshape = nn.Linear(d_model, 10)
        self.deccam = nn.Linear(d_model, 3)
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)
        for dec in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(dec.weight, gain=0.01)  # start close to the mean (HMR2.0)
            nn.init.zeros_(dec.bias)
        self.init_body_pose: Tensor
        self.init_betas: Tensor
        self.init_cam: Tensor
        # The mean pose file is in SPIN's 6D layout: start from the true mean (see the helper).
        pose = spin_pose_to_columns(mean_params["pose"])
        self.register_buffer("init_body_pose", torch.as_tensor(pose).float()[None])
        self.register_buffer("init_betas", torch.as_tensor(mean_params["shape"]).float()[None])
        self.register_buffer("init_cam", torch.as_tensor(mean_params["cam"]).float()[None])

    def forward(self, levels: Sequence[Tensor], reference: bool = False) -> HeadOutput:
        """Decode SMPL parameters from the feature levels.

        Arguments:
            levels: L maps (B, C_l, H_l, W_l) in level order (channels-last memory is fastest).
            reference: use the reference deformable attention (for tests and benchmarks).
        Returns:
            HeadOutput with rotmat (B, 24, 3, 3), betas (B, 10), cam (B, 3) and aux
            ``pose6d`` (B, 144), ``reference_points`` (B, 26, 2), and the last layer's
            ``sampling_locations`` (B, 26, M, L, P, 2) and ``attention_weights`` (B, 26, M, L, P).
        """
        b = levels[0].shape[0]
        dtype = self.tgt_embed.dtype
        query_pos = self.query_pos.expand(b, -1, -1)
        ref_points = self.reference_points(query_pos).sigmoid()
        pose = self.init_body_pose.to(dtype).expand(b, -1)
        betas = self.init_betas.to(dtype).expand(b, -1)
        cam = self.init_cam.to(dtype).expand(b, -1)
        locations = weights = torch.empty(0)
        for _ in range(self.ief_iters):
            tgt = self.tgt_embed + self._feedback(pose, betas, cam)
            for layer in self.layers:
                tgt, locations, weights = layer(
                    tgt, query_pos, ref_points, levels, self.level_embed, reference
                )
            pose = pose + self.decpose(tgt[:, :NUM_JOINTS]).flatten(1)
            betas = betas + self.decshape(tgt[:, SHAPE_TOKEN])
            cam = cam + self.deccam(tgt[:, CAM_TOKEN])
        rotmat = rot6d_to_rotmat(pose.view(b, NUM_JOINTS, 6))
        aux = {
            "pose6d": pose,
            "reference_points": ref_points,
            "sampling_locations": locations,
            "attention_weights": weights,
        }
        return HeadOutput(rotmat=rotmat, betas=betas, cam=cam, aux=aux)

    def _feedback(self, pose: Tensor, betas: Tensor, cam: Tensor) -> Tensor:
        """Embed the current estimate per token: (B, 144), (B, 10), (B, 3) -> (B, 26, d)."""
        joints = self.pose_embed(pose.view(pose.shape[0], NUM_JOINTS, 6))
        return torch.cat(
            [joints, self.shape_embed(betas)[:, None], self.cam_embed(cam)[:, None]], dim=1
        )


def build_deformable_head(
    d_model: int,
    level_dims: list[int],
    num_layers: int,
    num_heads: int = 8,
    num_points: int = 8,
    ffn_dim: int = 1024,
    mean_params: str | Path | MeanParams | None = None,
    dropout: float = 0.1,
    ief_iters: int = 1,
) -> DeformableHead:
    """The deformable head for ``len(level_dims)`` levels with the given channel counts.

    ``mean_params``: path to ``smpl_mean_params.npz``, its arrays, or None for a neutral stand-in.
    Full size (paper): d_model 1280, 6 layers, 8 heads, 8 points, ffn 1024.
    """
    layers = [
        build_decoder_layer(d_model, level_dims, num_heads, num_points, ffn_dim, dropout)
        for _ in range(num_layers)
    ]
    return DeformableHead(
        layers, d_model, len(level_dims), load_mean_params(mean_params), ief_iters
    )
