"""No torch in Slicer's GUI process and none for `lckd --help`: the Slicer glue, the model
registry and the CLI parser are imported and used in a process where importing torch fails."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "LCKDSegmentation"

# Runs in a fresh interpreter: a meta-path finder that refuses torch (and so MONAI, which
# needs it) is installed before anything else is imported.
BLOCKED_SCRIPT = r"""
import importlib, json, sys
from pathlib import Path

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTorch())
sys.path.insert(0, sys.argv[1])
report = {"imported": [], "needs_slicer": [], "failed": {}}
for path in sorted(Path(sys.argv[1], "LCKDSegmentationLib").glob("*.py")):
    name = "LCKDSegmentationLib" + ("" if path.stem == "__init__" else "." + path.stem)
    try:
        importlib.import_module(name)
        report["imported"].append(name)
    except ImportError as e:
        if "torch" in str(e):
            report["failed"][name] = str(e)
        elif (e.name or "").split(".")[0] in ("slicer", "vtk", "qt", "ctk"):
            report["needs_slicer"].append(name)   # a GUI helper where no slicer-core is installed
        else:
            report["failed"][name] = repr(e)

from lckd.frontends import cli
from lckd.model import registry
names = [e.name for e in registry.list_models()]
card = registry.resolve_model(None, allow_download=False)
report["models"] = names
report["default_card_exists"] = card.is_file()
parser = cli.build_parser(["--help"])
report["help"] = parser.format_help()
for argv in (["info", "--list"], ["phantom", sys.argv[2], "-n", "1", "--shape", "16,16,16"]):
    code = cli.main(argv)
    report.setdefault("exit", []).append(code)
report["torch_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai"))
print("REPORT " + json.dumps(report))
"""


def test_glue_registry_and_cli_parser_work_without_torch(tmp_path):
    run = subprocess.run([sys.executable, "-c", BLOCKED_SCRIPT, str(MODULE), str(tmp_path / "ph")],
                         capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    assert report["failed"] == {}
    # the non-GUI helpers import in any case; the GUI ones too where slicer-core is installed
    assert {"LCKDSegmentationLib.selection", "LCKDSegmentationLib.dependencies",
            "LCKDSegmentationLib.sampledata", "LCKDSegmentationLib.workerclient"} <= set(report["imported"])
    assert report["models"] and report["default_card_exists"]
    for command in ("segment", "batch", "info", "demo", "train", "evaluate", "crossval"):
        assert command in report["help"]
    assert report["exit"] == [0, 0]
    assert any((tmp_path / "ph").rglob("*.nii.gz")), "lckd phantom wrote nothing"
    assert report["torch_loaded"] == []


def test_lazy_command_help_lines_equal_the_modules_own():
    from lckd.frontends import cli

    def help_lines(parser) -> dict:
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        return {a.dest: a.help for a in sub._choices_actions}

    full = help_lines(cli.build_parser())                 # imports every command's module
    light = help_lines(cli.build_parser(["--help"]))
    assert light == full
    assert set(cli.LAZY_COMMANDS) <= set(full)


def test_chosen_lazy_command_is_built_in_full():
    from lckd.frontends import cli

    args = cli.build_parser(["evaluate", "data", "--model", "m.json"]).parse_args(
        ["evaluate", "data", "--model", "m.json"])
    assert args.command == "evaluate" and args.model == "m.json" and callable(args.func)


def test_core_keeps_python_39_syntax():
    # Slicer 5.8 bundles Python 3.9; the core is imported there as is.
    for path in sorted((MODULE / "lckd").rglob("*.py")):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
