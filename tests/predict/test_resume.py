"""Which cases a run segments: a file where a case's output goes that this tool did not write is refused at once,
never first announced as a label to redo."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from efficientscn.outputs.writers import DicomSegWriter, ImageLabelWriter, RTStructWriter
from efficientscn.predict.cases import Case
from efficientscn.predict.resume import Resume

from helpers import shared_case


@pytest.mark.parametrize(
    ("writer", "kind"),
    [(DicomSegWriter(), "a DICOM-SEG"), (RTStructWriter(), "an RT Structure Set"), (ImageLabelWriter(), "a label")],
    ids=lambda value: getattr(value, "name", value),
)
def test_a_file_of_another_kind_where_the_output_goes_is_refused_without_announcing_a_redo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, writer, kind: str
) -> None:
    """`x.seg.dcm` (or `x.rtstruct.dcm`) holding a CT slice, `x.nii.gz` holding a CT: the case fails with the
    reason, and the log never says its output is being segmented again."""
    series = shared_case("dcmqi_ct3slice").image
    output = writer.path(tmp_path, "series", series)
    if isinstance(writer, ImageLabelWriter):
        shutil.copy(shared_case("ts_example_ct_sm").image, output)  # a CT where the label goes
    else:
        shutil.copy(sorted(series.iterdir())[0], output)  # a CT slice where the DICOM output goes
    case = Case(series, output)
    with caplog.at_level(logging.INFO):
        resume = Resume([case], writer, overwrite=False)
    assert resume.todo == []
    refusal = resume.refusal(case)
    assert refusal is not None and refusal.startswith(str(output)) and "not replaced" in refusal
    assert not [record for record in caplog.records if "again" in record.getMessage()], caplog.text
