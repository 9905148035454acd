"""Register the bundled sample case(s) with Slicer's Sample Data module.

Every BraTS-layout case folder under `<resources>/SampleData/` becomes one Sample Data
entry; nothing here names files, so replacing the bundled case needs no code change. Node
names are the file names (e.g. `BraTS-PHANTOM-SAMPLE-000-t1c`), which the module's
auto-assignment maps to the right modality selectors.

`register` runs on every Slicer start-up, module used or not, so it imports only the
standard-library parts of the core (`lckd.model.resources`, which lists the cases with `lckd.io.caselayout`,
and `lckd.io.filetypes`):
no numpy, SimpleITK or torch in a Slicer session that never opens the module.
"""
from __future__ import annotations

import logging
from pathlib import Path

CATEGORY = "LCKD Segmentation"


def sample_cases() -> list:
    """`lckd.io.datasets.CaseFiles` of the bundled sample folder (`lckd.model.resources.sample_cases`; [] if none)."""
    from lckd.base.errors import LCKDError
    from lckd.model.resources import sample_cases as bundled_sample_cases

    try:
        return bundled_sample_cases()
    except LCKDError as e:
        logging.warning("LCKD Segmentation: no sample data registered (%s)", e)
        return []


def node_name(path: Path) -> str:
    """The file name without its image suffix (`case-t1c.nii.gz` -> `case-t1c`)."""
    from lckd.io.filetypes import image_stem

    stem = image_stem(path.name)
    return stem if stem != path.name else path.stem


def register(thumbnail: str | None = None) -> list[str]:
    """Add the sample cases to Sample Data (call after Slicer's start-up); returns their names."""
    import SampleData

    names = []
    for case in sample_cases():
        files = [case.images[m] for m in case.images]
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY, sampleName=case.case_id, thumbnailFileName=thumbnail,
            uris=[Path(p).resolve().as_uri() for p in files],   # file:// URLs: copied into the cache, offline
            fileNames=[Path(p).name for p in files], nodeNames=[node_name(Path(p)) for p in files],
            loadFileType="VolumeFile")
        names.append(case.case_id)
    return names
