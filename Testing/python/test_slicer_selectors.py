"""Auto-assignment picks only volumes the input selectors can show (LCKDSegmentationLib/selection.py).

The selectors list `vtkMRMLScalarVolumeNode` with `showChildNodeTypes` false, so vector,
diffusion tensor, DWI and labelmap volumes (all subclasses) are hidden; picking one would put
a node in the parameter node that the panel shows as "None". Real MRML classes from slicer-core.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")

from LCKDSegmentationLib.selection import SELECTOR_NODE_CLASS, assign_modalities, selectable_volumes  # noqa: E402
from module_source import source_of  # noqa: E402

pytestmark = pytest.mark.slicer_pythons   # also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)

UI_FILE = Path(__file__).resolve().parents[2] / "LCKDSegmentation" / "Resources" / "UI" / "LCKDSegmentation.ui"
HIDDEN_CLASSES = ("vtkMRMLLabelMapVolumeNode", "vtkMRMLVectorVolumeNode", "vtkMRMLDiffusionTensorVolumeNode",
                  "vtkMRMLDiffusionWeightedVolumeNode")


def test_the_helper_mirrors_the_selectors_in_the_ui():
    root = ET.parse(UI_FILE).getroot()
    for name in ("t1Selector", "t1ceSelector", "t2Selector", "flairSelector"):
        widget = next(w for w in root.iter("widget") if w.get("name") == name)
        props = {p.get("name"): p for p in widget.findall("property")}
        assert [s.text for s in props["nodeTypes"].iter("string")] == [SELECTOR_NODE_CLASS], name
        assert props["showChildNodeTypes"].findtext("bool") == "false", name


def test_only_plain_scalar_volumes_shown_by_the_selectors_are_assigned():
    scene = slicer.vtkMRMLScene()
    for cls in HIDDEN_CLASSES:   # each named like a scan the name rules would take
        node = scene.AddNewNodeByClass(cls, f"AX T1 POST GD {cls}")
        assert node is not None and node.IsA(SELECTOR_NODE_CLASS), cls   # subclasses of the selector type
    hidden = scene.AddNewNodeByClass(SELECTOR_NODE_CLASS, "Sag 3D FLAIR (hidden)")
    hidden.SetHideFromEditors(True)
    flair = scene.AddNewNodeByClass(SELECTOR_NODE_CLASS, "Sag 3D FLAIR")
    t2 = scene.AddNewNodeByClass(SELECTOR_NODE_CLASS, "t2_tse_tra")

    nodes = selectable_volumes(scene)
    assert [n.GetName() for n in nodes] == ["Sag 3D FLAIR", "t2_tse_tra"]
    picks = assign_modalities((n.GetID(), n.GetName()) for n in nodes)
    assert picks == {"FLAIR": flair.GetID(), "T2": t2.GetID()}      # no T1ce: only hidden nodes had that name
    assert [n.GetName() for n in selectable_volumes(scene, {flair.GetID()})] == ["t2_tse_tra"]


def test_the_widget_assigns_through_the_helper():
    body = source_of("autoAssign", "LCKDSegmentationWidget")
    assert "selectable_volumes(slicer.mrmlScene, used)" in body and "getNodesByClass" not in body
    assert "selectable(node)" in source_of("onNodeAdded", "LCKDSegmentationWidget")
