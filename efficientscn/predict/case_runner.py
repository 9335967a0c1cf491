"""The work of one case of a `predict` batch, the same in one process and on a cluster's workers.

With the case's lock held (`locks`), the decision taken before the batch is settled again (`resume.Claim`), files an
interrupted attempt left are removed, the CT is read, gated by the plausibility checks, segmented, and written by the
run's writers, the label last: its file marks the case as done. The case's record says what happened and what it
cost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from efficientscn.batch import Outcome
from efficientscn.errors import LabelMapGiven
from efficientscn.imaging.canonical import CanonicalCT, WayBack
from efficientscn.infer.pipeline import InferenceConfig
from efficientscn.outputs.writers import CaseOutput, CaseResult, CaseWriter, write_case
from efficientscn.predict.cases import Case
from efficientscn.predict.locks import case_lock
from efficientscn.predict.monitor import CaseMeter, CaseRecord
from efficientscn.predict.options import PredictOptions
from efficientscn.predict.plausibility import gate_input, gate_organs
from efficientscn.predict.resume import Claim, remove_leftovers
from efficientscn.segmenter import Segmenter

logger = logging.getLogger(__name__)


class CaseReads(Protocol):
    """Where a case's CT comes from: read ahead (`ReadAhead`) or when its turn comes (`ReadNow`)."""

    def take(self, case: Case) -> tuple[CanonicalCT, float]:
        """The CT of `case` on its processing grid and the seconds its reading took."""
        ...

    def drop(self, case: Case) -> None:
        """Give up `case`: it is not segmented by this run."""
        ...


def load_segmenter(
    options: PredictOptions, device: str, precision: str, config: InferenceConfig, *, probe: Path | None
) -> Segmenter:
    """The segmenter `options` ask for; networks in the original's format are imported, checked on `probe`."""
    return Segmenter(
        options.models,
        device=device,
        precision=precision,
        utils=options.utils,
        import_originals=options.import_originals,
        config=config,
        probe=probe,
    )


class CaseRunner:
    """Segments and writes the cases a run claims, one by one or from several threads: one case at a time runs the
    networks (each with all of TensorFlow's threads), the others read and write meanwhile."""

    def __init__(self, segmenter: Segmenter, writers: Sequence[CaseWriter], output: Path, *, force: bool) -> None:
        """`writers` in the order they write, the case's label last; `force`: segment what the plausibility checks
        refuse, with a warning."""
        self.segmenter = segmenter
        self.writers = list(writers)
        self.label = self.writers[-1]
        assert isinstance(self.label, CaseOutput)
        self.output = output
        self.force = force
        self.keep_ct = any(writer.needs_ct for writer in self.writers)
        """Whether a case's CT is kept for its writers; otherwise it is freed before its label is restored."""
        self._engine = threading.Lock()

    def run(self, case: Case, claim: Claim, record: CaseRecord, reads: CaseReads, meter: CaseMeter) -> Outcome:
        """Segment and write `case` unless another run holds or has done it (then "skipped"); raises what makes the
        case fail, its record saying so."""
        try:
            with case_lock(case.output) as held:  # two runs (or two workers) on one folder share its cases
                overwrite = claim.settle(case, self.label) if held else None
                if overwrite is None:
                    reads.drop(case)
                    record.status = "skipped"
                    logger.info("%s: %s by another run, skipped", case.name, "being done" if not held else "done")
                    return "skipped"
                remove_leftovers(case, self.writers, self.output)
                return self._segment(case, record, reads, meter, overwrite=overwrite)
        except OSError as error:
            if record.status == "pending":  # failed before its segmentation started (the lock, the clean-up)
                record.status, record.error = "failed", str(error)
                reads.drop(case)
            raise

    def _segment(
        self, case: Case, record: CaseRecord, reads: CaseReads, meter: CaseMeter, *, overwrite: bool
    ) -> Outcome:
        """Read, segment and write one case whose lock is held."""
        with meter.measuring(record):
            try:
                ct, record.seconds["read"] = reads.take(case)
            except LabelMapGiven as error:  # a label map not told by its header: skipped, as those told by it
                record.status = "skipped"
                record.warn([f"skipped: {str(error).removeprefix(f'{case.source}: ')}"])
                return "skipped"
            label_zyx, way_back = self._label(case, record, ct)
            kept = ct if self.keep_ct else None
            del ct  # freed unless kept: the label of a large CT is restored and written without the CT beside it
            start = time.perf_counter()
            demonstration = self.segmenter.demonstration
            notice = f"DEMONSTRATION MODELS: {demonstration}" if demonstration else None
            label = way_back.restore(label_zyx)
            result = CaseResult(kept, label_zyx if kept is not None else None, label, case.source, notice)
            del label_zyx  # freed unless kept, as the CT
            restore_seconds = time.perf_counter() - start
            for written in write_case(result, self.writers, self.output, case.id, overwrite=overwrite):
                if written.path is None:  # a companion that does not apply to this CT
                    record.warn([f"no {written.name}: {written.refusal}"])
                    continue
                record.written.append(str(written.path))
                record.seconds[written.name] = written.seconds
            record.seconds[self.label.name] += restore_seconds  # the way back onto the CT's grid
            record.status = "done"
        return "done"

    def _label(self, case: Case, record: CaseRecord, ct: CanonicalCT) -> tuple[np.ndarray, WayBack]:
        """The label of `case`'s CT on its processing grid, checked (no organ: the case fails) and recorded, and the
        way back to the CT's grid."""
        record.warnings.extend(ct.reading_warnings)  # logged when read; the label depends on what they assume
        with self._engine:
            segmentation = self.segmenter.segment_canonical(ct, gate=partial(self._gate, case, record))
        record.warn(gate_organs(segmentation.label, ct.spacing_zyx, case.source))
        record.seconds.update(segmentation.seconds)
        record.details = {"spacing": ct.spacing_source, **segmentation.details}
        return segmentation.label, ct.way_back

    def _gate(self, case: Case, record: CaseRecord, ct: CanonicalCT) -> None:
        """The plausibility check of a CT the networks can take, before they run: refused, or warned about."""
        record.warn(gate_input(ct.array_zyx, case.source, force=self.force))
