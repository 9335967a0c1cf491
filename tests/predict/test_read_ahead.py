"""Reading the CTs of a batch ahead: each once, in order, one ahead, a large one when its turn comes."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.predict import read_ahead as read_ahead_module
from efficientscn.predict.cases import Case
from efficientscn.predict.read_ahead import ReadAhead

from helpers import shared_case


def _drain(executor: ThreadPoolExecutor) -> None:
    """Wait until every job submitted so far has run (one worker runs the jobs in submission order)."""
    executor.submit(lambda: None).result()


# --- ReadAhead ----------------------------------------------------------------------------------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths CanonicalCT.read is called with, in order, from any thread."""
    paths: list[Path] = []
    read = CanonicalCT.read

    def recording_read(cls: type[CanonicalCT], path: str | os.PathLike[str], **kwargs: int | None) -> CanonicalCT:
        paths.append(Path(path))
        return read(path, **kwargs)

    monkeypatch.setattr(CanonicalCT, "read", classmethod(recording_read))
    return paths


def _shared_cases(tmp_path: Path, *ids: str) -> list[Case]:
    sources = [shared_case(case_id).image for case_id in ids]
    return [Case(source, tmp_path / "out" / f"{case_id}.nii.gz") for case_id, source in zip(ids, sources, strict=True)]


def test_read_ahead_reads_each_case_once_in_order_and_one_ahead(tmp_path: Path, reads: list[Path]) -> None:
    cases = _shared_cases(tmp_path, "ts_example_ct_sm", "ts_example_ct_sm_aniso", "ts_example_ct_sm_lpi")
    shapes = [(30, 101, 122), (12, 101, 122), (30, 101, 122)]  # zyx on the canonical grid
    sources = [case.source for case in cases]
    with ThreadPoolExecutor(1) as executor:
        ahead = ReadAhead(cases, executor, max_voxels=10**9)
        _drain(executor)
        assert reads == sources[:1]  # the first case is read before it is asked for
        for index, (case, shape) in enumerate(zip(cases, shapes, strict=True)):
            ct, seconds = ahead.take(case)
            assert isinstance(ct, CanonicalCT)
            assert ct.array_zyx.shape == shape
            assert ct.array_zyx.dtype == np.int16
            assert isinstance(seconds, float) and seconds >= 0.0
            _drain(executor)
            assert reads == sources[: index + 2]  # the next one is being read, not more
    assert reads == sources


def test_a_next_ct_too_large_to_read_ahead_is_read_when_its_turn_comes(
    tmp_path: Path, reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a case is segmented, only a small next CT is read (a batch then needs little more memory than its
    largest case); a larger one waits for its turn, and comes all the same."""
    # ts_example_ct: 1,380,064 voxels; ts_example_ct_sm_lpi: 369,660; the anisotropic one: 147,864
    monkeypatch.setattr(read_ahead_module, "READ_AHEAD_MAX_VOXELS", 400_000)
    cases = _shared_cases(tmp_path, "ts_example_ct_sm_aniso", "ts_example_ct", "ts_example_ct_sm_lpi")
    sources = [case.source for case in cases]
    with ThreadPoolExecutor(1) as executor:
        ahead = ReadAhead(cases, executor, max_voxels=10**9)
        assert ahead.take(cases[0])[0].array_zyx.shape == (12, 101, 122)
        _drain(executor)
        assert reads == sources[:1]  # the large second CT is not read ahead
        assert ahead.take(cases[1])[0].array_zyx.shape == (112, 101, 122)  # read now
        _drain(executor)
        assert reads == sources  # and the small third one ahead of its turn
        assert ahead.take(cases[2])[0].array_zyx.shape == (30, 101, 122)
    assert reads == sources


def test_read_ahead_gives_the_ct_as_read_directly(tmp_path: Path) -> None:
    (case,) = _shared_cases(tmp_path, "ts_example_ct_sm_lpi")
    with ThreadPoolExecutor(1) as executor:
        ct, _ = ReadAhead([case], executor, max_voxels=10**9).take(case)
    direct = CanonicalCT.read(case.source)
    np.testing.assert_array_equal(ct.array_zyx, direct.array_zyx)
    assert ct.spacing_zyx == direct.spacing_zyx


def test_a_ct_over_max_voxels_is_refused_when_taken_and_the_next_case_still_comes(
    tmp_path: Path, reads: list[Path]
) -> None:
    # ts_example_ct_sm has 122 x 101 x 30 = 369,660 voxels, the anisotropic one 122 x 101 x 12 = 147,864
    large, small = _shared_cases(tmp_path, "ts_example_ct_sm", "ts_example_ct_sm_aniso")
    with ThreadPoolExecutor(1) as executor:
        ahead = ReadAhead([large, small], executor, max_voxels=200_000)  # the refusal waits for `take`
        with pytest.raises(InputError, match="CT too large: 369,660 voxels"):
            ahead.take(large)
        _drain(executor)
        assert reads == [large.source, small.source]  # the next one is read ahead all the same
        ct, _ = ahead.take(small)
    assert ct.array_zyx.shape == (12, 101, 122)
