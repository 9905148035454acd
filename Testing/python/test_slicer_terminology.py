"""The segments' standard terminology exists in a context Slicer loads by default.

Slicer looks a segment's terminology up by context name, then category, then type
(`vtkSlicerTerminologiesModuleLogic`); a code missing from the context logs "Failed to find
type ..." and the terminology selector shows nothing. Checked against an excerpt of the
General Anatomy context file Slicer ships (data/slicer_terminology/README.md says where it
comes from and under which licence).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lckd.base.segments import SEGMENTS, TERMINOLOGY_CATEGORY, TERMINOLOGY_CONTEXT

DATA = Path(__file__).resolve().parent / "data" / "slicer_terminology"
GENERAL_ANATOMY = DATA / "SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.excerpt.json"


def _code(entry: dict) -> tuple[str, str, str]:
    return entry["CodingSchemeDesignator"], entry["CodeValue"], entry["CodeMeaning"]


@pytest.fixture(scope="module")
def context() -> dict:
    return json.loads(GENERAL_ANATOMY.read_text(encoding="utf-8"))


def test_the_vendored_context_is_slicers_default_general_anatomy_list(context):
    assert context["SegmentationCategoryTypeContextName"] == TERMINOLOGY_CONTEXT
    assert context["@schema"].endswith("segment-context-schema.json#")
    assert (DATA / "README.md").read_text(encoding="utf-8").count("3D Slicer License") == 1


@pytest.mark.parametrize("spec", SEGMENTS, ids=lambda s: s.key)
def test_each_segment_type_is_in_its_category_of_the_context(context, spec):
    fields = spec.terminology.split("~")
    assert len(fields) == 7                                   # Slicer's TerminologyEntry string
    name, category, kind = fields[0], tuple(fields[1].split("^")), tuple(fields[2].split("^"))
    assert name == TERMINOLOGY_CONTEXT
    categories = {_code(c): c for c in context["SegmentationCodes"]["Category"]}
    assert category == TERMINOLOGY_CATEGORY and category in categories, category
    types = {_code(t) for t in categories[category]["Type"]}
    assert kind in types, f"{spec.key}: {kind} is not a type of {category[2]} in {name}"
    assert fields[3] == "^^"                                  # no type modifier


def test_each_segment_has_the_closest_type_the_category_offers(context):
    """Issue 29, defect 14: the core (necrotic *and* non-enhancing tumour) was tagged Necrosis,
    which claims all of it is dead tissue. Of the category's types only Mass covers tumour
    whatever its enhancement or necrosis (the reasons are in lckd/base/segments.py)."""
    types = {s.key: s.type_code[2] for s in SEGMENTS}
    assert types == {"NCR": "Mass", "ED": "Edema", "ET": "Mass"}
    offered = {t["CodeMeaning"] for c in context["SegmentationCodes"]["Category"] for t in c["Type"]}
    assert not offered & {"Neoplasm", "Tumor", "Non-enhancing tumor"}   # else one of those would be closer
    assert "non-enhancing" in {s.key: s.name for s in SEGMENTS}["NCR"]   # the name says what Mass leaves out
