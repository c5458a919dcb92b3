"""The SMPL body model: find the file, load it safely, pose it.

:class:`BodyModel` wraps ``smplx.SMPLLayer`` built from arrays read by
:mod:`mocap.body.smpl_file` (never plain ``pickle``), with rotation matrices in
(``pose2rot=False``), exactly as HMR2.0 runs SMPL. Besides the 24 SMPL joints it returns HMR2.0's
keypoints: 25 OpenPose BODY_25 joints built from SMPL joints and smplx's vertex joints, plus the 19
joints of ``SMPL_to_J19.pkl`` when that regressor is available (44 in all, pelvis at 39).

Where the SMPL file is looked for, in order: the ``path`` argument (``--smpl``), ``$MOCAP_SMPL``,
then ``mocap_home()/smpl``, ``mocap_home()/hmr2/data/smpl`` and an existing 4D-Humans cache
(``~/.cache/4DHumans/data/smpl``), under the names of the official downloads.
"""

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import smplx
import torch
from smplx.utils import Struct
from torch import Tensor, nn

from mocap.body.joints import NUM_BETAS, NUM_JOINTS
from mocap.body.smpl_file import load_regressor, load_smpl_file
from mocap.errors import MocapError
from mocap.paths import mocap_home, user_path

SMPL_URL = "https://smpl.is.tue.mpg.de"
# Official file names, most preferred first: mocap's name, SMPL 1.1 neutral, SMPLify's neutral.
SMPL_FILE_NAMES = (
    "SMPL_NEUTRAL.pkl",
    "SMPL_NEUTRAL.npz",
    "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl",
    "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
)
# HMR2.0: SMPL joints + smplx vertex joints (45) -> OpenPose BODY_25 order.
OPENPOSE_FROM_SMPL45 = (24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, *range(25, 35))
J19_FILE = "SMPL_to_J19.pkl"
H36M_FILE = "J_regressor_h36m.npy"


def default_smpl_path() -> Path:
    """Where mocap expects the user to place the SMPL file: ``mocap_home()/smpl/SMPL_NEUTRAL.pkl``."""
    return mocap_home() / "smpl" / SMPL_FILE_NAMES[0]


def _in_folder(folder: Path) -> Path | None:
    for name in SMPL_FILE_NAMES:
        for candidate in (folder / name, folder / "smpl" / name):
            if candidate.is_file():
                return candidate
    return None


def find_smpl(path: str | Path | None = None) -> Path | None:
    """The SMPL model file to use, or None when none is configured or cached.

    Arguments:
        path: a file, or a folder holding one of :data:`SMPL_FILE_NAMES` (also under ``smpl/``).
    Raises:
        MocapError: ``path`` or ``$MOCAP_SMPL`` is given but names nothing usable.
    """
    for given, origin in ((path, "--smpl"), (os.environ.get("MOCAP_SMPL") or None, "MOCAP_SMPL")):
        if given is None:
            continue
        p = user_path(given)
        found = p if p.is_file() else _in_folder(p) if p.is_dir() else None
        if found is None:
            raise MocapError(
                f"SMPL model not found at {p} (from {origin}); give the path of SMPL_NEUTRAL.pkl "
                f"downloaded from {SMPL_URL}"
            )
        return found
    for folder in cache_folders():
        if (found := _in_folder(folder)) is not None:
            return found
    return None


def cache_folders() -> tuple[Path, ...]:
    """Folders searched when no path is given: mocap's cache, then an existing 4D-Humans cache."""
    return (
        mocap_home() / "smpl",
        mocap_home() / "hmr2" / "data",
        Path.home() / ".cache" / "4DHumans" / "data",
    )


def missing_smpl_message() -> str:
    return (
        f"the SMPL body model is missing: register at {SMPL_URL}, download the neutral model "
        f"(SMPL 1.1 'basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl' or SMPLify's "
        f"'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl') and place it at {default_smpl_path()}, "
        "or pass --smpl FILE or set MOCAP_SMPL"
    )


@dataclass
class BodyOutput:
    """Posed SMPL body (torch, metres, same frame as global_orient / transl).

    Attributes:
        vertices: (B, 6890, 3).
        joints: (B, 24, 3) SMPL joints.
        keypoints: (B, K, 3) HMR2.0 keypoints: 25 OpenPose, then 19 J19 joints when available.
        h36m: (B, 17, 3) Human3.6M joints when ``J_regressor_h36m.npy`` was found, else None.
    """

    vertices: Tensor
    joints: Tensor
    keypoints: Tensor
    h36m: Tensor | None = None


class BodyModel(nn.Module):
    """SMPL forward kinematics with rotation matrices in; see :func:`build_body_model`."""

    openpose_index: Tensor
    j19: Tensor | None
    h36m: Tensor | None

    def __init__(
        self, layer: smplx.SMPLLayer, j19: Tensor | None = None, h36m: Tensor | None = None
    ):
        super().__init__()
        self.layer = layer
        self.register_buffer("openpose_index", torch.tensor(OPENPOSE_FROM_SMPL45), persistent=False)
        self.register_buffer("j19", j19, persistent=False)
        self.register_buffer("h36m", h36m, persistent=False)

    def forward(
        self,
        global_orient: Tensor,
        body_pose: Tensor,
        betas: Tensor,
        transl: Tensor | None = None,
    ) -> BodyOutput:
        """Pose the body.

        Arguments:
            global_orient: (B, 3, 3) root rotation.
            body_pose: (B, 23, 3, 3) joint rotations relative to the parent.
            betas: (B, 10) or (1, 10) shape.
            transl: (B, 3) added to every output point; default none.
        Returns:
            :class:`BodyOutput`.
        """
        dtype = self.layer.shapedirs.dtype
        batch = global_orient.shape[0]
        out = self.layer(
            global_orient=global_orient.reshape(batch, 1, 3, 3).to(dtype),
            body_pose=body_pose.reshape(batch, NUM_JOINTS - 1, 3, 3).to(dtype),
            betas=betas.to(dtype).expand(batch, -1),
            transl=None if transl is None else transl.to(dtype),
            pose2rot=False,
        )
        vertices = out.vertices
        keypoints = out.joints[:, self.openpose_index]
        if self.j19 is not None:
            keypoints = torch.cat((keypoints, torch.einsum("kv,bvc->bkc", self.j19, vertices)), 1)
        h36m = None if self.h36m is None else torch.einsum("kv,bvc->bkc", self.h36m, vertices)
        return BodyOutput(vertices, out.joints[:, :NUM_JOINTS], keypoints, h36m)

    @property
    def faces(self) -> np.ndarray:
        """(13776, 3) int64 triangle vertex indices."""
        return self.layer.faces_tensor.cpu().numpy()

    @property
    def lbs_weights(self) -> np.ndarray:
        """(6890, 24) skinning weights."""
        return self.layer.lbs_weights.cpu().numpy()

    @property
    def parents(self) -> np.ndarray:
        """(24,) int64 parent of each joint, -1 for the root."""
        return self.layer.parents.cpu().numpy()

    @property
    def num_keypoints(self) -> int:
        return len(OPENPOSE_FROM_SMPL45) + (0 if self.j19 is None else self.j19.shape[0])

    def rest_vertices(self, betas: np.ndarray | None = None) -> np.ndarray:
        """(6890, 3) float64 T-pose vertices for ``betas`` (10,) (default zeros)."""
        v = self.layer.v_template.detach().cpu().double().numpy()
        if betas is None:
            return v
        dirs = self.layer.shapedirs.detach().cpu().double().numpy()
        return v + dirs[:, :, : len(betas)] @ np.asarray(betas, dtype=np.float64)

    def rest_joints(self, betas: np.ndarray | None = None) -> np.ndarray:
        """(24, 3) float64 T-pose joint positions for ``betas`` (10,) (default zeros)."""
        regressor = self.layer.J_regressor.detach().cpu().double().numpy()
        return regressor @ self.rest_vertices(betas)


def build_body_model(
    arrays: dict[str, np.ndarray],
    j19: np.ndarray | None = None,
    h36m: np.ndarray | None = None,
) -> BodyModel:
    """BodyModel from SMPL arrays (see :func:`~mocap.body.smpl_file.load_smpl_file`)."""
    if arrays["v_template"].shape != (6890, 3) or arrays["weights"].shape[1] != NUM_JOINTS:
        raise MocapError(
            f"this is not an SMPL body model (vertices {arrays['v_template'].shape}, joints "
            f"{arrays['weights'].shape[1]}); use the SMPL neutral model from {SMPL_URL}"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning about 10 betas
        layer = smplx.SMPLLayer(model_path="", data_struct=Struct(**arrays), num_betas=NUM_BETAS)

    def as_tensor(a: np.ndarray | None) -> Tensor | None:
        return None if a is None else torch.as_tensor(a, dtype=torch.float32)

    return BodyModel(layer, as_tensor(j19), as_tensor(h36m))


def _extra_regressor(name: str, smpl_path: Path) -> np.ndarray | None:
    near = [smpl_path.parent] + (
        [smpl_path.parent.parent] if smpl_path.parent.name == "smpl" else []
    )
    for folder in (*near, mocap_home() / "hmr2" / "data"):  # 4D-Humans: data/smpl/ + data/*.pkl
        if (folder / name).is_file():
            return load_regressor(folder / name)
    return None


def load_body_model(
    path: str | Path | None = None, required: bool = False, extra_regressors: bool = True
) -> BodyModel | None:
    """Find and load the SMPL model (see :func:`find_smpl`).

    Arguments:
        path: SMPL file or folder; default ``$MOCAP_SMPL`` then the cache.
        required: raise instead of returning None when no SMPL file exists.
        extra_regressors: also load ``SMPL_to_J19.pkl`` / ``J_regressor_h36m.npy`` found next to
            the SMPL file or in ``mocap_home()/hmr2/data``.
    Returns:
        the model, or None when absent and not required.
    Raises:
        MocapError: required but missing (says where to get it), or given but unreadable.
    """
    found = find_smpl(path)
    if found is None:
        if required:
            raise MocapError(missing_smpl_message())
        return None
    arrays = load_smpl_file(found)
    j19 = _extra_regressor(J19_FILE, found) if extra_regressors else None
    h36m = _extra_regressor(H36M_FILE, found) if extra_regressors else None
    return build_body_model(arrays, j19, h36m)
