"""What the module does to Slicer's own process at start-up (every Slicer start, module used or not).

Slicer imports LCKDSegmentation.py when it starts and calls `registerSampleData` once start-up
completes. Neither may change the process environment (an OpenMP wait policy there would reach
every torch any module loads later) or import numerical packages the session may never need.
Each check runs in a fresh interpreter.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "LCKDSegmentation"
HEAVY = ("numpy", "SimpleITK", "scipy", "torch", "monai")

# `--threads 2` on the command line: on Linux the old import-time rule set the policy only
# then; on macOS and Windows it set it always.
SCRIPT = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
import lckd, lckd.base.modalities
from LCKDSegmentationLib import dependencies, panel, sampledata, selection
cases = sampledata.sample_cases()
names = [sampledata.node_name(p) for c in cases for p in c.images.values()]
heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(sys.argv[2].split(",")))
print("REPORT " + json.dumps({"env": os.environ.get("OMP_WAIT_POLICY"), "heavy": heavy, "names": names}))
"""


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}


def _report() -> dict:
    env = _clean_env()
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(MODULE), ",".join(HEAVY), "--threads", "2"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def test_importing_the_core_and_listing_sample_data_sets_no_thread_policy_and_imports_nothing_heavy():
    report = _report()
    assert report["env"] is None, "importing lckd put OMP_WAIT_POLICY into Slicer's environment"
    assert report["heavy"] == [], f"start-up imported {report['heavy']}"
    assert report["names"], "no bundled sample case found: the check would prove nothing"


def test_the_glue_modules_the_module_file_imports_add_nothing_heavy_to_slicer():
    """logic.py and output.py import slicer and vtk (as the module file does); beyond what
    `import slicer` itself loads they add nothing heavy."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import slicer; base = set(sys.modules); "
            "import LCKDSegmentationLib.logic, LCKDSegmentationLib.output; "
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - base} & set(sys.argv[2].split(','))))")
    run = subprocess.run([sys.executable, "-c", code, str(MODULE), ",".join(HEAVY)],
                         capture_output=True, text=True, timeout=120)
    if "No module named 'slicer'" in run.stderr:
        pytest.skip("slicer-core is not installed")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]"


def test_the_entry_points_still_set_the_policy_where_they_own_the_process():
    """`lckd` and the worker call apply_wait_policy before torch loads (lckd/base/threads.py)."""
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); "
            "from lckd.base.threads import apply_wait_policy; "
            "print(apply_wait_policy(['segment', '--threads', '1']), os.environ.get('OMP_WAIT_POLICY'))")
    run = subprocess.run([sys.executable, "-c", code, str(MODULE)], capture_output=True, text=True, timeout=120,
                         env=_clean_env())
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["True", "PASSIVE"]
    for path in (MODULE / "lckd" / "frontends" / "cli.py", MODULE / "lckd" / "frontends" / "worker.py"):
        text = path.read_text(encoding="utf-8")
        main = text[text.index("def main("):]
        assert "apply_wait_policy(" in main.split("\ndef ", 1)[0], f"{path.name}: main() must apply the policy"
