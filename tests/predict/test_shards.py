"""Shards of a batch (`predict --shard I/N`) and the merge of their reports (`merge-shards`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import SimpleITK as sitk

from efficientscn.cli import main
from efficientscn.errors import InputError
from efficientscn.model.folder import SHIPPED_MODELS
from efficientscn.predict.options import PredictOptions
from efficientscn.predict.plan import BatchPlan
from efficientscn.predict.shards import Shard, merge_shard_reports

from helpers import shared_case


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_cover_the_batch_and_differ_by_one_case_at_most(count: int) -> None:
    for size in range(0, 40):
        batch = [f"case_{k:03d}" for k in range(size)]
        parts = [Shard(index, count).select(batch) for index in range(count)]
        taken = [case for part in parts for case in part]
        assert sorted(taken) == batch and len(set(taken)) == size  # covering, disjoint
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert parts == [Shard(index, count).select(list(batch)) for index in range(count)]  # deterministic


def test_a_case_added_after_the_last_leaves_every_earlier_case_in_its_shard() -> None:
    batch = [f"case_{k:03d}" for k in range(23)]
    for count in (2, 5, 8):
        before = {case: index for index in range(count) for case in Shard(index, count).select(batch)}
        grown = [*batch, "case_999"]
        after = {case: index for index in range(count) for case in Shard(index, count).select(grown)}
        assert all(after[case] == before[case] for case in batch)


def test_shard_text_is_i_of_n_counted_from_zero() -> None:
    assert Shard.parse("0/4") == Shard(0, 4) and Shard.parse(" 3 / 4 ") == Shard(3, 4)
    for wrong, reason in (("4/4", "runs from 0 to 3"), ("1/0", "runs from 0"), ("a/b", "expected I/N"), ("2", "I/N")):
        with pytest.raises(ValueError, match=reason):
            Shard.parse(wrong)


def _ct(path: Path) -> None:
    image = sitk.Image(48, 48, 24, sitk.sitkInt16) - 1000
    image.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(image, str(path))


def test_a_case_id_taken_in_another_shard_still_fails_its_case(tmp_path: Path) -> None:
    """`a.nii` and `a_0000.nii.gz` would write one label `a.nii.gz`; sorted, the first goes to shard 0 and the other to
    shard 1, which must refuse it as one run of the whole batch does."""
    (tmp_path / "in").mkdir()
    for name in ("a.nii", "a_0000.nii.gz", "b_0000.nii.gz"):
        _ct(tmp_path / "in" / name)
    options = PredictOptions(inputs=tmp_path / "in", output=tmp_path / "out", models=SHIPPED_MODELS)
    plans = [BatchPlan(PredictOptions(**{**options.__dict__, "shard": Shard(i, 2)})) for i in range(2)]
    assert [[case.name for case in plan.cases] for plan in plans] == [["a.nii", "b_0000.nii.gz"], ["a_0000.nii.gz"]]
    (late,) = plans[1].cases
    assert "its case ID a is that of a.nii" in (plans[1].resume.refusal(late) or "")
    assert plans[0].resume.refusal(plans[0].cases[0]) is None
    assert plans[1].report == tmp_path / "out" / "reports" / "shard-1-of-2.json"  # each shard has its own


def _shard_report(folder: Path, index: int, count: int, inputs: list[str], batch: int, output: str = "/out") -> Path:
    path = folder / f"shard-{index}-of-{count}.json"
    cases = [{"input": f"/in/{name}", "output": f"{output}/{name}", "status": "done", "error": None} for name in inputs]
    shard = {"index": index, "count": count, "cases_in_batch": batch, "inputs": "/in", "output": output}
    outputs = {"label_format": None, "companions": []}
    path.write_text(json.dumps({"device": "cpu", "shard": shard, "outputs": outputs, "cases": cases}))
    return path


def test_merging_refuses_a_missing_a_doubled_or_a_foreign_shard(tmp_path: Path) -> None:
    first = _shard_report(tmp_path, 0, 3, ["a", "d"], 5)
    second = _shard_report(tmp_path, 1, 3, ["b", "e"], 5)
    third = _shard_report(tmp_path, 2, 3, ["c"], 5)
    with pytest.raises(InputError, match=r"missing shard\(s\) 2 of the 3 shards"):
        merge_shard_reports([first, second])
    with pytest.raises(InputError, match=r"shard\(s\) 1 given more than once"):
        merge_shard_reports([first, second, second, third])
    (tmp_path / "other").mkdir()
    other = _shard_report(tmp_path / "other", 2, 3, ["c"], 6)
    with pytest.raises(InputError, match="another batch"):
        merge_shard_reports([first, second, other])
    merged = merge_shard_reports([third, first, second], tmp_path / "batch.json")
    written = json.loads((tmp_path / "batch.json").read_text())
    assert [Path(case["input"]).name for case in written["cases"]] == ["a", "b", "c", "d", "e"]  # the batch's order
    assert [shard["index"] for shard in written["shards"]] == [0, 1, 2] and written["device"] == "cpu"
    assert merged.report.done == ["a", "b", "c", "d", "e"]


@pytest.mark.slow  # two shards of three cases, in this process: about a minute
def test_two_shards_then_merge_make_the_batchs_report_and_statistics(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case_id in ("ts_example_ct_sm", "ts_example_ct", "ts_example_ct_sm_lpi"):
        (inputs / f"{case_id}_0000.nii.gz").symlink_to(shared_case(case_id).image)
    out = tmp_path / "out"
    for index in (0, 1):
        common = ["predict", "-q", "-i", str(inputs), "-o", str(out), "--device", "cpu", "--statistics"]
        assert main([*common, "--shard", f"{index}/2"]) == 0
        assert not (out / "statistics.csv").exists()  # a shard's own cases only: the merge writes it
    reports = sorted((out / "reports").glob("shard-*-of-2.json"))
    assert [json.loads(path.read_text())["shard"]["index"] for path in reports] == [0, 1]
    assert [len(json.loads(path.read_text())["cases"]) for path in reports] == [2, 1]

    assert main(["merge-shards", *map(str, reports), "--report", str(out / "report.json")]) == 0
    merged = json.loads((out / "report.json").read_text())
    assert [Path(case["input"]).name for case in merged["cases"]] == sorted(path.name for path in inputs.iterdir())
    assert [case["status"] for case in merged["cases"]] == ["done"] * 3
    with (out / "statistics.csv").open(newline="") as table:
        rows = list(csv.DictReader(table))
    assert sorted({row["case"] for row in rows}) == ["ts_example_ct", "ts_example_ct_sm", "ts_example_ct_sm_lpi"]

    (out / "reports" / "shard-1-of-2.json").unlink()
    assert main(["merge-shards", str(reports[0])]) == 2  # a shard missing: no batch report from part of it
