"""The Slicer module's dependency check and installer (LCKDSegmentationLib/dependencies.py).

The checks run against what really is installed in this Python (numpy, torch, the module's
own requirements.txt) and against packages written into a temporary folder on sys.path
(one with pip metadata, one without). A package is made "not installed" the way Python
itself marks a blocked import: `sys.modules[name] = None`, which `importlib.util.find_spec`
answers with None. Slicer cannot run here, so `ensure()` is driven with a small stand-in
`slicer` module whose `util.pip_install` / `util.confirmOkCancelDisplay` (and optional
`packaging` and `PyTorchUtils`) record their calls; an "installation" un-blocks the package,
so the re-check `ensure()` does afterwards sees it.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from LCKDSegmentationLib import dependencies as deps

pytestmark = pytest.mark.slicer_pythons   # also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)

SLICER_SOURCE = Path(__file__).resolve().parent / "data" / "slicer_source"

# --------------------------------------------------------------------------- helpers

def hide(monkeypatch, name: str) -> None:
    """Make `name` not importable for the test (find_spec -> None, import -> ImportError)."""
    monkeypatch.setitem(sys.modules, name, None)


def unhide(name: str) -> None:
    """The effect of installing `name`: its block is lifted (monkeypatch restores the rest)."""
    if name in sys.modules and sys.modules[name] is None:
        del sys.modules[name]


def requirement_for(name: str) -> str:
    """The line of the module's real requirements.txt for distribution `name`."""
    return next(r for r in deps.read_requirements() if deps.distribution_name(r).lower() == name.lower())


class FakeSlicer:
    """A recording stand-in for the bits of Slicer's Python API that dependencies.py uses."""

    def __init__(self, monkeypatch, *, confirm=True, installs=True, packaging=None, pytorchutils=None):
        self.calls: list[tuple] = []
        self.confirm_answers = list(confirm) if isinstance(confirm, (list, tuple)) else None
        self.confirm = confirm
        self.installs = installs
        self.module = types.ModuleType("slicer")
        util = types.ModuleType("slicer.util")
        util.pip_install = self._pip_install
        util.confirmOkCancelDisplay = self._confirm
        self.module.util = util
        if packaging is not None:
            self.module.packaging = packaging
        monkeypatch.setitem(sys.modules, "slicer", self.module)
        monkeypatch.setitem(sys.modules, "slicer.util", util)
        if pytorchutils is None:
            hide(monkeypatch, "PyTorchUtils")      # the PyTorch extension is not installed
        else:
            monkeypatch.setitem(sys.modules, "PyTorchUtils", pytorchutils)

    def _confirm(self, text, windowTitle=None, **kwargs):
        self.calls.append(("confirm", windowTitle, text))
        return self.confirm_answers.pop(0) if self.confirm_answers is not None else self.confirm

    def _pip_install(self, requirements, **kwargs):
        self.calls.append(("pip_install", requirements))
        if self.installs:
            for r in [requirements] if isinstance(requirements, str) else requirements:
                unhide(deps.distribution_name(r))

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


def fake_pytorchutils(result_installs: bool, calls: list):
    """A PyTorchUtils module whose logic's installTorch records its arguments."""
    mod = types.ModuleType("PyTorchUtils")

    class PyTorchUtilsLogic:
        def installTorch(self, **kwargs):
            calls.append(("installTorch", kwargs))
            if not result_installs:
                return None   # the user declined, or installation failed
            unhide("torch")
            return types.ModuleType("torch")

    mod.PyTorchUtilsLogic = PyTorchUtilsLogic
    return mod


# --------------------------------------------------------------------------- requirement parsing

def test_read_requirements_drops_comments_and_blanks_and_keeps_specs_extras_markers(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# a heading comment\n"
        "\n"
        "   \n"
        "numpy>=1.20  # inline comment\n"
        "  monai[nibabel]~=1.3\n"
        "scipy ; python_version >= '3.8'\n"
        "SimpleITK!=2.0.0,<3\n"
        "\t# an indented comment\n"
        "plainname\n", encoding="utf-8")
    assert deps.read_requirements(path) == [
        "numpy>=1.20", "monai[nibabel]~=1.3", "scipy ; python_version >= '3.8'", "SimpleITK!=2.0.0,<3", "plainname"]
    assert deps.read_requirements(str(path)) == deps.read_requirements(path)   # str paths too


def test_read_requirements_of_an_empty_or_comment_only_file_is_empty(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# nothing here\n\n# still nothing\n", encoding="utf-8")
    assert deps.read_requirements(path) == []


def test_the_module_requirements_file_parses_line_for_line():
    lines = deps.REQUIREMENTS_FILE.read_text(encoding="utf-8").splitlines()
    expected = [t for t in (ln.partition("#")[0].strip() for ln in lines) if t]
    reqs = deps.read_requirements()
    assert reqs == expected and reqs
    for r in reqs:   # every line is a valid PEP 508 requirement with the name distribution_name sees
        assert Requirement(r).name == deps.distribution_name(r)


@pytest.mark.parametrize("requirement", [
    "numpy", "numpy>=1.20", "numpy >= 1.20", "monai[nibabel,itk]~=1.3", "monai [nibabel]", "scipy<2",
    "SimpleITK!=2.0.0", "safetensors==0.4.*", "slicerio===1.1", "torch; sys_platform != 'darwin'",
    "scikit-image>=0.20;python_version>'3.8'", "zope.interface>5", "pkg @ https://example.org/pkg-1.0.tar.gz",
])
def test_distribution_name_is_the_pep508_name(requirement):
    assert deps.distribution_name(requirement) == Requirement(requirement).name


# --------------------------------------------------------------------------- satisfied / missing

def test_satisfied_against_the_installed_safetensors_version():
    v = importlib.metadata.version("safetensors")
    assert deps._satisfied("safetensors")
    assert deps._satisfied(f"safetensors=={v}")
    assert deps._satisfied(f"safetensors>={v}")
    assert deps._satisfied(f"safetensors[extra]=={v}")          # extras do not change the version check
    assert not deps._satisfied(f"safetensors>{v}")               # installed but too old
    assert not deps._satisfied(f"safetensors<{v}")               # installed but too new
    assert not deps._satisfied(f"safetensors!={v}")
    assert not deps._satisfied(f"safetensors>{v}; python_version > '2'")


def test_simpleitk_is_found_by_its_import_name_in_any_case_and_any_version_is_accepted():
    """Slicer's own SimpleITK (built against its ITK) is used whatever its version."""
    v = importlib.metadata.version("SimpleITK")
    for name in ("SimpleITK", "simpleitk", "SIMPLEITK"):
        assert deps.is_bundled(name), name
        assert deps._satisfied(f"{name}=={v}"), name
        assert deps._satisfied(f"{name}>{v}"), name   # never "missing", so never reinstalled


def test_a_package_that_is_not_installed_is_unsatisfied():
    name = "lckd-test-no-such-distribution"
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version(name)
    assert not deps._satisfied(name)
    assert not deps._satisfied(name + ">=1.0")


def test_satisfied_reads_pip_metadata_and_accepts_prereleases(tmp_path, monkeypatch):
    """A real distribution on sys.path: its package folder and a .dist-info with its version."""
    for name, version in (("lckd_testdist_a", "1.4.0"), ("lckd_testdist_b", "2.0rc1")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.metadata.version("lckd_testdist_a") == "1.4.0"
    assert deps._satisfied("lckd_testdist_a>=1.4")
    assert deps._satisfied("lckd_testdist_a~=1.3")
    assert not deps._satisfied("lckd_testdist_a~=1.5")
    assert not deps._satisfied("lckd_testdist_a<1.4")
    assert deps._satisfied("lckd_testdist_b>=1.0")         # a pre-release install counts
    assert not deps._satisfied("lckd_testdist_b>=2.0")     # 2.0rc1 comes before 2.0


def test_importable_without_pip_metadata_is_accepted_and_not_imported(tmp_path, monkeypatch):
    """Like a package bundled with Slicer: importable, no .dist-info. Checking must not import it."""
    (tmp_path / "lckd_test_bundled.py").write_text("raise RuntimeError('imported by the check')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert deps._satisfied("lckd_test_bundled>=99")       # version unknown: accepted
    assert deps.missing_packages(["lckd_test_bundled>=99"]) == []
    assert "lckd_test_bundled" not in sys.modules


def test_missing_packages_keeps_order_and_drops_satisfied_ones():
    v = importlib.metadata.version("safetensors")
    reqs = ["lckd-test-missing-one>=1", f"safetensors=={v}", f"safetensors>{v}", "lckd-test-missing-two"]
    assert importlib.util.find_spec("torch") is not None   # torch is installed here: not listed
    assert deps.missing_packages(reqs) == ["lckd-test-missing-one>=1", f"safetensors>{v}", "lckd-test-missing-two"]
    assert deps.missing_packages([f"safetensors=={v}"]) == []
    assert deps.missing_packages([]) == []


def test_missing_torch_is_listed_first(monkeypatch):
    v = importlib.metadata.version("safetensors")
    hide(monkeypatch, "torch")
    assert deps.missing_packages([f"safetensors>{v}", f"safetensors=={v}"]) == [
        "torch" + deps.TORCH_REQUIREMENT, f"safetensors>{v}"]
    assert deps.missing_packages([]) == ["torch" + deps.TORCH_REQUIREMENT]
    Requirement(deps.missing_packages([])[0])              # a valid requirement for pip


def test_missing_packages_defaults_to_the_module_requirements_file(monkeypatch):
    assert deps.missing_packages() == []                   # this environment has them all
    hide(monkeypatch, "monai")
    hide(monkeypatch, "safetensors")
    assert deps.missing_packages() == [requirement_for("monai"), requirement_for("safetensors")]


def test_manual_command_installs_torch_and_the_requirements_file():
    words = shlex.split(deps.manual_command())
    assert words == ["PythonSlicer", "-m", "pip", "install", "torch", "-r", str(deps.REQUIREMENTS_FILE)]
    assert deps.REQUIREMENTS_FILE.is_file()


def test_manual_command_is_a_valid_pip_command():
    """pip itself accepts its arguments (offline dry run: everything is installed here)."""
    words = shlex.split(deps.manual_command())
    run = subprocess.run([sys.executable, *words[1:], "--dry-run", "--no-index", "--quiet",
                          "--disable-pip-version-check"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


# --------------------------------------------------------------------------- ensure()

def test_ensure_does_nothing_and_never_imports_slicer_when_all_is_there(monkeypatch):
    assert deps.missing_packages() == []
    hide(monkeypatch, "slicer")                            # an import of slicer would fail
    assert deps.ensure() is None


def test_ensure_installs_torch_then_the_rest_with_pip_when_there_is_no_pytorch_extension(monkeypatch):
    hide(monkeypatch, "torch")
    hide(monkeypatch, "monai")
    hide(monkeypatch, "slicerio")
    fake = FakeSlicer(monkeypatch, confirm=True)
    deps.ensure()
    others = [requirement_for("monai"), requirement_for("slicerio")]
    installs = [c[1] for c in fake.calls if c[0] == "pip_install"]
    assert installs[0][:1] == ["-c"] and installs[0][2:] == ["torch" + deps.TORCH_REQUIREMENT]   # torch pinned too
    assert installs[1][:1] == ["-c"] and installs[1][2:] == others   # constraints file, then the packages
    assert fake.kinds() == ["confirm", "pip_install", "confirm", "pip_install"]   # asked before each install
    titles = [c[1] for c in fake.calls if c[0] == "confirm"]
    assert titles == ["Install PyTorch", "Install Python packages"]
    assert all(r in fake.calls[2][2] for r in others)      # the user is shown what will be installed
    assert deps.missing_packages() == []


def test_ensure_uses_the_pytorch_extension_for_torch(monkeypatch):
    hide(monkeypatch, "torch")
    calls: list = []
    fake = FakeSlicer(monkeypatch, pytorchutils=fake_pytorchutils(True, calls))
    deps.ensure()
    assert calls == [("installTorch", {"askConfirmation": True, "torchVersionRequirement": deps.TORCH_REQUIREMENT})]
    assert fake.calls == []                                # no pip, no own dialog: nothing else was missing


def test_pytorch_extension_declining_is_a_dependency_error_and_installs_nothing_else(monkeypatch):
    hide(monkeypatch, "torch")
    hide(monkeypatch, "monai")
    calls: list = []
    fake = FakeSlicer(monkeypatch, pytorchutils=fake_pytorchutils(False, calls))
    with pytest.raises(deps.DependencyError, match="PyTorch was not installed.*PyTorch Util"):
        deps.ensure()
    assert len(calls) == 1 and fake.calls == []


def test_declining_plain_pip_torch_is_a_dependency_error(monkeypatch):
    hide(monkeypatch, "torch")
    fake = FakeSlicer(monkeypatch, confirm=False)
    with pytest.raises(deps.DependencyError, match="PyTorch is required.*pip install torch"):
        deps.ensure()
    assert fake.kinds() == ["confirm"]                     # asked, then nothing installed


def test_declining_the_requirements_is_a_dependency_error_naming_them(monkeypatch):
    hide(monkeypatch, "safetensors")
    fake = FakeSlicer(monkeypatch, confirm=False)
    with pytest.raises(deps.DependencyError, match="Installation cancelled") as err:
        deps.ensure()
    assert requirement_for("safetensors") in str(err.value) and deps.manual_command() in str(err.value)
    assert fake.kinds() == ["confirm"]


def test_torch_installed_but_requirements_declined(monkeypatch):
    hide(monkeypatch, "torch")
    hide(monkeypatch, "scipy")
    fake = FakeSlicer(monkeypatch, confirm=[True, False])
    with pytest.raises(deps.DependencyError, match="Installation cancelled"):
        deps.ensure()
    assert fake.kinds() == ["confirm", "pip_install", "confirm"]
    assert fake.calls[1][0] == "pip_install" and fake.calls[1][1][2:] == ["torch" + deps.TORCH_REQUIREMENT]


def test_an_install_that_leaves_packages_missing_is_a_dependency_error_with_the_manual_command(monkeypatch):
    hide(monkeypatch, "torch")
    hide(monkeypatch, "monai")
    fake = FakeSlicer(monkeypatch, confirm=True, installs=False)   # pip "succeeds" but nothing appears
    with pytest.raises(deps.DependencyError) as err:
        deps.ensure()
    text = str(err.value)
    assert "torch" + deps.TORCH_REQUIREMENT in text and requirement_for("monai") in text
    assert deps.manual_command() in text and "restart Slicer" in text
    assert fake.kinds() == ["confirm", "pip_install", "confirm", "pip_install"]


@pytest.mark.parametrize("module_name", ["packaging", "pydeps"])
def test_slicer_packaging_pip_ensure_is_used_where_this_slicer_has_it(monkeypatch, module_name):
    hide(monkeypatch, "monai")
    recorded: list = []
    packaging = types.ModuleType(f"slicer.{module_name}")

    def load_requirements(path):
        recorded.append(("load_requirements", path))
        return deps.read_requirements(path)

    def pip_ensure(requirements, **kwargs):
        recorded.append(("pip_ensure", requirements, kwargs))
        unhide("monai")

    packaging.load_requirements = load_requirements
    packaging.pip_ensure = pip_ensure
    fake = FakeSlicer(monkeypatch)
    setattr(fake.module, module_name, packaging)   # 5.12 names it slicer.packaging, Slicer's main slicer.pydeps
    deps.ensure()
    assert recorded[0] == ("load_requirements", str(deps.REQUIREMENTS_FILE))
    name, requirements, kwargs = recorded[1]
    assert (name, requirements) == ("pip_ensure", deps.read_requirements())
    assert set(kwargs) == {"requester", "constraints"} and kwargs["requester"] == "LCKD Segmentation"
    # Slicer 5.12's pip_ensure takes a constraints file: Slicer's own packages are pinned there too
    pins = Path(kwargs["constraints"]).read_text(encoding="utf-8").splitlines()[1:]
    assert pins == deps.bundled_pins() and f"numpy=={importlib.metadata.version('numpy')}" in pins
    assert fake.calls == []                                # pip_ensure asks; no own dialog, no pip_install


def test_the_vendored_pip_ensure_signature_takes_constraints():
    """The fact the call above relies on, from Slicer's source (data/slicer_source/README.md)."""
    text = (SLICER_SOURCE / "pip_ensure.excerpt.txt").read_text(encoding="utf-8")
    signature = text[text.index("def pip_ensure("):text.index(") -> ")]
    assert "constraints: str | Path | None = None" in signature and "requester: str | None = None" in signature


def test_the_pytorch_extension_installs_torch_with_slicers_packages_pinned(monkeypatch):
    """installTorch has no constraints argument: the pins reach its pip run through the environment."""
    hide(monkeypatch, "torch")
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    monkeypatch.delenv("UV_CONSTRAINT", raising=False)
    seen: list = []

    def record(calls):
        module = fake_pytorchutils(True, calls)
        install = module.PyTorchUtilsLogic.installTorch

        def installTorch(self, **kwargs):
            path = os.environ.get("PIP_CONSTRAINT")
            seen.append((path, os.environ.get("UV_CONSTRAINT"), Path(path).read_text(encoding="utf-8") if path else ""))
            return install(self, **kwargs)

        module.PyTorchUtilsLogic.installTorch = installTorch
        return module

    FakeSlicer(monkeypatch, pytorchutils=record([]))
    deps.ensure()
    (pip_path, uv_path, text), = seen
    assert pip_path and uv_path == pip_path
    assert f"numpy=={importlib.metadata.version('numpy')}" in text.splitlines()
    assert "PIP_CONSTRAINT" not in os.environ and "UV_CONSTRAINT" not in os.environ   # restored afterwards


def test_an_older_slicer_packaging_without_pip_ensure_falls_back_to_pip_install(monkeypatch):
    hide(monkeypatch, "monai")
    packaging = types.ModuleType("slicer.packaging")      # e.g. only pip_install, no pip_ensure
    packaging.pip_install = lambda *a, **k: pytest.fail("slicer.packaging.pip_install is not the fallback")
    fake = FakeSlicer(monkeypatch, packaging=packaging)
    deps.ensure()
    assert [c[0] for c in fake.calls[1:]] == ["pip_install"] and fake.calls[1][1][2:] == [requirement_for("monai")]


# --------------------------------------------------------------------------- the raw-scan extra

def test_preprocess_extractor_pins_match_pyproject():
    """One pin for the brain extractor: the core's table, which the Slicer module installs from."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+ (this check runs in the main CI)")
    from lckd.base.optionchecks import BRAIN_EXTRACTOR_REQUIREMENTS, DEFAULT_BRAIN_EXTRACTOR

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["preprocess"] == [BRAIN_EXTRACTOR_REQUIREMENTS[DEFAULT_BRAIN_EXTRACTOR]]
    assert BRAIN_EXTRACTOR_REQUIREMENTS[DEFAULT_BRAIN_EXTRACTOR] in project["optional-dependencies"]["test"]


def test_ensure_preprocess_installs_the_extractor_after_asking(monkeypatch):
    hide(monkeypatch, "deepbet")
    fake = FakeSlicer(monkeypatch)
    deps.ensure_preprocess()
    assert fake.kinds() == ["confirm", "pip_install"]
    assert fake.calls[0][1] == "Install brain extraction" and "deepbet==1.0.2" in fake.calls[0][2]
    assert fake.calls[1][0] == "pip_install" and fake.calls[1][1][-1] == "deepbet==1.0.2"
    assert fake.calls[1][1][:1] == ["-c"]   # Slicer's own packages pinned while deepbet installs
    assert deps.missing_preprocess_packages() == []


def test_ensure_preprocess_does_nothing_when_installed_and_refuses_when_declined_or_failed(monkeypatch):
    if deps.missing_preprocess_packages():
        pytest.skip("deepbet is not installed here")
    FakeSlicer(monkeypatch)
    deps.ensure_preprocess()                       # nothing asked, nothing installed
    hide(monkeypatch, "deepbet")
    declined = FakeSlicer(monkeypatch, confirm=False)
    with pytest.raises(deps.DependencyError, match="Untick 'Raw scans'.*pip install \"deepbet==1.0.2\""):
        deps.ensure_preprocess()
    assert declined.kinds() == ["confirm"]
    broken = FakeSlicer(monkeypatch, installs=False)
    with pytest.raises(deps.DependencyError, match="could not be installed: deepbet==1.0.2"):
        deps.ensure_preprocess()
    assert broken.kinds() == ["confirm", "pip_install"]
    with pytest.raises(Exception, match="unknown brain extraction method 'bet2'"):
        deps.missing_preprocess_packages("bet2")


# --------------------------------------------------------------------------- what Slicer ships

#: Package metadata shaped like a Slicer 5.6 install: SimpleITK 2.2.1 (built by Slicer's
#: SuperBuild and installed with `pip install .`, so it has pip metadata), numpy and scipy.
SLICER_56_LIKE = {"SimpleITK": ("2.2.1", "SimpleITK"), "numpy": ("1.26.4", "numpy"), "scipy": ("1.11.4", "scipy"),
                  "pydicom": ("2.4.4", "pydicom")}


def _site(root, dists: dict) -> str:
    """A site-packages folder holding `dists` ({name: (version, import name)}) as real
    distributions: an importable package and a .dist-info with METADATA."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (version, module) in dists.items():
        (root / module).mkdir(exist_ok=True)
        (root / module / "__init__.py").write_text("raise RuntimeError('imported by the check')\n")
        info = root / f"{name}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return str(root)


def test_the_requirements_never_ask_for_a_version_of_what_slicer_ships():
    for r in deps.read_requirements():
        if deps.is_bundled(r):
            assert Requirement(r).specifier == Requirement("x").specifier, f"{r}: no version for a bundled package"


def test_install_plan_on_a_slicer_56_like_python_keeps_its_simpleitk(tmp_path):
    site = _site(tmp_path / "site-packages", SLICER_56_LIKE)
    plan = deps.install_plan(deps.read_requirements(), path=[site])
    names = [deps.distribution_name(r).lower() for r in plan.install]
    assert "simpleitk" not in names and "scipy" not in names and "numpy" not in names and "pydicom" not in names
    assert names == ["monai", "safetensors", "slicerio", "highdicom"]   # only what this Python lacks
    assert plan.pinned == ["SimpleITK==2.2.1", "numpy==1.26.4", "scipy==1.11.4", "pydicom==2.4.4"]
    assert deps.missing_packages(path=[site])[1:] == plan.install   # torch first, then the same list
    args = plan.pip_arguments(tmp_path / "c.txt")
    assert args[:2] == ["-c", str(tmp_path / "c.txt")] and args[2:] == plan.install


def test_install_plan_on_a_newer_slicer_like_python(tmp_path):
    """A Slicer with newer bundled versions and monai already installed: nothing to install."""
    site = _site(tmp_path / "sp", {"SimpleITK": ("2.4.0", "SimpleITK"), "numpy": ("1.26.4", "numpy"),
                                   "scipy": ("1.13.1", "scipy"), "monai": ("1.3.2", "monai"),
                                   "safetensors": ("0.4.5", "safetensors"), "slicerio": ("1.1.2", "slicerio"),
                                   "pydicom": ("2.4.4", "pydicom"), "highdicom": ("0.22.0", "highdicom")})
    assert deps.install_plan(deps.read_requirements(), path=[site]).install == []


def test_a_bundled_package_that_is_absent_is_installed_but_never_upgraded(tmp_path):
    site = _site(tmp_path / "sp", {"numpy": ("1.26.4", "numpy")})
    plan = deps.install_plan(["SimpleITK", "numpy>=2"], path=[site])
    assert plan.install == ["SimpleITK"] and plan.pinned == ["numpy==1.26.4"]


def test_the_constraints_file_pins_what_is_installed_and_pip_accepts_it():
    """A real pip run (offline dry run) with the constraints of this Python and the module's
    requirements: pip reads the file and finds nothing to change."""
    plan = deps.install_plan(deps.read_requirements())
    assert any(p.startswith("SimpleITK==") for p in plan.pinned) and any(p.startswith("numpy==") for p in plan.pinned)
    path = deps.write_constraints(plan.pinned)
    try:
        assert path.read_text(encoding="utf-8").splitlines()[1:] == plan.pinned
        run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
                              "--disable-pip-version-check", "-c", str(path), *deps.read_requirements()],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        path.unlink()
