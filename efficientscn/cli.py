"""The `efficientscn` command: one subcommand per step of the workflow; each parses flags and calls one function.

Exit status: 0 when everything succeeded, 1 when some case failed (the others were still processed), 2 for a
usage error or an input that stops the whole command (for example an empty folder).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NoReturn

from efficientscn.batch import BatchReport
from efficientscn.errors import InputError, RunStopped
from efficientscn.native_logs import native_logs_filtered
from efficientscn.versions import __version__

logger = logging.getLogger("efficientscn")

EXIT_OK, EXIT_CASES_FAILED, EXIT_UNUSABLE_INPUT = 0, 1, 2


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bar")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug messages")


def _positive_float(text: str) -> float:
    """An argparse type: a finite number above zero."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return value


def _fold_count(text: str) -> int:
    """An argparse type: at least two folds."""
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text}: cross-validation needs at least 2 folds")
    return value


def _preprocess_options(parser: argparse.ArgumentParser) -> None:
    from efficientscn.data.preprocess import PreprocessConfig
    from efficientscn.data.setup_files import DEFAULT_FOLDS, DEFAULT_SEED

    parser.description = (
        "Preprocess a dataset folder in FLARE layout (TrainingImg/<id>_0000.nii.gz, TrainingMask/<id>.nii.gz, "
        "optionally ValidationImg/). Writes TrainingImg_small/ and TrainingMask_small/ (every axis finer than "
        "half the localization spacing subsampled by 2), setup/landmark_bb.csv (physical box of all organs per "
        "case: id,xmin,ymin,zmin,xmax,ymax,zmax in mm) and setup/cv/ (all_train.txt, all_validation.txt and "
        "<k>/train.txt, <k>/test.txt per fold). Finished outputs are skipped on a re-run; a bad case is "
        "reported and the others go on."
    )
    parser.add_argument(
        "--dataset",
        required=True,
        type=Path,
        help="dataset folder in FLARE layout (preprocessing/preprocessing.py: or set base_dataset_folder in it)",
    )
    parser.add_argument(
        "--localization-spacing-mm",
        type=_positive_float,
        default=PreprocessConfig.localization_spacing_mm,
        help="default: %(default)s",
    )
    parser.add_argument("--no-small", action="store_true", help="skip the _small images and masks")
    parser.add_argument("--no-landmark-bb", action="store_true", help="skip setup/landmark_bb.csv")
    parser.add_argument("--no-cv-setup", action="store_true", help="skip the setup/cv split files")
    parser.add_argument("--folds", type=_fold_count, default=DEFAULT_FOLDS, help="cv folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the cv split (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="redo and replace existing outputs and splits")
    _add_common_flags(parser)
    parser.set_defaults(handler=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from efficientscn.data.preprocess import PreprocessConfig, preprocess_dataset

    config = PreprocessConfig(
        localization_spacing_mm=args.localization_spacing_mm,
        small_images=not args.no_small,
        landmark_bb=not args.no_landmark_bb,
        cv_setup=not args.no_cv_setup,
        folds=args.folds,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    report = preprocess_dataset(args.dataset, config, progress=not args.quiet)
    return finish_batch(report, "preprocess")


def _evaluate_options(parser: argparse.ArgumentParser) -> None:
    from efficientscn.evaluate import CSV_NAME, SUMMARY_NAME
    from efficientscn.metrics import FLARE21_NSD_TOLERANCE_MM

    parser.description = (
        "Score predicted label maps against reference labels with the FLARE21 metrics: per organ (liver, "
        "kidney, spleen, pancreas) Dice and normalised surface Dice at 1 mm; an organ absent from both scores "
        "1, predicted but absent from the reference 0. Files pair by case ID (file name without extension and "
        "without _0000, and without a --strip-suffix) and must share one grid; files that pair with nothing are "
        f"named before any score. Writes {CSV_NAME} (per case) and {SUMMARY_NAME} (mean per "
        "organ, failed cases) and prints the mean per organ over the scored cases. A reference case without a "
        "prediction, with an unreadable one or one on another grid is reported as failed, left out of the means "
        "(the printed table says how many), and makes the exit status 1."
    )
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps")
    parser.add_argument("--ref", required=True, type=Path, help="folder of reference label maps")
    parser.add_argument(
        "-o", "--output", type=Path, help="folder for the CSV and the JSON summary (default: PRED/evaluation)"
    )
    parser.add_argument(
        "--tolerance-mm",
        type=_positive_float,
        default=FLARE21_NSD_TOLERANCE_MM,
        help="NSD tolerance (default: %(default)s)",
    )
    parser.add_argument(
        "--strip-suffix",
        action="append",
        default=[],
        metavar="SUFFIX",
        help="pair files by their case ID without this suffix, in either folder; repeat for several (e.g. "
        "--strip-suffix _ct --strip-suffix _flare pairs patient01_ct with patient01_flare)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV and summary")
    _add_common_flags(parser)
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from efficientscn.atomic import ensure_writable_folder
    from efficientscn.evaluate import CSV_NAME, SUMMARY_NAME, evaluate_folders, label_files, write_evaluation

    for folder in (args.pred, args.ref):
        label_files(folder, args.strip_suffix)  # refuse a missing or empty folder before anything else
    output = ensure_writable_folder(args.output or args.pred / "evaluation")
    if not args.overwrite:
        existing = [output / name for name in (CSV_NAME, SUMMARY_NAME) if (output / name).exists()]
        if existing:
            raise FileExistsError(f"{existing[0]}: already exists (use --overwrite to replace it)")
    evaluation = evaluate_folders(
        args.pred, args.ref, args.tolerance_mm, progress=not args.quiet, strip_suffixes=args.strip_suffix
    )
    if evaluation.report.stop_signal is not None:  # partial means would read as the whole set's
        logger.error("evaluate: stopped; nothing written")
        return finish_batch(evaluation.report, "evaluate")
    csv_path, json_path = write_evaluation(evaluation, output, overwrite=args.overwrite)
    print(evaluation.table())
    logger.info("wrote %s and %s", csv_path, json_path)
    return finish_batch(evaluation.report, "evaluate")


def _non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def _slab_memory(text: str) -> int | str | None:
    """An argparse type: megabytes (at least 1) as bytes, "off" (None), or "auto" (kept: resolved by the run's
    allocator, `runtime.default_slab_budget`)."""
    if text in ("off", "auto"):
        return None if text == "off" else text
    return _positive_int(text) * 2**20


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1")
    return value


def _train_options(parser: argparse.ArgumentParser) -> None:
    from efficientscn.model.precision import PRECISIONS
    from efficientscn.train.stages import STAGES

    stages = parser.add_subparsers(title="networks", dest="stage", required=True)
    for stage in STAGES:
        defaults = stage.config_type().training
        command = stages.add_parser(
            stage.name,
            aliases=list(stage.aliases),
            help=f"train {stage.model.description}",
            description=(
                f"Train {stage.model.description} on a preprocessed FLARE-layout dataset ({stage.reads}). Fold k "
                "trains on setup/cv/<k>/train.txt and tests on setup/cv/<k>/test.txt every --test-iter iterations; "
                f"fold 0 trains on all_train.txt and skips tests. Each fold writes OUTPUT/{stage.name}/cv<k>/"
                "<timestamp>/ with config.json, train.csv, test.csv, tensorboard/, weights/ckpt-<iteration> every "
                f"--snapshot-iter, and test/iter_<n>/ ({stage.test_writes}). --resume continues the newest run of "
                "each fold from its last checkpoint."
            ),
        )
        command.add_argument("--dataset", required=True, type=Path, help="preprocessed dataset folder (FLARE layout)")
        command.add_argument("--output", required=True, type=Path, help="folder for the runs")
        command.add_argument(
            "--cv",
            type=_non_negative_int,
            nargs="+",
            default=[1, 2, 3, 4],
            help="fold(s), 0 = all cases (default: %(default)s)",
        )
        for flag, kind, text in _TRAINING_FLAGS:
            name = flag[2:].replace("-", "_")
            default = getattr(defaults, name)
            if name == "precision":
                command.add_argument(
                    flag, choices=PRECISIONS, help=f"{text} (default: {default}: float16 on a GPU, else float32)"
                )
            else:
                command.add_argument(flag, type=kind, help=f"{text} (default: {default:g})")
        command.add_argument(
            "--config",
            type=Path,
            help="JSON file with settings that differ from the paper's, in the layout of a run's config.json "
            '(e.g. {"training": {"ema_decay": 0.99}, "data": {"spatial": {"rotation_rad": 0.1}}}); flags win',
        )
        command.add_argument(
            "--resume",
            action="store_true",
            help="continue the newest run of each fold (its config; iteration flags apply)",
        )
        command.add_argument(
            "--multi-worker",
            action="store_true",
            help=(
                "train as one of several worker processes (machines) that TF_CONFIG describes, with "
                "MultiWorkerMirroredStrategy (automatic when TF_CONFIG names more than one worker); every worker "
                "runs the same command, the chief writes the run folder"
            ),
        )
        _add_common_flags(command)
        command.set_defaults(handler=partial(_run_train, stage.name))


_TRAINING_FLAGS = (
    ("--max-iter", _positive_int, "iterations"),
    ("--test-iter", _positive_int, "test every N iterations"),
    ("--snapshot-iter", _positive_int, "checkpoint every N iterations"),
    ("--log-iter", _positive_int, "log the mean loss every N iterations"),
    ("--learning-rate", _positive_float, "Adam learning rate"),
    ("--precision", str, "numeric precision"),
    ("--workers", _non_negative_int, "sample loader processes"),
    ("--seed", int, "random seed"),
)
"""The `train` flags that set a TrainingConfig field of the same name; their defaults are the stage's."""


def _run_train(stage_name: str, args: argparse.Namespace) -> int:
    from efficientscn.train.runs import train_folds
    from efficientscn.train.stages import stage_named

    names = [flag[2:].replace("-", "_") for flag, _, _ in _TRAINING_FLAGS]
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    train_folds(
        stage_named(stage_name),
        args.dataset,
        args.output,
        args.cv,
        training_changes=changes,
        config_file=args.config,
        resume=args.resume,
        progress=not args.quiet,
        multi_worker=args.multi_worker,
    )
    return EXIT_OK


def _export_options(parser: argparse.ArgumentParser) -> None:
    from efficientscn.train.stages import STAGES

    stages = parser.add_subparsers(title="networks", dest="stage", required=True)
    for stage in STAGES:
        command = stages.add_parser(
            stage.name,
            aliases=list(stage.aliases),
            help=f"export a {stage.name} run's checkpoint (averaged weights) as a SavedModel",
            description=(
                f"Write the averaged (EMA) weights of a checkpoint of {stage.model.description} as a SavedModel with "
                "the original's interface: signature serving_default, input image float16 [N,1,D,H,W], output "
                f"{stage.model.interface}. Its metadata records the network and the input it was trained for "
                "(spacing, valid sizes, smoothing), which predict then gives it."
            ),
        )
        command.add_argument("--run", required=True, type=Path, help=f"run folder (OUTPUT/{stage.name}/cv<k>/<time>)")
        command.add_argument("--iter", type=_positive_int, help="checkpoint iteration (default: the latest)")
        command.add_argument(
            "--output", type=Path, default=Path("saved_models") / stage.name, help="default: %(default)s"
        )
        command.add_argument("--overwrite", action="store_true", help="replace an existing SavedModel")
        _add_common_flags(command)
        command.set_defaults(handler=partial(_run_export, stage.name))


def _run_export(stage_name: str, args: argparse.Namespace) -> int:
    from efficientscn.train.runs import export_stage
    from efficientscn.train.stages import stage_named

    export_stage(stage_named(stage_name), args.run, args.iter, args.output, overwrite=args.overwrite)
    return EXIT_OK


def _add_inference_device_options(parser: argparse.ArgumentParser, precision_note: str = "") -> None:
    """--device and --precision, as inference resolves them."""
    from efficientscn.model.precision import PRECISIONS

    parser.add_argument("--device", choices=("cpu", "gpu"), help="default: the GPU when TensorFlow sees one")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: float16 on a GPU, bfloat16 on a CPU with bfloat16 instructions, float32 otherwise" + precision_note,
    )


def _predict_options(parser: argparse.ArgumentParser) -> None:
    from efficientscn.imaging.geometry import SPACING_FALLBACKS
    from efficientscn.infer.runtime import POOL_SLAB_BUDGET_BYTES, SLAB_BUDGET_BYTES
    from efficientscn.model.folder import EXPORTED_MODELS, SHIPPED_MODELS
    from efficientscn.outputs.writers import COMPANIONS, DICOM_SEG_SUFFIX, LABEL_FORMATS, RTSTRUCT_SUFFIX
    from efficientscn.predict.plausibility import AIR, DENSE, SOFT_TISSUE

    parser.description = (
        "Two-stage segmentation: the localization network finds the organs' box on the CT (at 6 mm for the "
        "paper's models), the SCN segments them in that box (at 2 mm); each network gets the spacing and sizes "
        "its export records. Writes OUTPUT/<case>.nii.gz (uint8: 0 background, 1 liver, 2 kidney, 3 spleen, "
        "4 pancreas; <case>.mha or .nrrd for a MetaImage or NRRD CT) on each input's exact grid; <case> is the "
        "file name without its image ending and without _0000, or the DICOM folder's name. Labels already in "
        "OUTPUT are kept (skipped) unless --overwrite, so an interrupted batch resumes. A case that fails is "
        "reported and the others go on; the exit status is then 1."
    )
    parser.add_argument("-i", "--input", required=True, type=Path, help="a CT file, a DICOM folder or a folder of CTs")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for the label maps")
    parser.add_argument(
        "--models",
        type=Path,
        default=SHIPPED_MODELS,
        help=(
            "folder with localization/ and segmentation/ SavedModels (default: the shipped demonstration models, "
            f"%(default)s; the export commands write to {EXPORTED_MODELS}). SavedModels in the original's format (its "
            "released submitted_saved_models) are imported once into the cache folder, checked on the first CT"
        ),
    )
    parser.add_argument(
        "--utils",
        type=Path,
        help="a traced tf_utils_module SavedModel to run the pre/post-processing (default: the package's functions)",
    )
    parser.add_argument(
        "--spacing-fallback",
        choices=SPACING_FALLBACKS,
        default="missing",
        help=(
            "when a CT's spacing of exactly 1,1,1 mm is replaced by the FLARE21 mean (0.81 x 0.81 x 2.53 mm): "
            "missing (default): only where the file evidently stores no spacing (a NIfTI without qform and sform, "
            "for example); always: the original's rule; never: trust the header. The report says which applied"
        ),
    )
    parser.add_argument(
        "--as-saved",
        action="store_true",
        help=(
            "run SavedModels in the original's format through their own graphs (float16; on a CPU compiled by XLA "
            "for each new input size) instead of importing them once into the cache (see import-original)"
        ),
    )
    _add_inference_device_options(parser)
    parser.add_argument(
        "--slab-memory",
        type=_slab_memory,
        default="auto",
        metavar="MB|off|auto",
        help=(
            f"memory for one slab of the networks' full-resolution levels, which run slab by slab along z with the "
            f"whole networks' results (larger: faster, more memory); auto (default): {SLAB_BUDGET_BYTES // 2**20} "
            f"for a lone CT, {POOL_SLAB_BUDGET_BYTES // 2**20} for a folder of CTs; off: run the networks whole, as "
            "exported"
        ),
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing label maps and report")
    parser.add_argument(
        "--force",
        action="store_true",
        help=(
            f"segment an input the plausibility checks refuse (less than {AIR.refuse_below:.1%} {AIR.what}, less "
            f"than {SOFT_TISSUE.refuse_below:.0%} {SOFT_TISSUE.what} or more than {DENSE.refuse_above:.0%} "
            f"{DENSE.what}: not an abdominal CT in HU), with a warning"
        ).replace("%", "%%"),
    )
    parser.add_argument(
        "--format",
        dest="label_format",
        choices=LABEL_FORMATS,
        help=(
            "the label's format: nii.gz, nii, mha or nrrd writes OUTPUT/<case>.<format>; dicom-seg writes "
            f"OUTPUT/<case>{DICOM_SEG_SUFFIX} and rtstruct OUTPUT/<case>{RTSTRUCT_SUFFIX} instead of a label map, for "
            "DICOM folders only (default: nii.gz, or the CT's own format for a MetaImage or NRRD CT, which keeps its "
            "geometry exactly)"
        ),
    )
    for name, writer in COMPANIONS.items():  # one flag per output that can go beside the label
        parser.add_argument(f"--{name}", action="append_const", const=name, dest="companions", help=writer.help)
    parser.add_argument("--report", type=Path, help="write a JSON report: versions, models, per-case timings, memory")
    parser.add_argument(
        "--cluster",
        type=_cluster_address,
        metavar="ADDRESS",
        help=(
            "run the cases on a Dask cluster, one task per case (needs the cluster extra): a scheduler's address "
            "(tcp://host:8786), or local:N for N worker processes on this machine; inputs, outputs and models must "
            "lie on a file system every worker sees, at the same paths"
        ),
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help=(
            "segment only shard I of N (0 <= I < N: every N-th of the sorted cases from the I-th on), for an array "
            "job; its report goes to --report or OUTPUT/reports/shard-I-of-N.json, and merge-shards makes the "
            "batch's report and statistics.csv from the shards' reports"
        ),
    )
    _add_common_flags(parser)
    parser.set_defaults(handler=_run_predict)


def _cluster_address(text: str) -> str:
    """An argparse type: `local:N` or a Dask scheduler's address."""
    from efficientscn.predict.options import check_cluster_address

    try:
        return check_cluster_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _shard(text: str) -> object:
    """An argparse type: I/N, a shard of the batch."""
    from efficientscn.predict.shards import Shard

    try:
        return Shard.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run_predict(args: argparse.Namespace) -> int:
    from efficientscn.imaging.read import is_dicom_folder
    from efficientscn.infer.runtime import default_slab_budget, prepare_environment

    try:
        lone_ct = args.input.is_file() or is_dicom_folder(args.input)
    except OSError:  # an unreadable input: predict says why
        lone_ct = False
    prepare_environment(lone_ct=lone_ct)  # before TensorFlow is imported
    from efficientscn.predict import PredictOptions, predict

    options = PredictOptions(
        inputs=args.input,
        output=args.output,
        models=args.models,
        device=args.device,
        precision=args.precision,
        utils=args.utils,
        overwrite=args.overwrite,
        label_format=args.label_format,
        companions=tuple(args.companions or ()),
        report=args.report,
        progress=not args.quiet,
        import_originals=not args.as_saved,
        spacing_fallback=args.spacing_fallback,
        force=args.force,
        shard=args.shard,
        cluster=args.cluster,
        slab_budget_bytes=default_slab_budget() if args.slab_memory == "auto" else args.slab_memory,
    )
    return finish_batch(predict(options), "predict")


def _merge_shards_options(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Merge the reports of the shards of one predict batch (predict --shard I/N) into the batch's report, once "
        "every shard has run: checks that they are every shard of one batch, once each, and writes statistics.csv "
        "into the output folder where the shards wrote per-case statistics. Exit status 1 if a case failed or was "
        "not done, 2 if a shard's report is missing, doubled or of another batch."
    )
    parser.add_argument("reports", nargs="+", type=Path, help="the shards' reports (OUTPUT/reports/shard-*.json)")
    parser.add_argument(
        "--report", type=Path, help="the batch's report to write (default: batch.json beside the first shard's)"
    )
    _add_common_flags(parser)
    parser.set_defaults(handler=_run_merge_shards)


def _run_merge_shards(args: argparse.Namespace) -> int:
    from efficientscn.predict.shards import merge_shard_reports

    merged = merge_shard_reports(args.reports, args.report)
    report = merged.report
    if report.not_done:
        logger.error("merge-shards: %d case(s) not done: %s", len(report.not_done), ", ".join(report.not_done))
    status = finish_batch(report, "merge-shards")
    return EXIT_CASES_FAILED if status == EXIT_OK and report.not_done else status


def _import_original_options(parser: argparse.ArgumentParser) -> None:
    from efficientscn.convert.verification import (
        LOCALIZATION_MIN_DICE,
        SEGMENTATION_MAX_DIFFERENCE,
        SEGMENTATION_MIN_AGREEMENT,
    )

    parser.description = (
        "Make the original's released FLARE21 networks (the localization/ and segmentation/ SavedModels of its "
        "repository's submitted_saved_models) our own export: their weights are read by order into our networks, "
        "which predict then rebuilds in the device's precision without XLA. Before anything is written, each "
        "imported network runs beside the original's own graph on a probe CT: localization masks must reach "
        f"Dice >= {LOCALIZATION_MIN_DICE:g}, segmentation probabilities differ by <= {SEGMENTATION_MAX_DIFFERENCE:g} "
        f"with argmax agreement >= {SEGMENTATION_MIN_AGREEMENT * 100:g} %%; otherwise the import fails with the "
        "figures. predict does the same by itself when --models is such a folder."
    )
    parser.add_argument("source", type=Path, help="the original's models folder (localization/, segmentation/)")
    parser.add_argument("destination", type=Path, help="the models folder to write, for predict --models")
    parser.add_argument(
        "--probe", type=Path, help="a CT (file or DICOM folder) to check on (default: the package's phantom)"
    )
    _add_inference_device_options(parser, "; check in the precision predict will run in")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination folder")
    _add_common_flags(parser)
    parser.set_defaults(handler=_run_import_original)


def _run_import_original(args: argparse.Namespace) -> int:
    from efficientscn.infer.runtime import prepare_environment

    prepare_environment(lone_ct=True)  # before TensorFlow is imported: one probe CT
    from efficientscn.convert.original import import_original
    from efficientscn.infer.models import select_device
    from efficientscn.model.precision import inference_precision

    device = select_device(args.device)
    precision = inference_precision(device, args.precision)
    import_original(
        args.source, args.destination, probe=args.probe, device=device, precision=precision, overwrite=args.overwrite
    )
    return EXIT_OK


def _trace_utils_options(parser: argparse.ArgumentParser) -> None:
    from efficientscn.model.folder import EXPORTED_MODELS, UTILS_MODULE

    parser.add_argument("--output", type=Path, default=EXPORTED_MODELS / UTILS_MODULE, help="default: %(default)s")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing SavedModel")
    _add_common_flags(parser)
    parser.set_defaults(handler=_run_trace_utils)


def _run_trace_utils(args: argparse.Namespace) -> int:
    from efficientscn.infer.utils_module import save_utils_module

    save_utils_module(args.output, overwrite=args.overwrite)
    return EXIT_OK


def _export_onnx_options(parser: argparse.ArgumentParser) -> None:
    from efficientscn.convert.onnx import DEFAULT_OPSET, INSTALL_HINT
    from efficientscn.model.folder import SHIPPED_MODELS

    parser.description = (
        "Convert the two networks of a models folder (our exports, as export and import-original write them) to "
        "OUTPUT/localization.onnx and OUTPUT/segmentation.onnx, for ONNX Runtime or OpenVINO. Each keeps its "
        "SavedModel's interface: input image float16 [N, 1, D, H, W] (the CT / 2048 clamped to [-1, 1] on the "
        "network's grid, a valid size of its input contract), output output_0 (localization: bool [N, 1, D, H, W] "
        "mask; segmentation: float16 [N, 5, D, H, W] probabilities); the contract is in the file's metadata. "
        f"Existing files are kept unless --overwrite. Needs the onnx extra: {INSTALL_HINT}."
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=SHIPPED_MODELS,
        help="folder with localization/ and segmentation/ SavedModels (default: %(default)s)",
    )
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for the two ONNX files")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing ONNX files")
    _add_common_flags(parser)
    parser.set_defaults(handler=_run_export_onnx)


def _run_export_onnx(args: argparse.Namespace) -> int:
    from efficientscn.convert.onnx import export_onnx

    export_onnx(args.models, args.output, opset=args.opset, overwrite=args.overwrite)
    return EXIT_OK


def finish_batch(report: BatchReport, what: str) -> int:
    """Log the batch summary and turn it into the exit status."""
    logger.info("%s: %s", what, report.summary())
    if report.failed:  # each failure was logged with its reason when it happened
        logger.error("%s: %d failed: %s", what, len(report.failed), ", ".join(report.failed))
    for error in report.file_errors:
        logger.error("%s: %s", what, error)
    if report.stop_signal is not None:
        logger.error("%s: stopped by a signal; not done: %s", what, ", ".join(report.not_done) or "none")
        return 128 + report.stop_signal  # 130 for Ctrl-C, 143 for SIGTERM, as a shell expects
    return EXIT_OK if report.ok else EXIT_CASES_FAILED


_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "preprocess": (
        "write the _small images, setup/landmark_bb.csv and the cv splits of a FLARE-layout dataset",
        _preprocess_options,
    ),
    "train": ("train a network for cross-validation folds", _train_options),
    "export": ("export a trained network as a SavedModel", _export_options),
    "trace-utils": (
        "save the pre/post-processing tf.functions as a SavedModel (the original's tf_utils_module)",
        _trace_utils_options,
    ),
    "predict": (
        "segment liver, kidneys, spleen and pancreas in CTs (a file, a folder of CTs, a DICOM folder)",
        _predict_options,
    ),
    "merge-shards": (
        "merge the reports of a predict batch's shards into the batch's report and statistics.csv",
        _merge_shards_options,
    ),
    "import-original": (
        "import the original's released FLARE21 SavedModels as our models, checked against their own graphs",
        _import_original_options,
    ),
    "export-onnx": ("convert both networks to ONNX (needs the onnx extra)", _export_onnx_options),
    "evaluate": ("FLARE21 Dice and NSD per organ of predicted labels against references", _evaluate_options),
}
"""Each subcommand: its one-line help and the function adding its description and options."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of the `efficientscn` command.

    Only `command` (the subcommand about to run; None: every one) gets its options: they read defaults and texts
    from the modules that do the work, so `predict` never imports the training side, nor `preprocess` TensorFlow.
    """
    parser = argparse.ArgumentParser(
        prog="efficientscn",
        description="Low-memory two-stage multi-organ CT segmentation (FLARE21-EfficientSCN).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    for name, (summary, add_options) in _COMMANDS.items():
        subparser = subparsers.add_parser(name, help=summary)
        if command in (None, name):
            add_options(subparser)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    """Console verbosity from -q/-v; the loggers themselves pass INFO on, so run folders' output.log gets it."""
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=min(level, logging.INFO), handlers=[console], force=True)
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # a line per DICOM module it copies into a SEG
    if not args.verbose:  # Dask's scheduler and nannies of `predict --cluster local:N` run in this process
        logging.getLogger("distributed").setLevel(logging.ERROR)


PLACEHOLDER_PREFIX = "/SET/PATH"


def run_script(command: Sequence[str], defaults: dict[str, object]) -> int:
    """Entry point of the workflow scripts: `command` with the script's settings as flags, then the user's flags.

    `defaults` maps a flag to the value set at the top of the script; values still reading "/SET/PATH..." are left
    out, so that argparse asks for the flag instead of failing on a placeholder path. Flags given on the command
    line come last and override the script's settings.
    """
    preset = [
        item
        for flag, value in defaults.items()
        if not str(value).startswith(PLACEHOLDER_PREFIX)
        for item in (flag, str(value))
    ]
    argv = [*command, *preset, *sys.argv[1:]]
    with native_logs_filtered(verbose=_verbose(argv)):
        return main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `efficientscn` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)
    _configure_logging(args)
    try:
        return args.handler(args)
    except (InputError, OSError) as error:  # messages name the file; a traceback would add nothing for a user
        logger.error("%s", error)
        return EXIT_UNUSABLE_INPUT
    except RunStopped as error:
        logger.error("%s", error)
        return EXIT_CASES_FAILED
    except KeyboardInterrupt:  # a second Ctrl-C: at once, without a traceback
        logger.error("interrupted")
        return 128 + signal.SIGINT


def _command(argv: Sequence[str]) -> str | None:
    """The command word of a command line (None for none)."""
    return next((word for word in argv if not word.startswith("-")), None)


FAST_EXIT_COMMANDS = ("predict", "import-original")
"""Commands that exit without the interpreter's teardown of TensorFlow, which took 0.6 s of a lone CT's run."""


def _verbose(argv: Sequence[str]) -> bool:
    return any(word in ("-v", "--verbose") for word in argv)


def console() -> None:
    """The `efficientscn` command: `main`, with TensorFlow's native log lines off the console unless -v, then exit
    (see `exit_with`)."""
    argv = sys.argv[1:]
    with native_logs_filtered(verbose=_verbose(argv)):
        status = main(argv)
    exit_with(status, at_once=_command(argv) in FAST_EXIT_COMMANDS)


def exit_with(status: int, *, at_once: bool = False) -> NoReturn:
    """Exit with `status`; at once, once the log and the output streams are flushed, when asked (everything the
    command wrote is closed by then) or after a signal while background threads still run (models still loading
    would otherwise be waited for: 14 s)."""
    background = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    if at_once or (status >= 128 and any(thread.is_alive() and not thread.daemon for thread in background)):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):  # a closed pipe has nothing left to receive
                stream.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    console()
