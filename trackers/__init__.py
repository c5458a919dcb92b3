"""Identity tracking of detected people across video frames.

``ByteTracker`` (online, one ``update`` per frame) assigns detections to identities; ``gaps``
turns the frames where each identity was seen into an interpolation plan that bridges short
occlusions and drops tracks too short to be a person.
"""

from trackers.byte import ByteTracker, TrackedBox, box_iou, build_tracker
from trackers.gaps import GapFill, finish_tracks, plan_gaps

__all__ = [
    "ByteTracker",
    "GapFill",
    "TrackedBox",
    "box_iou",
    "build_tracker",
    "finish_tracks",
    "plan_gaps",
]
