"""The generic training loop both stages use: one sample per replica per step, checkpoints, tests, logs, resume.

A stage supplies a `TrainingTask` (network, loss, sample source, test); this module does the rest the same way
for both: Adam; L2 regularisation; the weight average (EMA) that tests, checkpoints and exports use;
norm-adaptive gradient clipping; precision by device with a dynamic loss scale for float16; a tf.distribute
strategy (`distribution`: several devices or several workers, each replica gets its own variable-shape sample); a
checkpoint every `snapshot_iter` from which `resume` continues with the same iteration count, optimizer, average,
clipping and loss-scale state; the stage's test every `test_iter`; train.csv, test.csv and TensorBoard logs; a
tqdm bar. A non-finite loss stops the run before anything more is written. Across workers, the chief alone writes
the run folder; the others write what TensorFlow needs them to (their checkpoints) into a private temporary folder,
removed when they finish.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import keras
import tensorflow as tf
from tqdm import tqdm

from efficientscn.data.loader import LoaderError, SampleLoader, SampleSource
from efficientscn.errors import InputError, RunStopped
from efficientscn.model.precision import precision_policy, training_precision, uses_loss_scaling
from efficientscn.train.clipping import AdaptiveGradientClipping
from efficientscn.train.config import TrainingConfig
from efficientscn.train.distribution import training_strategy, worker_role
from efficientscn.train.ema import WeightAverage
from efficientscn.train.loss_scale import DynamicLossScale
from efficientscn.train.run_folder import (
    CHECKPOINT_PREFIX,
    WEIGHTS_DIR,
    CsvLog,
    checkpoint_iterations,
    checkpoint_path,
    log_to_file,
    write_config,
)

logger = logging.getLogger(__name__)

Predict = Callable[[tf.Tensor], Any]
"""The network in inference mode with the averaged weights: (1, z, y, x, 1) float32 -> its outputs, float32
(localization: the logits (1, z, y, x, 2); SCN: a dict of (1, z, y, x, 5) tensors)."""


class TrainingTask(Protocol):
    """What a stage provides to the loop."""

    stage: str
    sample_source: SampleSource
    train_ids: Sequence[str]
    test_ids: Sequence[str]
    sample_signature: Mapping[str, tf.TensorSpec]
    """Spec of each array of a sample without the batch axis, e.g. {"image": (None, None, None, 1) float32, ...}."""
    loss_fields: Sequence[str]
    """Names of the terms `loss_terms` returns, "loss" first."""
    test_fields: Sequence[str]

    def build_model(self) -> keras.Model:
        """A new network (called inside the strategy scope, under the chosen precision policy)."""
        ...

    def loss_terms(self, model: keras.Model, sample: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Scalar float32 loss terms of one batch in training mode; "loss" is the data loss to minimise."""
        ...

    def test(self, predict: Predict, folder: Path, progress: bool) -> dict[str, float]:
        """Predict the test cases into `folder` and return the figures for test.csv (names in `test_fields`)."""
        ...


class TrainingDiverged(RunStopped):
    """The loss became NaN or infinite; nothing from that step on was written."""


class Trainer:
    """Train one task in one run folder; `run()` trains up to `config.max_iter` and returns the run folder."""

    def __init__(
        self,
        task: TrainingTask,
        config: TrainingConfig,
        run_folder: Path,
        *,
        record: Mapping[str, Any],
        resume: bool = False,
        progress: bool = True,
        devices: Sequence[str] | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        """`strategy`: how to distribute (`distribution.training_strategy`; by default over `devices`). A worker
        other than the chief reads `run_folder` (to resume) and writes into a temporary folder of its own."""
        self.task, self.config, self.run_folder = task, config, Path(run_folder)
        self.precision = training_precision(config.precision)
        logger.info("precision: %s", self.precision)
        self.strategy = strategy or training_strategy(devices)
        self.role = worker_role(self.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        """Replicas of all workers: each trains on one sample per step, so this is the global batch."""
        self.progress = progress and self.role.chief
        self.write_folder = (
            self.run_folder if self.role.chief else Path(tempfile.mkdtemp(prefix=f"efficientscn-w{self.role.index}-"))
        )
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope(), precision_policy(self.precision):
            self.model = task.build_model()
            self.optimizer = keras.optimizers.Adam(config.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
            self.loss_scale = (
                DynamicLossScale(config.loss_scale_initial, config.loss_scale_growth_steps)
                if uses_loss_scaling(self.precision)
                else None
            )
            self.average = WeightAverage(self.model.trainable_variables, config.ema_decay)
            self.clipping = AdaptiveGradientClipping(config.clip_factor, config.clip_initial_average, config.clip_rate)
            self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            **({"loss_scale": self.loss_scale} if self.loss_scale is not None else {}),
            weight_average=self.average,
            clipping=self.clipping,
            iteration=self.iteration,
        )
        # every worker saves (saving may need all of them), the chief into the run folder
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.write_folder / WEIGHTS_DIR, max_to_keep=None, checkpoint_name=CHECKPOINT_PREFIX
        )
        start = self._restore() if resume else None
        write_config(self.write_folder, {**record, "replicas": self.replicas, "workers": self.role.count})
        train_fields = ["total", *task.loss_fields, "regularization", "gradient_norm", "clip_threshold"]
        if uses_loss_scaling(self.precision):
            train_fields.append("loss_scale")
        train_fields.append("seconds_per_step")
        self.train_log = CsvLog(self.write_folder / "train.csv", train_fields, resume_from=start)
        self.test_log = CsvLog(self.write_folder / "test.csv", list(task.test_fields), resume_from=start)
        self.summaries = tf.summary.create_file_writer(str(self.write_folder / "tensorboard"))
        # TensorFlow has no CPU kernel for float16 average pooling; XLA compiles it (float16 on a CPU is for tests)
        jit = self.precision == "float16" and not tf.config.list_physical_devices("GPU")
        # across workers, the step is traced once, for every shape: the workers' collective operations are matched
        # by the order they were traced in, and samples of other shapes would retrace on one worker only
        signature = None
        if self.role.count > 1 and self.role.local_replicas == 1:
            signature = [{k: tf.TensorSpec((1, *spec.shape), spec.dtype) for k, spec in task.sample_signature.items()}]
        self._train_step = tf.function(self._step, reduce_retracing=True, jit_compile=jit, input_signature=signature)
        self.predict: Predict = tf.function(
            lambda image: self.model(image, training=False), reduce_retracing=True, jit_compile=jit
        )

    def _restore(self) -> int:
        iterations = checkpoint_iterations(self.run_folder)
        if not iterations:
            raise FileNotFoundError(f"{self.run_folder / WEIGHTS_DIR}: no checkpoint to resume from")
        path = checkpoint_path(self.run_folder, iterations[-1])
        try:
            self.checkpoint.restore(str(path)).assert_existing_objects_matched()
        except AssertionError as error:
            raise InputError(
                f"{path}: the checkpoint does not fit this network and optimizer (precision {self.precision}); "
                f"resume with the run's own settings ({error})"
            ) from None
        logger.info("resumed %s at iteration %d", path, int(self.iteration.numpy()))
        return int(self.iteration.numpy())

    def _step(self, sample: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """Gradients per replica; then, once for all replicas: sum, clip, skip if not finite, apply, average."""
        model, loss_scale = self.model, self.loss_scale
        scale = loss_scale.scale if loss_scale is not None else tf.constant(1.0)

        def replica_step(replica_sample: Mapping[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], list[tf.Tensor]]:
            with tf.GradientTape() as tape:
                terms = dict(self.task.loss_terms(model, replica_sample))
                regularization = tf.add_n(model.losses) * self.config.reg_constant if model.losses else tf.zeros(())
                terms["regularization"] = tf.cast(regularization, tf.float32)
                total = terms["loss"] + terms["regularization"]
                objective = total / self.replicas * scale  # summed over replicas: the mean, times the loss scale
            terms["total"] = total
            return terms, tape.gradient(objective, model.trainable_variables)

        terms, gradients = self.strategy.run(replica_step, args=(sample,))
        terms = {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in terms.items()}
        summed = [self.strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in gradients]
        norm = tf.linalg.global_norm(summed) / scale
        factor, threshold = self.clipping(norm)
        finite = tf.math.is_finite(norm)

        def apply_on_replicas(replica_gradients: list[tf.Tensor]) -> None:
            # Keras sums the replicas' gradients itself (each is 1/replicas of the mean's)
            self.optimizer.apply([g * (factor / scale) for g in replica_gradients], model.trainable_variables)

        def apply() -> tf.Tensor:
            self.strategy.run(apply_on_replicas, args=(gradients,))
            return tf.constant(True)

        # a float16 step whose gradients overflowed is skipped (the loss scale then shrinks); in float32 or bfloat16
        # a non-finite gradient goes on to a non-finite loss, which stops the run
        def skip() -> tf.Tensor:
            # Adam's step counter still advances, as in TF 2.6's LossScaleOptimizer: its bias correction counts the
            # skipped steps too (docs/fidelity.md, "Made equal")
            self.optimizer.iterations.assign_add(1)
            return tf.constant(False)

        if loss_scale is None:
            apply()
        else:
            tf.cond(finite, apply, skip)
            loss_scale.update(finite)
            terms["loss_scale"] = tf.identity(loss_scale.scale)
        self.average.update()  # every step, a skipped one too, as the original
        self.iteration.assign_add(1)
        terms.update(gradient_norm=norm, clip_threshold=threshold)
        return terms

    def step(self, batch: Sequence[Mapping[str, tf.Tensor]]) -> dict[str, float]:
        """One optimisation step on one batch per replica of this worker (each (1, z, y, x, C)); returns the step's
        figures (across workers: of every worker's replicas)."""
        local = self.role.local_replicas
        if len(batch) != local:
            raise ValueError(f"{len(batch)} batches for {local} replicas")
        if local == 1:
            sample: Any = batch[0]
        else:  # a worker's replicas are numbered consecutively across the job
            sample = self.strategy.experimental_distribute_values_from_function(
                lambda context: batch[context.replica_id_in_sync_group % local]
            )
        with self.strategy.scope():  # cross-replica context: mirrored weights are updated on every device
            values = self._train_step(sample)
        return {key: float(value) for key, value in values.items()}

    def run(self) -> Path:
        """Train from the current iteration up to `max_iter`; returns the run folder."""
        # each worker draws its own samples: its loader's seeds follow those of the workers before it
        seed = self.config.seed + int(self.iteration.numpy()) + self.role.index * max(self.config.workers, 1)
        try:
            with (
                log_to_file(self.write_folder),
                SampleLoader(
                    self.task.sample_source, self.task.train_ids, workers=self.config.workers, seed=seed
                ) as loader,
            ):
                samples = _tf_samples(loader, self.task.sample_signature, self.config.queue_size)
                try:
                    self._loop(samples, loader)
                finally:
                    del samples  # end tf.data's reading of the loader before the loader closes
        finally:
            if not self.role.chief:
                self.summaries.close()
                shutil.rmtree(self.write_folder, ignore_errors=True)
        return self.run_folder

    def _loop(self, samples: Any, loader: SampleLoader) -> None:
        config, start = self.config, int(self.iteration.numpy())
        if start >= config.max_iter:
            logger.warning("%s is at iteration %d of %d: nothing to train", self.run_folder, start, config.max_iter)
        logger.info(
            "training %s from iteration %d to %d in %s", self.task.stage, start, config.max_iter, self.run_folder
        )
        sums: dict[str, float] = {}
        count, tick = 0, time.perf_counter()
        with tqdm(total=config.max_iter, initial=start, desc=self.task.stage, disable=not self.progress) as bar:
            for done in range(start + 1, config.max_iter + 1):
                try:
                    batch = [next(samples) for _ in range(self.role.local_replicas)]
                except tf.errors.OpError as error:  # a loader failure surfaces through tf.data
                    raise (loader.error or LoaderError(str(error))) from None
                values = self.step(batch)
                if not math.isfinite(values["total"]):
                    raise TrainingDiverged(
                        f"loss is {values['total']} at iteration {done}; stopped without writing further checkpoints "
                        f"(last one: {self.manager.latest_checkpoint})"
                    )
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                bar.update(1)
                if done % config.log_iter == 0 or done == config.max_iter:
                    means = {k: v / count for k, v in sums.items()}
                    means["seconds_per_step"] = (time.perf_counter() - tick) / count
                    self._log("train", done, means, self.train_log)
                    bar.set_postfix(loss=f"{means['total']:.4f}")
                    sums, count, tick = {}, 0, time.perf_counter()
                if done % config.snapshot_iter == 0 or done == config.max_iter:
                    self.manager.save(checkpoint_number=done)
                # the test runs on the chief alone (it writes its results; the others wait at the next step)
                if self.role.chief and self.task.test_ids and (done % config.test_iter == 0 or done == config.max_iter):
                    self._test(done)
                    tick = time.perf_counter()

    def _test(self, iteration: int) -> None:
        with self.strategy.scope(), self.average.swapped():  # in scope: the swap reaches every replica's copy
            figures = self.task.test(self.predict, self.run_folder / "test" / f"iter_{iteration}", self.progress)
        self._log("test", iteration, figures, self.test_log)

    def _log(self, kind: str, iteration: int, values: Mapping[str, float], csv_log: CsvLog) -> None:
        csv_log.append(iteration, values)
        with self.summaries.as_default():
            for key, value in values.items():
                tf.summary.scalar(f"{kind}/{key}", value, step=iteration)
        self.summaries.flush()
        logger.info("%s %d: %s", kind, iteration, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))


def _tf_samples(loader: SampleLoader, signature: Mapping[str, tf.TensorSpec], queue_size: int) -> Any:
    """An iterator over the loader's samples through tf.data, batched to 1, with a bounded prefetch queue."""
    dataset = tf.data.Dataset.from_generator(lambda: iter(loader), output_signature=dict(signature))
    return iter(dataset.batch(1).prefetch(queue_size))
