"""What users see and keep: the run-time notice, result records, stage progress, previews,
probability names, and `lckd batch` (per-case lines, records, resume with volumes, shards,
nnU-Net folders), all through the real CLI on small phantoms with the bundled phantom model."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SMALL
from conftest import TEST_MODEL as MODEL
from lckd.base.hashing import sha256_file
from lckd.frontends.cli import main
from lckd.frontends.preview import REGION_COLOURS
from lckd.frontends.progress import StageProgress
from lckd.inference.record import output_stem, scope_line
from lckd.model.modelcard import ModelCard
from lckd.model.registry import resolve_model
from lckd.research.phantom import make_phantom


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def _has_colour(png, rgb, tol=0.06) -> int:
    """Pixels of a PNG within `tol` of an RGB colour (0-1)."""
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(png)))[..., :3].astype(float) / 255
    return int((np.abs(arr - np.asarray(rgb)).max(axis=-1) < tol).sum())


# ----------------------------------------------------------------------------- segment

def test_segment_notice_record_preview_and_probabilities(small_case, tmp_path, capsys):
    paths, truth = small_case
    out = tmp_path / "out" / "caseA.nii.gz"
    # BraTS 2023 aliases; --json with no file puts the record next to the output
    code = main(["segment", "--model", MODEL, "--threads", "2", "--t1c", str(paths["T1ce"]),
                 "--t2f", str(paths["FLAIR"]), "-o", str(out), "--json", "--preview", str(tmp_path / "p.png"),
                 "--probabilities", str(tmp_path / "probs")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the notice: model, version, scope (a phantom model says so), the scans used
    assert "model: lckd-lite-phantom 1.1.0 (" in captured.out and "trained on synthetic phantoms" in captured.out
    assert "scans: T1ce = T1ce.nii.gz, FLAIR = FLAIR.nii.gz; output on the T1ce grid" in captured.out
    assert "device: cpu" in captured.out
    # stage lines with times, plain lines (not a terminal here): no carriage returns
    for stage in ("read", "load", "preprocess", "network", "postprocess", "write"):
        assert f"  {stage:<12}" in captured.err, captured.err
    assert "\r" not in captured.err

    record = json.loads((tmp_path / "out" / "caseA.json").read_text())
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    spacing = np.prod(sitk.ReadImage(str(out)).GetSpacing())
    assert record["volumes_ml"]["WT"] == pytest.approx((label > 0).sum() * spacing / 1000, abs=1e-3)
    assert record["volumes_ml"]["ET"] == pytest.approx((label == 4).sum() * spacing / 1000, abs=1e-3)
    assert record["modalities"] == ["T1ce", "FLAIR"] and record["reference"] == "T1ce"
    assert record["inputs"]["FLAIR"] == str(paths["FLAIR"].resolve())
    assert record["model"]["name"] == MODEL and record["model"]["card_sha256"] == sha256_file(resolve_model(MODEL))
    assert record["labels"] == {"convention": "brats2018", "values": {"NCR": 1, "ED": 2, "ET": 4}}
    assert record["options"]["postprocess"] is None and record["options"]["threads"] == 2
    assert list(record["timings_s"])[:2] == ["read", "load"] and list(record["timings_s"])[-1] == "total"
    assert record["timings_s"]["network"] > 0 and record["timings_s"]["total"] >= record["timings_s"]["network"]
    assert record["outputs"] == [str(out.resolve()), str((tmp_path / "p.png").resolve())]

    # probability maps carry the output's stem: a second run into the same folder keeps the first's
    names = sorted(p.name for p in (tmp_path / "probs").iterdir())
    assert names == ["caseA_probability_ET.nii.gz", "caseA_probability_TC.nii.gz", "caseA_probability_WT.nii.gz"]
    assert main(["segment", "-q", "--model", MODEL, "--threads", "2", "--t2", str(paths["T2"]),
                 "-o", str(tmp_path / "caseB.seg.nrrd"), "--probabilities", str(tmp_path / "probs"),
                 "--json", str(tmp_path / "b-record.json")]) == 0
    quiet = capsys.readouterr()
    assert len(list((tmp_path / "probs").iterdir())) == 6 and "model: lckd-lite-phantom" in quiet.out
    assert "network" not in quiet.err  # -q: no stage lines, the notice and the result still printed
    assert json.loads((tmp_path / "b-record.json").read_text())["modalities"] == ["T2"]

    # the preview: the whole-tumour outline is drawn in its colour on both panels' slice
    png = tmp_path / "p.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _has_colour(png, REGION_COLOURS["WT"]) > 20


def test_side_outputs_are_refused_before_the_model_loads(small_case, tmp_path, capsys):
    paths, _ = small_case
    base = ["segment", "-q", "--model", MODEL, "--flair", str(paths["FLAIR"]), "-o", str(tmp_path / "s.nii.gz")]
    assert main(base + ["--preview", str(tmp_path / "p.jpg")]) == 1
    assert "must end in .png" in capsys.readouterr().err
    assert main(base + ["--json", str(paths["FLAIR"])]) == 1
    assert ".json" in capsys.readouterr().err
    assert not (tmp_path / "s.nii.gz").exists()


def test_output_stem():
    assert output_stem("a/case.seg.nrrd") == "case" and output_stem("b/x.y.nii.gz") == "x.y"
    assert output_stem("c.mha") == "c" and output_stem("d.nrrd") == "d"
    # the suffix list is lckd.io.filetypes': any case, and a bare suffix or other name stays whole
    assert output_stem("T1.NII.GZ") == "T1" and output_stem(".nii") == ".nii" and output_stem("x.txt") == "x.txt"


def test_itk_error_detail_keeps_the_reason_only():
    from lckd.base.errors import itk_error_detail

    with pytest.raises(RuntimeError) as exc:
        sitk.ReadImage("/no/such/dir/x.nii.gz")
    assert itk_error_detail(exc.value) == 'The file "/no/such/dir/x.nii.gz" does not exist.'
    registration = RuntimeError("Exception thrown in SimpleITK ImageRegistrationMethod_Execute: /src/x.hxx:270:\n"
                                "ITK ERROR: MattesMutualInformationImageToImageMetricv4(0x55d0): All samples map "
                                "outside moving image buffer.")
    assert itk_error_detail(registration) == "All samples map outside moving image buffer."
    assert itk_error_detail(RuntimeError("")) == "" and len(itk_error_detail(RuntimeError("x" * 500), 50)) == 50


# ----------------------------------------------------------------------------- notice and info

def test_scope_line_from_the_card_or_derived():
    base = dict(name="m", version="1", architecture={})
    assert scope_line(ModelCard(**base, scope="research use; trained on 18 real gliomas")) == \
        "research use; trained on 18 real gliomas"
    phantom = ModelCard(**base, training={"data": "84 synthetic BraTS-like phantoms"})
    assert scope_line(phantom) == "research use, not for clinical use; trained on synthetic phantoms"
    real = ModelCard(**base, training={"data": "18 BraTS glioma cases"})
    assert scope_line(real) == "research use, not for clinical use; trained on 18 BraTS glioma cases"
    assert "not stated" in scope_line(ModelCard(**base))


def test_info_shows_training_data_scope_and_cross_validated_dice(tmp_path, capsys):
    card_path = resolve_model(MODEL)
    data = json.loads(card_path.read_text())
    data["scope"] = "research use, not for clinical use; trained on 18 real glioma cases (BraTS)"
    data["evaluation"] = {"description": "5-fold cross-validation on 18 cases", "folds": 5, "per_subset": {
        "T1ce+FLAIR": {"ET": 0.612, "ET_sd": 0.081, "TC": 0.7, "TC_sd": 0.05, "WT": 0.85, "WT_sd": 0.02}}}
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps(data))
    shutil.copy(card_path.parent / data["weights"]["file"], folder)
    assert main(["info", "--model", str(folder / "card.json")]) == 0
    out = capsys.readouterr().out
    assert "trained on 18 real glioma cases (BraTS)" in out
    assert "84 synthetic BraTS-like phantoms" in out          # training["data"], which was hidden before
    assert "teachers:             T1ce, FLAIR" in out
    pm = "(\u00b1|\\+/-)"                                   # the sign, or +/- where stdout cannot print it
    assert re.search(f"0.612 {pm} 0.081", out) and re.search(f"mean {pm} SD over 5 folds", out)
    assert "5-fold cross-validation" in out


# ----------------------------------------------------------------------------- progress

def test_stage_progress_lines_on_a_terminal_and_in_a_log():
    def run(tty):
        buf = io.StringIO()
        prog = StageProgress(buf, tty=tty, every=0.0)
        prog.stage("read")
        for msg in ("read: again", "preprocess: x", "network: window 0/3", "network: window 1/3",
                    "network: window 3/3", "postprocess: y"):
            prog(0.5, msg)
        prog.close()
        return buf.getvalue(), prog.times

    log, times = run(False)
    assert "\r" not in log and list(times) == ["read", "preprocess", "network", "postprocess"]
    assert "window 1/3" in log and "(3 windows)" in log
    assert [ln.split()[0] for ln in log.splitlines() if "window " not in ln] == ["read", "preprocess", "network",
                                                                               "postprocess"]
    term, _ = run(True)
    assert "\r" in term and term.count("\n") == 4      # one finished line per stage, windows rewritten
    silent = io.StringIO()
    quiet = StageProgress(silent, quiet=True)
    quiet(0.1, "read: x")
    quiet.close()
    assert silent.getvalue() == "" and "read" in quiet.times


# ----------------------------------------------------------------------------- batch


def test_batch_lines_records_resume_with_volumes_and_merge(cohort, tmp_path, capsys):
    root, ids = cohort
    out = tmp_path / "out"
    argv = ["batch", str(root), str(out), "--model", MODEL, "--threads", "2", "--modalities", "t1ce,flair",
            "--probabilities", str(tmp_path / "probs")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "model: lckd-lite-phantom 1.1.0 (" in captured.out
    assert f"[1/3] {ids[0]}  T1ce+FLAIR  WT " in captured.out
    assert f"[3/3] {ids[2]}  T1ce+FLAIR  error: FLAIR" in captured.err    # at once, on stderr
    rows = _rows(out / "summary.csv")
    assert [rows[c]["status"] for c in ids] == ["ok", "ok", "error"]
    assert all(rows[c]["modalities"] == "T1ce+FLAIR" for c in ids)
    sha = sha256_file(resolve_model(MODEL))
    assert {rows[c]["model"] for c in ids} == {"lckd-lite-phantom 1.1.0"} and rows[ids[0]]["card_sha256"] == sha
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["card_sha256"] == sha and summary["counts"] == {"ok": 2, "skipped": 0, "error": 1}
    assert summary["options"]["modalities"] == ["T1ce", "FLAIR"] and summary["options"]["formats"] == ["nii.gz"]
    for case in ids[:2]:
        record = json.loads((out / f"{case}.json").read_text())
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        assert float(rows[case]["WT_ml"]) == pytest.approx((label > 0).sum() / 1000, abs=0.006)   # 1 mm voxels
        assert record["volumes_ml"]["WT"] == pytest.approx(float(rows[case]["WT_ml"]), abs=0.006)
        assert (tmp_path / "probs" / f"{case}_probability_WT.nii.gz").is_file()
    assert not (out / f"{ids[2]}.json").exists()

    # a re-run (quiet) skips the done cases and keeps their volumes; the failure is printed again at once
    assert main(argv + ["-q"]) == 1
    captured = capsys.readouterr()
    again = _rows(out / "summary.csv")
    assert [again[c]["status"] for c in ids] == ["skipped", "skipped", "error"]
    assert [again[c]["WT_ml"] for c in ids[:2]] == [rows[c]["WT_ml"] for c in ids[:2]]
    assert "[1/3]" not in captured.out and "0 segmented, 2 skipped (already done), 1 failed" in captured.out
    assert f"[3/3] {ids[2]}" in captured.err

    # shards written by separate processes, merged by `lckd batch-merge`
    sharded = tmp_path / "sharded"
    for k in (0, 1):
        main(["batch", str(root), str(sharded), "--model", MODEL, "--threads", "2", "--shard", f"{k}/2", "-q"])
    capsys.readouterr()
    assert not (sharded / "summary.csv").exists()
    assert main(["batch-merge", str(sharded)]) == 1                        # one case failed
    merged = _rows(sharded / "summary.csv")
    assert list(merged) == sorted(ids) and merged[ids[0]]["status"] == "ok"
    assert json.loads((sharded / "summary.json").read_text())["model"]["card_sha256"] == sha
    (sharded / "summary-part-1-of-2.json").unlink()
    assert main(["batch-merge", str(sharded)]) == 1
    assert "missing for K = 1 of 2" in capsys.readouterr().err


def test_batch_reads_nnunet_style_folders(tmp_path, capsys):
    flat = tmp_path / "imagesTs"
    flat.mkdir()
    order = ("FLAIR", "T1", "T1ce", "T2")                  # the Medical Segmentation Decathlon's order
    for case, seed in (("BRATS_001", 5), ("BRATS_002", 6)):
        images, _ = make_phantom(seed, SMALL).to_sitk()
        for k, m in enumerate(order):
            if case == "BRATS_002" and m == "T1":
                continue
            sitk.WriteImage(images[m], str(flat / f"{case}_{k:04d}.nii.gz"))
    out = tmp_path / "out"
    assert main(["batch", str(flat), str(out), "--model", MODEL, "--threads", "2"]) == 1
    assert "--channels" in capsys.readouterr().err                        # no guessing which channel is which
    assert main(["batch", str(flat), str(out), "--model", MODEL, "--threads", "2", "-q",
                 "--channels", "flair,t1,t1c,t2w"]) == 0
    rows = _rows(out / "summary.csv")
    assert rows["BRATS_001"]["modalities"] == "T1+T1ce+T2+FLAIR" and rows["BRATS_002"]["modalities"] == "T1ce+T2+FLAIR"
    record = json.loads((out / "BRATS_001.json").read_text())
    assert record["inputs"]["FLAIR"].endswith("BRATS_001_0000.nii.gz")
    assert record["inputs"]["T2"].endswith("BRATS_001_0003.nii.gz")
    assert main(["batch", str(flat), str(tmp_path / "o2"), "--model", MODEL, "--channels", "T1,T2"]) == 1
    assert "channel 0002" in capsys.readouterr().err


# ----------------------------------------------------------------------------- help and README

OWN_COMMANDS = ("segment", "batch", "batch-merge", "info", "phantom", "split", "demo")


def _subparsers(argv):
    import argparse

    from lckd.frontends.cli import build_parser

    parser = build_parser(argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_has_help_and_the_readme_synopsis_lists_it():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    synopsis = readme.split("## Command line", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    commands = _subparsers(["info"])
    # every command `lckd --help` lists has a line in the README synopsis
    for name in commands:
        assert f"lckd {name} " in synopsis or synopsis.count(f"lckd {name}\n"), name
    options = {}
    for name in OWN_COMMANDS:
        parser = _subparsers([name])[name]
        options[name] = set()
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, f"lckd {name} {action.option_strings or action.dest} has no help"
            options[name] |= {o for o in action.option_strings if o.startswith("--")}
    segment_line = synopsis.split("lckd batch ")[0]
    batch_line = synopsis.split("lckd batch ")[1].split("lckd batch-merge")[0]
    # the synopsis shows -o / -q for these two
    assert options["segment"] - {"--output", "--quiet"} <= {w.strip("[]|,()") for w in segment_line.split()}
    assert options["batch"] - options["segment"] <= {w.strip("[]|,()") for w in batch_line.split()}
    assert "[the model and segment options]" in batch_line


def test_a_long_preview_caption_is_wrapped_inside_the_picture():
    """The caption lines (volumes, quality, model scope) fit the figure's width as rendered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lckd.frontends.preview import footer_lines

    long = ("model: lckd-lite-brats 2.0.0 (research use, not for clinical use; trained on 28 real glioma cases "
            "from public BraTS sets, skull-stripped, co-registered, 1 mm) " * 2).strip()
    for width_in in (8.4, 4.2):
        lines = footer_lines("whole tumour 12.0 mL\n" + long, width_in)
        assert len(lines) > 2 and lines[0] == "whole tumour 12.0 mL"
        assert " ".join(lines[1:]) == " ".join(long.split())          # wrapped, nothing dropped
        fig = plt.figure(figsize=(width_in, 2))
        renderer = fig.canvas.get_renderer()
        for line in lines:
            text = fig.text(0.5, 0.5, line, ha="center", fontsize=8)
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (width_in, line)
        plt.close(fig)
