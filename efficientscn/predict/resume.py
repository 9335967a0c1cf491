"""Which cases a `predict` run segments: a batch resumes where an earlier run stopped, redoes a label that cannot be
kept, and never replaces a file this tool did not write.

Decided once before the batch (`Resume`), and again for each case under its lock (`Claim.settle`), since another
run on the same output folder may have done the case meanwhile. A `Claim` is small and picklable: a case sent to
another process (a cluster's worker) takes its own along.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from efficientscn.atomic import NAME_MAX
from efficientscn.errors import InputError
from efficientscn.outputs.writers import CaseOutput, CaseWriter, leftovers_of
from efficientscn.predict.cases import Case, case_owners

logger = logging.getLogger(__name__)


class Resume:
    """The cases of a batch that this run segments (`todo`), and why the others are refused or kept."""

    def __init__(
        self,
        cases: Sequence[Case],
        label: CaseOutput,
        *,
        overwrite: bool,
        owners: Mapping[str, Path] | None = None,
    ) -> None:
        """`owners`: the CT that owns each case ID, when `cases` are part of a larger batch (a shard) whose clashes
        count too; by default those of `cases`."""
        self.label = label
        self.overwrite = overwrite
        self._owners = dict(owners) if owners is not None else case_owners(list(cases))
        self._replace: set[Path] = set()
        """Labels found unusable: replaced by the new ones without --overwrite."""
        self._refused: dict[Path, str] = {}
        """Outputs that are not labels of this tool: never replaced, their cases fail with this message."""
        self.todo = [case for case in cases if self._owners[case.id] == case.source and self._to_do(case)]

    def refusal(self, case: Case) -> str | None:
        """Why `case` fails without being segmented (its case ID, and so its outputs' names, taken by an earlier
        input, or a file there that may not be replaced), or None."""
        owner = self._owners[case.id]
        if owner != case.source:
            return f"its case ID {case.id} is that of {owner.name}, whose outputs it would replace: rename one"
        return self._refused.get(case.output)

    def _to_do(self, case: Case) -> bool:
        """Whether the case is to be segmented: no label yet, asked to overwrite it, or one that cannot be kept;
        never when that would replace a file that is not a label of this tool (the case then fails)."""
        if len(os.fsencode(case.output.name)) > NAME_MAX:
            self._refused[case.output] = (
                f"{case.output}: the label's name is {len(os.fsencode(case.output.name))} bytes long, more than file "
                f"systems allow ({NAME_MAX}): rename the CT"
            )
            return False
        refusal = self.label.refusal(case.source)
        if refusal is not None:
            self._refused[case.output] = refusal
            return False
        if not case.output.exists():
            return True
        try:  # first: a file this tool did not write is refused, not announced as a label to redo
            self.label.refuse_replacing(case.output)
        except InputError as error:
            self._refused[case.output] = str(error)
            return False
        if not self.overwrite:
            problem = self.label.existing_problem(case.output, case.source)
            if problem is None:
                return False
            logger.warning("%s: its label %s cannot be kept (%s): segmenting it again", case.name, case.output, problem)
            self._replace.add(case.output)
        return True

    def claim(self, case: Case) -> Claim:
        """What this run may do with the label of a case it segments, for `Claim.settle` under the case's lock."""
        return Claim(overwrite=self.overwrite, replacing=case.output in self._replace)


@dataclass(frozen=True)
class Claim:
    """What a run may do with the label of a case it segments, as decided before the batch."""

    overwrite: bool
    """The run was asked to replace labels (--overwrite)."""
    replacing: bool
    """The case's label was found unusable before the batch: it is replaced without --overwrite."""

    def settle(self, case: Case, label: CaseOutput) -> bool | None:
        """With the case's lock held: whether its label replaces an existing file (True) or is written anew (False);
        None when another run has done the case meanwhile (it is then skipped)."""
        overwrite = self.overwrite or self.replacing
        if self.replacing and label.existing_problem(case.output, case.source) is None:
            overwrite = False  # another run has redone it meanwhile
        if case.output.exists() and not overwrite:
            return None
        return overwrite


def remove_leftovers(case: Case, writers: Sequence[CaseWriter], output: Path) -> None:
    """Remove the temporary files an interrupted run left for this case (its lock is held: none is in use)."""
    for writer in writers:
        for leftover in leftovers_of(writer.path(output, case.id, case.source)):
            leftover.unlink(missing_ok=True)
            logger.info("%s: removed %s, left by an interrupted run", case.name, leftover.name)
