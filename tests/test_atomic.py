"""Atomic output: a target file is absent, as it was, or complete, never half-written; and the output-folder check."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from efficientscn.atomic import NAME_MAX, atomic_output, ensure_writable_folder, leftover_temporaries, write_text_atomic
from efficientscn.errors import InputError

RUNNING_AS_ROOT = getattr(os, "geteuid", lambda: -1)() == 0


def _names(folder: Path) -> list[str]:
    """Every entry of `folder`, hidden ones included, so that a left-over temporary file shows."""
    return sorted(entry.name for entry in folder.iterdir())


# atomic_output


def test_a_successful_block_creates_the_file_with_what_was_written(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with atomic_output(target) as temporary:
        temporary.write_text("complete")
        assert not target.exists(), "the target must not appear before the block has succeeded"
    assert target.read_text() == "complete"
    assert _names(tmp_path) == ["out.txt"]


def test_the_temporary_path_is_hidden_beside_the_target_and_ends_with_the_suffix(tmp_path: Path) -> None:
    """Writers that choose the format by extension (ITK, PNG) must see the real suffix, e.g. `.nii.gz`."""
    target = tmp_path / "case.nii.gz"
    with atomic_output(target, suffix=".nii.gz") as temporary:
        assert temporary.parent == target.parent
        assert temporary.name.startswith(".case.")
        assert temporary.name.endswith(".partial.nii.gz")
        assert not temporary.exists()
        temporary.write_bytes(b"x")


def test_a_suffix_the_target_name_lacks_is_still_kept_at_the_end_of_the_temporary_name(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "preview", suffix=".png") as temporary:
        assert temporary.name.startswith(".preview.")
        assert temporary.name.endswith(".partial.png")
        temporary.write_bytes(b"x")
    assert _names(tmp_path) == ["preview"]


def test_two_writes_of_the_same_target_get_different_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with atomic_output(target, overwrite=True) as first, atomic_output(target, overwrite=True) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert target.read_text() == "first"  # the outer block finishes last and wins
    assert _names(tmp_path) == ["out.txt"]


def test_an_existing_file_without_overwrite_raises_and_is_left_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    entered = False
    with pytest.raises(FileExistsError, match=rf"{re.escape(str(target))}: already exists"), atomic_output(target):
        entered = True
    assert not entered, "the block must not run when the target exists"
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_overwrite_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_output(target, overwrite=True) as temporary:
        temporary.write_text("new")
    assert target.read_text() == "new"
    assert _names(tmp_path) == ["out.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_output(target, overwrite=True) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.txt") as temporary:
        temporary.write_text("half")
        raise RuntimeError("writer crashed")
    assert _names(tmp_path) == []


def test_an_interrupt_inside_the_block_also_removes_the_temporary_file(tmp_path: Path) -> None:
    """Ctrl-C is not an Exception; the clean-up must still run."""
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_output(target, overwrite=True) as temporary:
        temporary.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_a_block_that_writes_nothing_raises_and_creates_no_file(tmp_path: Path) -> None:
    """A writer that silently wrote nothing must not be taken for a success."""
    with pytest.raises(FileNotFoundError), atomic_output(tmp_path / "out.txt"):
        pass
    assert _names(tmp_path) == []


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_output(target) as temporary:
        temporary.write_text("deep")
    assert target.read_text() == "deep"


def test_a_folder_at_the_target_is_not_replaced_even_with_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(OSError), atomic_output(target, overwrite=True) as temporary:
        temporary.write_text("file")
    assert (target / "inside").is_dir()
    assert _names(tmp_path) == ["out"]


def test_a_file_that_appears_during_the_block_is_not_clobbered_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(FileExistsError), atomic_output(target) as temporary:
        temporary.write_text("ours")
        target.write_text("another writer's")  # e.g. a second run writing to the same output folder
    assert target.read_text() == "another writer's"
    assert _names(tmp_path) == ["out.txt"]


# write_text_atomic


def test_write_text_atomic_writes_utf8_with_lf_line_endings_and_returns_the_path(tmp_path: Path) -> None:
    text = "case;Zürich — 2 mm\nline 2\n"
    written = write_text_atomic(str(tmp_path / "out.csv"), text)
    assert written == tmp_path / "out.csv"
    assert isinstance(written, Path)
    assert written.read_bytes() == text.encode("utf-8")
    assert b"\r" not in written.read_bytes()


def test_write_text_atomic_refuses_an_existing_file_unless_told_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileExistsError, match=re.escape(str(target))):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    write_text_atomic(target, "new", overwrite=True)
    assert target.read_text() == "new"


def test_write_text_atomic_that_fails_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_text_atomic(target, b"not text", overwrite=True)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.txt"]


# ensure_writable_folder


def test_ensure_writable_folder_creates_missing_folders_and_leaves_no_check_file(tmp_path: Path) -> None:
    folder = ensure_writable_folder(str(tmp_path / "new" / "output"))
    assert folder == tmp_path / "new" / "output"
    assert isinstance(folder, Path)
    assert folder.is_dir()
    assert _names(folder) == []


def test_ensure_writable_folder_leaves_an_existing_folder_and_its_files_alone(tmp_path: Path) -> None:
    (tmp_path / "result.nii.gz").write_bytes(b"data")
    assert ensure_writable_folder(tmp_path) == tmp_path
    assert _names(tmp_path) == ["result.nii.gz"]
    assert (tmp_path / "result.nii.gz").read_bytes() == b"data"


def test_ensure_writable_folder_refuses_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "output"
    path.write_text("a file, not a folder")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: not a folder"):
        ensure_writable_folder(path)
    assert path.read_text() == "a file, not a folder"


def test_ensure_writable_folder_refuses_a_folder_that_cannot_be_created_and_names_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "output"
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: cannot write here \(Not a directory\)"):
        ensure_writable_folder(path)


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root writes into read-only folders; see the simulated refusal below")
def test_ensure_writable_folder_refuses_a_read_only_folder_and_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match=rf"^{re.escape(str(folder))}: cannot write here \(Permission denied\)"):
            ensure_writable_folder(folder)
    finally:
        folder.chmod(0o755)


def test_ensure_writable_folder_reports_a_refused_write_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a read-only folder does, simulated so that it also runs as root (who may write anywhere)."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(tmp_path / ".write-check-x"))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path))}: cannot write here \(Permission denied\)"):
        ensure_writable_folder(tmp_path)


def test_without_hard_links_a_file_is_still_written_and_an_existing_one_kept(tmp_path: Path, monkeypatch) -> None:
    """Some filesystems (FAT, some network shares) have no hard links: the write falls back to a checked rename."""

    def no_links(source: str, target: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "out.txt"
    with atomic_output(target) as temporary:
        temporary.write_text("first")
    assert target.read_text() == "first" and _names(tmp_path) == ["out.txt"]
    target.unlink()
    with pytest.raises(FileExistsError), atomic_output(target) as temporary:
        temporary.write_text("second")
        target.write_text("another writer's")
    assert target.read_text() == "another writer's" and _names(tmp_path) == ["out.txt"]


def test_a_name_near_the_file_system_limit_gets_a_temporary_name_within_it(tmp_path: Path) -> None:
    """The temporary name adds a dot, a random tag and `.partial`: it is shortened, the final name is not."""
    path = tmp_path / ("x" * 245 + ".nii.gz")  # 252 bytes, within the 255 allowed
    with atomic_output(path, suffix=".nii.gz") as temporary:
        assert len(os.fsencode(temporary.name)) <= NAME_MAX and temporary.name.endswith(".partial.nii.gz")
        temporary.write_bytes(b"data")
    assert path.read_bytes() == b"data" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_leftover_temporaries_are_the_writers_own_and_no_other_cases(tmp_path: Path) -> None:
    ours = tmp_path / ".case.0123456789ab.partial.nii.gz"
    others = [tmp_path / ".case2.0123456789ab.partial.nii.gz", tmp_path / ".case.nii.gz.lock", tmp_path / "case.nii.gz"]
    for path in (ours, *others):
        path.write_text("")
    assert leftover_temporaries(tmp_path / "case.nii.gz", ".nii.gz") == [ours]
    long_a, long_b = tmp_path / ("x" * 240 + "a.nii.gz"), tmp_path / ("x" * 240 + "b.nii.gz")
    with atomic_output(long_a, suffix=".nii.gz") as temporary:  # two long names cut to the same prefix
        temporary.write_text("")
        assert leftover_temporaries(long_a, ".nii.gz") == [temporary]
        assert leftover_temporaries(long_b, ".nii.gz") == []  # never taken for the other's
