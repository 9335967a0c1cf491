"""The original's FLARE21 models with their real segmentation weights, where the clone of the original holds that
SavedModel whole (a full clone does; a copy holding only its variable index skips these tests, also under CI=true):
`import-original` of the clone, its check against the original's own graphs on every test CT the original segments,
and the original's two models segmenting every labelled test CT, with each organ's Dice printed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from efficientscn.cli import main
from efficientscn.convert.original import probe_from, verify
from efficientscn.convert.verification import (
    LOCALIZATION_MIN_DICE,
    SEGMENTATION_MAX_DIFFERENCE,
    SEGMENTATION_MIN_AGREEMENT,
)
from efficientscn.evaluate import evaluate_case
from efficientscn.infer.models import load_network
from efficientscn.infer.utils_module import load_utils
from efficientscn.labels import ORGAN_NAMES
from efficientscn.model.precision import inference_precision
from efficientscn.model.savedmodel import read_metadata
from efficientscn.model.specs import STAGE_NAMES

from helpers import SHARED_CASES, imported_with_the_cli, require_original_segmentation_weights, shared_case

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.slow  # the original's graphs compiled under XLA, a minute per input size

PROBE = "ts_example_ct_sm"
NOT_SEGMENTED = {
    "dcmqi_ct3slice": "CT too small for the networks",  # 3 slices: 3 mm of the 30 mm the networks need
    "ts_example_ct_dicom_oblique": "no organs found",  # the original's localization marks nothing on this slab
}
"""The test CTs the original's models cannot segment, and why: `predict` reports them failed."""
SEGMENTED = sorted(set(SHARED_CASES) - set(NOT_SEGMENTED))
WHOLE_ABDOMEN = [case for case in SEGMENTED if case == "ts_example_ct" or case.startswith("ts_example_ct_sm")]
MIN_DICE = {"liver": 0.8, "kidney": 0.3, "spleen": 0.7}
"""On the CTs of the whole-abdomen patient (ts_example_ct and the views of its upper part), what the two-patient
demonstration models reach: models trained on 361 FLARE21 cases, imported right, do not do worse."""


@pytest.fixture(scope="module")
def original_models() -> Path:
    return require_original_segmentation_weights()


@pytest.fixture(scope="module")
def imported(original_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`efficientscn import-original` on the clone's models folder, checked on a test CT."""
    return imported_with_the_cli(original_models, tmp_path_factory.mktemp("flare21") / "models", PROBE)


def test_import_original_verifies_the_real_segmentation_weights(imported: Path) -> None:
    for stage in STAGE_NAMES:
        verification = read_metadata(imported / stage)["imported"]["verification"]
        logger.info("%s: %s", stage, verification)
        assert verification["verdict"] == "verified" and verification["probe"] == str(shared_case(PROBE).image)
    segmentation = read_metadata(imported / "segmentation")["imported"]["verification"]
    assert segmentation["max_probability_difference"] <= SEGMENTATION_MAX_DIFFERENCE
    assert segmentation["argmax_agreement"] >= SEGMENTATION_MIN_AGREEMENT


@pytest.fixture(scope="module")
def networks(imported: Path, original_models: Path) -> dict[str, dict]:
    """The imported networks in the precision predict runs them in here, and the original's graphs, loaded once (so
    that an input size compiled under XLA serves every CT that gives it)."""
    precision = inference_precision("cpu", "auto")
    return {
        "imported": {stage: load_network(imported / stage, stage, "cpu", precision) for stage in STAGE_NAMES},
        "original": {stage: load_network(original_models / stage, stage, "cpu", precision) for stage in STAGE_NAMES},
    }


@pytest.mark.parametrize("case", SEGMENTED)
def test_on_every_test_ct_the_imported_networks_match_the_originals_graphs(
    case: str, networks: dict[str, dict]
) -> None:
    """What predict runs against the original's graphs, on the inputs each CT gives them."""
    assert all(network.source == "signature" for network in networks["original"].values())
    results = verify(
        networks["imported"], networks["original"], load_utils(None, "cpu"), probe_from(shared_case(case).image)
    )
    logger.info("%s: %s", case, results)
    assert results["localization"]["dice"] >= LOCALIZATION_MIN_DICE
    assert results["segmentation"]["max_probability_difference"] <= SEGMENTATION_MAX_DIFFERENCE
    assert results["segmentation"]["argmax_agreement"] >= SEGMENTATION_MIN_AGREEMENT


def test_the_originals_models_segment_every_labelled_test_ct(
    imported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, output, report = tmp_path / "ct", tmp_path / "labels", tmp_path / "report.json"
    inputs.mkdir()
    for case_id in sorted(SHARED_CASES):
        image = shared_case(case_id).image
        (inputs / (case_id if image.is_dir() else f"{case_id}_0000.nii.gz")).symlink_to(image)
    arguments = ["-i", str(inputs), "-o", str(output), "--models", str(imported), "--report", str(report)]
    assert main(["predict", "-q", *arguments]) == 1  # some cases failed
    cases = json.loads(report.read_text())["cases"]
    failed = {Path(case["input"]).name.removesuffix("_0000.nii.gz"): case["error"] for case in cases}
    failed = {case_id: error for case_id, error in failed.items() if error is not None}
    assert failed.keys() == NOT_SEGMENTED.keys()
    for case_id, reason in NOT_SEGMENTED.items():
        assert reason in failed[case_id], failed[case_id]

    dice = {}
    for case_id in SEGMENTED:
        scores = evaluate_case(output / f"{case_id}.nii.gz", shared_case(case_id).label)
        dice[case_id] = {organ: score.dice for organ, score in scores.items()}
    organs = list(ORGAN_NAMES.values())
    table = [f"{'case':<28}" + "".join(f"{organ:>10}" for organ in organs)]
    table += [f"{case_id:<28}" + "".join(f"{dice[case_id][organ]:>10.3f}" for organ in organs) for case_id in SEGMENTED]
    with capsys.disabled():
        print("\nDice of the original's FLARE21 models on the test CTs (labels: TotalSegmentator predictions;")
        print("1.000 where an organ is in neither label)")
        print("\n".join(table))
    for case_id in WHOLE_ABDOMEN:
        for organ, minimum in MIN_DICE.items():
            assert dice[case_id][organ] >= minimum, (case_id, organ, dice[case_id][organ])
