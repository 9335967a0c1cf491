"""Reading the cases of a batch: ahead in one process (the next CT is read while the current one is segmented), or
when each case's turn comes on a cluster's worker, which is not told its next case."""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.geometry import SpacingFallback
from efficientscn.imaging.read import header_size
from efficientscn.infer.runtime import READ_AHEAD_MAX_VOXELS
from efficientscn.predict.cases import Case


def read_case(
    case: Case, max_voxels: int, spacing_fallback: SpacingFallback, keep_as_read: bool
) -> tuple[CanonicalCT, float]:
    """The CT of `case` on its processing grid, and the seconds its reading took."""
    start = time.perf_counter()
    ct = CanonicalCT.read(
        case.source, max_voxels=max_voxels, spacing_fallback=spacing_fallback, keep_as_read=keep_as_read
    )
    return ct, time.perf_counter() - start


def _small_enough_to_read_ahead(case: Case) -> bool:
    """Whether the header of `case` gives at most `READ_AHEAD_MAX_VOXELS` (unreadable: no; its turn says why)."""
    try:
        return math.prod(header_size(case.source)) <= READ_AHEAD_MAX_VOXELS
    except (InputError, OSError):
        return False


class ReadAhead:
    """Reads the cases in a background thread: the first at once, each next one while the case before it is
    segmented if it is small enough (`READ_AHEAD_MAX_VOXELS`), else when its turn comes."""

    def __init__(
        self,
        cases: list[Case],
        executor: ThreadPoolExecutor,
        max_voxels: int,
        spacing_fallback: SpacingFallback = "missing",
        *,
        keep_as_read: bool = False,
    ) -> None:
        """`keep_as_read`: keep an oblique CT as read too (see `CanonicalCT.from_image`)."""
        self._cases = cases
        self._max_voxels = max_voxels
        self._spacing_fallback = spacing_fallback
        self._keep_as_read = keep_as_read
        self._executor = executor
        self._pending: dict[int, Future[tuple[CanonicalCT, float] | None]] = {}
        self._submit(0, ahead=False)

    def _read_now(self, case: Case) -> tuple[CanonicalCT, float]:
        return read_case(case, self._max_voxels, self._spacing_fallback, self._keep_as_read)

    def _read_if_small(self, case: Case) -> tuple[CanonicalCT, float] | None:
        """The CT of `case`, or None if it is too large to be read ahead."""
        return self._read_now(case) if _small_enough_to_read_ahead(case) else None

    def _submit(self, index: int, *, ahead: bool) -> None:
        if index < len(self._cases) and index not in self._pending:
            read = self._read_if_small if ahead else self._read_now
            self._pending[index] = self._executor.submit(read, self._cases[index])

    def take(self, case: Case) -> tuple[CanonicalCT, float]:
        """The CT of `case` on its processing grid and the seconds its reading took (waiting for it if needed),
        after starting to read the one after it."""
        index = self._cases.index(case)
        self._submit(index, ahead=False)
        try:
            read = self._pending.pop(index).result()
        finally:  # also after a failed read: the batch goes on
            self._submit(index + 1, ahead=True)
        return read if read is not None else self._read_now(case)

    def drop(self, case: Case) -> None:
        """Give up `case` (another run does it): its CT is not kept, and the one after it is read next."""
        index = self._cases.index(case)
        self._submit(index + 1, ahead=False)
        pending = self._pending.pop(index, None)
        if pending is not None:
            pending.cancel()


class ReadNow:
    """Reads each case when its turn comes (the reading a cluster's worker does, one task per case)."""

    def __init__(self, max_voxels: int, spacing_fallback: SpacingFallback, *, keep_as_read: bool = False) -> None:
        self._max_voxels = max_voxels
        self._spacing_fallback = spacing_fallback
        self._keep_as_read = keep_as_read

    def take(self, case: Case) -> tuple[CanonicalCT, float]:
        """The CT of `case` on its processing grid and the seconds its reading took."""
        return read_case(case, self._max_voxels, self._spacing_fallback, self._keep_as_read)

    def drop(self, case: Case) -> None:
        """Nothing was read ahead: nothing to give up."""
