"""CaseRunner: a case's CT is freed before its label is restored and written, unless one of the run's writers reads
it, the peak memory of a large CT."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from efficientscn.imaging.canonical import CanonicalCT, WayBack
from efficientscn.infer.pipeline import Segmentation
from efficientscn.outputs.writers import StatisticsWriter, case_output
from efficientscn.predict.case_runner import CaseRunner
from efficientscn.predict.cases import Case
from efficientscn.predict.monitor import CaseMeter, CaseRecord
from efficientscn.predict.resume import Claim

from helpers import shared_case


class _Reads:
    """The CT of the case, read when taken, and a weak reference to it, to see when it is freed."""

    def __init__(self) -> None:
        self.taken: weakref.ref[CanonicalCT] | None = None

    def take(self, case: Case) -> tuple[CanonicalCT, float]:
        ct = CanonicalCT.read(case.source)
        self.taken = weakref.ref(ct)
        return ct, 0.0

    def drop(self, case: Case) -> None:
        raise AssertionError("the case is not given up")


class _Segmenter:
    """A liver block for any CT."""

    demonstration = None

    def segment_canonical(self, ct: CanonicalCT, *, gate: object = None) -> Segmentation:
        label = np.zeros(ct.array_zyx.shape, np.uint8)
        label[5:20, 30:70, 30:70] = 1
        return Segmentation(label)


@pytest.mark.parametrize("statistics", [False, True], ids=["label only", "with statistics"])
def test_the_ct_is_kept_for_writing_only_where_a_writer_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statistics: bool
) -> None:
    source = shared_case("ts_example_ct_sm").image
    case = Case(source, case_output().path(tmp_path, source.name.removesuffix(".nii.gz"), source))
    reads, alive_at_restore = _Reads(), []
    restore = WayBack.restore

    def restore_watched(way_back: WayBack, label_zyx: np.ndarray) -> sitk.Image:
        assert reads.taken is not None
        alive_at_restore.append(reads.taken() is not None)
        return restore(way_back, label_zyx)

    monkeypatch.setattr(WayBack, "restore", restore_watched)
    writers = [StatisticsWriter(), case_output()] if statistics else [case_output()]
    runner = CaseRunner(_Segmenter(), writers, tmp_path, force=False)  # type: ignore[arg-type]
    record = CaseRecord(str(source), str(case.output))
    outcome = runner.run(case, Claim(overwrite=False, replacing=False), record, reads, CaseMeter("cpu"))

    assert outcome == "done" and record.status == "done"
    assert alive_at_restore == [statistics]
    written = sitk.ReadImage(str(case.output))
    expected = CanonicalCT.read(source).restore(_Segmenter().segment_canonical(CanonicalCT.read(source)).label)
    assert np.array_equal(sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(expected))
    if statistics:
        organs = json.loads((tmp_path / f"{case.id}.json").read_text())
        assert organs["liver"]["voxels"] == 15 * 40 * 40
