"""The figures of ``report.html``: the timeline as inline SVG, the plots as small PNGs (matplotlib).

Every figure shows every person in the identity colour of the preview video
(:func:`mocap.pipeline.preview.track_colour`). Per-frame plots have one row per person on a shared
frame axis. PNGs are drawn with matplotlib's object API (no pyplot state, no display needed) and
stored as palette PNGs in ``data:`` URIs, so the page needs no other file and stays small.
"""

import base64
import html
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mocap.pipeline.preview import track_colour
from mocap.pipeline.quality import ClipQuality, TrackQuality

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 90
WIDTH_IN = 10.0
TIMELINE_COLOURS = {"tracked": "#3b8f4a", "interpolated": "#e0a526", "missing": "#d0342c"}
# one line per figure of the report: what it shows and what is good
CAPTIONS = {
    "timeline": "Frames of each person: green = detected, amber = bridged over a short occlusion "
    "(interpolated), red = lost for longer than --max-gap (no motion there). Good: long green "
    "bars, little amber, no red.",
    "jitter": "Mean joint acceleration before and after smoothing (run.json), and per frame after "
    "it. Lower is steadier; the bars should drop clearly and the curve should have no isolated "
    "spikes (pops, identity swaps: see the frames below).",
    "contacts": "Frames where each foot point touches the floor (mocap.contacts), and how far the "
    "points in contact move per frame in the motion as estimated; the table has run.json's "
    "numbers before and after foot locking (the exported files are locked). Good: contacts "
    "alternate while walking, sliding after locking near 0 (a few mm/frame is invisible).",
    "ground": "Height of the lowest sole above the fitted floor; red where it sinks below. Good: "
    "back at 0 at every step and rarely under -2 cm (the floor sits at the 5th percentile of the "
    "soles, so brief dips of a few cm are expected).",
    "reprojection": "Image distance between the 3D joints projected with the run's focal length and "
    "{against}. Good: small next to the person's height in pixels and flat; peaks are frames where "
    "the body is off the person.",
    "bones": "Largest change of any bone's length from its median. 0 % is a rigid skeleton (the "
    "pipeline holds each person's body shape); above ~1 % the body changes size between frames.",
    "landmark_bones": " Dashed: the same for the model's own 3D landmarks before the fit to the "
    "skeleton: their variation is the model's own noise, which the rigid skeleton removes.",
    "topview": "The world from above: each person's pelvis path (o start, > end) on the floor "
    "(shaded), and the camera with its field of view. Good: smooth paths; jumps along the camera's "
    "line of sight are depth errors.",
    "frames": "Frames with each person drawn in their colour, then the worst frame of each figure, "
    "cut out around that person (white: detection box; black dots: the model's landmarks). Good: "
    "the overlay covers the person.",
}
AGAINST = {
    "landmarks": "the model's own 2D landmarks (px)",
    "boxes": "the detection box (mean offset of the four box edges, px; joints do not reach the "
    "head top and soles, so some px are normal)",
}


def rgb(track_id: int) -> tuple[float, float, float]:
    """The identity colour of a person as matplotlib RGB (0..1)."""
    b, g, r = track_colour(track_id)
    return r / 255.0, g / 255.0, b / 255.0


def hex_colour(track_id: int) -> str:
    b, g, r = track_colour(track_id)
    return f"#{r:02x}{g:02x}{b:02x}"


def _figure(height_in: float) -> "Figure":
    from matplotlib.figure import Figure  # imported here: matplotlib loads in about a second

    return Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")


def png_data_uri(fig: "Figure") -> str:
    """Render ``fig`` as a palette PNG (256 colours) in a ``data:`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    image = (
        Image.open(io.BytesIO(buf.getvalue()))
        .convert("RGB")
        .quantize(256, method=Image.Quantize.FASTOCTREE)
    )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def timeline_svg(quality: ClipQuality) -> str:
    """Inline SVG: one row per person, a rectangle per run of tracked / interpolated / missing
    frames (``data-kind``, ``data-start``, ``data-end`` attributes: first and one-past-last frame)."""
    n = max(quality.num_frames, 1)
    left, width, row = 60, 790, 22
    height = 30 + row * len(quality.tracks) + 24
    x = lambda f: left + width * f / n  # noqa: E731
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 900 {height}" '
        f'width="900" height="{height}" role="img" aria-label="timeline of tracked frames">'
    ]
    for k, tq in enumerate(quality.tracks):
        y = 10 + k * row
        parts.append(
            f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" '
            f'fill="{hex_colour(tq.track_id)}" font-weight="bold">#{tq.track_id}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{width}" height="{row - 6}" fill="#f1f1f1"/>'
        )
        for kind, start, end in tq.segments:
            parts.append(
                f'<rect class="seg {kind}" data-track="{tq.track_id}" data-kind="{kind}" '
                f'data-start="{start}" data-end="{end}" x="{x(start):.2f}" y="{y + 2}" '
                f'width="{max(x(end) - x(start), 0.8):.2f}" height="{row - 6}" '
                f'fill="{TIMELINE_COLOURS[kind]}"><title>#{tq.track_id} {kind}: frames {start}'
                f"-{end - 1}</title></rect>"
            )
    axis_y = 10 + row * len(quality.tracks) + 4
    for f in np.linspace(0, n, 6):
        seconds = f / quality.fps if quality.fps > 0 else 0.0
        parts.append(
            f'<line x1="{x(f):.1f}" x2="{x(f):.1f}" y1="{axis_y - 4}" y2="{axis_y}" stroke="#555"/>'
            f'<text x="{x(f):.1f}" y="{axis_y + 14}" text-anchor="middle" font-size="11">'
            f"{int(round(f))} ({seconds:.1f} s)</text>"
        )
    parts.append("</svg>")
    legend = " ".join(
        f'<span class="key" style="background:{c}"></span>{html.escape(k)}'
        for k, c in TIMELINE_COLOURS.items()
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def rows_figure(
    quality: ClipQuality,
    values: Callable[[TrackQuality], np.ndarray | None],
    ylabel: str,
    zero_line: bool = False,
    shade_below: float | None = None,
    min_top: float | None = None,
    extra: Callable[[TrackQuality], np.ndarray | None] | None = None,
) -> str:
    """One row per person of a per-frame value over the clip's frames (NaN: no line).

    ``min_top``: y axes from 0 to at least this (so that noise around 0 does not fill the row);
    ``extra``: a second value per person, drawn dashed in grey.
    """
    tracks = [t for t in quality.tracks if values(t) is not None]
    row_in = 0.8 if len(tracks) <= 8 else 0.55
    fig = _figure(max(1.6, 0.5 + row_in * len(tracks)))
    axes = fig.subplots(max(len(tracks), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, tq in zip(axes, tracks, strict=False):
        v = np.asarray(values(tq), dtype=np.float64)
        full = np.full(quality.num_frames or int(tq.frames[-1]) + 1, np.nan)
        full[tq.frames] = v
        colour = rgb(tq.track_id)
        ax.plot(np.arange(len(full)), full, color=colour, lw=1.2)
        second = extra(tq) if extra is not None else None
        if second is not None:
            more = np.full(len(full), np.nan)
            more[tq.frames] = second
            ax.plot(np.arange(len(full)), more, color="#777", lw=1.0, ls="--")
            full = np.fmax(full, more)  # the y range covers both
        if shade_below is not None:
            ax.fill_between(
                np.arange(len(full)), full, shade_below, where=full < shade_below, color="#d0342c"
            )
        if zero_line:
            ax.axhline(0.0, color="#555", lw=0.8, ls="--")
        if min_top is not None:
            top = np.nanmax(full) if np.isfinite(full).any() else 0.0
            ax.set_ylim(0.0, max(min_top, float(top) * 1.1))
        ax.set_ylabel(f"#{tq.track_id}", rotation=0, ha="right", va="center", color=colour)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title(ylabel, fontsize=10, loc="left")
    axes[-1].set_xlabel("frame")
    axes[-1].set_xlim(0, max(quality.num_frames - 1, 1))
    return png_data_uri(fig)


def jitter_figure(ids: list[int], before: list[float], after: list[float]) -> str:
    """Bars: each person's mean joint acceleration before and after smoothing (run.json's)."""
    fig = _figure(2.6)
    ax = fig.subplots()
    pos = np.arange(len(ids))
    ax.bar(pos - 0.2, before, 0.4, color="#bbbbbb", label="before smoothing")
    ax.bar(pos + 0.2, after, 0.4, color=[rgb(i) for i in ids], label="after smoothing")
    for p, b, a in zip(pos, before, after, strict=True):
        ax.text(p - 0.2, b, f"{b:.2f}", ha="center", va="bottom", fontsize=7)
        ax.text(p + 0.2, a, f"{a:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(pos, [f"#{i}" for i in ids])
    ax.set_ylabel("m/s²")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return png_data_uri(fig)


def contacts_figure(quality: ClipQuality) -> str:
    """Per person, four rows (left/right ankle and foot): frames in contact with the floor."""
    tracks = [t for t in quality.tracks if t.contacts is not None]
    fig = _figure(max(1.6, 0.5 + 0.55 * len(tracks)))
    axes = fig.subplots(len(tracks), 1, sharex=True, squeeze=False)[:, 0]
    for ax, tq in zip(axes, tracks, strict=True):
        assert tq.contacts is not None
        image = np.full((4, quality.num_frames or int(tq.frames[-1]) + 1, 3), 0.95)
        image[:, tq.frames] = np.where(tq.contacts.T[..., None], rgb(tq.track_id), 0.85)
        ax.imshow(image, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(4), ["L ankle", "R ankle", "L toe", "R toe"], fontsize=6)
        ax.set_ylabel(f"#{tq.track_id}", rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("frame")
    return png_data_uri(fig)


def top_view_figure(quality: ClipQuality) -> str:
    """World seen from above: each person's pelvis path (start o, end >), the floor and the camera."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(7.0, 5.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    points = [quality.camera_xz[None]] + [t.root_xz for t in quality.tracks]
    xz = np.concatenate(points)
    lo, hi = np.floor(xz.min(axis=0)) - 1.0, np.ceil(xz.max(axis=0)) + 1.0
    ax.add_patch(Rectangle((lo[0], lo[1]), *(hi - lo), color="#eef3ea", zorder=0))
    for tq in quality.tracks:
        path = tq.root_xz
        ax.plot(path[:, 0], path[:, 1], color=rgb(tq.track_id), lw=1.5, label=f"#{tq.track_id}")
        ax.plot(*path[0], "o", color=rgb(tq.track_id), ms=5)
        ax.plot(*path[-1], ">", color=rgb(tq.track_id), ms=6)
    cam, fwd = quality.camera_xz, quality.camera_forward_xz
    reach = float(np.linalg.norm(hi - lo))
    half = np.radians(quality.hfov_deg / 2)
    for sign in (-1.0, 1.0):
        c, s = np.cos(sign * half), np.sin(sign * half)
        edge = np.array([c * fwd[0] - s * fwd[1], s * fwd[0] + c * fwd[1]])
        ax.plot(*np.stack([cam, cam + edge * reach]).T, color="#888", lw=0.8, ls=":")
    ax.plot(*cam, "s", color="black", ms=7)
    ax.annotate(
        "camera",
        (float(cam[0]), float(cam[1])),
        textcoords="offset points",
        xytext=(6, 6),
        fontsize=8,
    )
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()  # +z points to the camera: drawn downwards, the camera below
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m), towards the camera")
    ax.grid(alpha=0.4)
    if len(quality.tracks) <= 12:
        ax.legend(fontsize=7, loc="upper right")
    return png_data_uri(fig)
