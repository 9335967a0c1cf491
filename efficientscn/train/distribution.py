"""Where a training run computes: this process's devices, or several worker processes (machines) as one job.

`training_strategy` picks tf.distribute's strategy: `MultiWorkerMirroredStrategy` when `TF_CONFIG` names more than
one worker (or when asked, `multi_worker`), a `MirroredStrategy` over this machine's GPUs when it has several, and
the default strategy otherwise. Every replica, on any worker, trains on one sample per step, as the original's one
GPU did; their gradients are averaged, so the global batch is the number of replicas and the learning rate stays the
original's (docs/fidelity.md #51). Across workers, the chief alone writes the run folder; `agree_on_path` gives
every worker the chief's choice of it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from efficientscn.errors import InputError

TF_CONFIG = "TF_CONFIG"
PATH_BYTES = 4096
"""The longest run folder path `agree_on_path` carries (Linux's PATH_MAX)."""


def tf_config_workers() -> int:
    """How many workers (the chief counted) `TF_CONFIG` names; 0 when it is not set. InputError when it cannot be
    read."""
    text = os.environ.get(TF_CONFIG)
    if not text:
        return 0
    try:
        cluster = json.loads(text)["cluster"]
        return sum(len(cluster.get(kind, ())) for kind in ("chief", "worker"))
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{TF_CONFIG}: not a tf.distribute cluster description ({error})") from error


@functools.cache
def multi_worker_strategy() -> tf.distribute.Strategy:
    """The process's MultiWorkerMirroredStrategy, made once: TensorFlow configures its collective operations once per
    process (several folds trained in turn share it)."""
    return tf.distribute.MultiWorkerMirroredStrategy()


def training_strategy(devices: Sequence[str] | None = None, *, multi_worker: bool = False) -> tf.distribute.Strategy:
    """The strategy a run trains with: across workers when `multi_worker` or `TF_CONFIG` names several; else a
    MirroredStrategy over `devices`, or over all GPUs when there are several; the default strategy otherwise."""
    if multi_worker or tf_config_workers() > 1:
        return multi_worker_strategy()
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] if len(gpus) > 1 else None
    if devices and len(devices) > 1:
        return tf.distribute.MirroredStrategy(list(devices))
    return tf.distribute.get_strategy()


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a training job."""

    index: int
    """0 for the chief."""
    count: int
    local_replicas: int
    """Replicas (devices) of this worker; every worker has as many."""

    @property
    def chief(self) -> bool:
        """The worker that writes the run folder."""
        return self.index == 0


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
    """This process's role under `strategy` (the only worker, unless it spans several)."""
    try:
        local = len(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: this process's one device
        local = 1
    count = strategy.num_replicas_in_sync // local
    if count == 1:
        return WorkerRole(0, 1, local)
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    order = [(kind, index) for kind in ("chief", "worker") for index in range(len(spec.get(kind, ())))]
    return WorkerRole(order.index((resolver.task_type, resolver.task_id)), count, local)


def agree_on_path(strategy: tf.distribute.Strategy, path: Path | None) -> Path:
    """The chief's `path` on every worker (the others pass None), carried by one all-reduce: the chief alone decides
    which run folder a job writes (a new one is named by the time it starts, which the workers do not share)."""
    role = worker_role(strategy)
    if role.count == 1:
        assert path is not None
        return path
    encoded = np.zeros(PATH_BYTES, np.int32)
    if role.chief:
        assert path is not None
        raw = os.fsencode(str(path))
        if len(raw) > PATH_BYTES:
            raise InputError(f"{path}: a run folder path longer than {PATH_BYTES} bytes")
        encoded[: len(raw)] = np.frombuffer(raw, np.uint8)

    def contribution() -> tf.Tensor:
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return tf.where(first, tf.constant(encoded), tf.zeros_like(encoded))  # counted once: the chief's replica 0

    summed = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.function(contribution)), axis=None)
    return Path(os.fsdecode(summed.numpy().astype(np.uint8).tobytes().rstrip(b"\0")))
