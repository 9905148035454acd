"""The panel's trust-flags box (issue 31 left the override console-only): a checkbox in the
Advanced section, bound to the parameter node's `trustFlags`, handed to the Logic's
`trustFlags=`, named by the contrast check's refusal, and cleared when the selected scans change.

The Logic runs on real MRML nodes (slicer-core) with the real worker; the widget's part is
checked in the .ui file and the module's source, as only Slicer's GUI could show it."""
from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from module_source import method, module_tree

slicer = pytest.importorskip("slicer")

from LCKDSegmentationLib.logic import SegmentationFailed, SegmentationLogic  # noqa: E402
from LCKDSegmentationLib.output import read_quality  # noqa: E402
from LCKDSegmentationLib.panel import TrustedFlags, selection_key  # noqa: E402

UI_FILE = Path(__file__).resolve().parents[2] / "LCKDSegmentation" / "Resources" / "UI" / "LCKDSegmentation.ui"
MODEL = "lckd-lite-phantom"


def _widget(root: ET.Element, name: str) -> ET.Element:
    return next(w for w in root.iter("widget") if w.get("name") == name)


def _box() -> tuple[ET.Element, ET.Element]:
    """(the Advanced section, the trust-flags checkbox) of the .ui file."""
    root = ET.parse(UI_FILE).getroot()
    return _widget(root, "advancedCollapsibleButton"), _widget(root, "trustFlagsCheckBox")


def _text(widget: ET.Element, prop: str) -> ET.Element:
    return next(p for p in widget.findall("property") if p.get("name") == prop).find("string")


def box_text() -> str:
    return _text(_box()[1], "text").text or ""


def test_the_box_sits_in_the_advanced_section_bound_to_trustFlags_and_is_translatable():
    advanced, box = _box()
    assert box.get("class") == "QCheckBox" and box in list(advanced.iter("widget"))
    assert _text(box, "SlicerParameterName").text == "trustFlags"
    for prop in ("text", "toolTip"):
        string = _text(box, prop)
        assert string.get("notr") is None and string.text   # lupdate collects it for translation
    assert "which scan is which" in box_text()
    # the parameter node field it binds: a bool, off by default
    node = next(n for n in module_tree().body
                if isinstance(n, ast.ClassDef) and n.name == "LCKDSegmentationParameterNode")
    field = next(s for s in node.body if isinstance(s, ast.AnnAssign) and ast.unparse(s.target) == "trustFlags")
    assert ast.unparse(field.annotation) == "bool" and ast.unparse(field.value) == "False"


def test_apply_hands_the_box_to_the_logic():
    start = next(c for c in ast.walk(method("onApply")) if isinstance(c, ast.Call)
                 and ast.unparse(c.func).endswith("startSegment"))
    assert {k.arg: ast.unparse(k.value) for k in start.keywords}["trustFlags"] == "p.trustFlags"


@pytest.fixture
def swapped(segmentation_converters):
    """A scene with the bundled sample case's T1 and FLAIR loaded under each other's flag."""
    from lckd.model.resources import sample_case

    scene = slicer.vtkMRMLScene()
    files = sample_case().images
    nodes = {}
    for flag, true in (("T1", "FLAIR"), ("FLAIR", "T1")):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{true} scan")
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(files[true]))
        assert storage.ReadData(node)
        nodes[flag] = node
    return scene, nodes


def test_a_swap_is_refused_naming_the_box_and_the_box_lets_it_run_flagged(swapped):
    scene, nodes = swapped
    logic = SegmentationLogic(scene)
    try:
        count = scene.GetNumberOfNodes()
        with pytest.raises(SegmentationFailed, match="look swapped") as refused:
            logic.segment(nodes, device="cpu", model=MODEL, show3D=False)
        assert f"'{box_text().split(' (')[0]}' box" in str(refused.value)   # the refusal names the panel's box
        assert scene.GetNumberOfNodes() == count
        seg = logic.segment(nodes, device="cpu", model=MODEL, show3D=False, trustFlags=True)
    finally:
        logic.shutdown()
    record = read_quality(seg)
    assert record is not None and record["low_confidence"] is True
    assert any("look swapped" in r for r in record["reasons"])


def test_the_tick_is_cleared_when_the_selected_scans_change(swapped):
    scene, nodes = swapped
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "next case T1")
    trusted = TrustedFlags()
    assert trusted.still_trusted(selection_key(nodes))          # a reopened scene keeps its tick
    assert trusted.still_trusted(selection_key(dict(nodes)))    # the same scans: kept
    assert not trusted.still_trusted(selection_key({**nodes, "T1": other}))   # another scan: cleared
    assert trusted.still_trusted(selection_key({**nodes, "T1": other}))       # ticked again for it: kept
    assert not trusted.still_trusted(selection_key({"FLAIR": nodes["FLAIR"]}))   # a scan removed: cleared
    # the widget applies the rule on every parameter change, before the buttons are updated
    modified = [ast.unparse(c.func) for c in ast.walk(method("onParameterNodeModified")) if isinstance(c, ast.Call)]
    assert "self.forgetTrustedFlagsOfOtherScans" in modified
    forget = ast.unparse(method("forgetTrustedFlagsOfOtherScans"))
    assert "still_trusted" in forget and "p.trustFlags = False" in forget
