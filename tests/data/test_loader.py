"""The multi-process sample loader: samples arrive, a failing case or a dead worker stops it with a message."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from loader_sources import BigSource, CountingSource, FailingSource

from efficientscn.data.loader import LoaderError, SampleLoader


def test_worker_processes_deliver_samples_of_every_case():
    with SampleLoader(CountingSource(), ["case_1", "case_2", "case_3"], workers=2, seed=3) as loader:
        samples = [loader.next() for _ in range(30)]
        pids = {int(s["pid"]) for s in samples}
        deadline = time.monotonic() + 60  # a worker that starts late (busy machine) still contributes
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(int(loader.next()["pid"]))
    values = {float(s["image"][0, 0, 0, 0]) for s in samples}
    assert values == {1.0, 2.0, 3.0}
    assert os.getpid() not in pids and len(pids) == 2
    assert samples[0]["image"].shape == (2, 3, 4, 1)


def test_in_process_loading_is_reproducible_for_a_seed():
    def draw(seed: int) -> list[float]:
        with SampleLoader(CountingSource(), ["case_1", "case_2", "case_3"], workers=0, seed=seed) as loader:
            return [float(loader.next()["image"].flat[0]) for _ in range(12)]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_case_stops_the_loader_with_its_name_and_reason(workers):
    loader = SampleLoader(FailingSource(), ["broken_case"], workers=workers, seed=0)
    started = time.monotonic()
    with pytest.raises(LoaderError, match=r"broken_case.*cannot read this CT"):
        for _ in range(5):
            loader.next()
    assert time.monotonic() - started < 60  # an error, not a hang
    assert loader.error is not None and "broken_case" in str(loader.error)
    loader.close()


def test_a_killed_worker_is_reported_instead_of_hanging():
    loader = SampleLoader(CountingSource(), ["case_1"], workers=1, seed=0)
    loader.next()
    os.kill(loader._processes[0].pid, signal.SIGKILL)
    with pytest.raises(LoaderError, match="died"):
        for _ in range(100_000):  # the samples already in the pipe come first
            loader.next()
    loader.close()


def test_a_worker_killed_while_sending_a_large_sample_is_reported_instead_of_hanging():
    loader = SampleLoader(BigSource(), ["case_1"], workers=1, seed=0)
    assert loader.next()["image"].shape == (16, 1024, 1024)
    time.sleep(3)  # the worker has made its next sample and is blocked sending it: the pipe holds a part
    os.kill(loader._processes[0].pid, signal.SIGKILL)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            loader.next()
        except BaseException as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "the loader hung on a half-sent sample"
    assert len(outcome) == 1 and isinstance(outcome[0], LoaderError) and "died" in str(outcome[0])
    with pytest.raises(LoaderError):
        loader.next()  # a closed loader does not silently start sampling in-process


def test_an_empty_id_list_is_refused():
    with pytest.raises(ValueError, match="no case IDs"):
        SampleLoader(CountingSource(), [], workers=0)
