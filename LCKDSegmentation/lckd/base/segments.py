"""Names, colours and standard terminology of the tumour classes and regions (no heavy imports).

The one table of region names: the CLI's volume table and `.seg.nrrd` writer, figures and
the Slicer module all read them here, so a file written outside Slicer and a segmentation
made inside it look the same. Colours follow the usual BraTS figures: core red, oedema
green, enhancing tumour yellow.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

#: The nested regions the network predicts, in its output-channel order (ET inside TC inside WT).
REGIONS: tuple = ("ET", "TC", "WT")

#: Human-readable name of each tumour class (NCR, ED, ET) and nested region (TC, WT).
REGION_NAMES: dict = {
    "NCR": "necrotic / non-enhancing tumour core",
    "ED": "peritumoral oedema",
    "ET": "enhancing tumour",
    "TC": "tumour core",
    "WT": "whole tumour",
}
#: What each nested region adds up to.
REGION_PARTS: dict = {"TC": "NCR + ET", "WT": "TC + ED"}

#: Label values of the tumour classes in each convention.
CONVENTIONS: dict[str, dict[str, int]] = {
    "brats2018": {"NCR": 1, "ED": 2, "ET": 4},   # BraTS 2018-2021
    "brats2023": {"NCR": 1, "ED": 2, "ET": 3},   # BraTS 2023+
}


def check_convention(name: str) -> dict[str, int]:
    """Label values of a convention, or an InputError naming the valid ones."""
    if name not in CONVENTIONS:
        raise InputError(f"unknown label convention '{name}': use one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


def region_title(key: str) -> str:
    """Capitalised name with its parts, for tables: 'Tumour core (NCR + ET)', 'Enhancing tumour'."""
    name = REGION_NAMES[key]
    name = name[:1].upper() + name[1:]
    return f"{name} ({REGION_PARTS[key]})" if key in REGION_PARTS else name


#: Slicer loads this context by default and its segment editor offers it first. Every code
#: below is in its "Morphologically Altered Structure" category (checked in
#: Testing/python/test_slicer_terminology.py against the file Slicer ships), so Slicer's
#: terminology selector finds all three. That category offers Blood clot, Cyst, Edema,
#: Embolus, Hemorrhage, Mass and Necrosis; it has no "Neoplasm" and nothing for non-enhancing
#: tumour (only the DICOM master list has Neoplasm). The closest codes:
#:   ED  -> Edema (SCT 79654002): exactly what the class is.
#:   ET  -> Mass (SCT 4147007): viable, enhancing tumour tissue.
#:   NCR -> Mass as well: the class is necrotic *and* non-enhancing tumour core (BraTS label 1,
#:          "NETC" since 2023); "Necrosis" (SCT 6574001) would call all of it dead tissue, which
#:          the non-enhancing part is not, while Mass holds tumour whatever its enhancement.
#: NCR and ET thus share a type; their names and colours tell them apart.
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
TERMINOLOGY_CATEGORY = ("SCT", "49755003", "Morphologically Altered Structure")


@dataclass(frozen=True)
class SegmentInfo:
    key: str              # class key used in lckd.base.labels (NCR, ED, ET)
    name: str
    color: tuple          # RGB in 0..1
    type_code: tuple      # (scheme, code, meaning), SNOMED CT

    @property
    def terminology(self) -> str:
        """Slicer TerminologyEntry string (context~category~type~modifier~anatomic context~region~modifier)."""
        return "~".join([TERMINOLOGY_CONTEXT, "^".join(TERMINOLOGY_CATEGORY), "^".join(self.type_code), "^^",
                         "Anatomic codes - DICOM master list", "^^", "^^"])


#: Output segments, in the order they are written (label values come from CONVENTIONS).
SEGMENTS: tuple = (
    SegmentInfo("NCR", region_title("NCR"), (0.85, 0.20, 0.15), ("SCT", "4147007", "Mass")),
    SegmentInfo("ED", region_title("ED"), (0.30, 0.80, 0.30), ("SCT", "79654002", "Edema")),
    SegmentInfo("ET", region_title("ET"), (0.95, 0.85, 0.10), ("SCT", "4147007", "Mass")),
)
