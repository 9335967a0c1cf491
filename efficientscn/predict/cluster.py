"""`efficientscn predict --cluster`: the batch's cases as Dask tasks, one per case, on an existing scheduler
(`tcp://host:8786`) or on a `LocalCluster` of N worker processes on this machine (`local:N`).

The client plans the batch as a run in one process does (`plan`): it settles the cases it need not segment, checks
that every worker sees the batch's files (`cluster_worker.SharedFiles`, through a token file it writes in the output
folder), has each worker load one `Segmenter` (`cluster_worker.SegmenterPlugin`), sends one task per case to
segment, shows the progress bar, and writes the one report and the outputs' batch files. Each case is done by the
`CaseRunner` of a run in one process, under the same lock, with the same atomic writes and resume rules, so a case
whose worker dies is done again elsewhere (Dask reschedules it) exactly once. A worker that cannot be set up stops
the batch with its error; Ctrl-C cancels the cases not yet begun, lets those under way finish, and writes the report
(again: at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from efficientscn.atomic import write_text_atomic
from efficientscn.batch import BatchReport, Outcome, failure_of
from efficientscn.errors import InputError
from efficientscn.predict.batch_files import write_batch_files
from efficientscn.predict.cases import Case
from efficientscn.predict.monitor import CaseMonitor, run_facts
from efficientscn.predict.options import LOCAL_CLUSTER, PredictOptions, check_cluster_address
from efficientscn.predict.plan import BatchPlan
from efficientscn.stopping import StopRequest, stop_on_signals

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'efficientscn[cluster]'"
POLL_SECONDS = 0.5
"""How often the client looks for finished cases and a stop request."""


def local_threads(workers: int) -> int:
    """Threads per worker of `local:N`: this machine's cores shared out, one at least."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


class ClusterBatch:
    """One batch of `efficientscn predict` on a Dask cluster."""

    def __init__(self, options: PredictOptions) -> None:
        assert options.cluster is not None
        self.address = check_cluster_address(options.cluster)
        try:
            import distributed  # noqa: F401  (the optional extra: refused before any work)
        except ImportError:
            raise InputError(f"--cluster needs Dask's distributed: {INSTALL_HINT}") from None
        self.options = _absolute(options)  # workers may start in other folders
        self.plan = BatchPlan(self.options)
        self.cases = self.plan.cases
        self.monitor = CaseMonitor(self.cases, "cpu")  # the client segments nothing: the workers measure
        self.workers: dict[str, dict[str, Any]] = {}
        """Each worker's facts (device, threads, start-up seconds, peak memory), by address."""
        self.lost_workers: list[str] = []
        self._started: dict[str, str] = {}
        """Case (its key) -> the worker that began it, from the tasks' events."""
        self._lost: dict[str, set[str]] = {}
        """Worker lost while it segmented cases -> their keys."""

    def run(self) -> BatchReport:
        """Segment every case on the cluster; returns what happened to each. Writes the report if asked, also when
        the batch stopped or could not start on the cluster."""
        report, stop = BatchReport(), StopRequest()
        todo = self.plan.todo
        logger.info("%d case(s), %d to segment, on the Dask cluster %s", len(self.cases), len(todo), self.address)
        try:
            with (
                stop_on_signals() as stop,
                logging_redirect_tqdm() if self.options.progress else contextlib.nullcontext(),
                tqdm(total=len(self.cases), desc="predict", unit="case", disable=not self.options.progress) as bar,
            ):
                to_segment = set(todo)
                for case in self.cases:
                    if case not in to_segment:
                        self._settle_without_work(case, report)
                        bar.update(1)
                if todo and not stop.requested:
                    with self._cluster() as client, self._shared_files() as shared:
                        plugin = self._set_up_workers(client, shared)
                        try:
                            self._run_tasks(client, plugin, todo, report, bar, stop)
                        finally:
                            self._collect_worker_facts(client, plugin)
                            with contextlib.suppress(Exception):  # the cluster may be gone: nothing to let go
                                client.unregister_worker_plugin(plugin)
        finally:
            self.monitor.close()
            report.not_done = [Path(r.input).name for r in self.monitor.records_list() if r.status == "not done"]
            if stop.requested:
                report.stop_signal = stop.signal
            run = self._run_facts()
            plan, output = self.plan, self.options.output
            write_batch_files(report, output, plan.batch_writers, self.cases, plan.report, run, self.monitor)
        return report

    def _settle_without_work(self, case: Case, report: BatchReport) -> None:
        """A case refused or kept before the batch: recorded as a run in one process records it."""
        try:
            outcome = self.plan.settled_before(case, self.monitor.record(case))
        except InputError as error:
            logger.error("%s: %s", case.name, error)
            report.failed[case.name] = str(error)
            return
        assert outcome is not None
        report.skipped.append(case.name)

    @contextlib.contextmanager
    def _cluster(self) -> Iterator[Client]:
        """A client of the cluster the options name; a `LocalCluster` started for `local:N` and closed after."""
        from distributed import Client, LocalCluster

        cluster: LocalCluster | None = None
        try:
            if self.address.startswith(LOCAL_CLUSTER):
                workers = int(self.address[len(LOCAL_CLUSTER) :])
                threads = local_threads(workers)
                logger.info("starting a local Dask cluster of %d worker(s) x %d thread(s)", workers, threads)
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=threads,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
                client = Client(cluster)
            else:
                client = Client(self.address)
        except OSError as error:  # no scheduler there, or it would not answer in time
            raise InputError(f"--cluster {self.address}: cannot reach the Dask scheduler ({error})") from error
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

    @contextlib.contextmanager
    def _shared_files(self) -> Iterator[Any]:
        """A token file in the output folder, for every worker to read back: proof that it sees the client's files."""
        from efficientscn.predict.cluster_worker import SharedFiles

        text = secrets.token_hex(16)
        token = self.options.output / f".efficientscn-cluster-{text[:12]}.token"
        write_text_atomic(token, text)
        try:
            yield SharedFiles(token, text, self.options.inputs)
        finally:
            token.unlink(missing_ok=True)

    def _set_up_workers(self, client: Client, shared: Any) -> str:
        """The batch's plugin on every worker (those joining later get it too); InputError with the first worker's
        error if one cannot see the files or load the models. Returns the plugin's name."""
        from efficientscn.predict.cluster_worker import STARTED_TOPIC, SegmenterPlugin

        name = f"efficientscn-predict-{shared.token_text[:12]}"
        plugin = SegmenterPlugin(self.options, shared, name, local=self.address.startswith(LOCAL_CLUSTER))
        client.subscribe_topic(STARTED_TOPIC, self._on_case_started)
        client.subscribe_topic("all", self._on_scheduler_event)
        if not client.scheduler_info()["workers"]:
            logger.info("%s: no worker yet; the cases wait for the first to join", self.address)
        try:
            client.register_plugin(plugin, name=name)
        except Exception as error:  # a worker's own error, raised here by Dask
            raise InputError(f"--cluster {self.address}: {error}") from error
        self._collect_worker_facts(client, name)
        for address, facts in self.workers.items():
            logger.info(
                "worker %s: %s, %s, %d thread(s), ready in %.1f s",
                address,
                facts["device"],
                facts["precision"],
                facts["threads"],
                facts["start_seconds"],
            )
        notes = {
            network.get("demonstration")
            for facts in self.workers.values()
            for network in facts["networks"].values()
            if network.get("demonstration")
        }
        if notes:  # said by each worker in its own log; here once, for the user
            logger.warning("%s: %s", self.options.models, "; ".join(sorted(notes)))
        return name

    def _run_tasks(
        self, client: Client, plugin: str, todo: list[Case], report: BatchReport, bar: tqdm, stop: StopRequest
    ) -> None:
        """One task per case; each result recorded as it comes. A first stop request cancels the cases not yet
        begun and waits for the others; a second interrupts (KeyboardInterrupt) and leaves them not done."""
        from distributed import wait

        from efficientscn.predict.cluster_worker import segment_case

        futures: dict[Future, Case] = {}
        for index, case in enumerate(todo):
            key = f"efficientscn-case-{index}-{plugin[-12:]}"
            claim = self.plan.resume.claim(case)
            futures[client.submit(segment_case, case, claim, plugin, key=key, pure=False)] = case
        pending, cancelled = set(futures), False
        try:
            while pending:
                if stop.requested and not cancelled:
                    pending = self._cancel_not_begun(client, futures, pending)
                    cancelled = True
                    continue
                try:
                    done, pending = wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    continue
                for future in done:
                    self._record(future, futures[future], report)
                    bar.update(1)
        finally:
            client.cancel(list(pending))  # interrupted: nothing more is done for this batch

    def _cancel_not_begun(self, client: Client, futures: dict[Future, Case], pending: set[Future]) -> set[Future]:
        """Cancel the pending cases no worker has begun; the others go on. Returns those."""
        begun = {future for future in pending if future.key in self._started}
        not_begun = pending - begun
        client.cancel(list(not_begun))
        logger.warning(
            "stopping: %d case(s) cancelled, waiting for the %d under way (again to stop at once)",
            len(not_begun),
            len(begun),
        )
        return begun

    def _record(self, future: Future, case: Case, report: BatchReport) -> None:
        """A finished task's outcome into the case's record and the batch's report, logged as in one process."""
        from distributed import KilledWorker

        from efficientscn.predict.cluster_worker import WorkerUnusable

        record = self.monitor.record(case)
        if future.status == "cancelled":
            return  # not done
        error = future.exception() if future.status == "error" else None
        if isinstance(error, WorkerUnusable):
            raise InputError(str(error))  # the batch stops: every case sent there would fail the same way
        lost = [worker for worker, keys in self._lost.items() if future.key in keys]
        if error is not None:
            if isinstance(error, KilledWorker):
                message = (
                    f"the workers that segmented it were lost {len(lost)} times (killed, or out of memory?): "
                    f"{', '.join(lost)}"
                )
            else:
                message = failure_of(error)[0]
            record.status, record.error, record.lost_workers = "failed", message, lost
            logger.error("%s: %s", case.name, message)
            report.failed[case.name] = message
            return
        outcome = future.result()
        outcome.record.lost_workers = lost
        self.monitor.records[case.source] = outcome.record
        for warning in outcome.record.warnings:
            logger.warning("%s: %s", case.name, warning)
        if outcome.outcome is None:
            if outcome.traceback:
                logger.error("%s: unexpected error on %s\n%s", case.name, outcome.record.worker, outcome.traceback)
            else:
                logger.error("%s: %s", case.name, outcome.failure)
            report.failed[case.name] = outcome.failure or "failed"
            return
        done: Outcome = outcome.outcome
        (report.done if done == "done" else report.skipped).append(case.name)
        if lost:
            logger.warning("%s: done on %s after losing %s", case.name, outcome.record.worker, ", ".join(lost))

    def _on_case_started(self, event: tuple[float, dict[str, Any]]) -> None:
        """A task's event: it began its case on a worker."""
        _, message = event
        self._started[str(message.get("key"))] = str(message.get("worker"))

    def _on_scheduler_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """The scheduler's events: a worker removed while it processed cases is recorded as lost for them."""
        _, message = event
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        worker = str(message.get("worker"))
        # cases it had begun (a worker may also hold cases it has not begun, which lose nothing)
        keys = {str(key) for key in message.get("processing-tasks") or ()}
        keys = {key for key in keys if self._started.get(key) == worker}
        if not keys:
            return
        logger.warning("worker %s lost while segmenting %d case(s): Dask gives them to others", worker, len(keys))
        self.lost_workers.append(worker)
        self._lost[worker] = keys

    def _collect_worker_facts(self, client: Client, plugin: str) -> None:
        """Each worker's facts, kept for the report (those of lost workers from when they were last asked)."""
        from efficientscn.predict.cluster_worker import worker_facts

        with contextlib.suppress(Exception):  # a worker gone meanwhile keeps its earlier facts
            found = client.run(worker_facts, plugin, on_error="return")
            self.workers.update({address: facts for address, facts in found.items() if isinstance(facts, dict)})

    def _run_facts(self) -> dict[str, Any]:
        """The report's facts: those of the workers (device, precision, models, where all agree), and the cluster."""
        facts = list(self.workers.values())

        def agreed(key: str) -> Any:
            values = {repr(item[key]) for item in facts}
            return facts[0][key] if len(values) == 1 else None

        run = run_facts(
            device=agreed("device") if facts else self.options.device or "unknown",
            precision=agreed("precision") if facts else self.options.precision,
            networks=agreed("networks") if facts else None,
            utils=self.options.utils,
        )
        run.update(self.plan.report_facts())
        run["cluster"] = {"address": self.address, "workers": self.workers, "lost_workers": self.lost_workers}
        return run


def _absolute(options: PredictOptions) -> PredictOptions:
    """`options` with absolute paths: a worker's working folder is not the client's."""
    paths = {
        name: Path(os.path.abspath(value))
        for name in ("inputs", "output", "models", "utils", "report")
        if isinstance(value := getattr(options, name), Path)
    }
    return dataclasses.replace(options, **paths)
