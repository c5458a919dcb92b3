"""Constant-velocity Kalman filter over one box, state (cx, cy, w, h) and their velocities.

Noise scales with the box size, as in SORT / DeepSORT / ByteTrack, so a near person (big box) may
move more pixels per frame than a far one. Pure numpy; one small filter per track.
"""

from dataclasses import dataclass

import numpy as np

# Standard deviations relative to the box size: position per frame, velocity per frame.
STD_POSITION = 1.0 / 20.0
STD_VELOCITY = 1.0 / 160.0

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # x' = x + v (one frame)
_H = np.eye(4, 8)


def xyxy_to_cxcywh(box: np.ndarray) -> np.ndarray:
    """(..., 4) x1, y1, x2, y2 -> (..., 4) centre x, centre y, width, height."""
    box = np.asarray(box, dtype=np.float64)
    wh = box[..., 2:] - box[..., :2]
    return np.concatenate([box[..., :2] + wh / 2, wh], axis=-1)


def cxcywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    """(..., 4) centre x, centre y, width, height -> (..., 4) x1, y1, x2, y2."""
    half = box[..., 2:] / 2
    return np.concatenate([box[..., :2] - half, box[..., :2] + half], axis=-1)


def _size_std(wh: np.ndarray, scale: float) -> np.ndarray:
    """(4,) standard deviations for (x, y, w, h)-like quantities of a box of size ``wh`` (2,)."""
    w, h = max(float(wh[0]), 1.0), max(float(wh[1]), 1.0)
    return scale * np.array([w, h, w, h])


@dataclass
class BoxKalman:
    """Kalman state of one box.

    Attributes:
        mean: (8,) cx, cy, w, h, vcx, vcy, vw, vh (pixels, pixels per frame).
        cov: (8, 8) covariance.
    """

    mean: np.ndarray
    cov: np.ndarray

    @staticmethod
    def start(box_xyxy: np.ndarray) -> "BoxKalman":
        """New filter at a detected (4,) xyxy box with unknown (zero-mean, wide) velocity."""
        z = xyxy_to_cxcywh(box_xyxy)
        mean = np.concatenate([z, np.zeros(4)])
        std = np.concatenate(
            [_size_std(z[2:], 2 * STD_POSITION), _size_std(z[2:], 10 * STD_VELOCITY)]
        )
        return BoxKalman(mean, np.diag(std**2))

    def predict(self, steps: int = 1) -> None:
        """Advance ``steps`` frames (a lost track is predicted across every missed frame)."""
        for _ in range(steps):
            wh = self.mean[2:4]
            q = np.concatenate([_size_std(wh, STD_POSITION), _size_std(wh, STD_VELOCITY)])
            self.mean = _F @ self.mean
            self.mean[2:4] = np.maximum(self.mean[2:4], 1.0)  # a box never shrinks to nothing
            self.cov = _F @ self.cov @ _F.T + np.diag(q**2)

    def update(self, box_xyxy: np.ndarray) -> None:
        """Correct with a detected (4,) xyxy box."""
        z = xyxy_to_cxcywh(box_xyxy)
        r = np.diag(_size_std(self.mean[2:4], STD_POSITION) ** 2)
        s = _H @ self.cov @ _H.T + r
        gain = np.linalg.solve(s, _H @ self.cov).T  # (8, 4) = P H^T S^-1, S symmetric
        self.mean = self.mean + gain @ (z - _H @ self.mean)
        self.cov = self.cov - gain @ s @ gain.T

    @property
    def box(self) -> np.ndarray:
        """(4,) predicted / filtered box, x1, y1, x2, y2."""
        return cxcywh_to_xyxy(self.mean[:4])
