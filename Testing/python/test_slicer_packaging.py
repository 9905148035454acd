"""Extension packaging: CMake lists, catalog entry, Qt Designer file, icon, requirements.

Slicer cannot be built here, so these tests read the files the build uses and check them
against what the module imports and loads.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from module_source import source_of

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "LCKDSegmentation"
MODULE_PY = MODULE / "LCKDSegmentation.py"
UI_FILE = MODULE / "Resources" / "UI" / "LCKDSegmentation.ui"
CATALOG = ROOT / "LCKDSegmentation.json"
SCHEMA = ROOT.parent / "shared" / "schemas" / "slicer-extension-catalog-entry-schema-v1.0.2.json"
GLUE = [MODULE_PY] + sorted((MODULE / "LCKDSegmentationLib").glob("*.py"))


def cmake_sets(path: Path) -> dict[str, list[str]]:
    """`set(NAME a b c)` blocks of a CMakeLists.txt, with ${MODULE_NAME} expanded."""
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
    sets = {}
    for name, body in re.findall(r"\bset\(\s*(\w+)\s+(.*?)\)", text, flags=re.S):
        sets[name] = re.findall(r'"[^"]*"|[^\s"]+', body)
    module_name = sets.get("MODULE_NAME", [""])[0]
    return {k: [v.replace("${MODULE_NAME}", module_name).strip('"') for v in vals] for k, vals in sets.items()}


@pytest.fixture(scope="module")
def module_cmake():
    return cmake_sets(MODULE / "CMakeLists.txt")


@pytest.fixture(scope="module")
def extension_cmake():
    return cmake_sets(ROOT / "CMakeLists.txt")


def _files(folder: Path, pattern: str = "*") -> set[str]:
    return {p.relative_to(MODULE).as_posix() for p in folder.rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts}


def test_every_python_file_is_listed(module_cmake):
    listed = set(module_cmake["MODULE_PYTHON_SCRIPTS"])
    on_disk = _files(MODULE, "*.py")
    assert not on_disk - listed, ("add to MODULE_PYTHON_SCRIPTS in LCKDSegmentation/CMakeLists.txt: "
                                  f"{sorted(on_disk - listed)}")
    assert not listed - on_disk, f"listed but missing: {sorted(listed - on_disk)}"


def test_every_resource_is_listed(module_cmake):
    listed = set(module_cmake["MODULE_PYTHON_RESOURCES"])
    # the module's Resources/ and the data files the core reads at run time (model card schema)
    on_disk = _files(MODULE / "Resources") | {f for f in _files(MODULE / "lckd") if not f.endswith(".py")}
    assert on_disk == listed, f"missing: {sorted(on_disk - listed)}, stale: {sorted(listed - on_disk)}"


def test_the_core_loads_its_resources_from_the_listed_folder(module_cmake, monkeypatch):
    """The registry, models and sample case are files of the module's Resources/ (listed above,
    so the Slicer build installs them where `lckd.model.resources` looks), not copied from elsewhere."""
    from lckd.model.resources import RUNTIME_FOLDERS, resources_dir, sample_case

    monkeypatch.delenv("LCKD_RESOURCES", raising=False)
    assert resources_dir() == MODULE / "Resources"
    listed = set(module_cmake["MODULE_PYTHON_RESOURCES"])
    for folder in RUNTIME_FOLDERS:
        assert any(f.startswith(f"Resources/{folder}/") for f in listed), f"nothing of {folder}/ listed"
    registry = json.loads((MODULE / "Resources" / "models" / "registry.json").read_text(encoding="utf-8"))
    for entry in registry["models"]:
        if entry.get("bundled"):
            card = MODULE / "Resources" / entry["card"]
            weights = card.parent / json.loads(card.read_text(encoding="utf-8"))["weights"]["file"]
            for path in (card, weights):
                assert path.relative_to(MODULE).as_posix() in listed, f"{entry['name']}: {path.name} not listed"
    case = sample_case()
    for path in [*case.images.values(), case.label]:
        assert path.relative_to(MODULE).as_posix() in listed
    assert "LCKD_BUNDLED_RESOURCES" not in module_cmake and "configure_file" not in (
        MODULE / "CMakeLists.txt").read_text(encoding="utf-8")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside LCKDSegmentationLib
                base = "LCKDSegmentationLib" + (f".{node.module}" if node.module else "")
                names.add(base)
                names.update(f"LCKDSegmentationLib.{a.name}" for a in node.names if not node.module)
            elif node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_everything_the_module_imports_or_loads_is_listed(module_cmake):
    scripts = set(module_cmake["MODULE_PYTHON_SCRIPTS"])
    resources = set(module_cmake["MODULE_PYTHON_RESOURCES"])
    for path in GLUE:
        for name in _imported_modules(path):
            if name.split(".")[0] not in ("lckd", "LCKDSegmentationLib"):
                continue
            parts = name.split(".")
            candidates = {"/".join(parts) + ".py", "/".join(parts) + "/__init__.py"}
            if (MODULE / ("/".join(parts) + ".py")).exists() or (MODULE / "/".join(parts)).is_dir():
                assert candidates & scripts, f"{path.name} imports {name}, not listed in CMakeLists"
        for loaded in re.findall(r"resourcePath\(\s*[\"']([^\"']+)", path.read_text(encoding="utf-8")):
            assert f"Resources/{loaded}" in resources, f"{path.name} loads {loaded}, not listed"
    assert "Resources/Icons/LCKDSegmentation.png" in resources  # sampledata thumbnail, module icon


def test_extension_metadata_and_catalog_entry(extension_cmake):
    jsonschema = pytest.importorskip("jsonschema")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert extension_cmake.get(key) and all(extension_cmake[key]), key
    assert extension_cmake["EXTENSION_CATEGORY"] == ["Segmentation"]
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"add_subdirectory\(\s*LCKDSegmentation\s*\)", top)
    icon_path = extension_cmake["EXTENSION_ICONURL"][0].split("/main/", 1)[1]
    assert (ROOT / icon_path).is_file(), "EXTENSION_ICONURL must point at a file of this repository"

    entry = json.loads(CATALOG.read_text(encoding="utf-8"))
    if SCHEMA.is_file():
        jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8"))).validate(entry)
    assert entry["category"] == "Segmentation"
    assert entry["build_dependencies"] == extension_cmake["EXTENSION_DEPENDS"]
    assert entry["scm_url"].removesuffix(".git") == extension_cmake["EXTENSION_HOMEPAGE"][0]


def _parameter_node_fields() -> dict[str, str]:
    """{field: annotation text} of the module's @parameterNodeWrapper class."""
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LCKDSegmentationParameterNode")
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_ui_parses_and_has_every_widget_the_code_uses():
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name") for w in root.iter("widget")}
    source = MODULE_PY.read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used - {"setMRMLScene"}, "found no widget lookups: the test's parser is out of date"
    missing = used - widgets
    assert not missing, f"LCKDSegmentation.ui lacks widgets the code uses: {sorted(missing)}"
    receivers = {c.findtext("receiver") for c in root.iter("connection")}
    mrml = {w.get("name") for w in root.iter("widget")
            if w.get("class", "").startswith("qMRML") and w.get("class") != "qMRMLWidget"}
    assert mrml <= receivers, f"MRML widgets without a scene connection: {sorted(mrml - receivers)}"


def test_widgets_bind_to_parameter_node_fields_of_a_type_they_can_show():
    """connectGui binds each widget whose SlicerParameterName names a field; a typo or a
    widget that cannot show the field's type fails only inside Slicer, so check it here."""
    fields = _parameter_node_fields()
    assert {"t1", "t1ce", "t2", "flair", "outputSegmentation", "device", "postprocess"} <= set(fields), fields
    bound = {}
    for w in ET.parse(UI_FILE).getroot().iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "a dynamic property needs stdset=0"
                bound[prop.findtext("string")] = w.get("class")
    assert set(bound) <= set(fields), f"UI binds unknown parameters: {sorted(set(bound) - set(fields))}"
    # every field is shown by a widget, except the model: its combo box is filled from the registry
    assert set(fields) - set(bound) == {"model"}, sorted(set(fields) - set(bound))
    source = MODULE_PY.read_text(encoding="utf-8")
    enums = set(re.findall(r"^class (\w+)\(enum\.Enum\)", source, flags=re.M))
    for name, widget_class in bound.items():
        kind = fields[name]
        if widget_class == "qMRMLNodeComboBox":
            assert kind.startswith("vtkMRML"), (name, kind)
        elif widget_class == "QCheckBox":
            assert kind == "bool", (name, kind)
        elif widget_class == "QComboBox":
            assert kind in enums, f"{name}: a QComboBox binds an enum (or a str with Choice), not {kind}"
        else:
            raise AssertionError(f"no connectGui connector checked for {widget_class} ({name})")
    # the enums' values are what the Logic takes: modality names and the worker's device names
    from lckd.base.modalities import MODALITIES

    values = {c: re.findall(r'^    \w+ = "([^"]+)"', source[source.index(f"class {c}("):], flags=re.M)
              for c in ("Reference", "Device")}
    assert values["Reference"][:5] == ["auto", *MODALITIES]
    assert values["Device"][:3] == ["auto", "cuda", "cpu"]


def test_module_logic_holds_the_segmentation_logic_instead_of_inheriting_it():
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LCKDSegmentationLogic")
    assert [ast.unparse(b) for b in cls.bases] == ["ScriptedLoadableModuleLogic"]
    assert "self.segmentation = SegmentationLogic(scene)" in ast.unparse(cls)


def test_icon_is_a_128_pixel_png():
    from PIL import Image

    with Image.open(MODULE / "Resources" / "Icons" / "LCKDSegmentation.png") as img:
        assert img.format == "PNG" and img.size == (128, 128)


def test_requirements_use_compatible_release_pins():
    from LCKDSegmentationLib import dependencies

    reqs = dependencies.read_requirements()
    names = {dependencies.distribution_name(r).lower() for r in reqs}
    assert {"monai", "safetensors", "simpleitk"} <= names
    own = [r for r in reqs if not dependencies.is_bundled(r)]
    assert own and all("~=" in r and "==" not in r for r in own), reqs   # Slicer's own ones: no version at all
    assert dependencies.REQUIREMENTS_FILE == MODULE / "Resources" / "requirements.txt"  # the template's place
    assert not (MODULE / "requirements.txt").exists()
    assert dependencies.missing_packages(reqs) == []  # this environment has them all
    assert dependencies.missing_packages(["no-such-package-lckd~=1.0"]) == ["no-such-package-lckd~=1.0"]
    assert dependencies.missing_packages(["monai~=99.0"]) == ["monai~=99.0"]  # too old counts as missing


def test_slicer_glue_never_imports_torch():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import LCKDSegmentationLib.logic, LCKDSegmentationLib.dependencies, LCKDSegmentationLib.sampledata; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'qt', 'ctk')); "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code, str(MODULE)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for path in GLUE:
        imports = {n.split(".")[0] for n in _imported_modules(path)}
        assert "torch" not in imports, f"{path.name} imports torch"


def test_python_39_syntax():
    for path in GLUE + [MODULE / "lckd" / "frontends" / "worker.py"]:
        text = path.read_text(encoding="utf-8")
        ast.parse(text, filename=str(path), feature_version=(3, 9))
        assert "from __future__ import annotations" in text or path.name == "__init__.py", path


# --------------------------------------------------------------------------- extension index (issue 21)

def _s4ext(path: Path) -> dict[str, str]:
    """`key value` lines of an .s4ext file (comments and blanks dropped)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def test_the_repository_is_named_like_the_extensions_index_requires(extension_cmake):
    """The ExtensionsIndex checker (check_git_repository_name) wants 'Slicer' in the name."""
    entry = json.loads(CATALOG.read_text(encoding="utf-8"))
    repo = entry["scm_url"].removesuffix(".git").rsplit("/", 1)[1]
    assert repo == "SlicerLCKDSegmentation"
    assert extension_cmake["EXTENSION_HOMEPAGE"][0] == entry["scm_url"].removesuffix(".git")
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert f"/{repo}/main/" in extension_cmake[key][0], key
    assert f"github.com/LCKDSegmentation/{repo}" in MODULE_PY.read_text(encoding="utf-8")


def test_the_slicer_56_s4ext_agrees_with_cmake_and_the_json_entry(extension_cmake):
    """Slicer 5.6's index reads .s4ext, 5.8 and later the JSON entry: both say the same."""
    s4ext = _s4ext(ROOT / "LCKDSegmentation.s4ext")
    entry = json.loads(CATALOG.read_text(encoding="utf-8"))
    assert s4ext["scm"] == "git"
    assert s4ext["scmurl"] == entry["scm_url"] and s4ext["scmrevision"] == entry["scm_revision"]
    assert s4ext["depends"].split() == entry["build_dependencies"] == extension_cmake["EXTENSION_DEPENDS"]
    assert s4ext["build_subdirectory"] == entry["build_subdirectory"]
    assert s4ext["category"] == entry["category"] == extension_cmake["EXTENSION_CATEGORY"][0]
    assert s4ext["homepage"] == extension_cmake["EXTENSION_HOMEPAGE"][0]
    assert s4ext["iconurl"] == extension_cmake["EXTENSION_ICONURL"][0]
    assert s4ext["screenshoturls"] == extension_cmake["EXTENSION_SCREENSHOTURLS"][0]
    # (cmake_sets stops at the first ')', and the description has some)
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f'set(EXTENSION_DESCRIPTION "{s4ext["description"]}")' in top
    assert s4ext["enabled"] == "1"


def test_the_json_entry_validates_against_the_schema_version_it_names():
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is not here")
    entry = json.loads(CATALOG.read_text(encoding="utf-8"))
    assert entry["$schema"].split("/")[-1].rstrip("#") == SCHEMA.name   # the version 5.8+ accepts
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8"))).validate(entry)


# --------------------------------------------------------------------------- widget details (issue 21)

def test_apply_updates_the_buttons_even_when_starting_fails():
    """slicer.util.tryWithErrorDisplay shows the error and re-raises it (Base/Python/slicer/util.py):
    the call that follows it must be in a `finally`, or it is skipped."""
    tree = ast.parse(source_of("onApply"))
    with_nodes = [n for n in ast.walk(tree) if isinstance(n, ast.With)
                  and "tryWithErrorDisplay" in ast.unparse(n.items[0].context_expr)]
    assert with_nodes, "onApply no longer uses tryWithErrorDisplay: update this test"
    guarded = [t for t in ast.walk(tree) if isinstance(t, ast.Try)
               and any(w in ast.walk(t) for w in with_nodes)]
    assert guarded, "tryWithErrorDisplay re-raises: catch it in onApply"
    assert any("self.updateState()" in ast.unparse(stmt) for t in guarded for stmt in t.finalbody)
    assert all(t.handlers for t in guarded), "a Qt slot must not let the re-raised error escape"


def test_the_device_tooltip_names_the_choices_the_combo_box_offers():
    root = ET.parse(UI_FILE).getroot()
    combo = next(w for w in root.iter("widget") if w.get("name") == "deviceComboBox")
    tip = next(p.findtext("string") for p in combo.findall("property") if p.get("name") == "toolTip")
    source = MODULE_PY.read_text(encoding="utf-8")
    labels = re.search(r'return \{"auto": _\("([^"]+)"\), "cuda": _\("([^"]+)"\), "cpu": _\("([^"]+)"\)\}', source)
    assert labels, "Device.label changed: update this test"
    assert tip.startswith("auto:"), "the tooltip first says what 'auto' does"
    for label in (labels.group(2), labels.group(3)):   # each forced choice, by its label in the combo box
        assert f"{label}:" in tip, f"the tooltip does not explain the '{label}' choice"
    # Apple MPS is no choice of its own: it may only be named as what 'auto' can pick
    assert "MPS" not in tip[tip.index(f"{labels.group(2)}:"):]


def test_self_tests_skip_instead_of_passing_when_packages_are_missing():
    """A test that `return`s counts as passed under ctest; `skipTest` is reported as skipped."""
    for name in ("test_LogicSegment", "test_WidgetApplyAndCancel"):
        body = source_of(name)
        assert "self.skipIfDependenciesMissing()" in body and "return" not in body.split("\n", 3)[1], name
    helper = source_of("skipIfDependenciesMissing")
    assert "self.skipTest(" in helper
    run_test = source_of("runTest", cls="LCKDSegmentationTest")
    assert "unittest.SkipTest" in run_test and "self.skipTest(" in run_test


# --------------------------------------------------------------------------- the index's lint (issue 29)

INDEX_LINT = Path(__file__).resolve().parent / "data" / "extensions_index"


def prettier_multiline_json(value) -> str:
    """`value` as prettier 3 writes JSON with multilineArraysWrapThreshold 0: two-space indent,
    every non-empty array and object one member per line, `[]` / `{}` when empty, a final newline."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def test_the_index_wraps_every_array_the_way_this_check_assumes():
    config = (INDEX_LINT / "prettierrc.js.excerpt.txt").read_text(encoding="utf-8")
    assert "multilineArraysWrapThreshold: 0" in config and "prettier-plugin-multiline-arrays" in config
    hooks = (INDEX_LINT / "pre-commit-config.excerpt.txt").read_text(encoding="utf-8")
    assert "types_or: [yaml, javascript, json]" in hooks and "trailing-whitespace" in hooks
    assert prettier_multiline_json({"a": ["PyTorch"], "b": []}) == '{\n  "a": [\n    "PyTorch"\n  ],\n  "b": []\n}\n'


def test_the_catalog_entry_is_formatted_as_the_index_lint_wants():
    """Issue 29, defect 13: the one-line ["PyTorch"] array failed the index's prettier hook."""
    text = CATALOG.read_text(encoding="utf-8")
    assert text == prettier_multiline_json(json.loads(text))
    assert "\t" not in text and not any(line != line.rstrip() for line in text.splitlines())


def test_prettier_itself_accepts_the_catalog_entry_where_it_is_installed(tmp_path):
    import shutil

    prettier = shutil.which("prettier")
    if prettier is None:
        pytest.skip("prettier (npm) is not installed here; the exact-format check above stands in")
    (tmp_path / ".prettierrc.js").write_text((INDEX_LINT / "prettierrc.js.excerpt.txt").read_text(encoding="utf-8"))
    (tmp_path / CATALOG.name).write_text(CATALOG.read_text(encoding="utf-8"))
    run = subprocess.run([prettier, "--check", CATALOG.name], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
