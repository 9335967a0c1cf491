"""What a `predict` batch is made of, decided before any case, the same in one process and on a cluster.

The cases (those of the shard, when one is asked for), the writers with the label last, the report's path, the
inference settings, and which cases the run segments (`resume`). Whatever would stop the batch (no CT, an output no
input can have, an output folder that cannot be written, a report path that cannot, missing models) stops it here.
"""

from __future__ import annotations

import logging
from typing import Any

from efficientscn.atomic import ensure_writable_folder
from efficientscn.batch import Outcome
from efficientscn.errors import InputError
from efficientscn.imaging.names import case_id
from efficientscn.infer.pipeline import InferenceConfig
from efficientscn.model.folder import ModelsFolder
from efficientscn.outputs.writers import CaseOutput, CaseWriter, case_output, companion_writers
from efficientscn.predict.batch_files import check_report_room
from efficientscn.predict.cases import Case, case_owners, find_sources, without_label_maps
from efficientscn.predict.monitor import CaseRecord
from efficientscn.predict.options import PredictOptions
from efficientscn.predict.resume import Resume

logger = logging.getLogger(__name__)


class BatchPlan:
    """The cases of a batch, their writers and the decisions taken before the first of them."""

    def __init__(self, options: PredictOptions) -> None:
        self.options = options
        self.writers = self.writers_for(options)
        """In the order they write: the case's label last, so that its file marks a case with all its outputs."""
        self.label = self.writers[-1]
        assert isinstance(self.label, CaseOutput)
        sources = without_label_maps(find_sources(options.inputs, options.output), options.inputs)
        for writer in self.writers:  # an output none of the inputs can have stops the batch now
            if (refusal := writer.batch_refusal(sources)) is not None:
                flag = f"--format {options.label_format}" if writer is self.label else f"--{writer.name}"
                raise InputError(f"{options.inputs}: {flag}: {refusal}")
        batch = [Case(source, self.label.path(options.output, case_id(source), source)) for source in sources]
        self.batch_size = len(batch)
        owners = case_owners(batch)  # of the whole batch: a clash across two shards counts too
        self.cases = options.shard.select(batch) if options.shard else batch
        ensure_writable_folder(options.output)
        self.report = options.report
        if self.report is None and options.shard is not None:  # a shard's report is what the batch's is merged from
            self.report = options.shard.default_report(options.output)
        if self.report is not None:  # refused now, not after the batch
            if self.report.is_dir():
                raise InputError(f"{self.report}: a folder; --report names the JSON file to write")
            ensure_writable_folder(self.report.parent)
            check_report_room(self.report, len(self.cases))
        ModelsFolder(options.models).stage_folders()  # a missing model stops the batch now, not once per case
        self.config = InferenceConfig(
            spacing_fallback=options.spacing_fallback, slab_budget_bytes=options.slab_budget_bytes
        )
        self.resume = Resume(self.cases, self.label, overwrite=options.overwrite, owners=owners)
        self._todo = set(self.resume.todo)

    @staticmethod
    def writers_for(options: PredictOptions) -> list[CaseWriter]:
        """The writers of a case's outputs in the order they write, its label (whose file marks it done) last."""
        label = case_output(options.label_format)
        return [*companion_writers(options.companions, label), label]

    @property
    def todo(self) -> list[Case]:
        """The cases this run segments."""
        return self.resume.todo

    @property
    def keep_as_read(self) -> bool:
        """Whether an oblique CT is kept as read too, for an output that needs it."""
        return any(writer.needs_ct for writer in self.writers)

    @property
    def batch_writers(self) -> list[CaseWriter]:
        """The writers whose batch-level files (`statistics.csv`) this run writes: none in a shard, whose batch's
        are made when the shards' reports are merged."""
        return [] if self.options.shard is not None else self.writers

    def settled_before(self, case: Case, record: CaseRecord) -> Outcome | None:
        """What becomes of a case without segmenting it: refused (InputError, its record failed), kept ("skipped"),
        or None: this run segments it."""
        if (refusal := self.resume.refusal(case)) is not None:
            record.status, record.error = "failed", refusal
            raise InputError(refusal)
        if case not in self._todo:
            record.status = "skipped"
            logger.info("%s: %s exists, skipped", case.name, case.output)
            return "skipped"
        return None

    def report_facts(self) -> dict[str, Any]:
        """What the report says of the batch beside its run facts: the outputs asked for and, in a shard, its place
        in the batch (which the merge of the shards' reports checks)."""
        options = self.options
        facts: dict[str, Any] = {
            "outputs": {"label_format": options.label_format, "companions": list(options.companions)}
        }
        if options.shard is not None:
            facts["shard"] = {
                "index": options.shard.index,
                "count": options.shard.count,
                "cases_in_batch": self.batch_size,
                "inputs": str(options.inputs),
                "output": str(options.output),
            }
        return facts
