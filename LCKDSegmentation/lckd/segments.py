"""Names, colours and standard terminology of the three output segments (no heavy imports).

Shared by the CLI's `.seg.nrrd` writer and the Slicer module, so a file written outside
Slicer and a segmentation made inside it look the same. Colours follow the usual BraTS
figures: core red, oedema green, enhancing tumour yellow.
"""
from __future__ import annotations

from dataclasses import dataclass

_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
_ALTERED = ("SCT", "49755003", "Morphologically Altered Structure")


@dataclass(frozen=True)
class SegmentInfo:
    key: str              # class key used in lckd.labels (NCR, ED, ET)
    name: str
    color: tuple          # RGB in 0..1
    type_code: tuple      # (scheme, code, meaning), SNOMED CT

    @property
    def terminology(self) -> str:
        """Slicer TerminologyEntry string (context~category~type~modifier~anatomic context~region~modifier)."""
        return "~".join([_CONTEXT, "^".join(_ALTERED), "^".join(self.type_code), "^^",
                         "Anatomic codes - DICOM master list", "^^", "^^"])


#: Output segments, in the order they are written (label values come from lckd.labels.CONVENTIONS).
SEGMENTS: tuple = (
    SegmentInfo("NCR", "Necrotic / non-enhancing tumour core", (0.85, 0.20, 0.15), ("SCT", "6574001", "Necrosis")),
    SegmentInfo("ED", "Peritumoral oedema", (0.30, 0.80, 0.30), ("SCT", "79654002", "Edema")),
    SegmentInfo("ET", "Enhancing tumour", (0.95, 0.85, 0.10), ("SCT", "108369006", "Neoplasm")),
)
