"""One-step install from the panel (issue 29, item 6 and defect 11): one plan decides everything
that will be installed (torch through the PyTorch extension or pip, the module's requirements,
the brain extractor for raw scans; a repair reinstalls the module's own packages), one
confirmation lists it, pip's output reaches the panel's log line by line, and a restart is
offered when a package this process had already imported (torch, say) was replaced.

The plan is tested on site folders shaped like Slicer's Python (real distributions on disk), pip
runs for real (offline), the restart rule on real imported modules; the widget's part against
the module's source and a vendored excerpt of Slicer's `launchConsoleProcess`."""
from __future__ import annotations

import ast
import os
import sys
import types
from pathlib import Path

import pytest

from LCKDSegmentationLib import dependencies as deps
from module_source import calls, method
from test_slicer_dependencies import SLICER_56_LIKE, FakeSlicer, _site, fake_pytorchutils, hide, requirement_for

pytestmark = pytest.mark.slicer_pythons   # also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)

SLICER_SOURCE = Path(__file__).resolve().parent / "data" / "slicer_source"
UI_FILE = Path(__file__).resolve().parents[2] / "LCKDSegmentation" / "Resources" / "UI" / "LCKDSegmentation.ui"
OWN = ["monai", "safetensors", "slicerio", "highdicom"]          # the requirements Slicer does not ship
EXTRACTOR = "deepbet==1.0.2"


def names(requirements) -> list[str]:
    return [deps.distribution_name(r) for r in requirements]


# --------------------------------------------------------------------------- the plan

def test_a_fresh_slicer_gets_torch_by_the_extension_and_its_packages_in_one_pip_run(tmp_path):
    site = _site(tmp_path / "sp", SLICER_56_LIKE)
    plan = deps.plan_installation(path=[site], torch_extension=True)
    assert plan.torch == ["torch" + deps.TORCH_REQUIREMENT] and plan.torch_by_extension
    assert names(plan.packages) == OWN and plan.extractor == [] and not plan.repair
    assert plan.pinned == ["SimpleITK==2.2.1", "numpy==1.26.4", "scipy==1.11.4", "pydicom==2.4.4"]
    c = tmp_path / "c.txt"
    assert plan.pip_runs(c) == [["-c", str(c), *plan.packages]]     # torch is the extension's, not pip's


def test_without_the_extension_torch_is_the_first_pip_run_and_raw_scans_add_the_extractor(tmp_path):
    site = _site(tmp_path / "sp", SLICER_56_LIKE)
    plan = deps.plan_installation(raw_scans=True, path=[site], torch_extension=False)
    assert plan.extractor == [EXTRACTOR]
    c = tmp_path / "c.txt"
    assert plan.pip_runs(c) == [["-c", str(c), "torch" + deps.TORCH_REQUIREMENT],
                                ["-c", str(c), *plan.packages, EXTRACTOR]]


def complete_site(tmp_path, extractor: bool) -> str:
    dists = dict(SLICER_56_LIKE)
    dists.update({"torch": ("2.8.0", "torch"), "monai": ("1.5.2", "monai"), "safetensors": ("0.7.0", "safetensors"),
                  "slicerio": ("1.4.0", "slicerio"), "highdicom": ("0.22.0", "highdicom")})
    if extractor:
        dists["deepbet"] = ("1.0.2", "deepbet")
    return _site(tmp_path / "complete", dists)


def test_nothing_to_install_is_an_empty_plan_and_raw_scans_need_only_the_extractor(tmp_path):
    site = complete_site(tmp_path, extractor=False)
    assert deps.plan_installation(path=[site]).is_empty()
    raw = deps.plan_installation(raw_scans=True, path=[site])
    assert not raw.is_empty() and raw.torch == [] and raw.packages == [] and raw.extractor == [EXTRACTOR]


def test_a_repair_reinstalls_the_modules_own_packages_never_slicers(tmp_path):
    site = complete_site(tmp_path, extractor=True)
    plan = deps.plan_installation(repair=True, path=[site])
    assert plan.repair and plan.torch == []                        # torch present: the PyTorch Util module's job
    assert names(plan.packages) == OWN and plan.extractor == [EXTRACTOR]   # installed, so repaired too
    assert not {"SimpleITK", "scipy", "pydicom", "numpy"} & set(names(plan.packages))
    c = tmp_path / "c.txt"
    forced, normal = plan.pip_runs(c)
    # fresh copies of the module's packages only (--no-deps: no dependency of theirs, numpy
    # included, is reinstalled), then a normal run that adds whatever is missing
    assert forced == ["--force-reinstall", "--no-deps", "-c", str(c), *plan.packages, EXTRACTOR]
    assert normal == ["-c", str(c), *plan.packages, EXTRACTOR]
    without = deps.plan_installation(repair=True, path=[complete_site(tmp_path / "b", extractor=False)])
    assert without.extractor == []                                  # not installed, no raw scans: left out


def test_the_plan_for_this_python_is_what_missing_packages_says(monkeypatch):
    hide(monkeypatch, "monai")
    plan = deps.plan_installation(torch_extension=False)
    assert plan.torch == [] and plan.packages == [requirement_for("monai")]
    assert [r for r in deps.missing_packages()] == plan.packages


# --------------------------------------------------------------------------- pip, for real

def test_pip_output_reaches_the_log_line_by_line_and_a_failure_names_the_exit_status(tmp_path):
    plan = deps.install_plan(deps.read_requirements())
    constraints = deps.write_constraints(plan.pinned)
    lines: list = []
    try:
        deps.run_pip(["--dry-run", "--no-index", "-c", str(constraints), *deps.read_requirements()], lines.append,
                     python=sys.executable)
        assert lines[0].startswith("$ pip install --dry-run") and len(lines) > 1
        assert any("already satisfied" in line for line in lines)   # pip's own words, as it printed them
        failed: list = []
        with pytest.raises(deps.DependencyError, match="failed \\(exit status [1-9]"):
            deps.run_pip(["--no-index", "--dry-run", "lckd-no-such-package-anywhere"], failed.append,
                         python=sys.executable)
        assert any("lckd-no-such-package-anywhere" in line for line in failed[1:])   # pip's error is in the log
    finally:
        constraints.unlink()


def test_run_pip_reads_what_slicers_launcher_returns():
    """Slicer's launchConsoleProcess takes useStartupEnvironment and returns a Popen whose stdout
    carries pip's output and errors as text lines: what run_pip reads (vendored excerpt)."""
    text = (SLICER_SOURCE / "util_launchConsoleProcess.excerpt.txt").read_text(encoding="utf-8")
    assert "def launchConsoleProcess(args, useStartupEnvironment=True" in text
    assert "stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True" in text
    launch = ast.unparse(method("launchPip"))
    assert "slicer.util.launchConsoleProcess(command, useStartupEnvironment=False)" in launch


def test_the_pytorch_extension_is_not_asked_again_and_pins_slicers_packages(monkeypatch):
    hide(monkeypatch, "torch")
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    recorded: list = []
    seen: list = []
    module = fake_pytorchutils(True, recorded)
    install = module.PyTorchUtilsLogic.installTorch

    def installTorch(self, **kwargs):
        seen.append(os.environ.get("PIP_CONSTRAINT"))
        return install(self, **kwargs)

    module.PyTorchUtilsLogic.installTorch = installTorch
    FakeSlicer(monkeypatch, pytorchutils=module)
    plan = deps.plan_installation()
    assert plan.torch and plan.torch_by_extension and plan.packages == []
    lines: list = []
    assert deps.run_installation(plan, lines.append) == []            # nothing missing afterwards
    assert recorded == [("installTorch", {"askConfirmation": False, "torchVersionRequirement": deps.TORCH_REQUIREMENT})]
    assert seen[0] and "PIP_CONSTRAINT" not in os.environ
    # the one confirmation was the panel's: the installation itself never asks
    tree = ast.parse(Path(deps.__file__).read_text(encoding="utf-8"))
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_installation")
    called = calls(run)
    assert "run_pip" in called and not any("confirm" in c.lower() for c in called)


def test_a_pytorch_extension_that_declines_is_an_error_and_nothing_else_runs(monkeypatch):
    hide(monkeypatch, "torch")
    hide(monkeypatch, "monai")
    FakeSlicer(monkeypatch, pytorchutils=fake_pytorchutils(False, []))
    plan = deps.plan_installation()
    lines: list = []
    with pytest.raises(deps.DependencyError, match="PyTorch was not installed"):
        deps.run_installation(plan, lines.append, launch=lambda cmd: pytest.fail("pip must not run"))


# --------------------------------------------------------------------------- restart when replaced while loaded

def probe_site(root: Path, name: str, version: str) -> Path:
    """A site folder with a real, importable package `name` and its dist-info at `version`."""
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "__init__.py").write_text(f"__version__ = {version!r}\n")
    set_version(root, name, version)
    return root


def set_version(root: Path, name: str, version: str) -> None:
    """What pip does on an upgrade: the old dist-info goes, a new one comes."""
    for old in root.glob(f"{name}-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n{info.name}/METADATA,,\n")


def test_a_package_replaced_while_imported_needs_a_restart_one_never_imported_does_not(tmp_path, monkeypatch):
    site = probe_site(tmp_path / "sp", "lckd_restart_probe", "1.0")
    probe_site(site, "lckd_restart_idle", "1.0")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "lckd_restart_probe", raising=False)
    import lckd_restart_probe  # a real import: the module object stays in sys.modules

    assert lckd_restart_probe.__version__ == "1.0"
    before = deps.installed_versions([str(site)])
    set_version(site, "lckd_restart_probe", "2.0")
    set_version(site, "lckd_restart_idle", "2.0")
    after = deps.installed_versions([str(site)])
    assert deps.replaced_while_loaded(before, after, path=[str(site)]) == ["lckd-restart-probe 1.0 -> 2.0"]
    # unchanged versions: nothing to restart for, unless a repair reinstalled it
    assert deps.replaced_while_loaded(after, after, path=[str(site)]) == []
    assert deps.replaced_while_loaded(after, after, reinstalled=["lckd_restart_probe~=2.0"], path=[str(site)]) == \
        ["lckd-restart-probe 2.0 -> 2.0"]
    monkeypatch.delitem(sys.modules, "lckd_restart_probe")
    assert deps.replaced_while_loaded(before, after, path=[str(site)]) == []   # not loaded any more


def test_an_imported_torch_that_an_install_replaces_needs_a_restart(tmp_path):
    torch = pytest.importorskip("torch")   # the real torch, imported in this process as in a Slicer that ran one
    assert isinstance(sys.modules["torch"], types.ModuleType)
    site = tmp_path / "sp"
    info = site / "torch-99.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 99.0\n")
    (info / "top_level.txt").write_text("torch\n")
    before = {"torch": torch.__version__.split("+")[0]}
    after = deps.installed_versions([str(site)])
    assert deps.replaced_while_loaded(before, after, path=[str(site)]) == [f"torch {before['torch']} -> 99.0"]
    assert deps.replaced_while_loaded({"torch": "99.0"}, after, path=[str(site)]) == []   # the same torch: no restart


def test_import_names_come_from_the_distributions_own_files():
    assert "dateutil" in deps._import_names("python-dateutil", None)   # a name unlike its distribution's
    assert "SimpleITK" in deps._import_names("SimpleITK", None)


# --------------------------------------------------------------------------- the panel

def test_the_panel_asks_once_logs_pip_and_offers_a_restart():
    install = method("installDependencies")
    assert "dependencies.plan_installation" in calls(install)
    planned = method("installPlanned")
    found = calls(planned)
    assert found.count("slicer.util.confirmOkCancelDisplay") == 1            # the one confirmation
    line: dict = {}
    for c in ast.walk(planned):
        if isinstance(c, ast.Call):   # the first line each is called on
            line[ast.unparse(c.func)] = min(c.lineno, line.get(ast.unparse(c.func), c.lineno))
    assert line["slicer.util.confirmOkCancelDisplay"] < line["dependencies.installed_versions"] \
        < line["dependencies.run_installation"] < line["dependencies.replaced_while_loaded"] < line["self.offerRestart"]
    run = next(c for c in ast.walk(planned) if isinstance(c, ast.Call)
               and ast.unparse(c.func) == "dependencies.run_installation")
    assert ast.unparse(run.args[1]) == "self.logInstall"                      # pip's lines into the panel's log
    assert {"self.log", "slicer.app.processEvents"} <= set(calls(method("logInstall")))
    assert "slicer.util.restart" in calls(method("offerRestart"))
    assert "slicer.util.confirmYesNoDisplay" in calls(method("offerRestart"))
    # the confirmation lists every part of the plan
    text = ast.unparse(method("installText"))
    for part in ("plan.torch", "plan.torch_by_extension", "plan.packages", "plan.extractor", "plan.pinned",
                 "plan.repair"):
        assert part in text, part


def test_the_repair_button_reinstalls_through_the_same_plan():
    import xml.etree.ElementTree as ET

    button = next(w for w in ET.parse(UI_FILE).getroot().iter("widget") if w.get("name") == "repairButton")
    text = next(p for p in button.findall("property") if p.get("name") == "text").find("string")
    assert "repair" in text.text.lower() and text.get("notr") is None
    assert "self.ui.repairButton.connect" in calls(method("setup"))
    repair = method("onRepair")
    assert "self._installing" in ast.unparse(repair.body[1].test)              # not during an install or a job
    call = next(c for c in ast.walk(repair)
                if isinstance(c, ast.Call) and ast.unparse(c.func) == "self.installDependencies")
    assert {k.arg: ast.unparse(k.value) for k in call.keywords} == {"repair": "True"}
    assert "self.logic.segmentation.shutdown" in calls(method("installPlanned"))   # the worker lets go of the files
