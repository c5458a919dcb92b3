"""report.html and summary.html: a real clip through `mocap run` (tiny random model, the real YOLO
detector, the synthetic SMPL body), synthetic clips with a lost person, landmarks and foot contacts,
a batch, and a real headless Chromium opening the pages from disk.

Screenshots go to $MOCAP_SHOTS when set (else a temporary folder).
"""

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mocap.body.skeleton import track_joints
from mocap.cli import main
from mocap.motion import Motion, Track
from mocap.pipeline.preview import project
from mocap.pipeline.quality import clip_quality

CROWD = "walking_crowd_1080p"
SECTIONS = {"summary", "timeline", "jitter", "contacts", "ground", "reprojection", "bones",
            "topview", "frames", "notes"}  # fmt: skip
QUALITY_FIGURES = {
    "ground": ("penetration_cm_max", "penetration_frames"),
    "reprojection": ("reprojection_against", "reprojection_px_median", "reprojection_px_p95"),
    "bones": ("bone_length_variation_pct_max", "landmark_bone_variation_pct_max"),
    "timeline": ("frames", "interpolated_frames", "missing_frames"),
}


class Page(HTMLParser):
    """What the tests read back from a page: sections, figures' data, timeline bars, table cells."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.figures: dict[str, dict[str, Any]] = {}
        self.bars: list[dict[str, str]] = []
        self.thumbs: list[int] = []
        self.cells: list[dict[str, str]] = []  # per table row: data-key -> text
        self.text = text
        self._cell: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "figure" and "data-figure" in a:
            self.figures[a["data-figure"]] = {
                "values": json.loads(a["data-values"]),
                "segments": json.loads(a.get("data-segments", "null")),
            }
        elif tag == "figure" and "data-frame" in a:
            self.thumbs.append(int(a["data-frame"]))
        elif tag == "rect" and "data-kind" in a:
            self.bars.append(a)
        elif tag == "tr" and "data-row" in a:
            self.cells.append({})
        elif tag == "td":
            self._cell = a.get("data-key")
            self.cells[-1][self._cell or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self.cells[-1][self._cell] += data.strip()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    assert main(["init-checkpoint", "featup-deformable", "--size", "tiny", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def flags(tiny_checkpoint: Path, yolo_weights: Path) -> list[str]:
    return ["--checkpoint", str(tiny_checkpoint), "--detector", str(yolo_weights), "-q",
            "--formats", "npz", "--batch-size", "8"]  # fmt: skip


@pytest.fixture(scope="module")
def crowd(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, flags: list[str], smpl_dir: Path
) -> Path:
    """`mocap run` (report on by default) on every 3rd frame of the walking crowd, with SMPL."""
    out = tmp_path_factory.mktemp("run")
    video = shared_data / "videos" / f"{CROWD}.mp4"
    argv = ["run", str(video), "-o", str(out), "--stride", "3",
            "--smpl", str(smpl_dir / "SMPL_NEUTRAL.pkl"), *flags]  # fmt: skip
    assert main(argv) == 0
    return out / CROWD


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("MOCAP_SHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_real_clip_report_has_every_section_and_run_json_numbers(
    crowd: Path, smpl_dir: Path
) -> None:
    run = json.loads((crowd / "run.json").read_text())
    page = Page((crowd / "report.html").read_text())
    assert set(page.sections) == SECTIONS
    assert "report.html" in run["files"] and "report" in run["timings_s"]
    people = {t["id"]: t | q for t, q in zip(run["tracks"], run["quality"]["tracks"], strict=True)}
    assert len(people) >= 2
    jitter = page.figures["jitter"]["values"]
    for pid, p in people.items():
        assert jitter[str(pid)] == {
            "jitter_before_m_s2": p["jitter_before_m_s2"],
            "jitter_after_m_s2": p["jitter_after_m_s2"],
        }
        for name, keys in QUALITY_FIGURES.items():
            assert page.figures[name]["values"][str(pid)] == {k: p[k] for k in keys}, name
        row = next(c for c in page.cells if c["id"] == f"#{pid}")
        assert row["frames"] == str(p["frames"])
        assert row["jitter_after_m_s2"] == f"{p['jitter_after_m_s2']:.2f}"
        assert row["reprojection_px_median"] == f"{p['reprojection_px_median']:.2f}"
        # every frame tracked: one green bar over the whole clip
        assert page.figures["timeline"]["segments"][str(pid)] == [["tracked", 0, 11]]
        assert p["reprojection_against"] == "boxes" and p["reprojection_px_median"] > 0
    assert page.figures["topview"]["values"]["camera_height_m"] == run["quality"]["camera_height_m"]
    # the per-frame acceleration curve is the jitter run.json reports, frame by frame
    from mocap.body.smpl import load_body_model

    body = load_body_model(smpl_dir / "SMPL_NEUTRAL.pkl")
    quality = clip_quality(Motion.load(crowd / "motion.npz"), run["video"]["frames"], body)
    for tq in quality.tracks:
        mean = float(np.nanmean(tq.acceleration))
        assert mean == pytest.approx(people[tq.track_id]["jitter_after_m_s2"], abs=1e-3)
    contacts = page.figures["contacts"]["values"]  # mocap.contacts ran: its before/after numbers
    for pid, p in people.items():
        assert contacts[str(pid)]["contacts"] == p["contacts"] and p["contacts"]["before"]
        assert p["contact_share"] == p["contacts"]["before"]["contact_share"]  # same flags
    assert len(page.thumbs) >= 4 + 3  # spread frames, then the worst frames (reprojection, ...)
    assert "data:image/jpeg;base64," in page.text
    assert (crowd / "report.html").stat().st_size < 5e6


def test_no_report_flag(tmp_path: Path, shared_data: Path, flags: list[str]) -> None:
    video = shared_data / "videos" / "street_5frames_540p.mp4"
    assert main(["run", str(video), "-o", str(tmp_path), "--no-report", *flags]) == 0
    clip = tmp_path / "street_5frames_540p"
    run = json.loads((clip / "run.json").read_text())
    assert not (clip / "report.html").exists() and "quality" not in run
    assert run["settings"]["report"] is False
    assert main(["report", str(clip), "-q"]) == 0  # later: the same report, computed now
    page = Page((clip / "report.html").read_text())
    assert set(page.sections) == SECTIONS and "computed by mocap report" in page.text


def _walker(track_id: int, frames: np.ndarray, fps: float, x0: float) -> Track:
    """A person walking across at 1 m/s, 6 m from the camera, rest pose (built-in skeleton)."""
    n = len(frames)
    orient = np.tile(np.diag([1.0, -1.0, -1.0]), (n, 1, 1))  # upright in the camera frame
    transl = np.stack([x0 + frames / fps, np.full(n, 0.2), np.full(n, 6.0)], axis=1)
    t = Track(
        track_id=track_id, frames=frames.astype(np.int64), times=frames / fps,
        global_orient=orient.astype(np.float32),
        body_pose=np.tile(np.eye(3, dtype=np.float32), (n, 23, 1, 1)),
        betas=np.zeros((n, 10), np.float32), cam_crop=np.zeros((n, 3), np.float32),
        transl=transl.astype(np.float32), boxes=np.zeros((n, 4), np.float32),
        scores=np.full(n, 0.9, np.float32),
    )  # fmt: skip
    pts = project(track_joints(t), 1000.0, (1280, 720))
    t.boxes[:] = np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1)
    return t


def _write_clip(folder: Path, motion: Motion, frames: int) -> Path:
    """motion.npz and a run.json as `mocap run` writes them (without a quality block)."""
    folder.mkdir(parents=True, exist_ok=True)
    motion.save(folder / "motion.npz")
    tracks = [{"id": t.track_id, "frames": len(t), "interpolated_frames": int(np.sum(t.scores == 0)),
               "jitter_before_m_s2": 1.5, "jitter_after_m_s2": 0.5} for t in motion.tracks]  # fmt: skip
    run = {"source": str(folder / "gone.mp4"), "body": "built-in skeleton", "tracks": tracks,
           "video": {"frames": frames, "fps": motion.fps, "image_size": list(motion.image_size),
                     "focal_length": motion.focal_length}, "warnings": [], "failures": []}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def test_a_person_lost_for_20_frames_shows_the_gap(tmp_path: Path) -> None:
    fps, n = 30.0, 1800  # one minute
    lost = np.r_[0:600, 620:n]  # person 1 lost for frames 600..619
    one = _walker(1, lost, fps, -2.0)
    one.scores[100:105] = 0.0  # bridged over a short occlusion
    two = _walker(2, np.arange(300, n), fps, 0.5)
    clip = _write_clip(tmp_path / "clip", Motion([one, two], fps, (1280, 720), 1000.0), n)
    assert main(["report", str(clip), "-q"]) == 0
    page = Page((clip / "report.html").read_text())
    segments = page.figures["timeline"]["segments"]
    assert segments["1"] == [["tracked", 0, 100], ["interpolated", 100, 105],
                             ["tracked", 105, 600], ["missing", 600, 620], ["tracked", 620, n]]  # fmt: skip
    assert segments["2"] == [["tracked", 300, n]]
    gap = [b for b in page.bars if b["data-kind"] == "missing"]
    assert [(b["data-track"], b["data-start"], b["data-end"]) for b in gap] == [("1", "600", "620")]
    x = [float(b["x"]) for b in page.bars if b["data-track"] == "1"]
    assert x == sorted(x) and float(gap[0]["width"]) > 5  # visible: 20 of 1800 frames in 790 px
    assert page.figures["timeline"]["values"]["1"] == {
        "frames": len(lost),
        "interpolated_frames": 5,
        "missing_frames": 20,
    }
    assert "not available (video not found" in page.text
    assert "Foot contacts: not available" in page.text and "contacts" not in page.figures
    assert (clip / "report.html").stat().st_size < 5e6


def test_landmarks_and_foot_contacts(tmp_path: Path) -> None:
    """Landmarks at the projected joints give ~0 px error (10 px off: 10 px); contacts are shown,
    and a foot planted while the body moves slides at the body's speed."""
    from mocap.lite.landmarks import JOINT_LANDMARKS

    fps, frames = 30.0, np.arange(90)
    track = _walker(3, frames, fps, -1.0)
    pts = project(track_joints(track), 1000.0, (1280, 720))
    landmarks = np.zeros((len(frames), 33, 3), np.float32)
    for lm, joint in JOINT_LANDMARKS.items():
        landmarks[:, lm, :2], landmarks[:, lm, 2] = pts[:, joint], 0.9
    landmarks[45:, :, 0] += 10.0
    world = np.zeros((len(frames), 33, 4), np.float32)  # the model's 3D landmarks, 10 % larger
    for lm, joint in JOINT_LANDMARKS.items():  # in the second half
        world[:, lm, :3] = track_joints(track)[:, joint] * np.where(frames < 45, 1.0, 1.1)[:, None]
    contacts = np.zeros((len(frames), 4), np.float32)
    contacts[:, 0] = 1.0  # left ankle "in contact" the whole time: it slides 1 m/s = 33.3 mm/frame
    track.extras = {"keypoints2d": landmarks, "contacts": contacts, "landmarks3d": world}
    clip = _write_clip(tmp_path / "clip", Motion([track], fps, (1280, 720), 1000.0), len(frames))
    assert main(["report", str(clip), "-q"]) == 0
    quality = clip_quality(Motion.load(clip / "motion.npz"), len(frames))
    tq = quality.tracks[0]
    assert tq.reprojection_kind == "landmarks"
    assert np.nanmax(tq.reprojection[:45]) < 0.05 and np.allclose(
        tq.reprojection[45:], 10, atol=0.05
    )
    assert tq.summary["sliding_mm_per_frame"] == pytest.approx(1000 / fps, rel=1e-3)
    assert np.allclose(tq.sliding[1:], 1000 / fps, rtol=1e-3)
    assert tq.summary["contact_share"] == 1.0
    assert tq.summary["bone_length_variation_pct_max"] < 1e-3  # the skeleton is rigid
    assert tq.summary["landmark_bone_variation_pct_max"] == pytest.approx(
        0.05 / 1.05 * 100, rel=1e-3
    )
    page = Page((clip / "report.html").read_text())
    assert page.figures["contacts"]["values"] == {
        "3": {"contacts": None, "contact_share": 1.0, "sliding_mm_per_frame": pytest.approx(33.333)}
    }
    assert page.figures["reprojection"]["values"]["3"]["reprojection_against"] == "landmarks"


def test_batch_summary_page(
    tmp_path: Path, shared_data: Path, flags: list[str], crowd: Path, corrupt_video_bytes: bytes
) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in (CROWD, "street_5frames_540p"):
        (clips / f"{name}.mp4").symlink_to(shared_data / "videos" / f"{name}.mp4")
    (clips / "corrupt.mp4").write_bytes(corrupt_video_bytes)
    out = tmp_path / "out"
    assert main(["batch", str(clips), "-o", str(out), "--end", "0.2", *flags]) == 1  # corrupt
    page = Page((out / "summary.html").read_text())
    rows = {c["clip"]: c for c in page.cells}
    assert set(rows) == {CROWD, "street_5frames_540p", "corrupt"}
    assert rows["corrupt"]["status"] == "failed" and rows[CROWD]["status"] == "done"
    from mocap.pipeline.report_batch import clip_figures

    run = json.loads((out / CROWD / "run.json").read_text())
    worst = clip_figures(run)
    assert rows[CROWD]["jitter"] == f"{worst['jitter']:.2f}"
    assert rows[CROWD]["reprojection"] == f"{worst['reprojection']:.2f}"
    assert rows[CROWD]["frames"] == str(run["video"]["frames"])
    assert f'href="{CROWD}/report.html"' in page.text
    (out / "summary.html").unlink()
    assert main(["report", str(out), "-q"]) == 0  # the summary again, from the folder
    assert Page((out / "summary.html").read_text()).cells == page.cells


def test_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mocap: error: ") and "no mocap results" in err and "\n" not in err


# ---- a real browser ---------------------------------------------------------------------------


def _browser() -> Any:
    from browser import Browser, find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium (apt-get install chromium; .ci/run installs it)")
    return Browser()


def _not_blank(png: Path) -> None:
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01, f"{png} looks blank"


def test_browser_opens_the_clip_report_offline(crowd: Path, shots: Path) -> None:
    with _browser() as b:
        seen, session = b.open_page(
            crowd / "report.html",
            shots={"top": shots / "report_top.png", "full": shots / "report_full.png"},
        )
        assert seen.title.startswith("mocap report")
        assert seen.network_requests() == [] and seen.errors == []
        assert b.evaluate(session, "document.images.length") >= 12
        assert b.evaluate(session, "[...document.images].every(i => i.naturalWidth > 0)")
    _not_blank(shots / "report_top.png")
    _not_blank(shots / "report_full.png")


def test_browser_sorts_the_summary(tmp_path: Path, crowd: Path, shots: Path) -> None:
    out = crowd.parent
    for name, frames in (("b_clip", 7), ("a_clip", 30)):  # two more clips, reports not needed
        fps = 10.0
        _write_clip(out / name, Motion([_walker(1, np.arange(frames), fps, 0.0)], fps,
                                       (1280, 720), 1000.0), frames)  # fmt: skip
    assert main(["report", str(out), "-q"]) == 0
    with _browser() as b:
        seen, session = b.open_page(out / "summary.html", shots={"top": shots / "summary.png"})
        assert seen.network_requests() == [] and seen.errors == []
        names = "[...document.querySelectorAll('tbody tr')].map(r => r.cells[0].textContent)"
        frames = "[...document.querySelectorAll('tbody tr')].map(r => r.cells[3].textContent)"
        b.evaluate(session, "document.querySelectorAll('th')[3].click()")  # frames, ascending
        assert b.evaluate(session, frames) == ["7", "11", "30"]
        b.evaluate(session, "document.querySelectorAll('th')[3].click()")  # descending
        assert b.evaluate(session, frames) == ["30", "11", "7"]
        b.evaluate(session, "document.querySelectorAll('th')[0].click()")
        assert b.evaluate(session, names) == ["a_clip", "b_clip", CROWD]
    _not_blank(shots / "summary.png")
