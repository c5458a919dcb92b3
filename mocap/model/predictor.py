"""Predictor: numpy frames / crops in, SMPL parameters out; owns device, precision and batching.

The network only sees batched tensors; this object owns everything around it (the segment-anything
split): cropping (``mocap.model.crop``), device placement, precision, batching and turning the crop
camera into a full-image translation (``mocap.geometry.cam_crop_to_full``, HMR2.0's formula, focal
length overridable).

Device and precision follow :mod:`mocap.device` (the rules every caller shares).
Precision: ``bf16`` / ``fp16`` store the backbone's block linears (99% of its FLOPs) in that type
once, no per-call casting (``ViT.set_matmul_dtype``); ``int8`` (CPU only, on request) replaces
them by dynamic int8 linears (``ViT.quantize_int8``, :mod:`mocap.model.int8`). The residual
stream, LayerNorms, the upsamplers and the head, a small part of the cost, stay in fp32, as under
autocast, so that rotations, shape and camera keep full precision. On a CPU, fp16 is not a fast
path: it falls back to bf16 where the CPU has bf16 matrix units (AMX / AVX512-BF16), else to
fp32, with a message.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mocap.device import cpu_has_fast_bf16, resolve_device, resolve_precision, torch_dtype
from mocap.errors import MocapError
from mocap.geometry import cam_crop_to_full, default_focal_length
from mocap.model.checkpoint import load_any_checkpoint
from mocap.model.crop import crop_people
from mocap.model.hmr import HMR

log = logging.getLogger(__name__)
__all__ = ["Predictor", "SMPLParams", "cpu_has_fast_bf16"]


@dataclass
class SMPLParams:
    """SMPL parameters of N people (numpy, float32 except where noted).

    Attributes:
        global_orient: (N, 3, 3) root rotation, camera frame.
        body_pose: (N, 23, 3, 3) joint rotations relative to their parents.
        betas: (N, 10) shape.
        cam_crop: (N, 3) crop camera (s, tx, ty).
        transl: (N, 3) translation of the SMPL origin in the full-image camera, metres.
        focal_length: focal length in pixels the translation assumes.
    """

    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    cam_crop: np.ndarray
    transl: np.ndarray
    focal_length: float

    def __len__(self) -> int:
        return len(self.betas)


class Predictor:
    """Runs an HMR model on person crops.

    Arguments:
        model: the network (any variant); the predictor takes it over: it is moved to
            ``device``, put in eval mode and its backbone linears cast to ``precision`` (or
            quantised, for int8) in place.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16``, ``fp16`` or ``int8`` for the backbone (see the
            module docstring); ``auto`` never picks int8.
        focal_length: full-image focal length in pixels; None = HMR2.0's 5000/256 * max(W, H).
        batch_size: crops per forward pass.
    """

    def __init__(
        self,
        model: HMR,
        device: str = "auto",
        precision: str = "fp32",
        focal_length: float | None = None,
        batch_size: int = 8,
    ) -> None:
        if focal_length is not None and not focal_length > 0:
            raise MocapError(f"focal length must be positive pixels, got {focal_length}")
        if batch_size < 1:
            raise MocapError(f"batch size must be at least 1, got {batch_size}")
        self.device = torch.device(resolve_device(device, precision))
        self.precision = resolve_precision(precision, str(self.device))
        self.dtype = torch_dtype(self.precision)  # of the backbone linears (int8: their inputs)
        self.focal_length = focal_length
        self.batch_size = batch_size
        self.model = model.eval().to(self.device)
        if self.precision == "int8":
            self.model.backbone.quantize_int8()
        else:
            self.model.backbone.set_matmul_dtype(self.dtype)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        precision: str = "fp32",
        focal_length: float | None = None,
        batch_size: int = 8,
    ) -> "Predictor":
        """A mocap checkpoint or an HMR2.0 ``.ckpt`` (told apart by content)."""
        model, report = load_any_checkpoint(path)
        if report is not None:
            log.info("%s: %s", path, report.summary())
        return cls(model, device, precision, focal_length, batch_size)

    @torch.inference_mode()
    def predict_crops(
        self,
        crops: np.ndarray,
        centers: np.ndarray,
        sizes: np.ndarray,
        image_size: tuple[int, int],
        focal_length: float | None = None,
    ) -> SMPLParams:
        """SMPL parameters of N preprocessed crops.

        Arguments:
            crops: (N, 3, 256, 192) float32 normalised crops (``mocap.model.crop``).
            centers: (N, 2) crop centres in image pixels.
            sizes: (N,) crop sides in image pixels.
            image_size: full image (width, height) in pixels.
            focal_length: this call's full-image focal length in pixels (default: the predictor's,
                else HMR2.0's 5000/256 * max(W, H)).
        """
        crops = np.asarray(crops, np.float32)
        if crops.ndim != 4 or crops.shape[1:] != (3, 256, 192):
            raise ValueError(f"crops must be (N, 3, 256, 192), got {crops.shape}")
        rotmats, betas, cams = [], [], []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(crops[start : start + self.batch_size]).to(self.device)
            out = self.model(batch)
            rotmats.append(out.rotmat.float().cpu())
            betas.append(out.betas.float().cpu())
            cams.append(out.cam.float().cpu())
        n = len(crops)
        rotmat = torch.cat(rotmats) if rotmats else torch.zeros(0, 24, 3, 3)
        cam = torch.cat(cams) if cams else torch.zeros(0, 3)
        size_wh = torch.tensor([float(image_size[0]), float(image_size[1])], dtype=torch.float64)
        focal = focal_length or self.focal_length or float(default_focal_length(size_wh))
        transl = cam_crop_to_full(
            cam.double(),
            torch.as_tensor(np.asarray(centers, np.float64).reshape(n, 2)),
            torch.as_tensor(np.asarray(sizes, np.float64).reshape(n)),
            size_wh.expand(n, 2),
            focal,
        )
        return SMPLParams(
            global_orient=rotmat[:, 0].numpy(),
            body_pose=rotmat[:, 1:].numpy(),
            betas=(torch.cat(betas) if betas else torch.zeros(0, 10)).numpy(),
            cam_crop=cam.numpy(),
            transl=transl.float().numpy(),
            focal_length=focal,
        )

    def predict(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> SMPLParams:
        """Crop every box (N, 4) of one (H, W, 3) uint8 BGR frame and predict."""
        batch = crop_people(image_bgr, boxes_xyxy)
        height, width = image_bgr.shape[:2]
        return self.predict_crops(batch.images, batch.centers, batch.sizes, (width, height))
