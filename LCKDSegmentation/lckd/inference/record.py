"""What a run tells its user and what it leaves behind: the run-time notice and the result record.

Every run (`lckd segment`, `lckd batch`, the worker, the Slicer module) names the model,
its version and its one-line scope, and the scans it used: a volume printed with no word
on what produced it reads as more certain than it is. The result record is the JSON
sidecar of an output (`lckd segment --json`, one per case in `lckd batch`): volumes,
scans, reference, model name / version / card sha256, options, warnings and stage timings,
so results can be traced and re-read by scripts (the batch summary reads the volumes of
skipped cases from it). No torch here: the Slicer GUI process and `lckd batch` use it.
"""
from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base.errors import OutputError
from ..io.filetypes import image_stem

if TYPE_CHECKING:
    from .options import SegmentOptions

#: Version of the result-record layout (bumped when a field changes meaning).
RECORD_FORMAT = 1

#: Stage names in pipeline order; timings (`SegmentationResult.timings`) use the same keys.
STAGES = ("read", "load", "detect", "register", "brain extraction", "mask", "bias correction", "preprocess",
          "network", "postprocess", "quality", "write")


def scope_line(card: Any) -> str:
    """The card's one-line scope, or one derived from its intended use and training data.

    A card written before `scope` existed still gets an honest line: what it is for and
    what it was trained on ("trained on synthetic phantoms" for a phantom model).
    """
    scope = str(getattr(card, "scope", "") or "").strip()
    if scope:
        return scope
    use = str(getattr(card, "intended_use", "") or "")
    low = use.lower()
    parts = ["research use, not for clinical use" if ("research" in low or "not for clinical" in low or not use)
             else use.strip().rstrip(".")]
    data = str((getattr(card, "training", None) or {}).get("data", "") or "").strip()
    if "phantom" in data.lower() or "synthetic" in data.lower():
        parts.append("trained on synthetic phantoms")
    elif data:
        parts.append("trained on " + (data if len(data) <= 90 else data[:87].rstrip() + "..."))
    else:
        parts.append("training data not stated in its model card")
    return "; ".join(parts)


def model_line(card: Any) -> str:
    """'model: NAME VERSION (scope)': the first line of every run."""
    return f"model: {card.name} {card.version} ({scope_line(card)})"


def scans_line(sources: Mapping[str, Any], reference: str | None = None) -> str:
    """'scans: T1ce = t1c.nii.gz, FLAIR = flair.nii.gz; output on the T1ce grid'."""
    from ..io.pathcheck import printable

    def name(src: Any) -> str:
        if isinstance(src, (str, os.PathLike)) and not str(src).startswith("<"):
            return printable(Path(src).name)
        if isinstance(src, str) and src.startswith("<DICOM "):   # a series of a study: number and description
            return printable(src[len("<DICOM "):-1])
        return "(image in memory)"

    text = "scans: " + ", ".join(f"{m} = {name(s)}" for m, s in sources.items())
    return text + (f"; output on the {reference} grid" if reference else "")


def card_sha256(card_path: str | Path | None) -> str | None:
    """sha256 of the model card file (the card pins its weights' sha256), or None if unknown."""
    if card_path is None:
        return None
    from ..base.hashing import sha256_file

    try:
        return sha256_file(card_path)
    except OSError:
        return None


def model_record(card: Any, card_path: str | Path | None = None, sha256: str | None = None) -> dict:
    """Name, version, card sha256 and scope of a model, as results and summaries record it."""
    return {"name": card.name, "version": card.version,
            "card_sha256": sha256 if sha256 is not None else card_sha256(card_path),
            "weights_sha256": (getattr(card, "weights", None) or {}).get("sha256"),
            "scope": scope_line(card)}


def output_stem(path: str | Path) -> str:
    """A result file's name without its image suffix (`out/case.seg.nrrd` -> `case`)."""
    return image_stem(Path(path).name)


def sidecar_path(output: str | Path) -> Path:
    """Where a result's record goes by default: `<stem>.json` next to the output."""
    p = Path(os.path.expanduser(str(output)))
    return p.with_name(output_stem(p) + ".json")


def result_record(*, model: Mapping, modalities: Sequence[str], inputs: Mapping[str, Any], reference: str | None,
                  labels: str, volumes_ml: Mapping[str, float], options: Mapping[str, Any],
                  outputs: Sequence[str | Path] = (), probabilities: Sequence[str | Path] = (),
                  warnings: Sequence[str] = (), timings: Mapping[str, float] | None = None,
                  device: str | None = None, preprocessing: str = "", quality: Mapping | None = None,
                  notes: Sequence[str] = (), study: Mapping | None = None) -> dict:
    """The JSON record of one segmentation (the sidecar), from its parts.

    The parts of `run_record`, which every front end calls; plain values, so a test can build one.
    `study` is a DICOM study's series listing (`lckd.io.dicomstudy.Study.record`: numbers,
    descriptions, assignments, never a patient attribute).
    """
    from .. import __version__
    from ..base.labels import CONVENTIONS
    from ..io.pathcheck import printable

    def path_text(p: Any) -> str | None:
        if not isinstance(p, (str, os.PathLike)) or str(p).startswith("<"):
            return None
        return printable(os.path.abspath(os.path.expanduser(str(p))))

    record = {
        "format": RECORD_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "lckd_version": __version__,
        "model": dict(model),
        "modalities": list(modalities),
        "inputs": {m: path_text(p) for m, p in inputs.items()},
        "reference": reference,
        "labels": {"convention": labels, "values": dict(CONVENTIONS.get(labels, {}))},
        "volumes_ml": {k: round(float(v), 3) for k, v in volumes_ml.items()},
        "outputs": [path_text(p) for p in outputs],
        "probabilities": [path_text(p) for p in probabilities],
        "device": device,
        "options": dict(options),
        "preprocessing": str(preprocessing),     # what the raw-scan check decided, in one line
        "quality": dict(quality or {}),          # an estimate of this run's WT Dice, not a measurement
        "warnings": [str(w) for w in warnings],
        "notes": [str(n) for n in notes],         # information (e.g. how far co-registration moved a scan)
        "timings_s": _stage_order({k: round(float(v), 3) for k, v in (timings or {}).items()}),
    }
    if study is not None:
        record["dicom_study"] = dict(study)
    return record


def run_options(card: Any, options: SegmentOptions, device: str | None, threads: int | None) -> dict:
    """The options a run records, in the one shape every record and batch summary uses: the
    card's defaults resolved (labels, overlap), the clean-up as the rule applied, and the device
    and threads asked for.

    `card` is the model card, or a worker's description of its model (`worker.describe`: the
    Slicer Logic knows the model only from that).
    """
    if isinstance(card, Mapping):
        from types import SimpleNamespace
        card = SimpleNamespace(label_convention=card.get("labels"), overlap=card.get("overlap"),
                               postprocessing=card.get("postprocessing") or {})
    resolved = options.for_card(card)
    return {"labels": resolved.labels, "register": options.register, "reference": options.reference,
            "postprocess": options.cleanup_rule(card), "overlap": resolved.overlap,
            "sw_batch_size": options.sw_batch_size, "mirrors": options.mirrors, "device": device,
            "threads": threads, "preprocess": options.preprocess, "brain_extractor": options.brain_extractor,
            "bias_correction": options.bias_correction}


def run_record(seg: Any, res: Any, options: SegmentOptions, *, outputs: Sequence[str | Path],
               probabilities: Sequence[str | Path] = (), timings: Mapping[str, float] | None = None,
               study: Mapping | None = None) -> dict:
    """The result record (JSON sidecar) of one segmentation by the loaded model `seg`: the one
    builder `lckd segment`, `lckd batch` and the worker (hence the Slicer module) use.

    `res` is the `SegmentationResult`, `options` the `SegmentOptions` it ran with; the device and
    threads recorded are those `seg` was loaded with as asked (`Segmenter.asked_device`,
    `fixed_threads`). `timings` default to the result's own.
    """
    return result_record(
        model=seg.model_record(), modalities=res.modalities, inputs=res.sources, reference=res.reference,
        labels=res.label_convention, volumes_ml=res.volumes_ml, outputs=outputs, probabilities=probabilities,
        warnings=res.warnings, timings=res.timings if timings is None else timings, device=str(seg.device),
        options=run_options(seg.card, options, seg.asked_device, seg.fixed_threads),
        preprocessing=res.preprocessing, quality=res.quality, notes=res.notes, study=study)


def write_record(record: Mapping, path: str | Path) -> Path:
    """Write a record as JSON atomically and check it reads back (`OutputError` if not)."""
    from ..io.atomicwrite import atomic_path
    from ..io.pathcheck import shown_path

    p = Path(os.path.expanduser(str(path)))
    text = json.dumps(record, indent=2, ensure_ascii=True) + "\n"

    def verify(tmp: Path) -> None:
        try:
            ok = json.loads(Path(tmp).read_text(encoding="utf-8")) == json.loads(text)
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise OutputError(f"cannot write '{shown_path(p)}': the written file is incomplete (is the disk full?)")

    with atomic_path(p, "result record", verify=verify) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return p


def read_record(path: str | Path) -> dict | None:
    """A result record written by `write_record`, or None when absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "volumes_ml" in data else None


def _stage_order(timings: dict) -> dict:
    """Timings in pipeline order (read, load, register, ..., write), then any others, total last."""
    keys = [k for k in STAGES if k in timings] + sorted(k for k in timings if k not in STAGES and k != "total")
    return {**{k: timings[k] for k in keys}, **({"total": timings["total"]} if "total" in timings else {})}


#: The quality record's fields as text, kept with a segmentation: tags of each tumour segment in
#: a `.seg.nrrd` (what `lckd segment`, `lckd batch` and the worker write; Slicer reads segment tags
#: back and keeps them in scenes) and the attributes of the Slicer module's segmentation node.
QUALITY_TAGS = ("LCKD.ExpectedWTDice", "LCKD.WTDiceInterval", "LCKD.LowConfidence", "LCKD.QualityReasons")


def _tag_text(value: Any) -> str:
    # '|' ends a tag in a .seg.nrrd header (Slicer's and slicerio's `SegmentN_Tags`)
    return " ".join(str(value).replace("|", "/").split())


def quality_tags(quality: Mapping | None) -> dict[str, str]:
    """A run's quality record (`lckd.inference.quality.estimate`) as `QUALITY_TAGS` text fields
    ('' for what an uncalibrated model cannot give); {} when there is no record."""
    if not quality:
        return {}
    dice, interval, low = quality.get("expected_wt_dice"), quality.get("interval"), quality.get("low_confidence")
    return {"LCKD.ExpectedWTDice": "" if dice is None else f"{float(dice):.3f}",
            "LCKD.WTDiceInterval": "" if not interval else " ".join(f"{float(v):.3f}" for v in interval),
            "LCKD.LowConfidence": "" if low is None else ("1" if low else "0"),
            "LCKD.QualityReasons": "; ".join(_tag_text(r) for r in quality.get("reasons") or [])}


def quality_from_tags(tags: Mapping[str, str]) -> dict | None:
    """The quality record back from `quality_tags`' fields (expected WT Dice, interval,
    low-confidence flag, reasons); None when they are absent or unreadable."""
    if "LCKD.ExpectedWTDice" not in tags:
        return None
    try:
        dice = tags["LCKD.ExpectedWTDice"].strip()
        interval = [float(v) for v in tags.get("LCKD.WTDiceInterval", "").split()]
        low = tags.get("LCKD.LowConfidence", "").strip()
        return {"expected_wt_dice": float(dice) if dice else None,
                "interval": interval if len(interval) == 2 else None,
                "low_confidence": None if not low else low == "1",
                "reasons": [r.strip() for r in tags.get("LCKD.QualityReasons", "").split(";") if r.strip()]}
    except ValueError:
        return None
