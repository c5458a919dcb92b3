"""Identity tracking: synthetic trajectories with known answers, then the real walking-crowd clip."""

from pathlib import Path

import numpy as np
import pytest

from mocap.pipeline.detect import PersonDetector
from mocap.pipeline.video import open_video
from trackers import ByteTracker, GapFill, box_iou, build_tracker, finish_tracks, plan_gaps
from trackers.gaps import plan_gaps as plan_gaps_direct
from trackers.kalman import BoxKalman


def person(x: float, y: float = 100.0, w: float = 60.0, h: float = 160.0) -> np.ndarray:
    """(4,) box of a person whose top-left corner is at (x, y)."""
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def run(tracker: ByteTracker, frames: list[list[tuple[np.ndarray, float]]]) -> list[dict[int, int]]:
    """Feed (box, score) lists frame by frame; return track id -> detection index per frame."""
    out = []
    for f, dets in enumerate(frames):
        boxes = np.stack([b for b, _ in dets]) if dets else np.zeros((0, 4), np.float32)
        scores = np.array([s for _, s in dets], dtype=np.float32)
        out.append({t.track_id: t.detection_index for t in tracker.update(boxes, scores, f)})
    return out


# ---------------------------------------------------------------------------------------------
# Synthetic trajectories


def test_crossing_people_keep_their_ids() -> None:
    """Two people walk towards each other, overlap fully, and part; detection order shuffles."""
    rng = np.random.default_rng(0)
    frames = []
    for f in range(40):
        right = (person(20 + 8 * f, y=100), 0.9)  # walks right
        left = (person(340 - 8 * f, y=110, h=170), 0.8)  # walks left, slightly nearer
        frames.append([right, left] if rng.random() < 0.5 else [left, right])
    ids = run(build_tracker(), frames)
    assert all(len(frame) == 2 for frame in ids)
    # Identify each id by which way its boxes move: every id must move one way only.
    xs: dict[int, list[float]] = {}
    for f, frame in enumerate(ids):
        for tid, det in frame.items():
            xs.setdefault(tid, []).append(float(frames[f][det][0][0]))
    assert sorted(xs) == [1, 2]
    steps = {tid: np.diff(v) for tid, v in xs.items()}
    assert {tid: bool(np.all(s > 0) or np.all(s < 0)) for tid, s in steps.items()} == {
        1: True,
        2: True,
    }


def test_occlusion_is_bridged_with_the_same_id() -> None:
    frames: list[list[tuple[np.ndarray, float]]] = []
    truth = [person(50 + 10 * f) for f in range(30)]
    for f in range(30):
        hidden = 12 <= f < 18  # six frames behind a pillar
        frames.append([] if hidden else [(truth[f], 0.9)])
    ids = run(build_tracker(max_gap=10), frames)
    seen = [f for f, frame in enumerate(ids) if frame]
    assert {tid for frame in ids for tid in frame} == {1}
    assert seen == [f for f in range(30) if not 12 <= f < 18]

    plan = finish_tracks({1: seen}, max_gap=10, min_length=5)[1]
    assert plan.frames_out.tolist() == list(range(30))
    assert plan.num_filled == 6 and not plan.observed[12:18].any()
    boxes = plan.lerp(np.stack([truth[f] for f in seen]))
    np.testing.assert_allclose(boxes, np.stack(truth), atol=1e-4)  # linear motion: exact


def test_person_who_stops_while_hidden_is_found_where_last_seen() -> None:
    """Walking right, hidden for 8 frames, reappears standing where they vanished: the filter's
    extrapolation is 80 px off (more than a box width), the last seen box is not."""
    frames: list[list[tuple[np.ndarray, float]]] = [[(person(10 * f), 0.9)] for f in range(10)]
    frames += [[] for _ in range(8)]
    frames += [[(person(90), 0.9)] for _ in range(10)]
    ids = run(build_tracker(max_gap=10), frames)
    assert {tid for frame in ids for tid in frame} == {1}


def test_long_absence_is_not_bridged_and_ids_are_never_reused() -> None:
    """Gone longer than max_lost: the next person at that spot gets a new, larger id."""
    frames = [[(person(100), 0.9)] for _ in range(10)]
    frames += [[] for _ in range(20)]
    frames += [[(person(100), 0.9)] for _ in range(10)]
    ids = run(build_tracker(max_gap=5), frames)
    assert set(ids[0]) == {1}
    assert all(set(frame) == {2} for frame in ids[31:])  # confirmed on its second frame
    assert set(ids[30]) == {2}


def test_spurious_detection_dies_and_is_dropped() -> None:
    frames = [[(person(50 + 5 * f), 0.9)] for f in range(20)]
    frames[7] = frames[7] + [(person(600, y=400, w=40, h=40), 0.7)]  # one-frame false positive
    frames[8] = frames[8] + [(person(900, y=50, w=40, h=40), 0.7)]  # another, elsewhere
    tracker = build_tracker()
    ids = run(tracker, frames)
    spurious = sorted({tid for frame in ids for tid in frame} - {1})
    assert spurious == [2, 3]
    assert tracker.live_ids == [1]  # tentative tracks die at their first miss
    frames_by_id = {
        tid: [f for f, frame in enumerate(ids) if tid in frame] for tid in (1, *spurious)
    }
    plans = finish_tracks(frames_by_id, max_gap=10, min_length=5)
    assert list(plans) == [1] and len(plans[1]) == 20


def test_low_score_detections_extend_but_never_start_tracks() -> None:
    frames = []
    for f in range(20):
        score = 0.2 if 8 <= f < 14 else 0.9  # half hidden: the detector is unsure
        dets = [(person(50 + 6 * f), score)]
        dets.append((person(700, y=300, w=50, h=50), 0.25))  # clutter that is always there
        frames.append(dets)
    ids = run(build_tracker(), frames)
    assert all(frame == {1: 0} for frame in ids)


def test_frame_gaps_from_stride_predict_forward() -> None:
    """Frames 0, 3, 6, ... (stride 3): the filter moves the box across the skipped frames."""
    tracker = build_tracker()
    for k, f in enumerate(range(0, 60, 3)):
        out = tracker.update(person(30 * k)[None], np.array([0.9]), f)
        assert [t.track_id for t in out] == [1]
    with pytest.raises(ValueError, match="does not follow"):
        tracker.update(np.zeros((0, 4)), np.zeros(0), 57)


def test_kalman_follows_constant_velocity() -> None:
    kalman = BoxKalman.start(person(0))
    for f in range(1, 15):
        kalman.predict()
        kalman.update(person(12 * f))
    kalman.predict(5)
    assert box_iou(kalman.box[None], person(12 * 19)[None])[0, 0] > 0.9
    assert kalman.mean[4] == pytest.approx(12, abs=0.5)


def test_update_output_fields() -> None:
    tracker = build_tracker()
    boxes = np.stack([person(0), person(300)])
    out = tracker.update(boxes, np.array([0.5, 0.95]), 0)
    assert [(t.track_id, t.detection_index, round(t.score, 2)) for t in out] == [
        (1, 0, 0.5),
        (2, 1, 0.95),
    ]
    np.testing.assert_array_equal(out[1].box, boxes[1])
    assert tracker.update(np.zeros((0, 4)), np.zeros(0), 1) == []


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(a, b), np.array([[50 / 150, 0], [0, 0]]))


def test_plan_gaps_details() -> None:
    assert plan_gaps is plan_gaps_direct
    plan = plan_gaps([7, 2, 3, 20, 4], max_gap=3)  # unsorted input; hole 4->7 bridged, 7->20 not
    assert isinstance(plan, GapFill)
    assert plan.frames_out.tolist() == [2, 3, 4, 5, 6, 7, 20]
    assert plan.observed.tolist() == [True, True, True, False, False, True, True]
    values = np.array([70.0, 20.0, 30.0, 200.0, 40.0])  # value = 10 * frame, in the given order
    np.testing.assert_allclose(plan.lerp(values), 10.0 * plan.frames_out)
    # Rotations use the same lo / hi / alpha (slerp); at observed frames alpha is 0 and lo == hi.
    assert np.all(plan.lo[plan.observed] == plan.hi[plan.observed])
    np.testing.assert_allclose(plan.alpha[~plan.observed], [1 / 3, 2 / 3])
    assert plan.lerp(np.arange(5)).dtype == np.float64
    with pytest.raises(ValueError, match="observed samples"):
        plan.lerp(np.zeros(4))
    with pytest.raises(ValueError, match="twice"):
        plan_gaps([1, 1], max_gap=3)
    assert plan_gaps([5], max_gap=3).frames_out.tolist() == [5]


# ---------------------------------------------------------------------------------------------
# The real walking-crowd clip with the real detector (detector run once per module)


@pytest.fixture(scope="module")
def crowd(shared_data: Path, yolo_weights: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes, scores) per frame of walking_crowd_1080p.mp4, low floor for the second stage."""
    detector = PersonDetector(yolo_weights, conf=0.1, device="cpu")
    frames = [f.image for f in open_video(shared_data / "videos" / "walking_crowd_1080p.mp4")]
    out = []
    for i in range(0, len(frames), 8):
        out += [(d.boxes, d.scores) for d in detector.detect(frames[i : i + 8])]
    return out


def track_clip(
    detections: list[tuple[np.ndarray, np.ndarray]], **kwargs: int
) -> dict[int, dict[int, np.ndarray]]:
    """track id -> {frame: box}."""
    tracker = build_tracker(**kwargs)
    tracks: dict[int, dict[int, np.ndarray]] = {}
    for f, (boxes, scores) in enumerate(detections):
        for t in tracker.update(boxes, scores, f):
            tracks.setdefault(t.track_id, {})[f] = t.box
    return tracks


def test_real_crowd_ids_are_stable(crowd: list[tuple[np.ndarray, np.ndarray]]) -> None:
    assert len(crowd) == 32
    tracks = track_clip(crowd)
    long = {tid: boxes for tid, boxes in tracks.items() if len(boxes) >= 16}
    # Three people walk in full view for the whole clip: one identity each, every frame.
    assert len(long) >= 3
    full = [tid for tid, boxes in long.items() if sorted(boxes) == list(range(32))]
    assert len(full) >= 3
    for tid, boxes in long.items():
        seq = np.stack([boxes[f] for f in sorted(boxes)])
        step_iou = [box_iou(a[None], b[None])[0, 0] for a, b in zip(seq[:-1], seq[1:], strict=True)]
        assert min(step_iou) > 0.6, f"track {tid} jumps"
    # Distinct people: no two identities on the same box in any frame.
    for f in range(32):
        here = [b[f] for b in long.values() if f in b]
        iou = box_iou(np.stack(here), np.stack(here))
        np.fill_diagonal(iou, 0)
        assert iou.max() < 0.3
    # Clutter the detector sees at low confidence (a fire extinguisher, shelves) starts no track.
    assert all(len(boxes) >= 16 for boxes in tracks.values())
    plans = finish_tracks({t: sorted(b) for t, b in tracks.items()}, max_gap=10, min_length=8)
    assert len(plans) == len(long) and all(p.num_filled == 0 for p in plans.values())


def test_real_crowd_occlusion_keeps_identity(crowd: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Hide one real person for frames 10-15: same id afterwards, and the bridged boxes are close
    to where the detector actually saw them."""
    reference = track_clip(crowd)
    victim = min(reference)  # the first identity, seen in all 32 frames
    assert len(reference[victim]) == 32
    hidden = range(10, 16)
    edited = []
    for f, (boxes, scores) in enumerate(crowd):
        if f in hidden:
            keep = box_iou(boxes, reference[victim][f][None])[:, 0] < 0.5
            boxes, scores = boxes[keep], scores[keep]
        edited.append((boxes, scores))
    tracks = track_clip(edited, max_gap=10)
    after = [
        tid
        for tid, b in tracks.items()
        if 20 in b and box_iou(b[20][None], reference[victim][20][None])[0, 0] > 0.9
    ]
    assert after == [victim]
    seen = sorted(tracks[victim])
    assert seen == [f for f in range(32) if f not in hidden]
    plan = plan_gaps(seen, max_gap=10)
    bridged = plan.lerp(np.stack([tracks[victim][f] for f in seen]))
    for f in hidden:
        assert box_iou(bridged[f][None], reference[victim][f][None])[0, 0] > 0.7


def test_coast_predicts_boxes_between_detections_without_changing_the_tracker() -> None:
    tracker = ByteTracker()
    box = np.array([[100.0, 100.0, 150.0, 250.0]], np.float32)
    for f in range(6):  # moving right 10 px per frame
        tracker.update(box + [10.0 * f, 0, 10.0 * f, 0], np.array([0.9], np.float32), f)
    coasted = tracker.coast(7)
    assert [t.track_id for t in coasted] == [1]
    assert np.allclose(coasted[0].box, box[0] + [70.0, 0, 70.0, 0], atol=6.0)  # Kalman lag
    assert coasted[0].score == pytest.approx(0.9)
    assert tracker.coast(5) == []  # only forward of the last detected frame
    again = tracker.update(box + [80.0, 0, 80.0, 0], np.array([0.9], np.float32), 8)
    assert [t.track_id for t in again] == [1]  # the detection at frame 8 still matches
