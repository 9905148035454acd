"""`lckd batch`: whatever modalities each case has, bad cases reported, done cases skipped, shards."""
from __future__ import annotations

import csv

import pytest
import SimpleITK as sitk

from conftest import SMALL
from lckd.frontends.cli import main


def _summary(path):
    with open(path, newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def test_batch_reports_bad_cases_goes_on_and_skips_done_ones(cohort, tmp_path, capsys):
    root, ids = cohort
    out = tmp_path / "out"
    status = main(["batch", str(root), str(out), "--device", "cpu", "--threads", "2"])
    assert status == 1                                   # one case failed
    rows = _summary(out / "summary.csv")
    assert set(rows) == set(ids)
    assert rows[ids[0]]["status"] == "ok" and rows[ids[0]]["modalities"] == "T1+T1ce+T2+FLAIR"
    assert rows[ids[1]]["status"] == "ok" and rows[ids[1]]["modalities"] == "T1ce+FLAIR"
    assert rows[ids[2]]["status"] == "error" and "FLAIR" in rows[ids[2]]["message"]
    for case in ids[:2]:
        seg = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert seg.GetSize() == SMALL[::-1]
        assert float(rows[case]["WT_ml"]) >= float(rows[case]["TC_ml"]) >= float(rows[case]["ET_ml"])
    assert not (out / f"{ids[2]}.nii.gz").exists()
    printed = capsys.readouterr().out
    assert "2 segmented, 0 skipped (already done), 1 failed" in printed

    # a second run redoes only what is not done yet
    main(["batch", str(root), str(out), "--device", "cpu", "--threads", "2"])
    rows = _summary(out / "summary.csv")
    assert [rows[c]["status"] for c in ids] == ["skipped", "skipped", "error"]


def test_shards_split_the_cohort_without_overlap(cohort, tmp_path):
    root, ids = cohort
    out = tmp_path / "out"
    for k in (0, 1):
        main(["batch", str(root), str(out), "--shard", f"{k}/2", "--device", "cpu", "--threads", "2",
              "--format", "nrrd"])
    parts = [_summary(out / f"summary-part-{k}-of-2.csv") for k in (0, 1)]
    assert not set(parts[0]) & set(parts[1])
    assert set(parts[0]) | set(parts[1]) == set(ids)
    assert (out / f"{ids[0]}.nrrd").is_file()


def test_bad_shard_is_a_clear_error(cohort, tmp_path, capsys):
    root, _ = cohort
    assert main(["batch", str(root), str(tmp_path / "o"), "--shard", "2/2"]) == 1
    assert "--shard 2/2" in capsys.readouterr().err


def test_merge_ignores_names_no_shard_writes(tmp_path):
    from lckd.base.errors import InputError
    from lckd.frontends.batch import merge_parts

    (tmp_path / "summary-part-a-of-b.json").write_text("{}")   # matches the glob, not the shards' names
    with pytest.raises(InputError, match="no shard summaries"):
        merge_parts(tmp_path)
