"""The per-case lock between runs sharing an output folder."""

from __future__ import annotations

from pathlib import Path

from efficientscn.predict.locks import case_lock

# --- the per-case lock --------------------------------------------------------------------------------------------


def test_a_case_is_held_by_one_holder_at_a_time_and_free_again_after(tmp_path: Path) -> None:
    label = tmp_path / "case.nii.gz"
    with case_lock(label) as first:
        assert first and (tmp_path / ".case.nii.gz.lock").exists()
        with case_lock(label) as second:  # another run's attempt (flock locks are per open file)
            assert not second
    assert not (tmp_path / ".case.nii.gz.lock").exists()
    with case_lock(label) as again:
        assert again
    (tmp_path / ".case.nii.gz.lock").write_text("")  # left by a run killed while holding it: not locked any more
    with case_lock(label) as after_a_kill:
        assert after_a_kill
