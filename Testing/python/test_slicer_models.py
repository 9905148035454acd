"""Model management in the Slicer panel (issue 29, item 7): "Add model folder..." accepts a folder
holding a model card and its weights, checked as the worker checks them, remembers it, and the
selector lists it after the registry's models; the panel's model line and expected Dice come from
the selected model's card, read as JSON in the GUI process (no torch).

Real card folders: copies of the bundled models. The widget's part (the file dialog, QSettings)
is checked in the module's source and the .ui file, as only Slicer's GUI could show it."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lckd.base.errors import ModelError
from lckd.model.registry import list_models, resolve_model
from LCKDSegmentationLib import models
from LCKDSegmentationLib.panel import dice_text
from module_source import calls, method

MODULE = Path(__file__).resolve().parents[2] / "LCKDSegmentation"
UI_FILE = MODULE / "Resources" / "UI" / "LCKDSegmentation.ui"


def copy_model(name: str, dest: Path) -> Path:
    """A model folder the way a user has one: the bundled model's card and weights copied out."""
    card = resolve_model(name, allow_download=False)
    dest.mkdir(parents=True)
    for f in (card, card.with_suffix(".safetensors")):
        shutil.copy(f, dest / f.name)
    return dest


@pytest.fixture
def phantom_folder(tmp_path) -> Path:
    return copy_model("lckd-lite-phantom", tmp_path / "my models" / "phantom-copy")


def test_a_model_folder_is_checked_and_listed_after_the_registry(phantom_folder):
    card_path, card = models.check_model_folder(phantom_folder)
    assert card_path == phantom_folder / "lckd-lite-phantom.json" and card.name == "lckd-lite-phantom"
    choices = models.model_choices([str(phantom_folder)])
    registry = [e.name for e in list_models()]
    assert [c.value for c in choices] == [*registry, str(phantom_folder)]
    added = choices[-1]
    assert added.added and not any(c.added for c in choices[:-1])
    assert added.label == f"lckd-lite-phantom {card.version} (added)" and str(phantom_folder) in added.description


def test_the_added_folders_are_kept_as_one_list_without_repeats(phantom_folder, tmp_path):
    assert models.folders_from_settings(None) == [] and models.folders_from_settings("") == []
    assert models.folders_from_settings("/a") == ["/a"]            # QSettings gives one string for a 1-list
    assert models.folders_from_settings(("/a", "/b")) == ["/a", "/b"]
    other = copy_model("lckd-lite-brats", tmp_path / "brats-copy")
    folders = models.with_folder([], phantom_folder)
    folders = models.with_folder(folders, other)
    folders = models.with_folder(folders, phantom_folder / ".." / phantom_folder.name)   # the same folder again
    assert folders == [str(other.resolve()), str(phantom_folder.resolve())]


def test_a_folder_that_went_away_is_left_out_of_the_list(phantom_folder):
    shutil.rmtree(phantom_folder)
    assert not any(c.added for c in models.model_choices([str(phantom_folder)]))


def _break(folder: Path, how: str) -> None:
    card = folder / "lckd-lite-phantom.json"
    weights = folder / "lckd-lite-phantom.safetensors"
    data = json.loads(card.read_text())
    if how == "no card":
        card.unlink()
    elif how == "two cards":
        shutil.copy(card, folder / "another.json")
    elif how == "not JSON":
        card.write_text(card.read_text()[:200])
    elif how == "schema":
        data["patch_size"] = "large"
        card.write_text(json.dumps(data))
    elif how == "no weights":
        weights.unlink()
    elif how == "altered weights":
        raw = bytearray(weights.read_bytes())
        raw[-1] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif how == "pickle":
        data["weights"]["file"] = "lckd-lite-phantom.pt"
        card.write_text(json.dumps(data))
    elif how == "weights elsewhere":
        data["weights"]["file"] = "../lckd-lite-phantom.safetensors"
        card.write_text(json.dumps(data))


@pytest.mark.parametrize(("how", "message"), [
    ("no card", "must hold exactly one model card"),
    ("two cards", "must hold exactly one model card .* found 2"),
    ("not JSON", "is not valid JSON"),
    ("schema", "is invalid: patch_size"),
    ("no weights", "weights 'lckd-lite-phantom.safetensors' are not in"),
    ("altered weights", "do not match the sha256"),
    ("pickle", "not a .safetensors file"),
    ("weights elsewhere", "outside the card's folder"),
])
def test_a_broken_model_folder_is_refused_with_a_clear_message(phantom_folder, how, message):
    _break(phantom_folder, how)
    with pytest.raises(ModelError, match=message):
        models.check_model_folder(phantom_folder)
    if how != "altered weights" and how != "no weights":   # the card itself is bad: not listed either
        assert not any(c.added for c in models.model_choices([str(phantom_folder)]))


def test_a_file_is_not_a_model_folder(phantom_folder):
    with pytest.raises(ModelError, match="is not a folder"):
        models.check_model_folder(phantom_folder / "lckd-lite-phantom.json")


def test_the_panel_shows_the_selected_cards_scope_and_expected_dice_for_the_selected_scans(tmp_path):
    folder = copy_model("lckd-lite-brats", tmp_path / "brats-copy")
    data = json.loads((folder / "lckd-lite-brats.json").read_text())
    row = data["evaluation"]["per_subset"]["T1ce+FLAIR"]
    text = models.card_text(str(folder), ["FLAIR", "T1ce"])
    first, second = text.split("\n")
    assert first == f"Model lckd-lite-brats {data['version']}: {data['scope'].rstrip('.')}."
    assert second == dice_text(row, ["T1ce", "FLAIR"])
    assert f"ET {row['ET']:.2f} ± {row['ET_sd']:.2f}" in second and f"WT {row['WT']:.2f}" in second
    # the registry's entries read the same way; no scans selected: the model line alone
    assert models.card_text("lckd-lite-brats", ["T1ce", "FLAIR"]) == text
    assert models.card_text("", []) == first                     # "" is the bundled default
    assert models.card_text("lckd-lite-phantom", ["T2"]).startswith("Model lckd-lite-phantom ")
    assert models.card_text(str(tmp_path / "gone"), ["T2"]).startswith("Model card: shown once")


# Runs in a fresh interpreter where importing torch fails, like a GUI process that has none.
NO_TORCH = r"""
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
sys.path.insert(0, sys.argv[1])
from LCKDSegmentationLib import models
models.check_model_folder(sys.argv[2])
assert models.model_choices([sys.argv[2]])[-1].added
print(models.card_text(sys.argv[2], ["T2"]))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai", "SimpleITK")))
"""


def test_cards_are_checked_and_read_in_a_process_without_torch(phantom_folder):
    run = subprocess.run([sys.executable, "-c", NO_TORCH, str(MODULE), str(phantom_folder)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("Model lckd-lite-phantom") and lines[1].startswith("Expected Dice for T2: ")
    assert lines[2] == "[]"


def test_the_worker_runs_the_added_folders_model(phantom_folder, tmp_path, segmentation_converters):
    """The selector's value for an added folder is what the Logic hands the worker: it loads that
    folder's card (its sha256 is the copied card's) and segments."""
    slicer = pytest.importorskip("slicer")
    from lckd.base.hashing import sha256_file
    from LCKDSegmentationLib.logic import SegmentationLogic
    from phantom_files import write_phantom_files

    (tmp_path / "case").mkdir()
    files, _ = write_phantom_files(tmp_path / "case", 2, (48, 64, 64))
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "t2")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(files["T2"]))
    assert storage.ReadData(node)
    value = models.model_choices([str(phantom_folder)])[-1].value
    logic = SegmentationLogic(scene)
    try:
        seg = logic.segment({"T2": node}, device="cpu", model=value, show3D=False)
        assert seg.GetSegmentation().GetNumberOfSegments() == 3
        assert logic.modelInfo(value)["card_sha256"] == sha256_file(phantom_folder / "lckd-lite-phantom.json")
    finally:
        logic.shutdown()


def test_the_widget_adds_checks_remembers_and_selects_a_folder():
    root = ET.parse(UI_FILE).getroot()
    button = next(w for w in root.iter("widget") if w.get("name") == "addModelFolderButton")
    text = next(p for p in button.findall("property") if p.get("name") == "text").find("string")
    assert text.text == "Add model folder..." and text.get("notr") is None
    assert "self.ui.addModelFolderButton.connect" in calls(method("setup"))
    add = calls(method("onAddModelFolder"))
    line = {ast.unparse(c.func): c.lineno for c in ast.walk(method("onAddModelFolder")) if isinstance(c, ast.Call)}
    # checked before it is kept; refused with a message naming the problem; kept in the settings; selected
    assert line["models.check_model_folder"] < line["slicer.util.errorDisplay"] < line["qt.QSettings().setValue"]
    assert "slicer.util.errorDisplay" in add and "self.fillModelComboBox" in add
    text = ast.unparse(method("onAddModelFolder"))
    assert "models.SETTINGS_KEY" in text and "self._parameterNode.model = folders[-1]" in text
    assert "models.folders_from_settings" in calls(method("addedModelFolders"))
    # the panel's line comes from the card, not from a loaded worker
    assert "models.card_text" in calls(method("updateModelText"))
    assert "modelInfo" not in ast.unparse(method("updateModelText"))
    # a scene naming a model this Slicer cannot run shows (and runs) the default instead
    modified = ast.unparse(method("onParameterNodeModified"))
    assert "self.modelIndex(p.model)" in modified and "p.model = ''" in modified
