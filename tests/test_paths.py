"""atomic_output: the file appears whole or not at all."""

from pathlib import Path

import pytest

from mocap.paths import atomic_output, atomic_path


def test_atomic_output_renames_into_place(tmp_path: Path) -> None:
    out = tmp_path / "motion.npz"
    with atomic_output(out) as tmp:
        assert tmp == atomic_path(out) and tmp.suffix == ".npz"
        tmp.write_text("new")
        assert not out.exists()
    assert out.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motion.npz"]


def test_atomic_output_keeps_old_file_on_error(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
