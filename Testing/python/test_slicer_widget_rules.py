"""What the module widget does that only Slicer's GUI can show (issue 29, defects 6, 8, 9, 12).

The rules live in Qt-free helpers tested here on real MRML nodes from `slicer-core`; the
widget's use of them, and the Slicer behaviour that makes them necessary, are checked against
the module source and small excerpts of Slicer's own source (data/slicer_source/README.md).
"""
from __future__ import annotations

import ast
import unittest
from pathlib import Path

import pytest

from LCKDSegmentationLib.panel import apply_enabled
from LCKDSegmentationLib.selection import assign_loaded
from module_source import MODULE_PY, calls, method

ROOT = Path(__file__).resolve().parents[2]
SLICER_SOURCE = Path(__file__).resolve().parent / "data" / "slicer_source"





# --------------------------------------------------------------------------- 9: selectors


@pytest.fixture
def scene():
    slicer = pytest.importorskip("slicer")
    return slicer.vtkMRMLScene()


def _load(scene, *names: str) -> list:
    return [scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", n) for n in names]


def _ids(nodes) -> list:
    return [(n.GetID(), n.GetName()) for n in nodes]


def test_a_new_case_replaces_the_old_cases_automatic_picks(scene):
    old = _load(scene, "T1 MPRAGE pre", "AX T1 POST GD", "t2_tse_tra", "Sag 3D FLAIR")
    current = {"T1": old[0].GetID(), "T1ce": old[1].GetID(), "T2": old[2].GetID(), "FLAIR": old[3].GetID()}
    auto = dict(current)
    new = _load(scene, "case2 AX T1 POST GD", "case2 FLAIR")
    changes = assign_loaded(current, auto, _ids(new))
    assert changes == {"T1ce": new[0].GetID(), "FLAIR": new[1].GetID(), "T1": None, "T2": None}


def test_a_users_own_choice_survives_a_new_case(scene):
    old = _load(scene, "AX T1 POST GD", "Sag 3D FLAIR", "my T2 (renamed)")
    current = {"T1": None, "T1ce": old[0].GetID(), "T2": old[2].GetID(), "FLAIR": old[1].GetID()}
    auto = {"T1ce": old[0].GetID(), "FLAIR": old[1].GetID()}          # T2 was chosen by hand
    new = _load(scene, "case2 T1ce")
    assert assign_loaded(current, auto, _ids(new)) == {"T1ce": new[0].GetID(), "FLAIR": None}


def test_the_rest_of_the_same_case_only_fills_empty_selectors(scene):
    first = _load(scene, "AX T1 POST GD")
    current = {"T1": None, "T1ce": first[0].GetID(), "T2": None, "FLAIR": None}
    later = _load(scene, "Sag 3D FLAIR", "unnamed series 7")
    assert assign_loaded(current, {"T1ce": first[0].GetID()}, _ids(later)) == {"FLAIR": later[0].GetID()}
    assert assign_loaded(current, {}, _ids(_load(scene, "unnamed"))) == {}


def test_volumes_added_while_the_module_is_hidden_are_never_assigned():
    body = method("onNodeAdded")
    guard = next(n for n in ast.walk(body) if isinstance(n, ast.If))
    assert "self.parent.isEntered" in ast.unparse(guard.test) and "selectable(node)" in ast.unparse(guard.test)
    assert "assign_loaded" in calls(method("assignLoaded"))


# --------------------------------------------------------------------------- 6: Apply during installs


def test_slicers_pip_runner_processes_events_so_apply_can_be_clicked_again():
    text = (SLICER_SOURCE / "util_logProcessOutput.excerpt.txt").read_text(encoding="utf-8")
    assert "guiApp.processEvents()" in text.split("for line in proc.stdout:", 1)[1]


def test_apply_is_disabled_while_packages_are_installed():
    assert apply_enabled(True, False, False, None)
    assert not apply_enabled(True, False, True, None)      # installing
    assert not apply_enabled(True, True, False, None) and not apply_enabled(False, False, False, None)
    assert not apply_enabled(True, False, False, "No CUDA GPU")
    assert "panel.apply_enabled(" in ast.unparse(method("updateState")) and \
        "self._installing" in ast.unparse(method("updateState"))

    install = method("installDependencies")
    body = [ast.unparse(s) for s in install.body[1:]]   # the docstring aside
    assert body[:2] == ["self._installing = True", "self.updateState()"]   # before any pip runs
    attempt = next(s for s in install.body if isinstance(s, ast.Try))
    assert "dependencies.plan_installation" in calls(attempt) and "self.installPlanned" in calls(attempt)
    final = [ast.unparse(s) for s in attempt.finalbody]
    assert final[0] == "self._installing = False" and final[-1] == "self.updateState()"
    apply = method("onApply")
    assert "self._installing" in ast.unparse(apply.body[0].test)            # a second click does nothing
    assert "self.installDependencies" in calls(apply) and "dependencies.ensure" not in calls(apply)


# --------------------------------------------------------------------------- 8: unbinding the GUI


def test_connectgui_returns_no_tag_on_slicer_56_and_58_but_connectparameterstogui_does():
    text = (SLICER_SOURCE / "wrapper_connectGui.excerpt.txt").read_text(encoding="utf-8")
    functions = {n.name: n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)}
    returns = {name: [ast.unparse(r.value) for r in ast.walk(f) if isinstance(r, ast.Return) and r.value]
               for name, f in functions.items()}
    assert returns["_connectGui"] == [] and returns["_connectParametersToGui"] == ["tag"]
    assert "guiTag in self._parameterGUIs" in ast.unparse(functions["_disconnectGui"])


def test_the_widget_binds_with_the_call_whose_tag_it_can_disconnect():
    source = MODULE_PY.read_text(encoding="utf-8")
    assert ".connectGui(" not in source
    bind = ast.unparse(method("setParameterNode"))
    assert "self._parameterNodeGuiTag = parameterNode.connectParametersToGui(self.parameterWidgets())" in bind
    assert "self.unbindGui()" in bind and "self.unbindGui" in calls(method("exit"))
    assert "self._parameterNode.disconnectGui(self._parameterNodeGuiTag)" in ast.unparse(method("unbindGui"))
    assert "SlicerParameterName" in ast.unparse(method("parameterWidgets"))


# --------------------------------------------------------------------------- 12: Reload and Test


def test_reload_and_test_reports_a_skip_as_a_skip():
    text = (SLICER_SOURCE / "ScriptedLoadableModule_reloadAndTest.excerpt.txt").read_text(encoding="utf-8")
    assert "test = slicer.selfTests[self.moduleName]" in text and "except Exception as e:" in text
    assert "testCase.runTest(**kwargs)" in text
    assert issubclass(unittest.SkipTest, Exception)   # so Slicer showed a skip as "Reload and Test failed"
    run = method("runTest", cls="LCKDSegmentation")
    handler = next(n for n in ast.walk(run) if isinstance(n, ast.Try))
    assert "ScriptedLoadableModule.runTest" in calls(handler.body[0])
    assert [ast.unparse(h.type) for h in handler.handlers] == ["unittest.SkipTest"]
    assert not any(isinstance(n, ast.Raise) for h in handler.handlers for n in ast.walk(h))
