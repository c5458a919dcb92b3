"""``report.html``: the quality of one clip at a glance, a single static page that opens offline.

Written by `mocap run` (unless ``--no-report``) next to run.json, and by `mocap report OUT/CLIP`
for earlier runs. Everything is inside the file (figures as ``data:`` PNGs and inline SVG, no
script, a Content-Security-Policy that forbids any fetch), so it can be mailed or archived alone.

Sections (element ids): ``summary`` (the run and one row per person), ``timeline``, ``jitter``,
``contacts``, ``ground``, ``reprojection``, ``bones``, ``topview``, ``frames`` (contact sheet) and
``notes``. Each figure is a ``<figure data-figure=NAME data-values=JSON>`` whose values are the
numbers it shows, from run.json (``tracks`` and the ``quality`` block that `mocap run` writes).
"""

import html
import json
import logging
import time
from pathlib import Path
from typing import Any

from mocap.errors import MocapError
from mocap.motion import Motion
from mocap.pipeline.quality import ClipQuality, clip_quality, person_rows
from mocap.pipeline.report_figures import AGAINST, CAPTIONS, hex_colour
from mocap.pipeline.report_page import figure, page, section, table

log = logging.getLogger("mocap")
REPORT = "report.html"
FOOT_METRICS = (  # run.json's tracks[].contacts.before / .after (mocap.contacts.FootMetrics)
    ("sliding_mm_per_frame", "sliding (mm/frame)"),
    ("penetration_mm", "penetration (mm)"),
    ("floating_mm", "floating (mm)"),
    ("contact_share", "contact share"),
)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def _summary(run: dict[str, Any], people: list[dict[str, Any]], computed: bool) -> str:
    video = run.get("video", {})
    model = run.get("model", {})
    facts = [
        ("source", run.get("source", "")),
        ("created", run.get("created", "")),
        ("model", ", ".join(f"{k}: {v}" for k, v in model.items()) if model else ""),
        ("body", run.get("body", "")),
        ("frames", f"{video.get('frames')} at {_fmt(video.get('fps'))} fps"),
        ("image", "x".join(str(v) for v in video.get("image_size", []))),
        ("focal length", f"{_fmt(video.get('focal_length'), 0)} px"),
        ("speed", f"{_fmt(run.get('frames_per_s'))} frames/s"),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts)
    columns = [
        ("id", "person"), ("frames", "frames"), ("interpolated_frames", "interpolated"),
        ("missing_frames", "missing"), ("jitter_before_m_s2", "jitter before (m/s²)"),
        ("jitter_after_m_s2", "jitter after (m/s²)"),
        ("reprojection_px_median", "reprojection median (px)"),
        ("reprojection_px_p95", "reprojection p95 (px)"),
        ("penetration_cm_max", "deepest penetration (cm)"),
        ("penetration_frames", "frames < -2 cm"),
        ("bone_length_variation_pct_max", "bone-length variation (%)"),
        ("foot_sliding_mm_per_frame", "foot sliding (mm/frame)"),
    ]  # fmt: skip
    rows = []
    for p in people:
        cells = [
            (
                key,
                f'<b style="color:{hex_colour(p["id"])}">#{p["id"]}</b>'
                if key == "id"
                else _fmt(p.get(key)),
            )
            for key, _ in columns
        ]
        rows.append((p["id"], cells))
    note = (
        "<p class='note'>run.json has no quality block (an earlier mocap); these figures were "
        "computed by mocap report.</p>"
        if computed
        else ""
    )
    return section(
        "summary",
        "Summary",
        f"<dl>{dl}</dl><div class='scroll'>{table([c for _, c in columns], rows)}</div>{note}",
    )


def _values(people: list[dict[str, Any]], *keys: str) -> dict[str, dict[str, Any]]:
    return {str(p["id"]): {k: p.get(k) for k in keys} for p in people}


def render_report(
    run: dict[str, Any], motion: Motion, quality: ClipQuality, frames_html: str, computed: bool
) -> str:
    """The whole page as a string (see the module docstring for its sections)."""
    from mocap.pipeline import report_figures as fig

    q = run.get("quality") or quality.summary()
    people = person_rows(run, q)
    ids = [p["id"] for p in people]
    parts = [_summary(run, people, computed)]
    segments = {str(t.track_id): [list(s) for s in t.segments] for t in quality.tracks}
    counts = _values(people, "frames", "interpolated_frames", "missing_frames")
    parts.append(
        section(
            "timeline",
            "Timeline: tracked, interpolated and missing frames",
            figure("timeline", fig.timeline_svg(quality), CAPTIONS["timeline"], counts, segments),
        )
    )
    jitter = _values(people, "jitter_before_m_s2", "jitter_after_m_s2")
    numbers = "; ".join(
        f"#{i}: {_fmt(v['jitter_before_m_s2'])} → {_fmt(v['jitter_after_m_s2'])} m/s²"
        for i, v in jitter.items()
    )
    bars = fig.jitter_figure(
        ids,
        [p.get("jitter_before_m_s2") or 0.0 for p in people],
        [p.get("jitter_after_m_s2") or 0.0 for p in people],
    )
    curve = fig.rows_figure(quality, lambda t: t.acceleration, "joint acceleration (m/s²)")
    parts.append(
        section(
            "jitter",
            "Jitter before and after smoothing",
            figure("jitter", f'<img alt="jitter" src="{bars}"><img alt="acceleration" src="{curve}">',
                   CAPTIONS["jitter"] + f" {numbers}.", jitter),
        )
    )  # fmt: skip
    parts.append(section("contacts", "Foot contacts and sliding", _contacts(people, quality)))
    ground = _values(people, "penetration_cm_max", "penetration_frames")
    img = fig.rows_figure(
        quality, lambda t: t.sole_height * 100, "lowest sole above the floor (cm)", True, 0.0
    )
    parts.append(
        section("ground", "Ground penetration",
                figure("ground", f'<img alt="ground" src="{img}">', CAPTIONS["ground"], ground))
    )  # fmt: skip
    kinds = sorted({str(p.get("reprojection_against", "boxes")) for p in people}) or ["boxes"]
    against = " / ".join(AGAINST.get(k, k) for k in kinds)
    reproj = _values(
        people, "reprojection_against", "reprojection_px_median", "reprojection_px_p95"
    )
    img = fig.rows_figure(quality, lambda t: t.reprojection, "2D reprojection error (px)")
    parts.append(
        section("reprojection", "2D reprojection error",
                figure("reprojection", f'<img alt="reprojection" src="{img}">',
                       CAPTIONS["reprojection"].format(against=against), reproj))
    )  # fmt: skip
    bones = _values(people, "bone_length_variation_pct_max", "landmark_bone_variation_pct_max")
    img = fig.rows_figure(
        quality,
        lambda t: t.bone_deviation,
        "largest bone-length change (%): the animation's skeleton"
        + (", dashed: the model's raw 3D landmarks" if _has_landmarks(quality) else ""),
        min_top=2.0,
        extra=lambda t: t.landmark_deviation,
    )
    caption = CAPTIONS["bones"] + (CAPTIONS["landmark_bones"] if _has_landmarks(quality) else "")
    caption += (
        " "
        + "; ".join(
            f"#{i}: {_fmt(v['bone_length_variation_pct_max'])} %"
            + (
                f" (landmarks {_fmt(v['landmark_bone_variation_pct_max'])} %)"
                if v["landmark_bone_variation_pct_max"] is not None
                else ""
            )
            for i, v in bones.items()
        )
        + "."
    )
    parts.append(
        section("bones", "Bone-length stability",
                figure("bones", f'<img alt="bone lengths" src="{img}">', caption, bones))
    )  # fmt: skip
    top = {"camera_height_m": q.get("camera_height_m")}
    img = fig.top_view_figure(quality)
    caption = CAPTIONS["topview"] + f" Camera {_fmt(q.get('camera_height_m'))} m above the floor."
    parts.append(
        section("topview", "Top view: world trajectories and floor",
                figure("topview", f'<img alt="top view" src="{img}">', caption, top))
    )  # fmt: skip
    parts.append(section("frames", "Contact sheet", frames_html))
    notes = [*run.get("warnings", []), *run.get("failures", [])]  # the run's own (world notes too)
    items = (
        "".join(f"<li>{html.escape(str(n))}</li>" for n in dict.fromkeys(notes)) or "<li>none</li>"
    )
    parts.append(section("notes", "Notes and warnings", f"<ul>{items}</ul>"))
    title = f"mocap report: {Path(str(run.get('source', 'clip'))).name}"
    return page(html.escape(title), "\n".join(parts))


def _has_landmarks(quality: ClipQuality) -> bool:
    return any(t.landmark_deviation is not None for t in quality.tracks)


def _contacts(people: list[dict[str, Any]], quality: ClipQuality) -> str:
    """The foot contacts (figure and the foot-locking stage's numbers), or "not available"."""
    from mocap.pipeline import report_figures as fig

    if not any(t.contacts is not None for t in quality.tracks):
        return (
            "<p class='na'>Foot contacts: not available (this run recorded no foot contacts).</p>"
        )
    keys = ("contacts", "contact_share", "sliding_mm_per_frame")
    values = {str(p["id"]): {k: p.get(k) for k in keys} for p in people}
    rows = []
    for p in people:
        feet = p.get("contacts") or {}
        before, after = feet.get("before") or {}, feet.get("after")
        cells = [("id", f'<b style="color:{hex_colour(p["id"])}">#{p["id"]}</b>')]
        cells.append(("locked", "n/a" if not feet else "yes" if after else "no"))
        for key, _ in FOOT_METRICS:
            shown = _fmt(before.get(key))
            cells.append((key, f"{shown} → {_fmt(after.get(key))}" if after else shown))
        rows.append((p["id"], cells))
    headers = ["person", "locked", *(f"{h}: before → after locking" for _, h in FOOT_METRICS)]
    sliding = fig.rows_figure(
        quality,
        lambda t: t.sliding,
        "sliding of the foot points in contact (mm/frame)",
        min_top=5.0,
    )
    body = (
        table(headers, rows)
        + f'<img alt="contacts" src="{fig.contacts_figure(quality)}">'
        + f'<img alt="sliding" src="{sliding}">'
    )
    return figure("contacts", body, CAPTIONS["contacts"], values)


def _frames_html(video: Path | None, motion: Motion, quality: ClipQuality, body: Any) -> str:
    from mocap.pipeline.contact_sheet import contact_sheet

    if video is None or not video.exists():
        where = html.escape(str(video))
        return (
            f"<p class='na'>Contact sheet: not available (video not found at {where}; pass "
            "--video to mocap report).</p>"
        )
    try:
        thumbs = contact_sheet(video, motion, quality, body)
    except MocapError as exc:
        return f"<p class='na'>Contact sheet: not available ({html.escape(str(exc))}).</p>"
    cells = "".join(
        f'<figure class="thumb" data-frame="{t.frame}"><img alt="frame {t.frame}" src="{t.uri}">'
        f"<figcaption>{html.escape(t.caption)}</figcaption></figure>"
        for t in thumbs
    )
    return f"<p class='caption'>{CAPTIONS['frames']}</p><div class='sheet'>{cells}</div>"


def read_run(clip_dir: Path) -> dict[str, Any]:
    """The clip's run.json; MocapError when it is missing or broken."""
    path = Path(clip_dir) / "run.json"
    if not path.is_file():
        raise MocapError(f"{clip_dir} has no run.json; give a clip folder written by mocap run")
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, OSError) as exc:
        raise MocapError(f"cannot read {path} ({exc}); re-run the clip") from None


def run_body(clip_dir: Path, smpl: str | None = None) -> Any | None:
    """The body model for a later report of ``clip_dir``: ``smpl`` when given, else the run's SMPL
    model when it had one (its --smpl, $MOCAP_SMPL or the cache), else None (built-in skeleton)."""
    from mocap.body.smpl import load_body_model

    if smpl:
        return load_body_model(smpl, required=True)
    run = read_run(clip_dir)
    if not str(run.get("body", "")).startswith("SMPL"):
        return None
    try:
        body = load_body_model(run.get("settings", {}).get("smpl"))
    except MocapError as exc:
        body, reason = None, str(exc)
    else:
        reason = "not found"
    if body is None:
        log.warning("the run's SMPL model: %s; figures use the built-in skeleton (--smpl)", reason)
    return body


def write_clip_report(
    clip_dir: Path,
    run: dict[str, Any] | None = None,
    motion: Motion | None = None,
    quality: ClipQuality | None = None,
    body: Any | None = None,
    video: Path | None = None,
) -> Path:
    """Write ``clip_dir/report.html`` (atomically) from its run.json and motion.npz; returns it.

    Arguments:
        run, motion, quality: already in memory (during `mocap run`); read / computed when None.
        body: the run's body model (SMPL joints and meshes), or None for the built-in skeleton.
        video: the clip, for the contact sheet; default run.json's ``source``.
    Raises:
        MocapError: run.json or motion.npz missing or unreadable.
    """
    from mocap.paths import write_text_atomic

    clip_dir = Path(clip_dir)
    run = run if run is not None else read_run(clip_dir)
    motion = motion or Motion.load(clip_dir / "motion.npz")
    computed = "quality" not in run
    if quality is None:
        quality = clip_quality(motion, run.get("video", {}).get("frames"), body)
    if video is None and run.get("source"):
        video = Path(run["source"])
    page = render_report(run, motion, quality, _frames_html(video, motion, quality, body), computed)
    return write_text_atomic(clip_dir / REPORT, page)


def add_report(staging: Path, video: Path, motion: Motion, data: dict[str, Any], body: Any) -> None:
    """`mocap run`'s hook, called with run.json's ``data`` before it is written: adds the
    ``quality`` block and writes report.html. A failing report is a warning, never a failed clip."""
    t0 = time.perf_counter()
    try:  # the motion as saved: with what write_outputs added (foot contacts, camera path)
        saved = staging / "motion.npz"
        motion = Motion.load(saved) if saved.is_file() else motion
        quality = clip_quality(motion, data["video"]["frames"], body)
        data["quality"] = quality.summary()
        write_clip_report(staging, data, motion, quality, body, video)
    except Exception as exc:  # the report must never cost the clip its animation files
        log.debug("report failed", exc_info=True)
        line = f"report.html not written ({type(exc).__name__}: {exc}); retry with `mocap report`"
        log.warning("%s", line)
        data["warnings"].append(line)
        return
    data["files"] = sorted([*data["files"], REPORT])
    data["timings_s"]["report"] = round(time.perf_counter() - t0, 4)
