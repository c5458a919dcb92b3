"""``retarget_motion``: a clip's people onto the user's character, written as FBX / GLB / .blend.

The one entry point that ``mocap retarget``, ``mocap run --rig`` and ``mocap export --rig`` call:

1. the character's armature is read at its bind pose (:func:`exporters.character.inspect_character`);
2. the bone map is resolved on it (:func:`exporters.bonemap.resolve_bone_map`; ``--save-map``);
3. the clip's people are put in the shared Y-up world (:func:`mocap.world.build_world`);
4. their feet are locked as for every other format (:func:`mocap.contacts.lock_world`: the
   contacts stored in ``Track.extras["contacts"]``, else detected), and each person is retargeted
   (:func:`exporters.retarget.retarget`), planted feet re-locked on the character with IK on the
   same contacts;
5. every file is written by one Blender child, all or none
   (:func:`exporters.character.write_characters`).

Files: with ``formats=None`` the destination is the file itself (``OUT.fbx``; with several people
``OUT_person_<id>.fbx``); with formats it is a folder and each person gets
``<person>_<character>.<format>``.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporters.bonemap import BoneMap, resolve_bone_map
from exporters.character import OUTPUT_SUFFIXES, Character, inspect_character, write_characters
from exporters.retarget import ROOT_MOTION, Retargeted, retarget
from mocap.errors import MocapError
from mocap.motion import Motion

if TYPE_CHECKING:
    from mocap.body.skeleton import BodySource


@dataclass
class RetargetReport:
    """What :func:`retarget_motion` wrote."""

    character: Path
    bone_map: BoneMap
    files: list[Path] = field(default_factory=list)
    people: list[Retargeted] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"retargeted {len(self.people)} person(s) onto {self.character.name}"]
        lines.append(f"  bone map: {self.bone_map.how}")
        for anim in self.people:
            lines.append(
                f"  {anim.name}: {len(anim.quaternions)} frames, leg scale {anim.scale:.3f}"
            )
        lines += [f"  {p}" for p in self.files]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def retarget_formats(formats: Sequence[str]) -> list[str]:
    """The character formats among ``formats`` (fbx, glb, blend); fbx when there is none."""
    return [f for f in formats if f".{f}" in OUTPUT_SUFFIXES] or ["fbx"]


def _destinations(
    destination: Path, formats: Sequence[str] | None, people: list[str], character: Path
) -> dict[str, list[Path]]:
    if formats is None:
        if len(people) == 1:
            return {people[0]: [destination]}
        stem, suffix = destination.stem, destination.suffix
        return {p: [destination.with_name(f"{stem}_{p}{suffix}")] for p in people}
    return {p: [destination / f"{p}_{character.stem}.{f}" for f in formats] for p in people}


def retarget_motion(
    motion: Motion,
    character: str | Path,
    destination: str | Path,
    formats: Sequence[str] | None = None,
    person: int | None = None,
    bone_map: str = "auto",
    save_map: str | Path | None = None,
    root_motion: str = "world",
    body: "BodySource | None" = None,
    foot_lock: str = "auto",
) -> RetargetReport:
    """Retarget the clip's people (or one, ``person``) onto ``character`` and write the files.

    Arguments:
        motion: the clip as saved by ``mocap run`` (camera frame).
        character: the rigged character (.fbx/.glb/.gltf/.vrm/.blend).
        destination: the output file (``formats=None``) or folder (see the module docstring).
        formats: e.g. ``["fbx", "glb"]`` for folder outputs.
        bone_map: ``auto``, a preset name (``mixamo``, ``rigify``, ``unreal``, ``vrm``) or a JSON file.
        save_map: write the resolved bone map there (JSON, reusable with ``bone_map``).
        root_motion: ``world``, ``in-place`` or ``root-bone``.
        body: SMPL body model for the people's own proportions (built-in skeleton when None).
        foot_lock: ``auto`` holds the source's planted feet (:func:`mocap.contacts.lock_world`)
            and re-locks them on the character with IK; ``off`` leaves the motion as it is.
    Raises:
        MocapError: bad input (character, map, person, output name); nothing is written then.
    """
    from mocap.contacts import lock_world
    from mocap.world import build_world

    destination = Path(destination)
    if foot_lock not in ("auto", "off"):
        raise MocapError(f"unknown --foot-lock {foot_lock!r}; use auto or off")
    if root_motion not in ROOT_MOTION:
        raise MocapError(f"unknown --root-motion {root_motion!r}; use {', '.join(ROOT_MOTION)}")
    suffixes = [destination.suffix.lower()] if formats is None else [f".{f}" for f in formats]
    bad = [s for s in suffixes if s not in OUTPUT_SUFFIXES]
    if bad or not suffixes:
        raise MocapError(
            f"retargeted characters are written as {'/'.join(OUTPUT_SUFFIXES)}, not {bad[0] if bad else 'nothing'}"
        )
    ids = [t.track_id for t in motion.tracks if len(t)]
    if person is not None and person not in ids:
        raise MocapError(f"no person {person} in the motion; its people are {ids}")
    char: Character = inspect_character(character)
    resolved = resolve_bone_map(bone_map, char.rig.bone_names, char.rig.parents, char.humanoid)
    built = build_world(motion, body)
    locked = lock_world(built, motion, foot_lock)  # the source's feet held, as in every format
    report = RetargetReport(char.path, resolved, notes=char.notes + resolved.notes + locked.notes)
    people = []
    for rig, skeleton in zip(built.rigs, built.skeletons, strict=True):
        track_id = int(rig.name.rsplit("_", 1)[1])
        if person is not None and track_id != person:
            continue
        found = locked.reports.get(track_id)
        contacts = None
        if foot_lock == "auto" and found is not None and found.contacts.any():
            contacts = found.contacts.astype(np.float64)
        anim = retarget(
            rig, char.rig, resolved.bones, root_motion, skeleton.sole_clearance, contacts
        )
        report.notes += [f"{anim.name}: {n}" for n in anim.notes]
        people.append(anim)
    if any(a.reparent for a in people):
        report.notes.append(
            f"{len(people[0].reparent)} bone(s) re-parented so the deform bones form one hierarchy"
        )
    files = _destinations(destination, formats, [a.name for a in people], char.path)
    writes = {path: anim for anim in people for path in files[anim.name]}
    report.files = write_characters(char, writes)
    report.people = people
    if save_map is not None:
        resolved.save(save_map, char.path.name)
        report.files.append(Path(save_map))
    return report
