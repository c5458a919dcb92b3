"""``OUT/summary.html``: one row per clip of an output folder, sortable in the browser.

Rows come from ``OUT/manifest.json`` (written by `mocap batch`: status, seconds, error) and from
every clip folder with a run.json (frames, people and the worst quality figures of its people, from
run.json's ``quality`` block). Clicking a column header sorts by it (a few lines of inline script;
nothing is fetched). Each clip name links to its ``report.html`` when there is one.
"""

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mocap.pipeline.report_page import page, section, table

if TYPE_CHECKING:
    from mocap.pipeline.config import RunSettings

log = logging.getLogger("mocap")
SUMMARY = "summary.html"

# (key, header, people's field, how the clip's value is made of its people's)
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("jitter", "worst jitter after (m/s²)", "jitter_after_m_s2", "max"),
    ("reprojection", "worst reprojection p95 (px)", "reprojection_px_p95", "max"),
    ("penetration", "deepest penetration (cm)", "penetration_cm_max", "max"),
    ("bones", "bone-length variation (%)", "bone_length_variation_pct_max", "max"),
    ("sliding", "worst foot sliding (mm/frame)", "foot_sliding_mm_per_frame", "max"),
    ("interpolated", "interpolated frames", "interpolated_frames", "sum"),
    ("missing", "missing frames", "missing_frames", "sum"),
)
SORT_SCRIPT = """
document.querySelectorAll("th.sortable").forEach((th, col) => th.addEventListener("click", () => {
  const table = th.closest("table"), body = table.tBodies[0];
  const asc = th.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  const key = row => {
    const text = row.cells[col].textContent.trim();
    const num = Number(text);
    return text === "" || text === "n/a" ? null : isNaN(num) ? text.toLowerCase() : num;
  };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);  // blanks last
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  rows.forEach(r => body.appendChild(r));
}));
"""


@dataclass
class ClipRow:
    """One clip of the summary."""

    name: str
    status: str
    people: int | None = None
    frames: int | None = None
    seconds: float | None = None
    note: str = ""
    report: str = ""  # relative link to the clip's report.html, "" when there is none
    worst: dict[str, float | None] = field(default_factory=dict)  # COLUMNS key -> value


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def clip_figures(run: dict[str, Any]) -> dict[str, float | None]:
    """The clip's value of every ``COLUMNS`` figure, from its run.json (None when not recorded)."""
    from mocap.pipeline.quality import person_rows

    people = person_rows(run)
    out: dict[str, float | None] = {}
    for key, _, name, how in COLUMNS:
        values = [p[name] for p in people if isinstance(p.get(name), int | float)]
        out[key] = (max(values) if how == "max" else sum(values)) if values else None
    return out


def _with_quality(folder: Path, run: dict[str, Any]) -> dict[str, Any]:
    """run.json of an earlier run (no ``quality`` block) with the block computed now, as its
    report computes it; unchanged when motion.npz cannot be read."""
    from mocap.errors import MocapError
    from mocap.motion import Motion
    from mocap.pipeline.quality import clip_quality
    from mocap.pipeline.report import run_body

    try:
        motion = Motion.load(folder / "motion.npz")
        quality = clip_quality(motion, run.get("video", {}).get("frames"), run_body(folder))
    except MocapError as exc:
        log.warning("%s: no quality figures (%s)", folder.name, exc)
        return run
    return run | {"quality": quality.summary()}


def collect_rows(out: Path) -> list[ClipRow]:
    """Rows of the manifest (in its order), then clip folders it does not list (by name)."""
    manifest = _read_json(out / "manifest.json") or {}
    rows: dict[str, ClipRow] = {}
    for clip in manifest.get("clips", []):
        rows[clip["name"]] = ClipRow(
            name=clip["name"],
            status=clip.get("status", ""),
            people=clip.get("people"),
            frames=clip.get("frames"),
            seconds=clip.get("seconds"),
            note=clip.get("error", ""),
        )
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        run = _read_json(folder / "run.json")
        if run is None:
            continue
        done = "done" if (folder / ".done").is_file() else "unfinished"
        row = rows.setdefault(folder.name, ClipRow(name=folder.name, status=done))
        row.frames = row.frames if row.frames is not None else run.get("video", {}).get("frames")
        row.people = row.people if row.people is not None else len(run.get("tracks", []))
        row.worst = clip_figures(run if "quality" in run else _with_quality(folder, run))
        if (folder / "report.html").is_file():
            row.report = f"{html.escape(folder.name)}/report.html"
    return list(rows.values())


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def render_summary(out: Path, rows: list[ClipRow]) -> str:
    headers = ["clip", "status", "people", "frames", "seconds", *(c[1] for c in COLUMNS), "note"]
    body_rows = []
    for r in rows:
        name = html.escape(r.name)
        link = f'<a href="{r.report}">{name}</a>' if r.report else name
        cells = [
            ("clip", link),
            ("status", f'<span class="status-{html.escape(r.status)}">{html.escape(r.status)}</span>'),
            ("people", _cell(r.people)),
            ("frames", _cell(r.frames)),
            ("seconds", _cell(r.seconds, 1)),
            *((key, _cell(r.worst.get(key))) for key, *_ in COLUMNS),
            ("note", html.escape(r.note)),
        ]  # fmt: skip
        body_rows.append((r.name, cells))
    counts = ", ".join(
        f"{sum(r.status == s for r in rows)} {s}" for s in dict.fromkeys(r.status for r in rows)
    )
    intro = (
        f"<p class='caption'>{len(rows)} clips ({html.escape(counts)}). Click a column to sort; "
        "each clip's figure is the worst of its people (see the clip's report for what each means "
        "and what is good). n/a: not recorded.</p>"
    )
    inner = intro + f"<div class='wide'>{table(headers, body_rows, sortable=True)}</div>"
    title = f"mocap batch summary: {html.escape(out.resolve().name)}"
    return page(title, section("clips", "Clips", inner), script=SORT_SCRIPT)


def write_summary(out: Path) -> Path:
    """Write ``out/summary.html`` (atomically) for the clips in ``out``; returns its path."""
    from mocap.paths import write_text_atomic

    out = Path(out)
    return write_text_atomic(out / SUMMARY, render_summary(out, collect_rows(out)))


def write_batch_report(out: Path, settings: "RunSettings") -> Path | None:
    """`mocap batch`'s hook: the summary page unless ``--no-report``; a failure is a warning."""
    if not settings.report:
        return None
    try:
        path = write_summary(out)
    except Exception as exc:  # the summary page must never fail a finished batch
        log.debug("summary page failed", exc_info=True)
        log.warning("%s not written (%s); retry with `mocap report %s`", SUMMARY, exc, out)
        return None
    log.info("summary page: %s", path)
    return path
