"""Bone maps: which bone of a character carries each joint of the source (SMPL) skeleton.

A map is data, not code: JSON with the 24 SMPL joint names as keys and the character's bone
names as values (``exporters/bonemaps/*.json`` are the presets)::

    {"name": "mixamo", "description": "...",
     "bones": {"pelvis": "mixamorig:Hips", "spine3": ["spine_05", "spine_03"], "left_hand": null},
     "optional": ["left_foot"], "humanoid": false}

A value is a bone name, a list of alternatives (the first the rig has wins) or null (unmapped).
Names match exactly, else without a ``namespace:`` prefix and case-insensitively (``mixamorig1:Hips``
and ``Hips`` both match ``mixamorig:Hips``). With ``"humanoid": true`` (the VRM preset) names are
VRM humanoid bone names, looked up first in the file's own humanoid table (node names).

``auto`` tries every preset and takes the one that finds the most joints; a rig no preset fits is
matched by name patterns (side tokens such as ``L``/``left``/``_l``, part words such as ``thigh``,
``upleg``, ``forearm``; twist, IK, helper and finger bones never match), the spine joints along the
chain from the hips to the neck. Joints no bone carries stay unmapped; bones no joint names (twist,
fingers, props) stay at rest.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocap.body.joints import SMPL_JOINT_NAMES
from mocap.errors import MocapError
from mocap.paths import atomic_output

PRESET_DIR = Path(__file__).resolve().with_name("bonemaps")
NEEDED = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
MIN_AUTO_JOINTS = 14  # a preset (or the name patterns) must find this many joints to be used

_SKIP = {
    "twist", "roll", "ik", "pole", "target", "mch", "org", "wgt", "ctrl", "end", "nub", "tip",
    "helper", "corrective", "jiggle", "breast", "tail", "hair", "skirt", "weapon", "prop",
    "socket", "tweak", "fk", "offset", "attach", "aux", "master", "bend", "ref", "null",
    "thumb", "index", "middle", "ring", "pinky", "finger", "palm", "metacarpal", "eye", "jaw",
}  # fmt: skip
# Limb parts by side: patterns in order of preference (a tuple means all of its words).
_LIMB: dict[str, list[tuple[str, ...]]] = {
    "elbow": [("forearm",), ("fore", "arm"), ("lowerarm",), ("lower", "arm"), ("elbow",)],
    "shoulder": [("upperarm",), ("upper", "arm"), ("uparm",), ("up", "arm"), ("arm",)],
    "collar": [("clavicle",), ("collar",), ("shoulder",)],
    "wrist": [("hand",), ("wrist",)],
    "foot": [("toebase",), ("toe", "base"), ("toes",), ("toe",), ("ball",)],
    "ankle": [("foot",), ("ankle",)],
    "hip": [("thigh",), ("upleg",), ("up", "leg"), ("upperleg",), ("upper", "leg"), ("hip",)],
    "knee": [("calf",), ("shin",), ("lowerleg",), ("lower", "leg"), ("knee",), ("leg",)],
}
_CENTRE: dict[str, list[tuple[str, ...]]] = {
    "pelvis": [("hips",), ("pelvis",), ("hip",)],
    "neck": [("neck",)],
    "head": [("head",)],
}
_SPINE_WORDS = {"spine", "chest", "torso", "abdomen", "back", "upperchest"}


@dataclass
class BoneMap:
    """The bones of one rig that carry the source joints."""

    name: str  # preset name, map file name, or "names" (matched by name patterns)
    bones: dict[str, str]  # SMPL joint -> bone name on this rig (mapped joints only)
    how: str = ""  # one line saying what was matched
    notes: list[str] = field(default_factory=list)

    def save(self, path: str | Path, rig: str = "") -> Path:
        """Write the map as JSON that ``--map FILE.json`` reads back."""
        data = {
            "name": Path(path).stem,
            "description": f"saved by mocap retarget{f' for {rig}' if rig else ''} ({self.how})",
            "bones": {j: self.bones.get(j) for j in SMPL_JOINT_NAMES},
        }
        try:
            with atomic_output(Path(path)) as tmp:
                Path(tmp).write_text(json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            raise MocapError(f"cannot write the bone map {path}: {exc.strerror}") from exc
        return Path(path)


def preset_names() -> tuple[str, ...]:
    """Names of the shipped presets (``mixamo``, ``rigify``, ``unreal``, ``vrm``)."""
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.json")))


def load_spec(choice: str) -> dict[str, Any]:
    """A preset by name or a map file, validated: ``{"name", "bones": {joint: [names]}, ...}``."""
    path = PRESET_DIR / f"{choice}.json" if choice in preset_names() else Path(choice)
    if not path.is_file():
        raise MocapError(
            f"bone map {choice!r} is neither a preset ({', '.join(preset_names())}, auto) "
            "nor an existing .json file"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MocapError(f"bone map {path} is not valid JSON ({exc}); fix or re-save it") from None
    if isinstance(data, dict) and "bones" not in data:
        data = {"bones": data}  # a plain {joint: bone} mapping is accepted too
    if not isinstance(data, dict) or not isinstance(data.get("bones"), dict):
        raise MocapError(f'bone map {path} must be a JSON object with "bones": {{joint: bone}}')
    unknown = sorted(set(data["bones"]) - set(SMPL_JOINT_NAMES))
    if unknown:
        raise MocapError(
            f"bone map {path} names unknown joints {', '.join(unknown)}; keys are SMPL joints: "
            f"{', '.join(SMPL_JOINT_NAMES)}"
        )
    bones: dict[str, list[str]] = {}
    for joint, value in data["bones"].items():
        names = [value] if isinstance(value, str) else value if value is not None else []
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise MocapError(f"bone map {path}: {joint} must be a bone name, a list or null")
        bones[joint] = names
    return {
        "name": str(data.get("name", path.stem)),
        "bones": bones,
        "optional": set(data.get("optional", [])),
        "humanoid": bool(data.get("humanoid", False)),
    }


def _namespace_free(name: str) -> str:
    return name.rsplit(":", 1)[-1].lower()


def _lookup(
    names: list[str], bones: tuple[str, ...], humanoid: dict[str, str] | None
) -> str | None:
    """The first of ``names`` the rig has (exactly, through the humanoid table, or loosely)."""
    loose: dict[str, list[str]] = {}
    for b in bones:
        loose.setdefault(_namespace_free(b), []).append(b)
    have = set(bones)
    for name in names:
        if humanoid and name in humanoid and humanoid[name] in have:
            return humanoid[name]
        if name in have:
            return name
        hits = loose.get(_namespace_free(name), [])
        if len(hits) == 1:
            return hits[0]
    return None


def resolve_spec(
    spec: dict[str, Any],
    bones: tuple[str, ...],
    humanoid: dict[str, str] | None = None,
    strict: bool = True,
) -> tuple[dict[str, str], list[str]]:
    """(joint -> bone found, joints whose bones the rig lacks); strict raises for missing ones."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for joint, names in spec["bones"].items():
        if not names:
            continue
        bone = _lookup(names, bones, humanoid if spec["humanoid"] else None)
        if bone is not None:
            found[joint] = bone
        elif joint not in spec["optional"]:
            missing.append(f"{joint} ({' / '.join(names)})")
    if strict and missing:
        shown = ", ".join(missing[:6]) + (
            f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        )
        raise MocapError(
            f"bone map {spec['name']!r} names bones the rig lacks: {shown}; use --map auto or a "
            "map saved for this rig (--save-map)"
        )
    return found, missing


def _tokens(name: str) -> list[str]:
    """Lower-case words of a bone name: 'mixamorig:LeftUpLeg' -> ['left', 'up', 'leg']."""
    base = name.rsplit(":", 1)[-1]
    parts = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+", base)
    return [p.lower() for p in parts]


def _side(words: list[str]) -> str | None:
    left = any(w in ("l", "left") for w in words)
    right = any(w in ("r", "right") for w in words)
    return "left" if left and not right else "right" if right and not left else None


def _rank(words: list[str], patterns: list[tuple[str, ...]]) -> int | None:
    for i, pattern in enumerate(patterns):
        if all(p in words for p in pattern):
            return i
    return None


def match_by_names(bones: tuple[str, ...], parents: tuple[int, ...]) -> dict[str, str]:
    """joint -> bone by name patterns (see the module docstring)."""
    depth = [0] * len(bones)
    for i in range(len(bones)):
        p, d = parents[i], 0
        while p >= 0:
            p, d = parents[p], d + 1
        depth[i] = d
    best: dict[str, tuple[int, int, int]] = {}  # joint -> (pattern rank, depth, bone)
    for i, name in enumerate(bones):
        words = _tokens(name)
        if not words or any(w in _SKIP for w in words):
            continue
        side = _side(words)
        table = _LIMB if side else _CENTRE
        for part, patterns in table.items():
            rank = _rank(words, patterns)
            if rank is None:
                continue
            joint = f"{side}_{part}" if side else part
            key = (rank, depth[i], i)
            if joint not in best or key < best[joint]:
                best[joint] = key
            break  # a bone carries one part (forearm before arm, toe before foot)
    found = {j: bones[k[2]] for j, k in best.items()}
    # Spine: the bones on the chain from the neck (or head) down to the hips, in order.
    top = found.get("neck") or found.get("head")
    if "pelvis" in found and top is not None:
        chain, p = [], parents[bones.index(top)]
        while p >= 0 and bones[p] != found["pelvis"]:
            chain.append(p)
            p = parents[p]
        chain = chain[::-1] if p >= 0 else []
        chain = [c for c in chain if _SPINE_WORDS & set(_tokens(bones[c])) or len(chain) <= 5]
        if chain:
            picks = {"spine1": chain[0], "spine3": chain[-1]}
            if len(chain) >= 3:
                picks["spine2"] = chain[len(chain) // 2]
            found.update({j: bones[c] for j, c in picks.items()})
    return found


def _check_needed(found: dict[str, str], what: str) -> None:
    lost = [j for j in NEEDED if j not in found]
    if lost:
        raise MocapError(
            f"{what} finds no bone for {', '.join(lost)}; write a map for this rig "
            "(--map FILE.json, keys SMPL joints, values bone names)"
        )


def _describe(name: str, found: dict[str, str]) -> str:
    return f"{name} ({len(found)} of {len(SMPL_JOINT_NAMES)} joints)"


def resolve_bone_map(
    choice: str,
    bones: tuple[str, ...],
    parents: tuple[int, ...],
    humanoid: dict[str, str] | None = None,
) -> BoneMap:
    """The bone map ``choice`` (``auto``, a preset name or a JSON file) resolved on a rig.

    Arguments:
        bones, parents: the rig's bone names and parent indices (-1 for roots).
        humanoid: VRM humanoid bone name -> node (bone) name, from the file, when it has one.
    Raises:
        MocapError: a map naming bones the rig lacks; no bones found for the hips, legs and feet.
    """
    if choice != "auto":
        spec = load_spec(choice)
        found, _ = resolve_spec(spec, bones, humanoid, strict=True)
        _check_needed(found, f"bone map {spec['name']!r}")
        unmapped = [j for j in SMPL_JOINT_NAMES if j not in found]
        how = f"map {_describe(spec['name'], found)}"
        notes = [f"joints left unmapped: {', '.join(unmapped)}"] if unmapped else []
        return BoneMap(spec["name"], found, how, notes)
    candidates: list[tuple[int, str, dict[str, str]]] = []
    for name in preset_names():
        spec = load_spec(name)
        if spec["humanoid"] and not humanoid and name == "vrm":
            spec = {**spec, "humanoid": False}
        found, _ = resolve_spec(spec, bones, humanoid, strict=False)
        if all(j in found for j in NEEDED) and len(found) >= MIN_AUTO_JOINTS:
            candidates.append((len(found), name, found))
    if candidates:
        count, name, found = max(candidates, key=lambda c: c[0])
        unmapped = [j for j in SMPL_JOINT_NAMES if j not in found]
        notes = [f"joints left unmapped: {', '.join(unmapped)}"] if unmapped else []
        return BoneMap(name, found, f"auto: preset {_describe(name, found)}", notes)
    found = match_by_names(bones, parents)
    _check_needed(found, "auto bone matching")
    pairs = ", ".join(f"{j}={found[j]}" for j in SMPL_JOINT_NAMES if j in found)
    unmapped = [j for j in SMPL_JOINT_NAMES if j not in found]
    notes = [f"matched by name: {pairs}"]
    if unmapped:
        notes.append(f"joints left unmapped: {', '.join(unmapped)}")
    return BoneMap("names", found, f"auto: by bone names ({len(found)} joints)", notes)
