"""Writing a segmentation result: labelmap (NIfTI/NRRD/MHA) or Slicer `.seg.nrrd`, atomically.

Every file is written under a temporary name, read back and compared with what was meant
to be written, and only then renamed onto its final name (`lckd.io.atomicwrite.atomic_path`).
`write_result` does this for all the files of one result together: either every output
appears, or none does (a failing probability map never leaves its labelmap behind).
"""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import SimpleITK as sitk

from ..base.errors import OutputError
from ..base.labels import CONVENTIONS
from ..base.segments import SEGMENTS
from ..io.atomicwrite import TEMP_NAME_EXTRA, atomic_path, no_space_reason, probe_writable
from ..io.filetypes import OUTPUT_SUFFIXES, is_dicom_seg, is_segmentation
from ..io.imageio import image_writer_target, write_image_file
from ..io.pathcheck import check_path_text, shown_path
from .record import quality_tags

PathLike = Union[str, "os.PathLike[str]"]

#: File names `write_result` gives the probability maps written into a folder (after `<stem>_`).
PROBABILITY_NAMES = {"ET": "probability_ET.nii.gz", "TC": "probability_TC.nii.gz", "WT": "probability_WT.nii.gz"}


def probability_names(stem: str = "") -> dict:
    """Region -> file name of its probability map; `stem` (the output's, e.g. 'case1') is put
    in front so runs sharing a probability folder do not overwrite each other's maps."""
    return {r: (f"{stem}_{n}" if stem else n) for r, n in PROBABILITY_NAMES.items()}


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4x4 voxel (i, j, k) -> physical LPS matrix of a SimpleITK image."""
    m = np.eye(4)
    m[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    m[:3, 3] = image.GetOrigin()
    return m


def write_labelmap(labelmap: sitk.Image, path: PathLike, convention: str = "brats2018",
                   quality: Mapping | None = None) -> Path:
    """Write a labelmap atomically; `.seg.nrrd` gets Slicer segments with names, colours, terminology
    and the run's quality record (`quality`) as segment tags."""
    p = Path(os.path.expanduser(str(path)))
    if not is_segmentation(p.name):
        image_writer_target(p, "labelmap")
    with atomic_path(p, "labelmap") as tmp:
        write_labelmap_file(labelmap, tmp, convention, shown=p, quality=quality)
    return p


def write_labelmap_file(labelmap: sitk.Image, tmp: PathLike, convention: str = "brats2018",
                        shown: PathLike | None = None, quality: Mapping | None = None) -> None:
    """Write a labelmap into the temporary file `tmp` (from `atomic_path`) and verify it.

    The format follows `shown` (the final name): `.seg.nrrd` is a Slicer segmentation, whose
    tumour segments carry the quality record's fields as tags (`record.quality_tags`; Slicer
    reads them back, and the LCKD module shows the quality line of a loaded file).
    """
    final = Path(shown if shown is not None else tmp)
    if not is_segmentation(final.name):
        write_image_file(labelmap, tmp, what="labelmap", shown=final)
        return
    label = f"cannot write segmentation '{shown_path(final)}'"
    try:
        import slicerio
    except ImportError:
        raise OutputError("writing .seg.nrrd needs the 'slicerio' package: pip install slicerio") from None
    values = CONVENTIONS[convention]
    voxels = np.transpose(sitk.GetArrayFromImage(labelmap), (2, 1, 0))  # (z,y,x) -> (i,j,k)
    seg = slicerio.create_segmentation(voxels.shape, ijk_to_lps(labelmap))
    tags = quality_tags(quality)
    for info in SEGMENTS:
        slicerio.add_segment(seg, voxels == values[info.key], {
            "id": info.key, "name": info.name, "color": list(info.color),
            "terminology": slicerio.segmentation.terminology_entry_from_string(info.terminology),
            **({"tags": dict(tags)} if tags else {})})
    seg["containedRepresentationNames"] = ["Binary labelmap"]
    seg["masterRepresentation"] = "Binary labelmap"
    try:
        slicerio.write_segmentation(str(tmp), seg)
    except OSError as e:
        raise OutputError(f"{label}: {e.strerror or e}") from None
    _verify_segmentation(Path(tmp), labelmap, label)


def _verify_segmentation(path: Path, labelmap: sitk.Image, label: str) -> None:
    """Raise unless the `.seg.nrrd` at `path` reads back complete with the labelmap's tumour voxels."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        back = sitk.ReadImage(str(path)) if path.stat().st_size else None
    except (RuntimeError, OSError):
        back = None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    ok = back is not None
    if back is not None and back.GetDimension() == 3 and back.GetNumberOfComponentsPerPixel() == 1:
        # Slicer numbers segments 1..n, so compare where the tumour is, not the label values.
        ok = back.GetSize() == labelmap.GetSize() and bool(np.array_equal(
            sitk.GetArrayViewFromImage(back) > 0, sitk.GetArrayViewFromImage(labelmap) > 0))
    if not ok:
        full = no_space_reason(path.parent)
        raise OutputError(f"{label}: {full + '; ' if full else ''}the written file is incomplete or does not read "
                          f"back{'' if full else ' (is the disk full?)'}")


def _name_max(folder: Path) -> int:
    """Longest file name (bytes) the file system holding `folder` (or its nearest existing parent) allows."""
    for p in [folder, *folder.parents]:
        if p.is_dir():
            try:
                return int(os.pathconf(p, "PC_NAME_MAX"))
            except (OSError, ValueError, AttributeError):
                break
    return 255


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def refuse_input_overwrite(outputs: Iterable[PathLike], inputs: Iterable[PathLike | None]) -> None:
    """Raise `OutputError` if any output path is one of the input files (or a link to one)."""
    ins = [Path(os.path.expanduser(str(i))) for i in inputs if isinstance(i, (str, os.PathLike))]
    for out in outputs:
        o = Path(os.path.expanduser(str(out)))
        for i in ins:
            if _same_path(o, i):
                raise OutputError(f"cannot write '{shown_path(o)}': it is an input scan ('{shown_path(i)}'); "
                                  "writing there would destroy it, choose another output name")


def check_output_path(path: PathLike, inputs: Iterable[PathLike | None] = (), what: str = "output") -> Path:
    """Fail early (before minutes of work) if `path` cannot take a result.

    Refuses an unknown output type, a name that is not UTF-8 or too long for the file
    system, a path that is one of `inputs`, a folder, and an unwritable location; leaves
    nothing behind.
    """
    p = Path(os.path.expanduser(str(path)))
    label = f"cannot write {what} '{shown_path(path)}'"
    check_path_text(p, label, OutputError)
    if not any(p.name.endswith(s) for s in OUTPUT_SUFFIXES):
        raise OutputError(f"{label}: unknown output type; use one of {', '.join(OUTPUT_SUFFIXES)}")
    limit = _name_max(p.parent) - TEMP_NAME_EXTRA
    if len(os.fsencode(p.name)) > limit:
        raise OutputError(f"cannot write {what} '{shown_path(path)[:60]}...': the file name is "
                          f"{len(os.fsencode(p.name))} bytes long; at most {limit} fit on this file system")
    refuse_input_overwrite([p], inputs)
    try:
        probe_writable(p, what)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise OutputError(f"{label}: the name is too long for this file system") from None
        raise OutputError(f"{label}: {e.strerror or e}") from None
    return p


def check_probability_dir(folder: PathLike, inputs: Iterable[PathLike | None] = (), stem: str = "") -> Path:
    """Fail early if the probability maps (named by `probability_names(stem)`) cannot be written into `folder`."""
    d = Path(os.path.expanduser(str(folder)))
    check_path_text(d, f"cannot write probabilities into '{shown_path(folder)}'", OutputError)
    if d.exists() and not d.is_dir():
        raise OutputError(f"cannot write probabilities into '{shown_path(folder)}': it is a file, not a folder")
    for name in probability_names(stem).values():
        check_output_path(d / name, inputs, "probability map")
    return d


def write_result(result, outputs: Sequence[PathLike], *, probabilities_dir: PathLike | None = None,
                 probabilities_file: PathLike | None = None, brain_mask_file: PathLike | None = None,
                 inputs: Iterable[PathLike | None] | None = None, probabilities_stem: str = "",
                 dicom_source: Sequence[PathLike] | None = None, model: Mapping | None = None) -> list[Path]:
    """Write a `SegmentationResult`'s files all-or-nothing; return the paths written.

    `outputs`: labelmap paths (`.seg.nrrd` gives a Slicer segmentation). The probability
    maps go into `probabilities_dir` as three files (`probability_names(probabilities_stem)`),
    or into `probabilities_file` as one 3-component image; the extracted brain mask (raw-scan
    preprocessing) into `brain_mask_file`. No output may be one of the inputs
    (`inputs`, default the files the result was made from). Every file is written under a
    temporary name and verified; the renames onto the final names happen only once all of
    them are complete. A `.dcm` output is a DICOM SEG on the reference series `dicom_source`
    (its files in slice order), naming the model (`model`, a model record) and the quality estimate.
    """
    sources = inputs if inputs is not None else _result_sources(result)
    plan: list[tuple[Path, str, sitk.Image | None]] = []   # (path, what, image; None: the labelmap)
    for out in outputs:
        p = Path(os.path.expanduser(str(out)))
        if is_dicom_seg(p.name):
            if not dicom_source:
                raise OutputError(f"cannot write DICOM SEG '{shown_path(p)}': the reference scan is not a DICOM "
                                  "series (give the study with --study DIR, or the reference as a DICOM folder)")
        elif not is_segmentation(p.name):
            image_writer_target(p, "labelmap")
        plan.append((p, "labelmap", None))
    if probabilities_dir is not None or probabilities_file is not None:
        if result.probabilities is None:
            raise OutputError("probability maps were asked for but the result holds none "
                              "(segment with probabilities=True)")
        if probabilities_dir is not None:
            d = Path(os.path.expanduser(str(probabilities_dir)))
            for i, name in enumerate(probability_names(probabilities_stem).values()):   # ET, TC, WT: the components
                plan.append((d / name, "probability map", sitk.VectorIndexSelectionCast(result.probabilities, i)))
        if probabilities_file is not None:
            plan.append((image_writer_target(probabilities_file, "probabilities"), "probabilities",
                         result.probabilities))
    if brain_mask_file is not None:
        if result.brain_mask is None:
            raise OutputError("a brain mask was asked for but none was extracted (raw-scan preprocessing did "
                              "not run: use --preprocess on)")
        plan.append((image_writer_target(brain_mask_file, "brain mask"), "brain mask", result.brain_mask))
    refuse_input_overwrite([p for p, _, _ in plan], sources)
    missing = {p.parent for p, _, _ in plan if not p.parent.exists()}
    try:
        with contextlib.ExitStack() as stack:
            for path, what, image in plan:
                tmp = stack.enter_context(atomic_path(path, what))
                if image is None and is_dicom_seg(path.name):
                    from ..io.dicomseg import write_dicom_seg_file
                    from .quality import short_line
                    write_dicom_seg_file(result.labelmap, dicom_source or [], tmp, convention=result.label_convention,
                                         model=model, description=short_line(result.quality or {}), shown=path)
                elif image is None:
                    write_labelmap_file(result.labelmap, tmp, result.label_convention, shown=path,
                                        quality=getattr(result, "quality", None))
                else:
                    write_image_file(image, tmp, what=what, shown=path)
            # Leaving the stack renames every temporary file onto its name; an error above deletes them all.
    except BaseException:
        for folder in missing:  # folders made for outputs that never came
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return [p for p, _, _ in plan]


def _result_sources(result) -> list:
    sources: Mapping = getattr(result, "sources", None) or {}
    return [v for v in sources.values() if isinstance(v, str) and not v.startswith("<")]
