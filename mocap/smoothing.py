"""Temporal smoothing of a track's SMPL parameters on SO(3): zero-lag offline and online One-Euro.

No model inside: filters over the arrays of one :class:`~mocap.motion.Track`.

Rotations are never filtered component-wise as matrices or Euler angles. They become unit
quaternions (:mod:`mocap.quaternion`) made sign-continuous over time, and every filter works in a tangent space: the log map
of each sample around the current estimate, a weighted mean of those rotation vectors, and the
exp map back (a few Karcher iterations offline; one step per frame online). Translations are filtered
with the same weights; betas are held at the per-track median.

Modes:
    ``"offline"`` (default for files): a local-linear Gaussian-kernel regression over timestamps.
        The kernel is symmetric in time, so a bump or step is not shifted (zero lag); the
        local-linear term removes the bias at the clip's ends and at uneven frame spacing.
    ``"oneeuro"``: the adaptive One-Euro filter (Casiez et al., CHI 2012), causal and frame by frame
        (:class:`OneEuroFilter`); low cutoff when still, higher when moving fast.
    ``"none"``: unchanged.

One knob, ``strength``: 0 = off, 1 = default, 2 = strong (twice the Gaussian width; half the
One-Euro cutoffs). Filters honour per-frame timestamps (``Track.times``), so variable frame rates
and gaps are handled.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mocap.body.skeleton import RestJointSource, track_joints
from mocap.errors import MocapError
from mocap.motion import Track
from mocap.quaternion import (
    matrix_to_quat,
    quat_conj,
    quat_exp,
    quat_log,
    quat_mul,
    quat_to_matrix,
    sign_continuous,
)

MODES: tuple[str, ...] = ("offline", "oneeuro", "none")

OFFLINE_SIGMA_S = 0.05  # Gaussian width in seconds at strength 1 (-3 dB near 2.6 Hz)
ONEEURO_MIN_CUTOFF_HZ = 1.0  # One-Euro cutoff when still, at strength 1
ONEEURO_BETA = 0.3  # cutoff increase (Hz) per rad/s of joint rotation speed, at strength 1
ONEEURO_BETA_TRANSL = 1.0  # cutoff increase (Hz) per m/s of root speed, at strength 1
ONEEURO_D_CUTOFF_HZ = 1.0  # cutoff of the speed estimate
FRAME_CHUNK = 1024  # frames per block in whole-sequence conversions: memory flat in track length


@dataclass(frozen=True)
class JitterReport:
    """Mean joint acceleration (m/s^2) of a track before and after smoothing."""

    before: float
    after: float

    @property
    def reduction(self) -> float:
        """before / after (inf when the result is perfectly still)."""
        return self.before / self.after if self.after > 0 else float("inf")


def jitter(joints: np.ndarray, fps: float) -> float:
    """Mean joint acceleration magnitude in m/s^2.

    Args:
        joints: (T,J,3) joint positions in metres at a constant frame rate ``fps``.
    """
    if len(joints) < 3:
        return 0.0
    acc = (joints[2:] - 2.0 * joints[1:-1] + joints[:-2]) * float(fps) ** 2
    return float(np.linalg.norm(acc, axis=-1).mean())


# ---- offline: zero-lag local-linear Gaussian regression ------------------------------------------


def _regression_weights(times: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Equivalent kernel of local-linear regression with a Gaussian kernel over timestamps.

    Returns:
        index: (T,K) neighbour frame indices, weights: (T,K) weights summing to 1 per row (zero for
        neighbours outside the clip). Symmetric around each frame for even sampling: no lag.
    """
    n = len(times)
    steps = np.diff(times)
    dt = float(np.median(steps[steps > 0])) if np.any(steps > 0) else 1.0
    radius = max(1, int(np.ceil(3.0 * sigma / dt)))
    offsets = np.arange(-radius, radius + 1)
    raw = np.arange(n)[:, None] + offsets[None, :]
    valid = (raw >= 0) & (raw < n)
    index = np.clip(raw, 0, n - 1)
    d = (times[index] - times[:, None]) / sigma
    w = np.exp(-0.5 * d**2) * valid
    s0, s1, s2 = (
        w.sum(1, keepdims=True),
        (w * d).sum(1, keepdims=True),
        (w * d * d).sum(1, keepdims=True),
    )
    det = s0 * s2 - s1**2
    local_linear = w * (s2 - d * s1) / np.where(det > 1e-9, det, 1.0)
    weights = np.where(det > 1e-9 * s0**2, local_linear, w / s0)
    return index, weights


def _offline_rotations(quat: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Karcher mean on SO(3) per frame. quat (T,J,4) sign-continuous -> (T,J,4)."""
    out = np.empty_like(quat)
    # bounded memory: about 3 MB per (C,K,J,4) temporary, whatever the kernel width
    chunk = max(1, 100_000 // (index.shape[1] * quat.shape[1]))
    for start in range(0, len(quat), chunk):
        sl = slice(start, start + chunk)
        mean = quat[sl].copy()  # (C,J,4) initial estimate: the sample itself
        neigh = quat[index[sl]]  # (C,K,J,4)
        w = weights[sl][:, :, None, None]
        for _ in range(3):
            tangent = quat_log(quat_mul(quat_conj(mean)[:, None], neigh))  # (C,K,J,3)
            mean = quat_mul(mean, quat_exp((w * tangent).sum(1)))
            mean /= np.linalg.norm(mean, axis=-1, keepdims=True)
        out[sl] = mean
    return out


def smooth_offline(
    rotations: np.ndarray,
    transl: np.ndarray,
    times: np.ndarray,
    strength: float = 1.0,
    dtype: npt.DTypeLike = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-lag smoothing of a whole sequence.

    Args:
        rotations: (T,J,3,3) rotations (any per-joint meaning; each joint filtered on SO(3)).
        transl: (T,3) translations.
        times: (T,) timestamps in seconds, increasing.
        strength: 0 = off, 1 = default (Gaussian sigma 0.05 s), 2 = strong.

    Returns:
        Smoothed (T,J,3,3) rotations (of ``dtype``; the filter itself runs in float64) and (T,3)
        translations.
    """
    if strength <= 0 or len(times) < 3:
        return rotations.astype(dtype), transl.copy()
    index, weights = _regression_weights(
        np.asarray(times, dtype=np.float64), OFFLINE_SIGMA_S * strength
    )
    quat = sign_continuous(_blocks(matrix_to_quat, rotations, rotations.shape[1:-2] + (4,)))
    mean = _offline_rotations(quat, index, weights)
    rot = _blocks(quat_to_matrix, mean, mean.shape[1:-1] + (3, 3), dtype)
    trans = np.einsum("tk,tkc->tc", weights, transl[index])
    return rot, trans


def _blocks(
    fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    shape: tuple[int, ...],
    dtype: npt.DTypeLike = np.float64,
) -> np.ndarray:
    """``fn`` applied to blocks of FRAME_CHUNK frames of x (T,...) -> (T,*shape) of ``dtype``.

    For per-frame functions whose temporaries (scipy's) are several times their output.
    """
    out = np.empty((len(x),) + shape, dtype=dtype)
    for start in range(0, len(x), FRAME_CHUNK):
        out[start : start + FRAME_CHUNK] = fn(x[start : start + FRAME_CHUNK])
    return out


# ---- online: One-Euro on SO(3) -------------------------------------------------------------------


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Online One-Euro filter for one person: call it once per frame, in time order.

    The rotation state is a unit quaternion per joint; each new sample is taken to the tangent space
    at the previous estimate (log map), the adaptive step is applied there and mapped back (exp),
    so the result stays on SO(3). Translation uses the vector One-Euro filter.
    """

    def __init__(
        self,
        strength: float = 1.0,
        min_cutoff: float = ONEEURO_MIN_CUTOFF_HZ,
        beta: float = ONEEURO_BETA,
        beta_transl: float = ONEEURO_BETA_TRANSL,
        d_cutoff: float = ONEEURO_D_CUTOFF_HZ,
    ) -> None:
        self.enabled = strength > 0
        scale = max(strength, 1e-6)
        self.min_cutoff, self.d_cutoff = min_cutoff / scale, d_cutoff
        self.beta, self.beta_transl = beta / scale, beta_transl / scale
        self.reset()

    def reset(self) -> None:
        """Forget the past (e.g. at a track break)."""
        self._time: float | None = None
        self._quat = np.zeros((0, 4))
        self._rot_speed = np.zeros(0)
        self._transl = np.zeros(3)
        self._transl_speed = 0.0

    def __call__(
        self, time: float, rotations: np.ndarray, transl: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Filter one frame.

        Args:
            time: timestamp in seconds (increasing).
            rotations: (J,3,3) this frame's rotations.
            transl: (3,) this frame's translation.

        Returns:
            Filtered (J,3,3) rotations and (3,) translation, depending only on frames seen so far.
        """
        quat = matrix_to_quat(rotations)
        if not self.enabled or self._time is None:
            self._time, self._quat, self._transl = time, quat, np.array(transl, dtype=np.float64)
            self._rot_speed = np.zeros(len(quat))
            return rotations.copy(), np.array(transl, dtype=np.float64)
        dt = max(time - self._time, 1e-4)
        self._time = time
        # rotations: step in the tangent space at the previous estimate
        delta = quat_log(quat_mul(quat_conj(self._quat), quat))  # (J,3)
        speed = np.linalg.norm(delta, axis=-1) / dt
        self._rot_speed += _alpha(self.d_cutoff, dt) * (speed - self._rot_speed)
        a = _alpha(self.min_cutoff + self.beta * self._rot_speed, dt)
        self._quat = quat_mul(self._quat, quat_exp(a[:, None] * delta))
        self._quat /= np.linalg.norm(self._quat, axis=-1, keepdims=True)
        # translation
        step = np.asarray(transl, dtype=np.float64) - self._transl
        self._transl_speed += float(_alpha(self.d_cutoff, dt)) * (
            float(np.linalg.norm(step)) / dt - self._transl_speed
        )
        self._transl = (
            self._transl
            + _alpha(self.min_cutoff + self.beta_transl * self._transl_speed, dt) * step
        )
        return quat_to_matrix(self._quat), self._transl.copy()


def smooth_oneeuro(
    rotations: np.ndarray, transl: np.ndarray, times: np.ndarray, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Run :class:`OneEuroFilter` over a sequence, frame by frame (same shapes as smooth_offline)."""
    filt = OneEuroFilter(strength)
    rot_out, trans_out = np.empty_like(rotations), np.empty_like(transl, dtype=np.float64)
    for t in range(len(times)):
        rot_out[t], trans_out[t] = filt(float(times[t]), rotations[t], transl[t])
    return rot_out, trans_out


# ---- tracks --------------------------------------------------------------------------------------


def filter_times(track: Track) -> np.ndarray:
    """(T,) timestamps to filter on: ``track.times``, or evenly spaced frame times when those are
    not strictly increasing (duplicated or missing container timestamps)."""
    times = np.asarray(track.times, dtype=np.float64)
    if len(times) < 2 or np.all(np.diff(times) > 0):
        return times
    frames = np.asarray(track.frames, dtype=np.float64)
    span, steps = times[-1] - times[0], frames[-1] - frames[0]
    step = span / steps if span > 0 and steps > 0 else 1.0 / 30.0
    if np.all(np.diff(frames) > 0):
        return times[0] + (frames - frames[0]) * step
    return times[0] + np.arange(len(times)) * step


def _clip_fps(times: np.ndarray) -> float:
    steps = np.diff(times)
    steps = steps[steps > 0]
    return 1.0 / float(np.median(steps)) if len(steps) else 30.0


def smooth_track(
    track: Track,
    mode: str = "offline",
    strength: float = 1.0,
    body: RestJointSource | None = None,
) -> tuple[Track, JitterReport]:
    """Smooth one track's rotations and translation, hold its betas, and measure the jitter.

    Args:
        track: the track (T frames), camera frame.
        mode: "offline" (zero-lag, default), "oneeuro" (causal, online) or "none".
        strength: 0 = off, 1 = default, 2 = strong.
        body: SMPL body model for the jitter's joints; the built-in skeleton when None.

    Returns:
        The smoothed track (betas: the per-track median on every frame; other fields unchanged) and
        the mean joint acceleration before and after.
    """
    if mode not in MODES:
        raise MocapError(f"unknown smoothing mode {mode!r}; use one of {', '.join(MODES)}")
    if not np.isfinite(strength) or strength < 0:
        raise MocapError(
            f"smoothing strength must be >= 0 (got {strength}); 1 is the default, 2 strong"
        )
    times = filter_times(track)
    rotations = np.concatenate([track.global_orient[:, None], track.body_pose], axis=1)
    transl = np.asarray(track.transl, dtype=np.float64)
    if mode == "offline":
        rotations, transl = smooth_offline(
            rotations, transl, times, strength, dtype=track.body_pose.dtype
        )
    elif mode == "oneeuro":
        rotations, transl = smooth_oneeuro(rotations, transl, times, strength)
    betas = np.broadcast_to(np.median(track.betas, axis=0), track.betas.shape).copy()
    smoothed = track.replace(
        global_orient=rotations[:, 0].astype(track.global_orient.dtype),
        body_pose=rotations[:, 1:].astype(track.body_pose.dtype),
        transl=transl.astype(track.transl.dtype),
        betas=betas.astype(track.betas.dtype),
    )
    fps = _clip_fps(times)
    report = JitterReport(jitter(_joints(track, body), fps), jitter(_joints(smoothed, body), fps))
    return smoothed, report


def _joints(track: Track, body: RestJointSource | None) -> np.ndarray:
    """``track_joints`` (T,24,3) computed FRAME_CHUNK frames at a time (its FK temporaries are
    float64 (T,24,3,3) arrays)."""
    out = np.empty((len(track), 24, 3))
    for start in range(0, len(track), FRAME_CHUNK):
        sl = slice(start, start + FRAME_CHUNK)
        part = track.replace(
            **{
                name: getattr(track, name)[sl]
                for name in ("frames", "times", "global_orient", "body_pose", "betas", "transl")
            }
        )
        out[sl] = track_joints(part, body)
    return out
